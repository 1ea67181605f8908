package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pause stops the node's process (SIGSTOP) and continues it (SIGCONT) when the test ends, if
// it is still stopped then.
func (n *node) pause() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		n.t.Fatalf("stopping %s: %v", n.name, err)
	}
	n.t.Cleanup(func() { _ = n.cmd.Process.Signal(syscall.SIGCONT) })
}

func (n *node) resume() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		n.t.Fatalf("continuing %s: %v", n.name, err)
	}
}

// loginRetry logs in on n, retrying while the node refuses sessions (it fenced itself and has
// not taken a new lease yet), at most within bound.
func loginRetry(t *testing.T, n *node, user, pass, resource string, bound time.Duration) *client {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		c, err := tryLogin(t, n, user, pass, resource)
		if err == nil {
			// A fenced node binds and closes at once; a ping round trip tells them apart.
			c.send(fmt.Sprintf(`<iq type='get' id='alive' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>`, domain))
			if alive(c) {
				return c
			}
			err = fmt.Errorf("the session was closed")
		}
		if time.Now().After(deadline) {
			t.Fatalf("login %s/%s on %s: %v", user, resource, n.name, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// alive reports whether the ping sent by loginRetry was answered before the stream ended.
func alive(c *client) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case e := <-c.in:
			if e.XMLName.Local == "iq" && e.attr("id") == "alive" {
				return e.attr("type") == "result"
			}
			c.pending = append(c.pending, e)
		case <-c.done:
			return false
		case <-timer.C:
			return false
		}
	}
}

// TestPauseThenKill is the scenario of a node paused past its lease (a frozen VM): when it is
// continued it fences itself and its clients are told to reconnect; then another node crashes,
// and the users of the node that was paused must still chat with the rest of the cluster.
func TestPauseThenKill(t *testing.T) {
	pg := pgSchemaURL(t)
	users := map[string]string{"alice": "pw", "bob": "pw", "carol": "pw"}
	nodes := startCluster(t, pg, users)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	alice := login(t, n1, "alice", "pw", "desk")
	bob := login(t, n2, "bob", "pw", "phone")
	carol := login(t, n3, "carol", "pw", "pc")
	for _, c := range []*client{alice, bob, carol} {
		c.iq(`<iq type='get'><query xmlns='jabber:iq:roster'/></iq>`)
		c.send(`<presence/>`)
		c.sync()
	}
	subscribe(t, bob, alice)
	subscribe(t, alice, carol)
	alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>before</body></message>`, bob.full))
	bob.expect("message before the pause", isMessage(alice.full, "before"))

	// Past lease_ttl (15 s) and two sweeps of the other nodes.
	n1.pause()
	bob.expectWithin(60*time.Second, "alice unavailable once n1's lease expired", isPresence(alice.full, "unavailable"))
	n1.resume()
	n3.kill9()
	alice.expectWithin(60*time.Second, "alice's stream closed by the fenced node", isStreamError("system-shutdown"))

	alice = loginRetry(t, n1, "alice", "pw", "desk", 60*time.Second)
	alice.send(`<presence/>`)
	alice.sync()
	alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>after pause</body></message>`, bob.full))
	bob.expect("message after the pause", isMessage(alice.full, "after pause"))
	for i := 0; i < 5; i++ {
		body := fmt.Sprintf("after kill %d", i)
		alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>%s</body></message>`, bob.bare(), body))
		bob.expect("message after the crash", isMessage(alice.full, body))
		body = fmt.Sprintf("reply %d", i)
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>%s</body></message>`, alice.full, body))
		alice.expect("reply after the crash", isMessage(bob.full, body))
	}
	// Past the crashed node's lease the survivors remove its sessions; messages still flow.
	deadline := time.Now().Add(60 * time.Second)
	for gone := false; !gone; {
		nodes, err := registryOwners(n1.clientURL)
		gone = err == nil
		for _, node := range nodes {
			gone = gone && node != n3.name
		}
		if !gone && time.Now().After(deadline) {
			t.Fatal("the crashed node's sessions were not removed from the registry")
		}
		time.Sleep(250 * time.Millisecond)
	}
	alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>late</body></message>`, bob.bare()))
	bob.expect("message once the crash was cleaned up", isMessage(alice.full, "late"))
	bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>late reply</body></message>`, alice.bare()))
	alice.expect("reply once the crash was cleaned up", isMessage(bob.full, "late reply"))
}

// registryOwners lists the node named by each registry entry, read through a node's NATS;
// unlike registryNodes it reports errors, which a JetStream leader election causes for a while.
func registryOwners(natsURL string) (map[string]string, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := js.KeyValue(ctx, "impetus_sessions")
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
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
	return out, nil
}
