package cluster

import (
	"fmt"
	"testing"
)

// TestPresenceBatchKeepsOrder checks that a presence broadcast, which reaches each other node in
// one batch, still arrives before a message its sender sent after it, and that each contact on
// the other node gets the presence addressed to it.
func TestPresenceBatchKeepsOrder(t *testing.T) {
	pg := pgSchemaURL(t)
	nodes := startCluster(t, pg, map[string]string{"alice": "pw", "bob": "pw", "carol": "pw"})
	n1, n2 := nodes[0], nodes[1]
	alice := login(t, n1, "alice", "pw", "desk")
	bob := login(t, n2, "bob", "pw", "phone")
	carol := login(t, n2, "carol", "pw", "tablet")
	for _, c := range []*client{alice, bob, carol} {
		c.iq(`<iq type='get'><query xmlns='jabber:iq:roster'/></iq>`)
		c.send(`<presence/>`)
		c.sync()
	}
	subscribe(t, bob, alice)
	subscribe(t, carol, alice)

	for i := 0; i < 10; i++ {
		status := fmt.Sprintf("s%d", i)
		alice.send(fmt.Sprintf(`<presence><status>%s</status></presence>`, status))
		alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>after %s</body></message>`, bob.bare(), status))
		bob.expect("message after "+status, isMessage(alice.full, "after "+status))
		// The presence came before the message: it is among what was received before it.
		found := false
		for j, e := range bob.pending {
			if isPresence(alice.full, "")(e) && e.child("status") != nil && e.child("status").Text == status {
				if e.attr("to") != bob.bare() {
					t.Fatalf("presence for bob addressed to %q", e.attr("to"))
				}
				bob.pending = append(bob.pending[:j:j], bob.pending[j+1:]...)
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("the message after presence %s overtook it; received before it: %v", status, bob.pending)
		}
		e := carol.expect("presence "+status, func(e *element) bool {
			return isPresence(alice.full, "")(e) && e.child("status") != nil && e.child("status").Text == status
		})
		if e.attr("to") != carol.bare() {
			t.Fatalf("presence for carol addressed to %q", e.attr("to"))
		}
	}
}
