package cluster

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// tcpProxy forwards connections to a target address until it is cut; while cut it refuses
// new connections (it accepts and closes them), as a network partition would.
type tcpProxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { l.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *tcpProxy) addr() string { return p.l.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		u, err := net.DialTimeout("tcp", p.target, wait)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close(); c.Close() }()
		go func() { _, _ = io.Copy(c, u); u.Close(); c.Close() }()
	}
}

// setCut cuts (closing every forwarded connection) or restores the link.
func (p *tcpProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// startPartitionable starts three nodes: n1 and n2 run embedded NATS servers routed to each
// other, and n3 runs none and reaches n1's NATS through a proxy of the test, so that the test
// can cut n3 off NATS while every process keeps running.
func startPartitionable(t *testing.T, pg string, users map[string]string) ([]*node, *tcpProxy) {
	t.Helper()
	var proxy *tcpProxy
	nodes := startClusterSpec(t, pg, users, clusterSpec{
		replicas: 1,
		// n3 connects to n1's NATS, which serves once n1 and n2 formed their cluster.
		waitFirst: 2,
		prepare: func(nodes []*node) {
			proxy = newProxy(t, fmt.Sprintf("127.0.0.1:%d", nodes[0].nats))
		},
		nats: func(i int, nodes []*node) string {
			n := nodes[i]
			if i < 2 {
				other := nodes[1-i]
				n.clientURL = fmt.Sprintf("nats://127.0.0.1:%d", n.nats)
				return fmt.Sprintf(`embedded_nats = true
  nats_listen = "127.0.0.1:%d"
  nats_cluster_listen = "127.0.0.1:%d"
  nats_routes = ( "nats://127.0.0.1:%d" )`, n.nats, n.route, other.route)
			}
			n.clientURL = nodes[0].clientURL
			return fmt.Sprintf(`nats_urls = ( "nats://%s" )
  nats_discover = false`, proxy.addr())
		},
	})
	return nodes, proxy
}

// TestNATSPartition cuts one node off NATS: it fences itself, its clients are told to
// reconnect, the other nodes keep working, and its users log in on another node and chat.
// Once NATS is back the node takes a new lease and serves clients again.
func TestNATSPartition(t *testing.T) {
	pg := pgSchemaURL(t)
	users := map[string]string{"alice": "pw", "bob": "pw", "carol": "pw"}
	nodes, proxy := startPartitionable(t, pg, users)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	alice := login(t, n3, "alice", "pw", "desk")
	bob := login(t, n1, "bob", "pw", "phone")
	carol := login(t, n2, "carol", "pw", "pc")
	for _, c := range []*client{alice, bob, carol} {
		c.iq(`<iq type='get'><query xmlns='jabber:iq:roster'/></iq>`)
		c.send(`<presence/>`)
		c.sync()
	}
	subscribe(t, bob, alice)
	alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>before</body></message>`, bob.full))
	bob.expect("message before the partition", isMessage(alice.full, "before"))

	proxy.setCut(true)
	// fence_after (13 s) without a renewal, then the node closes every client stream.
	alice.expectWithin(60*time.Second, "system-shutdown from the fenced node", isStreamError("system-shutdown"))
	// The log line is written before the streams are closed but reaches the test through a
	// pipe, so it is awaited.
	for deadline := time.Now().Add(wait); !strings.Contains(n3.out.String(), "cluster: lease lost"); {
		if time.Now().After(deadline) {
			t.Fatalf("n3 did not log its fencing")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A login on the fenced node is refused the same way.
	if c, err := tryLogin(t, n3, "carol", "pw", "other"); err == nil {
		c.expect("system-shutdown for a login on the fenced node", isStreamError("system-shutdown"))
	}

	// The other nodes keep working.
	bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>still here</body></message>`, carol.full))
	carol.expect("message between the other nodes", isMessage(bob.full, "still here"))

	// Alice logs in on another node, with the same resource, and chats.
	alice2 := login(t, n2, "alice", "pw", "desk")
	alice2.send(`<presence/>`)
	alice2.sync()
	alice2.send(fmt.Sprintf(`<message type='chat' to='%s'><body>moved</body></message>`, bob.full))
	bob.expect("message from the moved user", isMessage(alice2.full, "moved"))
	bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>welcome</body></message>`, alice2.full))
	alice2.expect("reply to the moved user", isMessage(bob.full, "welcome"))

	// NATS comes back: the node rejoins with a new lease and serves logins again.
	proxy.setCut(false)
	dave := loginRetry(t, n3, "carol", "pw", "laptop", 60*time.Second)
	dave.send(`<presence/>`)
	dave.sync()
	bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>rejoined</body></message>`, dave.full))
	dave.expect("message to the node that rejoined", isMessage(bob.full, "rejoined"))
	// Alice's session on n2 was not disturbed by the rejoin.
	bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>after rejoin</body></message>`, alice2.full))
	alice2.expect("message after the rejoin", isMessage(bob.full, "after rejoin"))
}
