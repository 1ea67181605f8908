package cluster

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/router"
	"impetus/internal/stanza"
)

// countingSession counts deliveries without keeping them.
type countingSession struct {
	full jid.JID
	n    atomic.Int64
}

func (c *countingSession) JID() jid.JID              { return c.full }
func (c *countingSession) Available() bool           { return true }
func (c *countingSession) Priority() int             { return 0 }
func (c *countingSession) Deliver(*stanza.Element)   { c.n.Add(1) }
func (c *countingSession) Replaced()                 {}
func (c *countingSession) Close(*stanza.StreamError) {}

func benchMessage(to string) *stanza.Element {
	el := msg(to, "chat")
	el.SetAttr("id", "0123456789abcdef")
	return el
}

// BenchmarkRouteLocal is the baseline: a message to a full JID on the same node.
func BenchmarkRouteLocal(b *testing.B) {
	l := router.NewLocal(nil)
	s := &countingSession{full: jid.MustParse("bob@example.org/phone")}
	l.Bind(s)
	el := benchMessage(s.full.String())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Route(ctx, el, s.full); err != nil {
			b.Fatal(err)
		}
	}
}

func benchNodes(b *testing.B) (*Node, *Node, *countingSession) {
	c := Defaults()
	c.NodeName = "nats"
	c.NATSListen = "127.0.0.1:-1"
	c.NATSStoreDir = b.TempDir()
	emb, err := startEmbedded(&c, "", quiet())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(emb.close)
	url := emb.srv.ClientURL()
	start := func(name string) *Node {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		n, err := Start(ctx, testConfig(url, name), b.TempDir(), router.NewLocal(nil), nil, Hooks{}, quiet())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(n.Close)
		return n
	}
	a, nb := start("a"), start("b")
	s := &countingSession{full: jid.MustParse("bob@example.org/phone")}
	nb.Bind(s)
	deadline := time.Now().Add(bound)
	for a.Session(s.full) == nil {
		if time.Now().After(deadline) {
			b.Fatal("node a never saw the session")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return a, nb, s
}

// BenchmarkRouteAcrossNodes forwards a message to a session on another node and waits for the
// node to accept it (request/reply), one sender at a time: ns/op is the forwarding latency.
func BenchmarkRouteAcrossNodes(b *testing.B) {
	a, _, s := benchNodes(b)
	el := benchMessage(s.full.String())
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := a.Route(ctx, el, s.full); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRouteAcrossNodesParallel is the same with many concurrent senders: throughput.
func BenchmarkRouteAcrossNodesParallel(b *testing.B) {
	a, _, s := benchNodes(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(16) // 32 senders on two cores: request/reply is bound by latency
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		el := benchMessage(s.full.String())
		for pb.Next() {
			if err := a.Route(ctx, el, s.full); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkBroadcastAcrossNodes publishes presence-style deliveries without waiting for an
// answer, then waits until all arrived: the cost of fan-out to another node.
func BenchmarkBroadcastAcrossNodes(b *testing.B) {
	a, _, s := benchNodes(b)
	proxy := a.Session(s.full)
	el := stanza.NewElement(stanza.NSClient, "presence", stanza.Attr{Name: "from", Value: "x@example.org/r"})
	start := s.n.Load()
	b.ReportAllocs()
	b.ResetTimer()
	sent := int64(0)
	for b.Loop() {
		proxy.Deliver(el)
		sent++
		// A bounded window in flight: the sustained rate, not how fast a backlog builds.
		if sent%10000 == 0 {
			for s.n.Load()-start < sent-10000 {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	want := start + sent
	deadline := time.Now().Add(bound)
	for s.n.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d broadcasts arrived", s.n.Load()-start, sent)
		}
		time.Sleep(time.Millisecond)
	}
}

// benchRegistry opens registry buckets of their own (so that no node's anti-entropy or sweep
// touches the entries) on one NATS server, or on a cluster of three with replicas = 3.
func benchRegistry(b *testing.B, servers int) *Registry {
	b.Helper()
	ports := make([]int, servers)
	for i := range ports {
		ports[i] = freeTCPPort(b)
	}
	var url string
	for i := 0; i < servers; i++ {
		c := Defaults()
		c.NodeName = fmt.Sprintf("nats%d", i)
		c.NATSListen = "127.0.0.1:-1"
		c.NATSStoreDir = b.TempDir()
		if servers > 1 {
			c.NATSClusterListen = fmt.Sprintf("127.0.0.1:%d", ports[i])
			for j, p := range ports {
				if j != i {
					c.NATSRoutes = append(c.NATSRoutes, fmt.Sprintf("nats://127.0.0.1:%d", p))
				}
			}
		}
		emb, err := startEmbedded(&c, "", quiet())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(emb.close)
		if i == 0 {
			url = emb.srv.ClientURL()
		}
	}
	cfg := testConfig(url, "bench")
	cfg.Replicas = servers
	nc, err := connect(&cfg, nil, quiet())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reg, err := OpenRegistry(ctx, nc, &cfg)
	if err != nil {
		b.Fatal(err)
	}
	return reg
}

func freeTCPPort(b *testing.B) int {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func benchClaimRelease(b *testing.B, servers, parallelism int) {
	reg := benchRegistry(b, servers)
	ctx := context.Background()
	e := Entry{Node: "bench", Inc: 1, Avail: true}
	// A new JetStream cluster may still move its leaders: wait for a write to succeed first.
	deadline := time.Now().Add(60 * time.Second)
	for {
		rev, err := reg.Claim(ctx, "user@example.org", "warm-up", e, nil)
		if err == nil && reg.Remove(ctx, "user@example.org", "warm-up", rev) == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the registry accepts no writes: %v", err)
		}
	}
	var seq atomic.Int64
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res := fmt.Sprint(seq.Add(1))
			rev, err := reg.Claim(ctx, "user@example.org", res, e, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if err := reg.Remove(ctx, "user@example.org", res, rev); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRegistryClaimRelease measures a bind and an unbind in the registry: two
// compare-and-set writes to JetStream KV in memory storage. R1 is one NATS server, R3 three
// servers in a JetStream cluster; "seq" is one writer (latency), "par" 16 writers (throughput).
func BenchmarkRegistryClaimRelease(b *testing.B) {
	b.Run("R1/seq", func(b *testing.B) { benchClaimRelease(b, 1, 1) })
	b.Run("R1/par", func(b *testing.B) { benchClaimRelease(b, 1, 8) })
	b.Run("R3/seq", func(b *testing.B) { benchClaimRelease(b, 3, 1) })
	b.Run("R3/par", func(b *testing.B) { benchClaimRelease(b, 3, 8) })
}
