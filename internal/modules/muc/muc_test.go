package muc_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"impetus/internal/module"
	"impetus/internal/modules/muc"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/stanza"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

const (
	domain = "example.com"
	conf   = "conference.example.com"
	room   = "room@conference.example.com"
)

// testServer is a core hosting example.com (roster, presence, offline) and a MUC service.
type testServer struct {
	*rostertest.Server
	svc *muc.Service

	mu  sync.Mutex // guards now, which the service's expiry sweep reads too
	now time.Time
}

func (ts *testServer) advance(d time.Duration) {
	ts.mu.Lock()
	ts.now = ts.now.Add(d)
	ts.mu.Unlock()
}

func newServer(t *testing.T, backend storage.Backend, mod func(*muc.Options)) *testServer {
	t.Helper()
	srv := rostertest.New(t, backend, rostertest.Config{}, domain)
	ts := &testServer{Server: srv, now: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)}
	ts.addService(t, mod)
	return ts
}

// addService provisions a MUC service on the conference domain, replacing any earlier one, as
// a restart of the server would.
func (ts *testServer) addService(t *testing.T, mod func(*muc.Options)) {
	t.Helper()
	o := muc.DefaultOptions()
	o.LocalDomains = []string{domain}
	o.Now = func() time.Time {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return ts.now
	}
	if mod != nil {
		mod(&o)
	}
	h := module.NewHost(conf, ts.Router, ts.Core, ts.Storage, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ts.svc = muc.New(o)
	if err := ts.svc.Provision(h); err != nil {
		t.Fatal(err)
	}
	svc := ts.svc
	t.Cleanup(func() { _ = svc.Stop() })
	ts.Core.AddHost(h)
	ts.Hosts[conf] = h
}

// client is a connected, available session.
type client struct {
	*rostertest.Session
	t   *testing.T
	jid string
}

func (ts *testServer) client(t *testing.T, full string) *client {
	s := ts.Connect(full)
	s.Input(`<presence/>`)
	s.Take()
	return &client{Session: s, t: t, jid: full}
}

// join enters room/nick and returns everything the join produced.
func (c *client) join(nick string, extra string) []*stanza.Element {
	c.Input(`<presence to='` + room + `/` + nick + `'><x xmlns='http://jabber.org/protocol/muc'>` + extra + `</x></presence>`)
	return c.Elements()
}

// create makes the room as its owner and accepts the default configuration (instant room).
func (c *client) create(nick string) {
	c.t.Helper()
	got := c.join(nick, "")
	if p := find(got, "presence", ""); p == nil || !hasStatus(p, "201") || !hasStatus(p, "110") {
		c.t.Fatalf("creation presence: %s", dump(got))
	}
	c.Input(`<iq type='set' id='inst' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`)
	if r := find(c.Elements(), "iq", "result"); r == nil {
		c.t.Fatal("instant room not accepted")
	}
}

func (c *client) iq(xml string) *stanza.Element {
	c.t.Helper()
	c.Input(xml)
	got := c.Elements()
	for _, el := range got {
		if el.Local == "iq" {
			return el
		}
	}
	c.t.Fatalf("no iq response to %s; got %s", xml, dump(got))
	return nil
}

func find(els []*stanza.Element, local, typ string) *stanza.Element {
	for _, el := range els {
		if el.Local == local && (typ == "" || el.Attr("type") == typ) {
			return el
		}
	}
	return nil
}

func findFrom(els []*stanza.Element, local, from string) *stanza.Element {
	for _, el := range els {
		if el.Local == local && el.Attr("from") == from {
			return el
		}
	}
	return nil
}

func findTyped(els []*stanza.Element, local, from, typ string) *stanza.Element {
	for _, el := range els {
		if el.Local == local && el.Attr("from") == from && el.Attr("type") == typ {
			return el
		}
	}
	return nil
}

func hasStatus(el *stanza.Element, code string) bool {
	x := el.Child(muc.NSUser, "x")
	if x == nil {
		return false
	}
	for s := range x.Elements() {
		if s.Local == "status" && s.Attr("code") == code {
			return true
		}
	}
	return false
}

func item(el *stanza.Element) *stanza.Element {
	if x := el.Child(muc.NSUser, "x"); x != nil {
		return x.Child(muc.NSUser, "item")
	}
	return nil
}

func errCond(el *stanza.Element) string {
	if e := stanza.ParseError(el); e != nil {
		return e.Condition
	}
	return ""
}

func dump(els []*stanza.Element) string {
	var b strings.Builder
	for _, el := range els {
		b.WriteString(el.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestCreateJoinAndTalk(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")

	// A locked room admits nobody but its owner.
	got := alice.join("Alice", "")
	if p := find(got, "presence", ""); p == nil || item(p).Attr("affiliation") != "owner" || item(p).Attr("role") != "moderator" {
		t.Fatalf("owner presence: %s", dump(got))
	}
	got = bob.join("Bob", "")
	if e := find(got, "presence", "error"); e == nil || errCond(e) != "item-not-found" {
		t.Fatalf("join of a locked room: %s", dump(got))
	}
	alice.Input(`<iq type='set' id='inst' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`)
	alice.Elements()

	got = bob.join("Bob", "")
	// Bob sees Alice, then himself with 110 (and 170: the room is archived), then the subject.
	if len(got) != 3 || got[0].Attr("from") != room+"/Alice" || got[1].Attr("from") != room+"/Bob" || !hasStatus(got[1], "110") || !hasStatus(got[1], "170") {
		t.Fatalf("join: %s", dump(got))
	}
	if item(got[0]).Attr("jid") != "" {
		t.Errorf("semi-anonymous room showed a real JID to a participant: %s", got[0])
	}
	if got[2].Child(stanza.NSClient, "subject") == nil {
		t.Errorf("no subject at the end of the join: %s", got[2])
	}
	// Alice, a moderator, sees Bob's real JID.
	got = alice.Elements()
	if p := findFrom(got, "presence", room+"/Bob"); p == nil || item(p).Attr("jid") != "bob@example.com/b" {
		t.Fatalf("moderator view of the join: %s", dump(got))
	}

	// A nickname in use by someone else conflicts.
	carol := ts.client(t, "carol@example.com/c")
	if e := find(carol.join("Bob", ""), "presence", "error"); e == nil || errCond(e) != "conflict" {
		t.Fatal("nick conflict not reported")
	}

	// Groupchat: everyone gets it with one stanza-id; it is kept for history.
	bob.Input(`<message type='groupchat' to='` + room + `' id='m1'><body>hello</body></message>`)
	var sid string
	for _, c := range []*client{alice, bob} {
		m := find(c.Elements(), "message", "groupchat")
		if m == nil || m.Attr("from") != room+"/Bob" || m.Attr("id") != "m1" {
			t.Fatalf("%s did not get the message", c.jid)
		}
		s := m.Child(muc.NSSID, "stanza-id")
		if s == nil || s.Attr("by") != room || (sid != "" && s.Attr("id") != sid) {
			t.Fatalf("stanza-id: %s", m)
		}
		sid = s.Attr("id")
	}
	// XEP-0421: the room stamps its own occupant id, the same in presence and messages, and
	// drops one a client made up.
	bob.Input(`<message type='groupchat' to='` + room + `' id='m2'><body>again</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>`)
	m2 := find(alice.Elements(), "message", "groupchat")
	bob.Elements()
	var ids []string
	for c := range m2.Elements() {
		if c.Space == muc.NSOccupant {
			ids = append(ids, c.Attr("id"))
		}
	}
	if len(ids) != 1 || ids[0] == "forged" || ids[0] == "" {
		t.Fatalf("occupant ids of a message: %q", ids)
	}
	bob.Input(`<presence to='` + room + `/Bob'><status>busy</status></presence>`)
	if p := findFrom(alice.Elements(), "presence", room+"/Bob"); p == nil || p.Child(muc.NSOccupant, "occupant-id").Attr("id") != ids[0] {
		t.Fatal("occupant id of presence differs from that of messages")
	}
	bob.Elements()
	// A non-occupant may not send to the room.
	carol.Input(`<message type='groupchat' to='` + room + `'><body>x</body></message>`)
	if e := find(carol.Elements(), "message", "error"); e == nil || errCond(e) != "not-acceptable" {
		t.Fatal("non-occupant groupchat accepted")
	}

	// Carol joins with another nick and gets the history with a delay, then the subject.
	ts.advance(time.Minute)
	got = carol.join("Carol", "<history maxstanzas='5'/>")
	h := findFrom(got, "message", room+"/Bob")
	if h == nil || h.Child(stanza.NSDelay, "delay") == nil || h.Child(stanza.NSClient, "body").Text() != "hello" {
		t.Fatalf("history: %s", dump(got))
	}
	// A nick change from the same session: the room announces 303 and the new nick.
	carol.join("Carol2", "")
	for _, c := range []*client{alice, bob} {
		got := c.Elements()
		if p := findTyped(got, "presence", room+"/Carol", "unavailable"); p == nil || !hasStatus(p, "303") || item(p).Attr("nick") != "Carol2" {
			t.Fatalf("%s: nick change: %s", c.jid, dump(got))
		}
	}
	// History with maxstanzas=0 sends none.
	dave := ts.client(t, "dave@example.com/d")
	if h := findFrom(dave.join("Dave", "<history maxstanzas='0'/>"), "message", room+"/Bob"); h != nil {
		t.Fatal("history sent despite maxstanzas=0")
	}

	// Private message through the room, with the muc#user marker.
	bob.Input(`<message type='chat' to='` + room + `/Alice' id='pm'><body>psst</body></message>`)
	pm := find(alice.Elements(), "message", "chat")
	if pm == nil || pm.Attr("from") != room+"/Bob" || pm.Child(muc.NSUser, "x") == nil {
		t.Fatalf("private message: %v", pm)
	}
	bob.Input(`<message type='chat' to='` + room + `/Nobody'><body>psst</body></message>`)
	if e := find(bob.Elements(), "message", "error"); e == nil || errCond(e) != "item-not-found" {
		t.Fatal("private message to a missing nick accepted")
	}

	// Subject: participants may not change it by default, moderators may.
	bob.Input(`<message type='groupchat' to='` + room + `'><subject>mine</subject></message>`)
	if e := find(bob.Elements(), "message", "error"); e == nil || errCond(e) != "forbidden" {
		t.Fatal("participant changed the subject")
	}
	alice.Input(`<message type='groupchat' to='` + room + `'><subject>Topic</subject></message>`)
	if m := find(bob.Elements(), "message", "groupchat"); m == nil || m.Child(stanza.NSClient, "subject").Text() != "Topic" {
		t.Fatal("subject change not broadcast")
	}

	// Leaving: everyone sees unavailable; the leaver gets 110.
	dave.Input(`<presence type='unavailable' to='` + room + `/Dave'/>`)
	if p := find(dave.Elements(), "presence", "unavailable"); p == nil || !hasStatus(p, "110") {
		t.Fatal("leaver got no self-presence")
	}
	if p := findFrom(bob.Elements(), "presence", room+"/Dave"); p == nil || p.Attr("type") != "unavailable" {
		t.Fatal("leave not broadcast")
	}
}

func TestKickBanVoiceAndLists(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")
	carol := ts.client(t, "carol@example.com/c")
	alice.create("Alice")
	bob.join("Bob", "")
	carol.join("Carol", "")
	alice.Elements()
	bob.Elements()

	// A participant may not kick.
	if r := bob.iq(`<iq type='set' id='k0' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Carol' role='none'/></query></iq>`); errCond(r) != "forbidden" {
		t.Fatalf("participant kick: %s", r)
	}
	// The moderator kicks Carol: 307 with actor and reason, to everyone and to Carol.
	if r := alice.iq(`<iq type='set' id='k1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Carol' role='none'><reason>bye</reason></item></query></iq>`); r.Attr("type") != "result" {
		t.Fatalf("kick: %s", r)
	}
	got := carol.Elements()
	if p := find(got, "presence", "unavailable"); p == nil || !hasStatus(p, "307") || !hasStatus(p, "110") || item(p).Child(muc.NSUser, "reason").Text() != "bye" {
		t.Fatalf("kicked occupant: %s", dump(got))
	}
	if p := findFrom(bob.Elements(), "presence", room+"/Carol"); p == nil || !hasStatus(p, "307") {
		t.Fatal("kick not broadcast")
	}
	// The room's owner cannot be kicked.
	if r := alice.iq(`<iq type='set' id='k2' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Alice' role='none'/></query></iq>`); errCond(r) != "not-allowed" {
		t.Fatalf("kicking an owner: %s", r)
	}

	// Ban Bob: 301, and he cannot come back.
	if r := alice.iq(`<iq type='set' id='b1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='bob@example.com' affiliation='outcast'/></query></iq>`); r.Attr("type") != "result" {
		t.Fatalf("ban: %s", r)
	}
	if p := find(bob.Elements(), "presence", "unavailable"); p == nil || !hasStatus(p, "301") {
		t.Fatal("ban presence missing")
	}
	if e := find(bob.join("Bob", ""), "presence", "error"); e == nil || errCond(e) != "forbidden" {
		t.Fatal("banned user entered")
	}
	r := alice.iq(`<iq type='get' id='l1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query></iq>`)
	if it := r.FirstElement().FirstElement(); it == nil || it.Attr("jid") != "bob@example.com" {
		t.Fatalf("outcast list: %s", r)
	}
	r = alice.iq(`<iq type='get' id='l2' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='owner'/></query></iq>`)
	if it := r.FirstElement().FirstElement(); it == nil || it.Attr("jid") != "alice@example.com" {
		t.Fatalf("owner list: %s", r)
	}
	// The last owner cannot step down.
	if r := alice.iq(`<iq type='set' id='o1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='alice@example.com' affiliation='member'/></query></iq>`); errCond(r) != "conflict" {
		t.Fatalf("last owner removal: %s", r)
	}

	// Moderated room: newcomers are visitors without voice until granted.
	r = alice.iq(`<iq type='set' id='c1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field><field var='muc#roomconfig_moderatedroom'><value>1</value></field></x></query></iq>`)
	if r.Attr("type") != "result" {
		t.Fatalf("config: %s", r)
	}
	carol.join("Carol", "")
	carol.Input(`<message type='groupchat' to='` + room + `'><body>hi</body></message>`)
	if e := find(carol.Elements(), "message", "error"); e == nil || errCond(e) != "forbidden" {
		t.Fatal("visitor spoke in a moderated room")
	}
	alice.Elements()
	if r := alice.iq(`<iq type='set' id='v1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Carol' role='participant'/></query></iq>`); r.Attr("type") != "result" {
		t.Fatalf("voice: %s", r)
	}
	if p := find(carol.Elements(), "presence", ""); p == nil || item(p).Attr("role") != "participant" {
		t.Fatal("voice grant not announced")
	}
	carol.Input(`<message type='groupchat' to='` + room + `'><body>now I speak</body></message>`)
	if m := find(alice.Elements(), "message", "groupchat"); m == nil {
		t.Fatal("voiced participant not heard")
	}
	r = alice.iq(`<iq type='get' id='l3' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item role='participant'/></query></iq>`)
	if it := r.FirstElement().FirstElement(); it == nil || it.Attr("nick") != "Carol" {
		t.Fatalf("participant list: %s", r)
	}
}

func TestMembersOnlyPasswordAndInvites(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")
	carol := ts.client(t, "carol@example.com/c")
	alice.create("Alice")
	r := alice.iq(`<iq type='set' id='c1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_membersonly'><value>1</value></field><field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field><field var='muc#roomconfig_roomsecret'><value>pw</value></field></x></query></iq>`)
	if r.Attr("type") != "result" {
		t.Fatalf("config: %s", r)
	}
	if e := find(bob.join("Bob", ""), "presence", "error"); e == nil || errCond(e) != "registration-required" {
		t.Fatal("non-member entered a members-only room")
	}
	// A mediated invitation from the owner makes Bob a member and carries the password.
	alice.Input(`<message to='` + room + `'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='bob@example.com'><reason>join us</reason></invite></x></message>`)
	inv := find(bob.Elements(), "message", "")
	if inv == nil || inv.Attr("from") != room {
		t.Fatal("invitation not delivered")
	}
	x := inv.Child(muc.NSUser, "x")
	if x.Child(muc.NSUser, "invite").Attr("from") != "alice@example.com" || x.Child(muc.NSUser, "password").Text() != "pw" {
		t.Fatalf("invitation: %s", inv)
	}
	if e := find(bob.join("Bob", ""), "presence", "error"); e == nil || errCond(e) != "not-authorized" {
		t.Fatal("entered without the password")
	}
	if p := findFrom(bob.join("Bob", "<password>pw</password>"), "presence", room+"/Bob"); p == nil || item(p).Attr("affiliation") != "member" {
		t.Fatal("member with password not admitted")
	}
	// Carol declines an invitation; Alice hears of it.
	carol.Input(`<message to='` + room + `'><x xmlns='http://jabber.org/protocol/muc#user'><decline to='alice@example.com'><reason>busy</reason></decline></x></message>`)
	if d := find(alice.Elements(), "message", ""); d == nil || d.Child(muc.NSUser, "x").Child(muc.NSUser, "decline").Attr("from") != "carol@example.com" {
		t.Fatal("decline not relayed")
	}
	// A XEP-0249 direct invitation goes from user to user untouched.
	alice.Input(`<message to='carol@example.com'><x xmlns='jabber:x:conference' jid='` + room + `' password='pw' reason='hi'/></message>`)
	if m := find(carol.Elements(), "message", ""); m == nil || m.Child("jabber:x:conference", "x").Attr("jid") != room {
		t.Fatal("direct invitation not delivered")
	}
	// Revoking membership removes Bob with 321.
	alice.Elements()
	if r := alice.iq(`<iq type='set' id='m1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='bob@example.com' affiliation='none'/></query></iq>`); r.Attr("type") != "result" {
		t.Fatalf("revoke: %s", r)
	}
	if p := find(bob.Elements(), "presence", "unavailable"); p == nil || !hasStatus(p, "321") {
		t.Fatal("revoked member not removed")
	}
}

func TestConfigFormDiscoAndDestroy(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")
	alice.join("Alice", "")
	// The owner gets the form of a locked room.
	r := alice.iq(`<iq type='get' id='f1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>`)
	form := r.FirstElement().Child("jabber:x:data", "x")
	var vars []string
	for f := range form.Elements() {
		vars = append(vars, f.Attr("var"))
	}
	for _, want := range []string{"muc#roomconfig_roomname", "muc#roomconfig_persistentroom", "muc#roomconfig_publicroom", "muc#roomconfig_membersonly", "muc#roomconfig_moderatedroom", "muc#roomconfig_passwordprotectedroom", "muc#roomconfig_whois", "muc#roomconfig_maxusers", "muc#roomconfig_changesubject", "muc#roomconfig_allowinvites", "muc#roomconfig_enablelogging", "muc#roomconfig_allowpm", "muc#roomconfig_roomowners"} {
		if !slices.Contains(vars, want) {
			t.Errorf("form lacks %s", want)
		}
	}
	r = alice.iq(`<iq type='set' id='f2' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_roomname'><value>The Room</value></field><field var='muc#roomconfig_whois'><value>anyone</value></field><field var='muc#roomconfig_publicroom'><value>1</value></field></x></query></iq>`)
	if r.Attr("type") != "result" {
		t.Fatalf("submit: %s", r)
	}
	// A non-owner may not configure.
	bob.join("Bob", "")
	if r := bob.iq(`<iq type='get' id='f3' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>`); errCond(r) != "forbidden" {
		t.Fatalf("non-owner config: %s", r)
	}
	// Room disco shows the name and the features of the configuration.
	r = bob.iq(`<iq type='get' id='d1' to='` + room + `'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	s := r.String()
	for _, want := range []string{`name="The Room"`, "muc_nonanonymous", "muc_temporary", "muc_public", "urn:xmpp:mam:2", "urn:xmpp:message-moderate:0", "muc#self-ping-optimization", "muc#roominfo"} {
		if !strings.Contains(s, want) {
			t.Errorf("room disco lacks %s: %s", want, s)
		}
	}
	// Service disco lists the public room and names the service.
	r = bob.iq(`<iq type='get' id='d2' to='` + conf + `'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if it := r.FirstElement().FirstElement(); it == nil || it.Attr("jid") != room || it.Attr("name") != "The Room" {
		t.Fatalf("service items: %s", r)
	}
	r = bob.iq(`<iq type='get' id='d3' to='` + conf + `'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if !strings.Contains(r.String(), `category="conference"`) || !strings.Contains(r.String(), muc.NSMUC) {
		t.Fatalf("service info: %s", r)
	}
	// Destroy with an alternate venue.
	bob.Elements()
	r = alice.iq(`<iq type='set' id='x1' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy jid='other@conference.example.com'><reason>moved</reason></destroy></query></iq>`)
	if r.Attr("type") != "result" {
		t.Fatalf("destroy: %s", r)
	}
	p := find(bob.Elements(), "presence", "unavailable")
	if p == nil || p.Child(muc.NSUser, "x").Child(muc.NSUser, "destroy").Attr("jid") != "other@conference.example.com" {
		t.Fatal("destroy presence missing the venue")
	}
	if r := bob.iq(`<iq type='get' id='d4' to='` + room + `'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`); errCond(r) != "item-not-found" {
		t.Fatalf("destroyed room still answers: %s", r)
	}
}

func TestSelfPingAndIQRelay(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")
	carol := ts.client(t, "carol@example.com/c")
	alice.create("Alice")
	bob.join("Bob", "")
	// XEP-0410: a joined occupant's self-ping is answered by the room; others are not joined.
	if r := bob.iq(`<iq type='get' id='p1' to='` + room + `/Bob'><ping xmlns='urn:xmpp:ping'/></iq>`); r.Attr("type") != "result" || r.Attr("from") != room+"/Bob" {
		t.Fatalf("self-ping: %s", r)
	}
	if r := carol.iq(`<iq type='get' id='p2' to='` + room + `/Bob'><ping xmlns='urn:xmpp:ping'/></iq>`); errCond(r) != "not-acceptable" {
		t.Fatalf("self-ping of a non-occupant: %s", r)
	}
	// An iq to another occupant is relayed and its answer comes back under the original id.
	alice.Elements()
	bob.Input(`<iq type='get' id='v1' to='` + room + `/Alice'><query xmlns='jabber:iq:version'/></iq>`)
	fwd := find(alice.Elements(), "iq", "get")
	if fwd == nil || fwd.Attr("from") != room+"/Bob" || fwd.Attr("id") == "v1" {
		t.Fatalf("relayed iq: %v", fwd)
	}
	alice.Input(`<iq type='result' id='` + fwd.Attr("id") + `' to='` + room + `/Bob'><query xmlns='jabber:iq:version'><name>x</name></query></iq>`)
	if r := find(bob.Elements(), "iq", "result"); r == nil || r.Attr("id") != "v1" || r.Attr("from") != room+"/Alice" {
		t.Fatalf("relayed answer: %v", r)
	}
}

func TestArchiveAndModeration(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")
	carol := ts.client(t, "carol@example.com/c")
	alice.create("Alice")
	bob.join("Bob", "")
	var sids []string
	for _, body := range []string{"one", "two", "spam"} {
		ts.advance(time.Second)
		bob.Input(`<message type='groupchat' to='` + room + `'><body>` + body + `</body></message>`)
		m := find(bob.Elements(), "message", "groupchat")
		sids = append(sids, m.Child(muc.NSSID, "stanza-id").Attr("id"))
	}
	alice.Elements()
	// A non-occupant may read an open room's archive; real JIDs are hidden from him.
	carol.Input(`<iq type='set' id='q1' to='` + room + `'><query xmlns='urn:xmpp:mam:2' queryid='x'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></query></iq>`)
	got := carol.Elements()
	if len(got) != 3 || got[2].Attr("type") != "result" {
		t.Fatalf("archive query: %s", dump(got))
	}
	res := got[0].Child(muc.NSMAM, "result")
	if res == nil || res.Attr("id") != sids[0] || res.Attr("queryid") != "x" || got[0].Attr("from") != room {
		t.Fatalf("result: %s", got[0])
	}
	fwd := res.FirstElement().Child(stanza.NSClient, "message")
	if fwd.Attr("from") != room+"/Bob" || fwd.Child(muc.NSUser, "x") != nil {
		t.Fatalf("forwarded message: %s", fwd)
	}
	fin := got[2].FirstElement()
	if fin.Attr("complete") == "true" {
		t.Fatal("first page of two claimed complete")
	}
	// The moderator sees real JIDs in the archive.
	alice.Input(`<iq type='set' id='q2' to='` + room + `'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set></query></iq>`)
	got = alice.Elements()
	if fwd := got[0].FirstElement().FirstElement().Child(stanza.NSClient, "message"); item(fwd) == nil || item(fwd).Attr("jid") != "bob@example.com/b" {
		t.Fatalf("moderator archive view: %s", dump(got))
	}

	// A participant may not moderate; the moderator retracts the spam (XEP-0425 v0).
	if r := bob.iq(`<iq type='set' id='r0' to='` + room + `'><apply-to xmlns='urn:xmpp:fasten:0' id='` + sids[2] + `'><moderate xmlns='urn:xmpp:message-moderate:0'><retract xmlns='urn:xmpp:message-retract:0'/></moderate></apply-to></iq>`); errCond(r) != "forbidden" {
		t.Fatalf("participant moderation: %s", r)
	}
	alice.Input(`<iq type='set' id='r1' to='` + room + `'><apply-to xmlns='urn:xmpp:fasten:0' id='` + sids[2] + `'><moderate xmlns='urn:xmpp:message-moderate:0'><retract xmlns='urn:xmpp:message-retract:0'/><reason>spam</reason></moderate></apply-to></iq>`)
	if r := find(alice.Elements(), "iq", "result"); r == nil {
		t.Fatal("moderation not acknowledged")
	}
	n := find(bob.Elements(), "message", "groupchat")
	if n == nil || n.Child(muc.NSFasten, "apply-to").Attr("id") != sids[2] || n.Child(muc.NSRetract1, "retract").Attr("id") != sids[2] {
		t.Fatalf("moderation notice: %v", n)
	}
	// The archive holds a tombstone without the body.
	carol.Input(`<iq type='set' id='q3' to='` + room + `'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field><field var='with'><value>` + room + `/Bob</value></field></x></query></iq>`)
	got = carol.Elements()
	if len(got) != 4 {
		t.Fatalf("with query: %s", dump(got))
	}
	tomb := got[2].FirstElement().FirstElement().Child(stanza.NSClient, "message")
	if tomb.Child(stanza.NSClient, "body") != nil || tomb.Child(muc.NSModerate0, "moderated") == nil {
		t.Fatalf("tombstone: %s", tomb)
	}
	// Metadata names the first and the last item (the moderation notice).
	r := carol.iq(`<iq type='get' id='md' to='` + room + `'><metadata xmlns='urn:xmpp:mam:2'/></iq>`)
	if md := r.FirstElement(); md == nil || md.Child(muc.NSMAM, "start").Attr("id") != sids[0] {
		t.Fatalf("metadata: %s", r)
	}
	// History no longer offers the retracted message.
	dave := ts.client(t, "dave@example.com/d")
	for _, el := range dave.join("Dave", "") {
		if b := el.Child(stanza.NSClient, "body"); b != nil && b.Text() == "spam" {
			t.Fatal("retracted message in history")
		}
	}
}

func TestPersistentRoomSurvivesRestart(t *testing.T) {
	for _, backend := range []struct {
		name string
		open func(t *testing.T) storage.Backend
	}{
		{"memory", func(*testing.T) storage.Backend { return memory.New() }},
		{"sqlite", func(t *testing.T) storage.Backend {
			b, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "muc.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b
		}},
	} {
		t.Run(backend.name, func(t *testing.T) {
			b := backend.open(t)
			ts := newServer(t, b, nil)
			alice := ts.client(t, "alice@example.com/a")
			alice.join("Alice", "")
			r := alice.iq(`<iq type='set' id='c' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'><value>1</value></field><field var='muc#roomconfig_roomname'><value>Kept</value></field></x></query></iq>`)
			if r.Attr("type") != "result" {
				t.Fatalf("config: %s", r)
			}
			alice.iq(`<iq type='set' id='m' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item jid='bob@example.com' affiliation='member'/></query></iq>`)
			alice.Input(`<message type='groupchat' to='` + room + `'><subject>Kept topic</subject></message>`)
			alice.Input(`<message type='groupchat' to='` + room + `'><body>remember me</body></message>`)
			alice.Input(`<presence type='unavailable' to='` + room + `/Alice'/>`)
			alice.Elements()

			// A new service on the same storage: the room, its members, subject and history are back.
			ts.addService(t, nil)
			bob := ts.client(t, "bob@example.com/b")
			got := bob.join("Bob", "")
			p := findFrom(got, "presence", room+"/Bob")
			if p == nil || item(p).Attr("affiliation") != "member" {
				t.Fatalf("after restart: %s", dump(got))
			}
			var subject, history bool
			for _, el := range got {
				if s := el.Child(stanza.NSClient, "subject"); s != nil && s.Text() == "Kept topic" {
					subject = true
				}
				if b := el.Child(stanza.NSClient, "body"); b != nil && b.Text() == "remember me" {
					history = true
				}
			}
			if !subject || !history {
				t.Fatalf("subject %v, history %v: %s", subject, history, dump(got))
			}
			r = bob.iq(`<iq type='get' id='d' to='` + room + `'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
			if !strings.Contains(r.String(), `name="Kept"`) || !strings.Contains(r.String(), "muc_persistent") {
				t.Fatalf("disco after restart: %s", r)
			}
			// A temporary room is gone when its last occupant leaves.
			bob.Input(`<presence type='unavailable' to='` + room + `/Bob'/>`)
			carol := ts.client(t, "carol@example.com/c")
			carol.Input(`<presence to='tmp@conference.example.com/C'/>`)
			carol.Input(`<presence type='unavailable' to='tmp@conference.example.com/C'/>`)
			carol.Elements()
			if r := carol.iq(`<iq type='get' id='t' to='tmp@conference.example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`); errCond(r) != "item-not-found" {
				t.Fatalf("temporary room survived: %s", r)
			}
		})
	}
}

func TestCreationPolicyAndLimits(t *testing.T) {
	ts := newServer(t, memory.New(), func(o *muc.Options) {
		o.RoomCreation = muc.CreateAdmins
		o.Admins = []string{"admin@example.com"}
		o.Defaults.MaxUsers = 1
		o.MaxNickLength = 5
	})
	bob := ts.client(t, "bob@example.com/b")
	if e := find(bob.join("Bob", ""), "presence", "error"); e == nil || errCond(e) != "not-allowed" {
		t.Fatal("restricted creation allowed")
	}
	admin := ts.client(t, "admin@example.com/a")
	admin.create("Adm")
	if e := find(bob.join("Bobbybob", ""), "presence", "error"); e == nil || errCond(e) != "not-acceptable" {
		t.Fatal("over-long nick accepted")
	}
	// maxusers is 1 and the admin is in: the room is full for others.
	if e := find(bob.join("Bob", ""), "presence", "error"); e == nil || errCond(e) != "service-unavailable" {
		t.Fatal("full room admitted a user")
	}
}

func TestBounceRemovesGhost(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")
	alice.create("Alice")
	bob.join("Bob", "")
	alice.Elements()
	// Bob's session vanishes without leaving; the next broadcast bounces and the room drops him.
	ts.Router.Unbind(bob.Session)
	alice.Input(`<message type='groupchat' to='` + room + `'><body>anyone?</body></message>`)
	got := alice.Elements()
	if p := findFrom(got, "presence", room+"/Bob"); p == nil || p.Attr("type") != "unavailable" || !hasStatus(p, "333") {
		t.Fatalf("ghost not removed: %s", dump(got))
	}
}

// TestConcurrentBroadcastOrder has occupants talk at once: every occupant must see the
// messages in one and the same order, because a room sends its queue in order.
func TestConcurrentBroadcastOrder(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	owner := ts.client(t, "owner@example.com/o")
	owner.create("Owner")
	var clients []*client
	for _, n := range []string{"a", "b", "c", "d"} {
		c := ts.client(t, n+"@example.com/r")
		c.join(n, "")
		clients = append(clients, c)
	}
	owner.Elements()
	for _, c := range clients {
		c.Elements()
	}
	const each = 50
	done := make(chan struct{})
	for i, c := range clients {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := 0; j < each; j++ {
				c.Input(`<message type='groupchat' to='` + room + `'><body>` + string(rune('a'+i)) + strings.Repeat("x", j%3) + `</body></message>`)
			}
		}()
	}
	for range clients {
		<-done
	}
	var first []string
	for _, c := range append(clients, owner) {
		var seq []string
		for _, el := range c.Elements() {
			if b := el.Child(stanza.NSClient, "body"); b != nil && el.Attr("type") == "groupchat" {
				seq = append(seq, el.Child(muc.NSSID, "stanza-id").Attr("id"))
			}
		}
		if len(seq) != each*len(clients) {
			t.Fatalf("%s got %d messages, want %d", c.jid, len(seq), each*len(clients))
		}
		if first == nil {
			first = seq
		} else if !slices.Equal(first, seq) {
			t.Fatalf("%s saw another order", c.jid)
		}
	}
}

func TestArchiveExpiry(t *testing.T) {
	ts := newServer(t, memory.New(), func(o *muc.Options) { o.ArchiveExpiry = time.Hour })
	alice := ts.client(t, "alice@example.com/a")
	alice.create("Alice")
	alice.Input(`<message type='groupchat' to='` + room + `'><body>old</body></message>`)
	ts.advance(50 * time.Minute)
	alice.Input(`<message type='groupchat' to='` + room + `'><body>new</body></message>`)
	alice.Elements()
	ts.advance(20 * time.Minute)
	ts.svc.Sweep(context.Background())
	alice.Input(`<iq type='set' id='q' to='` + room + `'><query xmlns='urn:xmpp:mam:2'/></iq>`)
	got := alice.Elements()
	if len(got) != 2 || !strings.Contains(got[0].String(), ">new<") {
		t.Fatalf("archive after expiry: %s", dump(got))
	}
	bob := ts.client(t, "bob@example.com/b")
	for _, el := range bob.join("Bob", "") {
		if b := el.Child(stanza.NSClient, "body"); b != nil && b.Text() == "old" {
			t.Fatal("expired message in history")
		}
	}
}
