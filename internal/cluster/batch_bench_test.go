package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/router"
	"impetus/internal/stanza"
)

// sharedCounter counts deliveries to many sessions in one number.
type sharedCounter struct {
	full jid.JID
	n    *atomic.Int64
}

func (c *sharedCounter) JID() jid.JID              { return c.full }
func (c *sharedCounter) Available() bool           { return true }
func (c *sharedCounter) Priority() int             { return 0 }
func (c *sharedCounter) Deliver(*stanza.Element)   { c.n.Add(1) }
func (c *sharedCounter) Replaced()                 {}
func (c *sharedCounter) Close(*stanza.StreamError) {}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchFanOut broadcasts one presence, as the presence module stamps it, to the bare JIDs of
// fan contacts that each have a session on another node, and waits until every delivery
// arrived. It reports the NATS messages the sending node published and the CPU time of the
// whole process (both nodes and the NATS server) per broadcast.
func benchFanOut(b *testing.B, fan int, batched bool) {
	a, nb, _ := benchNodes(b)
	var delivered atomic.Int64
	contacts := make([]jid.JID, fan)
	for i := range contacts {
		contacts[i] = jid.MustParse(fmt.Sprintf("contact%d@example.org/phone", i))
		nb.Bind(&sharedCounter{full: contacts[i], n: &delivered})
	}
	deadline := time.Now().Add(bound)
	for a.Session(contacts[fan-1]) == nil || a.reg.Len() < fan+1 {
		if time.Now().After(deadline) {
			b.Fatal("node a never saw the contacts")
		}
		time.Sleep(10 * time.Millisecond)
	}
	pres := stanza.NewElement(stanza.NSClient, "presence").
		AddChild(stanza.NewElement(stanza.NSClient, "show").AddText("away")).
		AddChild(stanza.NewElement("http://jabber.org/protocol/caps", "c",
			stanza.Attr{Name: "hash", Value: "sha-1"}, stanza.Attr{Name: "node", Value: "https://example.org/client"},
			stanza.Attr{Name: "ver", Value: "QgayPKawpkPSDYmwT/WM94uAlu0="}))
	els := make([]*stanza.Element, fan)
	for i, c := range contacts {
		els[i] = &stanza.Element{Space: pres.Space, Local: pres.Local, Children: pres.Children,
			Attrs: []stanza.Attr{{Name: "from", Value: "user@example.org/laptop"}, {Name: "to", Value: c.Bare().String()}}}
	}
	msgs0 := a.nc.Stats().OutMsgs
	start := delivered.Load()
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	sent := int64(0)
	for b.Loop() {
		ctx := context.Background()
		done := func() {}
		if batched {
			ctx, done = router.Batch(ctx, a)
		}
		for i, c := range contacts {
			if err := a.Route(ctx, els[i], c.Bare()); err != nil {
				b.Fatal(err)
			}
		}
		done()
		sent += int64(fan)
		for delivered.Load()-start < sent {
			time.Sleep(20 * time.Microsecond)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(a.nc.Stats().OutMsgs-msgs0)/float64(b.N), "natsmsgs/op")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
}

// BenchmarkPresenceFanOut is a presence broadcast to 100 contacts on another node, one NATS
// message per session (unbatched) against one per node (batched).
func BenchmarkPresenceFanOut(b *testing.B) {
	b.Run("unbatched/100", func(b *testing.B) { benchFanOut(b, 100, false) })
	b.Run("batched/100", func(b *testing.B) { benchFanOut(b, 100, true) })
}
