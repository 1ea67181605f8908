package test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIMRoster exercises roster management (RFC 6121 §2) from two resources
// of one account with mellium: versioning from a never-touched roster,
// set with a name and groups, pushes to every interested resource, update,
// remove, and the errors of §2.3.3 and §2.5.3.
func TestIMRoster(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startIMServer(t, b, imOptions{Users: users("alice", "bob")})

		// The features after authentication advertise versioning (§2.6.1)
		// and pre-approval (§3.4.1); a raw login shows them as sent.
		raw := dialRaw(t, srv.Server)
		features, _ := raw.login(srv.Server, "alice", "pw-alice", "raw")
		if features.child(nsRosterVer, "ver") == nil {
			t.Errorf("stream features %s lack <ver xmlns='%s'/>", features, nsRosterVer)
		}
		if features.child(nsPreApproval, "sub") == nil {
			t.Errorf("stream features %s lack <sub xmlns='%s'/>", features, nsPreApproval)
		}
		raw.send(`</stream:stream>`)

		r1 := dialIM(t, srv.Server, "alice", "pw-alice", "one")
		r2 := dialIM(t, srv.Server, "alice", "pw-alice", "two")

		// A never-touched roster still has a version (§2.6.2: the server
		// MUST include 'ver' when the client asked with one).
		empty := ""
		q := rosterGet(t, r1, &empty)
		if q == nil {
			t.Fatalf("roster get with ver='' on a new roster returned an empty result; want the (empty) roster with a version")
		}
		v0 := q.attr("ver")
		if v0 == "" {
			t.Fatalf("roster result %s has no 'ver'", q)
		}
		if n := len(rosterItems(q)); n != 0 {
			t.Errorf("new roster has %d items", n)
		}
		// §2.6.3: a matching version is answered with an empty result.
		if q := rosterGet(t, r1, &v0); q != nil {
			t.Errorf("roster get with the current ver %q returned %s, want an empty result", v0, q)
		}
		rosterGet(t, r2, nil) // r2 is interested too
		// r3 never asks for the roster, so it is no interested resource and
		// gets no pushes (§2.1.6).
		r3 := dialIM(t, srv.Server, "alice", "pw-alice", "three")

		// Add an item with a name and two groups: result to the sender and a
		// push to both interested resources (§2.3.2).
		res := r1.iq(`<iq type='set'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob &amp; co'><group>Friends</group><group>Work</group></item></query></iq>`)
		if res.attr("type") != "result" {
			t.Fatalf("roster set answered with %s", res)
		}
		var v1, pushVer string
		for _, c := range []*imClient{r1, r2} {
			push := c.expect("roster push of bob", isPush("bob@localhost"))
			pushVer = push.child(nsRoster, "query").attr("ver")
			it := pushItem(t, c, push)
			if it.attr("name") != "Bob & co" || it.attr("subscription") != "none" || it.attr("ask") != "" {
				t.Errorf("%s: pushed item %s, want name='Bob & co' subscription='none' and no ask", c.name, it)
			}
			if g := itemGroups(it); !slices.Equal(g, []string{"Friends", "Work"}) {
				t.Errorf("%s: pushed groups %v, want [Friends Work]", c.name, g)
			}
		}
		r3.expectNone("a roster push to a resource that never asked for the roster", isPush("bob@localhost"))
		// The version a push carries is the roster's version (§2.6.3): a
		// client that cached it is up to date.
		if q := rosterGet(t, r1, &pushVer); q != nil {
			t.Errorf("roster get with the ver %q of the last push returned %s, want an empty result", pushVer, q)
		}
		q = rosterGet(t, r2, &empty)
		v1 = q.attr("ver")
		if v1 == "" || v1 == v0 {
			t.Errorf("roster version after a set is %q, was %q: it must change (§2.6)", v1, v0)
		}
		if it := rosterItems(q)["bob@localhost"]; it == nil || it.attr("name") != "Bob & co" {
			t.Errorf("roster after set: %s", q)
		}
		// The old version is stale: the server answers with the whole roster
		// or with an empty result followed by pushes (§2.6.3); both carry bob.
		if q := rosterGet(t, r1, &v0); q != nil {
			if rosterItems(q)["bob@localhost"] == nil {
				t.Errorf("roster get with stale ver returned %s without bob", q)
			}
		} else {
			r1.expect("push of bob after a stale ver", isPush("bob@localhost"))
		}
		if q := rosterGet(t, r1, &v1); q != nil {
			t.Errorf("roster get with current ver %q returned %s", v1, q)
		}

		// Update: new name, one group.
		r2.iq(`<iq type='set'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Robert'><group>Family</group></item></query></iq>`)
		for _, c := range []*imClient{r1, r2} {
			it := pushItem(t, c, c.expect("push of the updated item", isPush("bob@localhost")))
			if it.attr("name") != "Robert" || !slices.Equal(itemGroups(it), []string{"Family"}) {
				t.Errorf("%s: pushed update %s", c.name, it)
			}
		}

		// Remove (§2.5): result, then a push with subscription='remove'.
		res = r1.iq(`<iq type='set'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>`)
		if res.attr("type") != "result" {
			t.Fatalf("roster remove answered with %s", res)
		}
		for _, c := range []*imClient{r1, r2} {
			it := pushItem(t, c, c.expect("push of the removal", isPush("bob@localhost")))
			if it.attr("subscription") != "remove" {
				t.Errorf("%s: removal pushed as %s, want subscription='remove'", c.name, it)
			}
		}
		if q := rosterGet(t, r1, nil); len(rosterItems(q)) != 0 {
			t.Errorf("roster after remove: %s", q)
		}

		// Error cases of §2.3.3 and §2.5.3, each with the condition the RFC
		// names; none may cause a push.
		long := strings.Repeat("n", 5000)
		errCases := []struct {
			name, item, cond string
		}{
			{"remove missing item", `<item jid='nobody@localhost' subscription='remove'/>`, "item-not-found"},
			{"two items", `<item jid='a@localhost'/><item jid='b@localhost'/>`, "bad-request"},
			{"no jid", `<item name='x'/>`, "bad-request"},
			{"malformed jid", `<item jid='a@b@c'/>`, "jid-malformed"},
			{"empty group", `<item jid='c@localhost'><group></group></item>`, "not-acceptable"},
			{"duplicate group", `<item jid='c@localhost'><group>G</group><group>G</group></item>`, "bad-request"},
			{"name too long", `<item jid='c@localhost' name='` + long + `'/>`, "not-acceptable"},
		}
		for _, ec := range errCases {
			res := r1.iq(`<iq type='set'><query xmlns='jabber:iq:roster'>` + ec.item + `</query></iq>`)
			if typ, cond := stanzaError(res); res.attr("type") != "error" || cond != ec.cond {
				t.Errorf("%s: answered with %s (error %s/%s), want <%s/>", ec.name, res, typ, cond, ec.cond)
			}
		}
		// §2.3.3: a set for another user's roster is forbidden, and §2.1.3:
		// another user's roster cannot be read.
		res = r1.iq(`<iq type='set' to='bob@localhost'><query xmlns='jabber:iq:roster'><item jid='x@localhost'/></query></iq>`)
		if _, cond := stanzaError(res); res.attr("type") != "error" || cond != "forbidden" {
			t.Errorf("roster set to bob's account answered with %s, want forbidden", res)
		}
		res = r1.iq(`<iq type='get' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>`)
		if res.attr("type") != "error" {
			t.Errorf("roster get of bob's roster answered with %s, want an error", res)
		}
		r2.expectNone("a push after failed roster sets", func(e *element) bool { return e.XMLName.Local == "iq" })
		r1.expectNone("a push after failed roster sets", func(e *element) bool { return e.XMLName.Local == "iq" })
	})
}

// TestIMRosterLimit checks the configurable roster size limit
// (max_roster_items): a set that would add an item beyond it is refused with
// not-allowed (RFC 6121 §2.3.3) and changes nothing, while updates of
// existing items still work and a removal makes room again.
func TestIMRosterLimit(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startIMServer(t, b, imOptions{Users: users("alice"), MaxRoster: 2})
		c := dialIM(t, srv.Server, "alice", "pw-alice", "r")
		set := func(item string) *element {
			return c.iq(`<iq type='set'><query xmlns='jabber:iq:roster'>` + item + `</query></iq>`)
		}
		for _, j := range []string{"a@localhost", "b@localhost"} {
			if r := set(`<item jid='` + j + `'/>`); r.attr("type") != "result" {
				t.Fatalf("adding %s within the limit: %s", j, r)
			}
		}
		r := set(`<item jid='c@localhost'/>`)
		if _, cond := stanzaError(r); r.attr("type") != "error" || cond != "not-allowed" {
			t.Errorf("adding a third item with max_roster_items = 2: %s, want not-allowed", r)
		}
		if r := set(`<item jid='a@localhost' name='A'/>`); r.attr("type") != "result" {
			t.Errorf("updating an item of a full roster: %s", r)
		}
		if r := set(`<item jid='b@localhost' subscription='remove'/>`); r.attr("type") != "result" {
			t.Errorf("removing from a full roster: %s", r)
		}
		if r := set(`<item jid='c@localhost'/>`); r.attr("type") != "result" {
			t.Errorf("adding after a removal made room: %s", r)
		}
		items := rosterItems(rosterGet(t, c, nil))
		if len(items) != 2 || items["a@localhost"] == nil || items["c@localhost"] == nil {
			t.Errorf("roster after the limit checks: %v, want a and c", items)
		}
	})
}

// TestIMSubscription walks the subscription state machine of RFC 6121 §3
// between two online users, with the roster pushes and presence stanzas of
// every step, then pre-approval (§3.4) and a request to an offline user
// (§3.1.3).
func TestIMSubscription(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startIMServer(t, b, imOptions{Users: users("alice", "bob", "dave", "erin")})
		alice := online(t, srv.Server, "alice", "a", "")
		bob := online(t, srv.Server, "bob", "b", "")
		alice.all(func(*element) bool { return true })
		bob.all(func(*element) bool { return true })

		// §3.1.2: alice subscribes; her roster shows bob none+ask.
		alice.send(`<presence to='bob@localhost' type='subscribe'/>`)
		it := pushItem(t, alice, alice.expect("push of the pending-out item", isPush("bob@localhost")))
		if it.attr("subscription") != "none" || it.attr("ask") != "subscribe" {
			t.Errorf("after subscribe alice's push is %s, want subscription='none' ask='subscribe'", it)
		}
		// §3.1.3: bob gets the request from alice's bare JID; it does not
		// put alice on bob's roster.
		bob.expect("subscribe from alice", isPresence("alice@localhost", "subscribe"))
		bob.expectNone("a roster push for an inbound request", isPush("alice@localhost"))

		// §3.1.5: bob approves.
		bob.send(`<presence to='alice@localhost' type='subscribed'/>`)
		it = pushItem(t, bob, bob.expect("push after approving", isPush("alice@localhost")))
		if it.attr("subscription") != "from" {
			t.Errorf("after approving, bob's item is %s, want subscription='from'", it)
		}
		alice.expect("'subscribed' from bob", isPresence("bob@localhost", "subscribed"))
		it = pushItem(t, alice, alice.expect("push after bob approved", isPush("bob@localhost")))
		if it.attr("subscription") != "to" || it.attr("ask") != "" {
			t.Errorf("after bob approved, alice's item is %s, want subscription='to' and no ask", it)
		}
		// §3.1.6: alice now gets bob's presence, from his full JID.
		alice.expect("bob's available presence", isPresence(bob.full(), ""))
		bob.send(`<presence><show>away</show></presence>`)
		bob.sync()
		alice.expect("bob's subsequent presence", isPresence(bob.full(), ""))
		// bob is not subscribed to alice, so her presence does not reach him.
		alice.send(`<presence><status>hello</status></presence>`)
		alice.sync()
		bob.expectNone("alice's presence without a subscription", isPresenceFromUser("alice@localhost"))

		// Mutual: bob subscribes back and alice approves: both are 'both'.
		bob.send(`<presence to='alice@localhost' type='subscribe'/>`)
		it = pushItem(t, bob, bob.expect("push of bob's request", isPush("alice@localhost")))
		if it.attr("subscription") != "from" || it.attr("ask") != "subscribe" {
			t.Errorf("bob's item after subscribing back: %s, want from+ask", it)
		}
		alice.expect("subscribe from bob", isPresence("bob@localhost", "subscribe"))
		alice.send(`<presence to='bob@localhost' type='subscribed'/>`)
		it = pushItem(t, alice, alice.expect("alice's push after approving", isPush("bob@localhost")))
		if it.attr("subscription") != "both" {
			t.Errorf("alice's item after mutual approval: %s, want both", it)
		}
		it = pushItem(t, bob, bob.expect("bob's push after alice approved", isPush("alice@localhost")))
		if it.attr("subscription") != "both" || it.attr("ask") != "" {
			t.Errorf("bob's item after mutual approval: %s, want both and no ask", it)
		}
		bob.expect("'subscribed' from alice", isPresence("alice@localhost", "subscribed"))
		bob.expect("alice's presence once subscribed", isPresence(alice.full(), ""))

		// §3.3: alice unsubscribes from bob's presence.
		alice.send(`<presence to='bob@localhost' type='unsubscribe'/>`)
		it = pushItem(t, alice, alice.expect("push after unsubscribe", isPush("bob@localhost")))
		if it.attr("subscription") != "from" {
			t.Errorf("alice's item after unsubscribe: %s, want from", it)
		}
		bob.expect("unsubscribe from alice", isPresence("alice@localhost", "unsubscribe"))
		it = pushItem(t, bob, bob.expect("bob's push after alice unsubscribed", isPush("alice@localhost")))
		if it.attr("subscription") != "to" {
			t.Errorf("bob's item after alice unsubscribed: %s, want to", it)
		}
		// §3.3.3: bob's server tells alice bob is unavailable to her now.
		alice.expect("unavailable from bob's resource", isPresence(bob.full(), "unavailable"))

		// §3.2: alice cancels bob's subscription to her.
		alice.send(`<presence to='bob@localhost' type='unsubscribed'/>`)
		it = pushItem(t, alice, alice.expect("push after unsubscribed", isPush("bob@localhost")))
		if it.attr("subscription") != "none" {
			t.Errorf("alice's item after unsubscribed: %s, want none", it)
		}
		bob.expect("unavailable from alice (§3.2.2)", isPresence(alice.full(), "unavailable"))
		bob.expect("unsubscribed from alice", isPresence("alice@localhost", "unsubscribed"))
		it = pushItem(t, bob, bob.expect("bob's push after unsubscribed", isPush("alice@localhost")))
		if it.attr("subscription") != "none" {
			t.Errorf("bob's item after unsubscribed: %s, want none", it)
		}
		alice.send(`<presence><status>after</status></presence>`)
		alice.sync()
		bob.expectNone("alice's presence after the subscription ended", isPresence(alice.full(), ""))

		// §3.4: alice pre-approves dave, then dave asks and is approved at
		// once without alice being asked.
		alice.send(`<presence to='dave@localhost' type='subscribed'/>`)
		it = pushItem(t, alice, alice.expect("push of the pre-approval", isPush("dave@localhost")))
		if it.attr("approved") != "true" || it.attr("subscription") != "none" {
			t.Errorf("pre-approved item %s, want approved='true' subscription='none'", it)
		}
		dave := online(t, srv.Server, "dave", "d", "")
		dave.expectNone("'subscribed' before asking (pre-approval is not routed)", isPresence("alice@localhost", "subscribed"))
		dave.send(`<presence to='alice@localhost' type='subscribe'/>`)
		dave.expect("automatic 'subscribed' from alice", isPresence("alice@localhost", "subscribed"))
		it = pushItem(t, dave, dave.expect("dave's push after the approval", isPush("alice@localhost")))
		for it.attr("ask") != "" {
			// The push of the pending request may come first.
			it = pushItem(t, dave, dave.expect("dave's push after the approval", isPush("alice@localhost")))
		}
		if it.attr("subscription") != "to" {
			t.Errorf("dave's item after the pre-approved request: %s, want to", it)
		}
		dave.expect("alice's presence after the approval", isPresence(alice.full(), ""))
		it = pushItem(t, alice, alice.expect("alice's push after dave's request", isPush("dave@localhost")))
		if it.attr("subscription") != "from" || it.attr("approved") != "" {
			t.Errorf("alice's item after dave's request: %s, want from without approved", it)
		}
		alice.expectNone("dave's request (pre-approved, not shown)", isPresence("dave@localhost", "subscribe"))

		// §3.1.3: a request to an account that does not exist is answered
		// with 'unsubscribed' on its behalf, which ends the pending state.
		alice.send(`<presence to='nobody@localhost' type='subscribe'/>`)
		alice.expect("'unsubscribed' for a nonexistent contact", isPresence("nobody@localhost", "unsubscribed"))
		alice.sync()
		if it := rosterItems(rosterGet(t, alice, nil))["nobody@localhost"]; it == nil || it.attr("ask") != "" || it.attr("subscription") != "none" {
			t.Errorf("item for a nonexistent contact after its 'unsubscribed': %v, want subscription='none' without ask", it)
		}

		// §3.1.3: a request to an offline user is kept and delivered when
		// she next sends available presence.
		// The request goes to a full JID; the server addresses the bare JID
		// and keys the roster item by it (§3.1.2).
		alice.send(`<presence to='erin@localhost/phone' type='subscribe'/>`)
		alice.expect("push of the request to erin's bare JID", isPush("erin@localhost"))
		alice.sync()
		erin := dialIM(t, srv.Server, "erin", "pw-erin", "e")
		if q := rosterGet(t, erin, nil); len(rosterItems(q)) != 0 {
			t.Errorf("an inbound request put an item on erin's roster: %s", q)
		}
		erin.sendPresence("")
		erin.expect("the stored request from alice", isPresence("alice@localhost", "subscribe"))
		erin.send(`<presence to='alice@localhost' type='subscribed'/>`)
		it = pushItem(t, alice, alice.expect("push after erin approved", isPush("erin@localhost")))
		if it.attr("subscription") != "to" {
			t.Errorf("alice's item after erin approved: %s, want to", it)
		}
		alice.expect("erin's presence", isPresence(erin.full(), ""))
	})
}

// TestIMPresence checks presence broadcast and probes (RFC 6121 §4.2–§4.5),
// directed presence (§4.6) and its end when the sender's connection is
// lost, and that nothing reaches a non-contact.
func TestIMPresence(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startIMServer(t, b, imOptions{Users: users("alice", "bob", "eve")})
		alice := online(t, srv.Server, "alice", "a", "3")
		bob := online(t, srv.Server, "bob", "b1", "")
		eve := online(t, srv.Server, "eve", "e", "")
		subscribeBoth(t, alice, bob)

		// §4.2/§4.3: a new resource of bob probes his contacts and sees
		// alice, who was online before it logged in, with her priority.
		bob2 := online(t, srv.Server, "bob", "b2", "")
		p := bob2.expect("alice's presence answering the probe", isPresence(alice.full(), ""))
		if pr := p.child(nsClient, "priority"); pr == nil || strings.TrimSpace(pr.Text) != "3" {
			t.Errorf("probe answer %s lacks alice's <priority>3</priority>", p)
		}
		// §4.2.2: alice receives the new resource's initial presence, and
		// so does bob's other resource; the new resource learns of it.
		alice.expect("bob2's initial presence", isPresence(bob2.full(), ""))
		bob.expect("the initial presence of bob's other resource", isPresence(bob2.full(), ""))
		bob2.expect("the presence of bob's other resource", isPresence(bob.full(), ""))
		bob2.expect("its own initial presence (§4.2.2)", isPresence(bob2.full(), ""))
		// §4.4: subsequent presence reaches the subscribers.
		alice.send(`<presence><show>dnd</show><status>busy</status><priority>3</priority></presence>`)
		alice.sync()
		for _, c := range []*imClient{bob, bob2} {
			e := c.expect("alice's subsequent presence", isPresence(alice.full(), ""))
			if s := e.child(nsClient, "show"); s == nil || s.Text != "dnd" {
				t.Errorf("%s: alice's presence %s lacks <show>dnd</show>", c.name, e)
			}
		}
		// Nothing of alice's broadcast reaches eve, who is not a contact.
		eve.expectNone("alice's broadcast presence (eve is no contact)", isPresenceFromUser("alice@localhost"))

		// §4.6: directed presence to a non-contact reaches her, and so does
		// the unavailable presence when alice's connection breaks.
		alice.send(`<presence to='eve@localhost'><status>psst</status></presence>`)
		alice.sync()
		eve.expect("alice's directed presence", isPresence(alice.full(), ""))
		alice.drop()
		eve.expect("unavailable after alice's connection broke (§4.6.3)", isPresence(alice.full(), "unavailable"))
		// §4.5.3: the broadcast of the lost session's unavailable presence.
		bob.expect("alice's unavailable after her connection broke", isPresence(alice.full(), "unavailable"))
		bob2.expect("alice's unavailable after her connection broke", isPresence(alice.full(), "unavailable"))

		// A new login of alice sees bob's resources through her probe; eve,
		// who got only directed presence before, gets nothing now.
		alice2 := online(t, srv.Server, "alice", "a2", "")
		alice2.expect("bob's presence answering the probe", isPresence(bob.full(), ""))
		alice2.expect("bob2's presence answering the probe", isPresence(bob2.full(), ""))
		eve.expectNone("alice's new broadcast (eve is no contact)", isPresenceFromUser("alice@localhost"))

		// §4.5.2: an orderly unavailable is broadcast as well, and reaches
		// the targets of directed presence (§4.6.3).
		bob2.send(`<presence to='eve@localhost'/>`)
		bob2.sync()
		eve.expect("bob2's directed presence", isPresence(bob2.full(), ""))
		bob2.send(`<presence type='unavailable'/>`)
		bob2.sync()
		alice2.expect("bob2's unavailable", isPresence(bob2.full(), "unavailable"))
		eve.expect("bob2's unavailable after directed presence", isPresence(bob2.full(), "unavailable"))
		// eve probing is dropped: presence of type probe from a client is
		// the server's business (§4.3), and she gets nothing of alice.
		eve.send(`<presence type='probe' to='alice@localhost'/>`)
		eve.sync()
		eve.expectNone("presence of alice after a client probe", isPresenceFromUser("alice@localhost"))
	})
}

// TestIMMessages checks message delivery of RFC 6121 §8.5 and offline
// storage (XEP-0160) with a small per-user limit.
func TestIMMessages(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		const limit = 3
		srv := startIMServer(t, b, imOptions{Users: users("alice", "bob", "carol", "dan", "fay", "gus"), MaxOffline: limit})
		alice := online(t, srv.Server, "alice", "a", "")
		msg := func(to, typ, body string) string {
			return fmt.Sprintf(`<message to='%s' type='%s' id='%s'><body>%s</body></message>`, to, typ, body, body)
		}
		noError := func(what string) {
			t.Helper()
			alice.expectNone("an error for "+what, func(e *element) bool { return e.attr("type") == "error" })
		}

		// §8.5.2.1.1: of two resources with different priorities, the
		// highest gets a message to the bare JID.
		hi := online(t, srv.Server, "bob", "hi", "5")
		lo := online(t, srv.Server, "bob", "lo", "1")
		alice.send(msg("bob@localhost", "chat", "prio"))
		alice.sync()
		hi.expect("the message to bob's bare JID", isMessageBody("prio"))
		lo.expectNone("the message that went to the higher priority", isMessageBody("prio"))

		// §8.5.3.2.1: to a full JID of a resource that is not online, a
		// chat message is treated as sent to the bare JID.
		alice.send(msg("bob@localhost/gone", "chat", "to-gone"))
		alice.sync()
		hi.expect("the message to bob's missing resource", isMessageBody("to-gone"))
		lo.expectNone("the message for the missing resource at lower priority", isMessageBody("to-gone"))
		noError("a message to a missing resource")

		// §8.5.2.1.2: a headline to the bare JID goes to every resource with
		// a non-negative priority.
		alice.send(msg("bob@localhost", "headline", "news-all"))
		alice.sync()
		hi.expect("a headline to bob's bare JID", isMessageBody("news-all"))
		lo.expect("a headline to bob's bare JID", isMessageBody("news-all"))

		// §8.5.2.1.3: a groupchat message to a bare JID is not delivered
		// to any resource; the sender gets an error (service-unavailable).
		alice.send(msg("bob@localhost", "groupchat", "gc-bare"))
		alice.sync()
		hi.expectNone("a groupchat message to the bare JID (§8.5.2.1.3)", isMessageBody("gc-bare"))
		lo.expectNone("a groupchat message to the bare JID (§8.5.2.1.3)", isMessageBody("gc-bare"))
		if errs := alice.all(func(e *element) bool { return e.attr("type") == "error" && e.attr("id") == "gc-bare" }); len(errs) == 0 {
			t.Errorf("no error returned for a groupchat message to a bare JID (§8.5.2.1.3 requires one)")
		}

		// §8.5.3.2.1: to a full JID with no matching resource, messages of
		// type normal, groupchat and headline are ignored or answered with an
		// error; only chat may be redirected to the bare JID.
		for _, typ := range []string{"normal", "headline", "groupchat"} {
			body := "gone-" + typ
			alice.send(msg("bob@localhost/gone", typ, body))
			alice.sync()
			hi.expectNone("a "+typ+" message addressed to the missing resource bob@localhost/gone (§8.5.3.2.1)", isMessageBody(body))
			lo.expectNone("a "+typ+" message addressed to the missing resource bob@localhost/gone (§8.5.3.2.1)", isMessageBody(body))
			alice.all(func(e *element) bool { return e.attr("id") == body })
		}

		// Equal priorities: the server delivers to one or to all of them
		// (§8.5.2.1.1 allows both), but at least one gets it and none twice.
		lo.sendPresence("5")
		alice.send(msg("bob@localhost", "normal", "equal"))
		alice.sync()
		hi.sync()
		nHi, nLo := len(hi.all(isMessageBody("equal"))), len(lo.all(isMessageBody("equal")))
		if nHi+nLo == 0 {
			t.Errorf("a message to bob's bare JID with two resources of priority 5 reached neither")
		}
		if nHi > 1 || nLo > 1 {
			t.Errorf("a message to bob's bare JID was delivered %d and %d times to his two resources", nHi, nLo)
		}

		// §8.5.2.1.1: a resource with negative priority gets no message to
		// the bare JID; with no other resource, the message is stored, and
		// arrives with a <delay/> once the resource has a non-negative
		// priority.
		neg := online(t, srv.Server, "carol", "neg", "-1")
		alice.send(msg("carol@localhost", "chat", "negative"))
		alice.sync()
		neg.expectNone("a message to the bare JID at priority -1", isMessageBody("negative"))
		noError("a message to a user at negative priority")
		neg.sendPresence("0")
		m := neg.expect("the stored message once the priority is 0", isMessageBody("negative"))
		checkDelay(t, m)

		// The same session goes unavailable (staying connected) and later
		// available again: what was stored meanwhile arrives then, since
		// XEP-0160 delivers at the user's next available presence.
		neg.send(`<presence type='unavailable'/>`)
		neg.sync()
		alice.send(msg("carol@localhost", "chat", "while-unavailable"))
		alice.sync()
		noError("a message to a user whose only session is unavailable")
		neg.expectNone("a message while unavailable", isMessageBody("while-unavailable"))
		neg.sendPresence("1")
		if got := neg.all(isMessageBody("while-unavailable")); len(got) != 1 {
			t.Errorf("the session received %d copies of the message stored while it was unavailable, once it was available again; want 1 (XEP-0160 §4: delivery at the next available presence)", len(got))
		}
		// Likewise after its priority dropped below zero and came back.
		neg.sendPresence("-5")
		alice.send(msg("carol@localhost", "chat", "while-negative"))
		alice.sync()
		neg.expectNone("a message to the bare JID at priority -5", isMessageBody("while-negative"))
		neg.sendPresence("2")
		if got := neg.all(isMessageBody("while-negative")); len(got) != 1 {
			t.Errorf("the session received %d copies of the message stored while its priority was negative, once it was 2 again; want 1", len(got))
		}

		// §8.5.2.2.1 and XEP-0160: a message to an offline user is stored
		// and delivered with a delay stamp at her next available presence.
		// The store holds `limit` messages; one more is refused with
		// service-unavailable. A headline is never stored (§8.5.2.2.1).
		for i := 0; i < limit; i++ {
			alice.send(msg("dan@localhost", "chat", fmt.Sprintf("off-%d", i)))
		}
		alice.send(`<message to='dan@localhost' type='headline'><body>headline</body></message>`)
		alice.sync()
		noError("messages within the offline limit and a headline")
		alice.send(msg("dan@localhost", "chat", "over"))
		e := alice.expect("the error for a message over the offline limit", func(e *element) bool {
			return e.XMLName.Local == "message" && e.attr("type") == "error"
		})
		if _, cond := stanzaError(e); cond != "service-unavailable" {
			t.Errorf("over the offline limit: %s, want service-unavailable", e)
		}
		if e.attr("from") != "dan@localhost" || e.attr("id") != "over" {
			t.Errorf("error %s, want from='dan@localhost' id='over'", e)
		}
		before := time.Now().UTC().Add(-time.Minute)
		dan := dialIM(t, srv.Server, "dan", "pw-dan", "d")
		dan.sendPresence("")
		for i := 0; i < limit; i++ {
			m := dan.expect("stored message", isMessageBody(fmt.Sprintf("off-%d", i)))
			if m.attr("from") != alice.full() || m.attr("type") != "chat" {
				t.Errorf("stored message %s, want from %s type chat", m, alice.full())
			}
			if st := checkDelay(t, m); !st.IsZero() && st.Before(before.Truncate(time.Second)) {
				t.Errorf("delay stamp %v is older than the test", st)
			}
		}
		dan.expectNone("a stored headline", isMessageBody("headline"))
		dan.expectNone("a message over the offline limit", isMessageBody("over"))
		// Delivered messages are gone from the store: a new session of
		// dan gets nothing again.
		dan2 := dialIM(t, srv.Server, "dan", "pw-dan", "d2")
		dan2.sendPresence("")
		dan2.expectNone("an offline message delivered twice", func(e *element) bool { return e.XMLName.Local == "message" })

		// RFC 6121 §8.5.1: to an account that does not exist, chat and normal
		// messages get service-unavailable; a headline is dropped silently.
		for _, typ := range []string{"chat", "normal"} {
			alice.send(msg("nobody@localhost", typ, "ghost-"+typ))
			e := alice.expect("the error for a message to a nonexistent user", func(e *element) bool {
				return e.XMLName.Local == "message" && e.attr("type") == "error" && e.attr("id") == "ghost-"+typ
			})
			if _, cond := stanzaError(e); cond != "service-unavailable" {
				t.Errorf("message type %s to a nonexistent user: %s, want service-unavailable", typ, e)
			}
		}
		alice.send(`<message to='nobody@localhost' type='headline' id='ghost-headline'><body>x</body></message>`)
		alice.sync()
		noError("a headline to a nonexistent user")

		// A headline to an offline user is neither stored nor bounced.
		alice.send(`<message to='fay@localhost' type='headline'><body>news</body></message>`)
		alice.sync()
		noError("a headline to an offline user")
		fay := dialIM(t, srv.Server, "fay", "pw-fay", "f")
		fay.sendPresence("")
		fay.expectNone("a headline stored while offline", isMessageBody("news"))
	})
}

// checkDelay checks the XEP-0203 stamp of a message delivered from offline
// storage and returns its time.
func checkDelay(t *testing.T, m *element) time.Time {
	t.Helper()
	d := m.child(nsDelay, "delay")
	if d == nil {
		t.Errorf("offline message %s lacks <delay xmlns='%s'/>", m, nsDelay)
		return time.Time{}
	}
	if d.attr("from") != testDomain {
		t.Errorf("delay %s, want from='%s'", d, testDomain)
	}
	st, err := time.Parse(time.RFC3339, d.attr("stamp"))
	if err != nil {
		t.Errorf("delay stamp %q is not an XEP-0082 date-time: %v", d.attr("stamp"), err)
	}
	return st
}
