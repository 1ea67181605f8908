package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// subscribe makes a and b subscribed to each other's presence, across nodes.
func subscribe(t *testing.T, a, b *client) {
	t.Helper()
	a.send(fmt.Sprintf(`<presence type='subscribe' to='%s'/>`, b.bare()))
	b.expect("subscription request from "+a.bare(), isPresence(a.bare(), "subscribe"))
	b.send(fmt.Sprintf(`<presence type='subscribed' to='%s'/>`, a.bare()))
	a.expect("roster push for "+b.bare(), func(e *element) bool {
		it := e.find("item")
		return e.XMLName.Local == "iq" && it != nil && it.attr("jid") == b.bare() && (it.attr("subscription") == "to" || it.attr("subscription") == "both")
	})
	// b is available, so a gets its current presence, from b's node.
	a.expect("presence of "+b.full, isPresence(b.full, ""))
}

// registryNodes lists the node named by each registry entry, read through a node's NATS.
func registryNodes(t *testing.T, natsURL string) map[string]string {
	t.Helper()
	out := map[string]string{}
	inBucket(t, natsURL, "impetus_sessions", func(ctx context.Context, kv jetstream.KeyValue) {
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range lister.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				continue
			}
			var v struct {
				Node string `json:"n"`
			}
			_ = json.Unmarshal(e.Value(), &v)
			out[k] = v.Node
		}
	})
	return out
}

func TestCluster(t *testing.T) {
	pg := pgSchemaURL(t)
	users := map[string]string{"alice": "pw", "bob": "pw", "carol": "pw", "dave": "pw"}
	nodes := startCluster(t, pg, users)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	alice := login(t, n1, "alice", "pw", "desk")
	bob := login(t, n2, "bob", "pw", "phone")
	// Requesting the roster makes a resource interested in roster pushes (RFC 6121 §2.1.6).
	alice.iq(`<iq type='get'><query xmlns='jabber:iq:roster'/></iq>`)
	bob.iq(`<iq type='get'><query xmlns='jabber:iq:roster'/></iq>`)
	alice.send(`<presence/>`)
	bob.send(`<presence/>`)
	alice.sync()
	bob.sync()

	t.Run("presence and roster across nodes", func(t *testing.T) {
		subscribe(t, alice, bob)
		subscribe(t, bob, alice)
		bob.send(`<presence><show>away</show></presence>`)
		alice.expect("bob away", func(e *element) bool {
			return isPresence(bob.full, "")(e) && e.child("show") != nil && e.child("show").Text == "away"
		})
		// A resource on a third node probes bob: the answer comes from the registry.
		alice2 := login(t, n3, "alice", "pw", "tablet")
		alice2.send(`<presence/>`)
		alice2.expect("bob's presence for a new resource", func(e *element) bool {
			return isPresence(bob.full, "")(e) && e.child("show") != nil && e.child("show").Text == "away"
		})
		alice2.expect("alice's other resource", isPresence(alice.full, ""))
		alice2.close()
		alice.expect("alice's tablet gone", isPresence(alice2.full, "unavailable"))
	})

	t.Run("chat across nodes", func(t *testing.T) {
		alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>to full</body></message>`, bob.full))
		bob.expect("message to the full JID", isMessage(alice.full, "to full"))
		alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>to bare</body></message>`, bob.bare()))
		bob.expect("message to the bare JID", isMessage(alice.full, "to bare"))
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>reply</body></message>`, alice.bare()))
		alice.expect("reply", isMessage(bob.full, "reply"))
		// An iq to a resource on another node is answered by that resource; to a resource that
		// is bound nowhere, the server answers service-unavailable (RFC 6120 §10.5.3.2).
		if r := alice.iq(fmt.Sprintf(`<iq type='get' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>`, bob.full)); r.attr("type") != "result" || r.attr("from") != bob.full {
			t.Fatalf("iq to a resource on another node: %v", r)
		}
		if r := alice.iq(`<iq type='get' to='bob@localhost/nowhere'><ping xmlns='urn:xmpp:ping'/></iq>`); r.attr("type") != "error" || r.find("service-unavailable") == nil {
			t.Fatalf("iq to a missing resource: %v", r)
		}
		// Message carbons (XEP-0280) to a resource on a third node that enabled them there.
		tablet := login(t, n3, "alice", "pw", "tablet2")
		if r := tablet.iq(`<iq type='set'><enable xmlns='urn:xmpp:carbons:2'/></iq>`); r.attr("type") != "result" {
			t.Fatalf("enabling carbons: %v", r)
		}
		tablet.send(`<presence><priority>-1</priority></presence>`)
		tablet.sync()
		bob.sync()
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>carbon</body></message>`, alice.full))
		alice.expect("message for the carbon", isMessage(bob.full, "carbon"))
		tablet.expect("received carbon", func(e *element) bool {
			r := e.child("received")
			return e.XMLName.Local == "message" && r != nil && r.find("body") != nil && r.find("body").Text == "carbon"
		})
		tablet.close()
		// Order per sender: a burst arrives in order.
		for i := 0; i < 50; i++ {
			alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>m%d</body></message>`, bob.full, i))
		}
		for i := 0; i < 50; i++ {
			e := bob.expect("burst message", func(e *element) bool { return e.XMLName.Local == "message" })
			if got := e.child("body").Text; got != fmt.Sprintf("m%d", i) {
				t.Fatalf("message %d arrived as %s", i, got)
			}
		}
	})

	t.Run("resource conflict across nodes", func(t *testing.T) {
		old := login(t, n1, "carol", "pw", "laptop")
		old.send(`<presence/>`)
		old.sync()
		nw := login(t, n2, "carol", "pw", "laptop")
		old.expect("conflict stream error", isStreamError("conflict"))
		nw.send(`<presence/>`)
		alice.send(`<message type='chat' to='carol@localhost/laptop'><body>to carol</body></message>`)
		nw.expect("message to the new session", isMessage(alice.full, "to carol"))
	})

	t.Run("kill -9 a node mid-traffic", func(t *testing.T) {
		dave := login(t, n3, "dave", "pw", "pc")
		dave.send(`<presence/>`)
		dave.sync()
		subscribe(t, alice, dave)
		const total = 150
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for i := 0; i < total; i++ {
				alice.send(fmt.Sprintf(`<message type='chat' to='dave@localhost'><body>k%d</body></message>`, i))
				time.Sleep(2 * time.Millisecond)
			}
		}()
		// Wait for some traffic to reach dave, then crash his node.
		dave.expect("first messages", isMessage(alice.full, "k10"))
		n3.kill9()
		<-sent
		got := map[string]bool{}
		for _, e := range append(dave.pending, drainChan(dave)...) {
			if e.XMLName.Local == "message" && e.child("body") != nil {
				got[e.child("body").Text] = true
			}
		}
		got["k10"] = true
		alice.sync()

		// The surviving nodes keep working.
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>still here</body></message>`, alice.full))
		alice.expect("message after the crash", isMessage(bob.full, "still here"))

		// The lost session is cleaned up once, and its contacts see it unavailable.
		alice.expectWithin(60*time.Second, "dave unavailable after the lease and the grace period", isPresence(dave.full, "unavailable"))

		// Dave logs in on another node and gets what he missed from offline storage.
		dave2 := login(t, n1, "dave", "pw", "pc")
		dave2.send(`<presence/>`)
		for _, e := range dave2.drain() {
			if e.XMLName.Local == "message" && e.child("body") != nil {
				got[e.child("body").Text] = true
			}
		}
		// Messages the crashed node accepted but had not written to dave are in his archive.
		var missing []string
		for i := 0; i < total; i++ {
			if !got[fmt.Sprintf("k%d", i)] {
				missing = append(missing, fmt.Sprintf("k%d", i))
			}
		}
		if len(missing) > 0 {
			archived := archive(t, dave2)
			var lost []string
			for _, m := range missing {
				if !archived[m] {
					lost = append(lost, m)
				}
			}
			if len(lost) > 0 {
				t.Fatalf("accepted messages lost: %v (missing before the archive: %v)", lost, missing)
			}
			t.Logf("%d messages were only in the archive", len(missing))
		}
		// Exactly one unavailable for the lost session.
		for _, e := range alice.drain() {
			if isPresence(dave.full, "unavailable")(e) {
				t.Errorf("a second unavailable presence for %s", dave.full)
			}
		}
		// No stale sessions: every registry entry names a live node.
		for k, node := range registryNodes(t, n1.clientURL) {
			if node == n3.name {
				t.Errorf("registry entry %s still names the dead node", k)
			}
		}
		alice.send(`<message type='chat' to='dave@localhost'><body>welcome back</body></message>`)
		dave2.expect("message after moving nodes", isMessage(alice.full, "welcome back"))
		_ = n2
	})
}

func drainChan(c *client) []*element {
	var out []*element
	for {
		select {
		case e := <-c.in:
			out = append(out, e)
		default:
			return out
		}
	}
}

// archive returns the bodies in the user's message archive (XEP-0313).
func archive(t *testing.T, c *client) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	after := ""
	for page := 0; page < 20; page++ {
		set := "<max>100</max>"
		if after != "" {
			set += "<after>" + xmlEscape(after) + "</after>"
		}
		c.send(fmt.Sprintf(`<iq type='set' id='mam%d'><query xmlns='urn:xmpp:mam:2' queryid='q%d'><set xmlns='http://jabber.org/protocol/rsm'>%s</set></query></iq>`, page, page, set))
		fin := c.expect("archive page", func(e *element) bool { return e.XMLName.Local == "iq" && e.attr("id") == fmt.Sprintf("mam%d", page) })
		for _, e := range c.pending {
			if r := e.find("result"); r != nil && r.attr("queryid") == fmt.Sprintf("q%d", page) {
				if b := e.find("body"); b != nil {
					out[b.Text] = true
				}
			}
		}
		f := fin.find("fin")
		if f == nil || f.attr("complete") == "true" {
			break
		}
		last := f.find("last")
		if last == nil {
			break
		}
		after = strings.TrimSpace(last.Text)
	}
	return out
}
