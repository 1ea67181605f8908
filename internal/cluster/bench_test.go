package cluster

import (
	"context"
	"fmt"
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

// BenchmarkRegistryClaimRelease measures a bind and an unbind in the registry (two
// compare-and-set writes to JetStream KV, R1, memory storage).
func BenchmarkRegistryClaimRelease(b *testing.B) {
	a, _, _ := benchNodes(b)
	ctx := context.Background()
	e := Entry{Node: "a", Inc: a.reg.Inc(), Avail: true}
	i := 0
	b.ResetTimer()
	for b.Loop() {
		i++
		res := fmt.Sprint(i)
		rev, err := a.reg.Claim(ctx, "user@example.org", res, e, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.reg.Remove(ctx, "user@example.org", res, rev); err != nil {
			b.Fatal(err)
		}
	}
}
