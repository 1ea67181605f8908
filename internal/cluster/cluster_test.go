package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/router"
	"impetus/internal/stanza"
)

// bound limits every wait of these tests; conditions are polled, never timed.
const bound = 20 * time.Second

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testNATS starts an in-process NATS server with JetStream on a free port.
func testNATS(t *testing.T) string {
	t.Helper()
	c := Defaults()
	c.NodeName = "nats"
	c.NATSListen = "127.0.0.1:-1"
	c.NATSStoreDir = t.TempDir()
	emb, err := startEmbedded(&c, "", quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.close)
	return emb.srv.ClientURL()
}

func testConfig(url, node string) Config {
	c := Defaults()
	c.NodeName = node
	c.NATSURLs = []string{url}
	c.LeaseTTL = 1500 * time.Millisecond
	c.LeaseRenew = 200 * time.Millisecond
	c.FenceAfter = 800 * time.Millisecond
	c.AntiEntropy = 300 * time.Millisecond
	c.NodeLossGrace = 0
	c.ForwardTimeout = 2 * time.Second
	return c
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fakeSession is a client session that records what it is given.
type fakeSession struct {
	full     jid.JID
	avail    atomic.Bool
	prio     atomic.Int32
	got      chan *stanza.Element
	replaced atomic.Bool
	closed   atomic.Pointer[stanza.StreamError]
}

func newFake(t *testing.T, s string) *fakeSession {
	j, err := jid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSession{full: j, got: make(chan *stanza.Element, 1000)}
	f.avail.Store(true)
	return f
}

func (f *fakeSession) JID() jid.JID                   { return f.full }
func (f *fakeSession) Available() bool                { return f.avail.Load() }
func (f *fakeSession) Priority() int                  { return int(f.prio.Load()) }
func (f *fakeSession) Deliver(el *stanza.Element)     { f.got <- el }
func (f *fakeSession) Replaced()                      { f.replaced.Store(true) }
func (f *fakeSession) Close(serr *stanza.StreamError) { f.closed.Store(serr) }

func (f *fakeSession) expect(t *testing.T) *stanza.Element {
	t.Helper()
	select {
	case el := <-f.got:
		return el
	case <-time.After(bound):
		t.Fatalf("%s received nothing within %v", f.full, bound)
		return nil
	}
}

type gone struct {
	mu   sync.Mutex
	jids []string
}

func (g *gone) add(_ context.Context, full jid.JID) {
	g.mu.Lock()
	g.jids = append(g.jids, full.String())
	g.mu.Unlock()
}

func (g *gone) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.jids)
}

func startNode(t *testing.T, url, name string, g *gone, fenced *atomic.Int32) *Node {
	t.Helper()
	hooks := Hooks{}
	if g != nil {
		hooks.Gone = g.add
	}
	if fenced != nil {
		hooks.Fenced = func() { fenced.Add(1) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	n, err := Start(ctx, testConfig(url, name), t.TempDir(), router.NewLocal(nil), nil, hooks, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func msg(to, typ string) *stanza.Element {
	return stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "to", Value: to}, stanza.Attr{Name: "type", Value: typ},
		stanza.Attr{Name: "from", Value: "x@example.org/r"}).AddChild(
		stanza.NewElement(stanza.NSClient, "body").AddText("hi"))
}

func TestKeysRoundTrip(t *testing.T) {
	for _, c := range [][2]string{{"a@example.org", "phone"}, {"ü.ñ@example.org", "r/with/slash and space"}, {"x@y", ""}} {
		b, r, ok := parseSessionKey(sessionKey(c[0], c[1]))
		if !ok || b != c[0] || r != c[1] {
			t.Errorf("%q %q: round trip gave %q %q %v", c[0], c[1], b, r, ok)
		}
	}
}

func TestClaimIsCompareAndSet(t *testing.T) {
	url := testNATS(t)
	ctx := context.Background()
	open := func(node string) *Registry {
		c := testConfig(url, node)
		n, err := connect(&c, nil, quiet())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		r, err := OpenRegistry(ctx, n, &c)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Watch(ctx, nil); err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := open("a"), open("b")
	revA, err := a.Claim(ctx, "u@example.org", "r", Entry{Node: "a", Inc: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kicked []Record
	revB, err := b.Claim(ctx, "u@example.org", "r", Entry{Node: "b", Inc: 1}, func(old Record) error {
		kicked = append(kicked, old)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(kicked) != 1 || kicked[0].Node != "a" || kicked[0].Rev != revA {
		t.Fatalf("claim over a's session kicked %+v, want a at revision %d", kicked, revA)
	}
	// The old owner's clean-up must not delete the new owner's entry.
	if err := a.Remove(ctx, "u@example.org", "r", revA); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("removing with a stale revision: %v, want a revision mismatch", err)
	}
	eventually(t, "a's replica sees b", func() bool {
		rec, ok := a.Lookup("u@example.org", "r")
		return ok && rec.Node == "b" && rec.Rev == revB
	})
	if err := b.Remove(ctx, "u@example.org", "r", revB); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the entry is gone from a's replica", func() bool {
		_, ok := a.Lookup("u@example.org", "r")
		return !ok
	})
}

func TestLeaseExpires(t *testing.T) {
	url := testNATS(t)
	ctx := context.Background()
	c := testConfig(url, "a")
	nc, err := connect(&c, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r, err := OpenRegistry(ctx, nc, &c)
	if err != nil {
		t.Fatal(err)
	}
	inc, err := r.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.LeaseOf(ctx, "a"); err != nil || got != inc {
		t.Fatalf("lease after acquire: %d %v, want %d", got, err, inc)
	}
	if err := r.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	// Unrenewed, the lease disappears and renewing fails: the node must fence itself.
	eventually(t, "the lease expires", func() bool {
		got, err := r.LeaseOf(ctx, "a")
		return err == nil && got == 0
	})
	if err := r.Renew(ctx); err == nil {
		t.Fatal("renewing an expired lease succeeded")
	}
	inc2, err := r.Acquire(ctx)
	if err != nil || inc2 <= inc {
		t.Fatalf("new incarnation %d (%v), want more than %d", inc2, err, inc)
	}
}

func TestRoutingAcrossNodes(t *testing.T) {
	url := testNATS(t)
	a := startNode(t, url, "a", nil, nil)
	b := startNode(t, url, "b", nil, nil)
	ctx := context.Background()
	bob := newFake(t, "bob@example.org/phone")
	b.Bind(bob)
	eventually(t, "a sees bob", func() bool { return len(a.Sessions(bob.full.Bare())) == 1 })

	// Full JID and bare JID, both forwarded to node b.
	if err := a.Route(ctx, msg(bob.full.String(), "chat"), bob.full); err != nil {
		t.Fatal(err)
	}
	if el := bob.expect(t); el.Attr("to") != bob.full.String() || el.Child(stanza.NSClient, "body").Text() != "hi" {
		t.Fatalf("bob got %s", el)
	}
	if err := a.Route(ctx, msg(bob.full.Bare().String(), "chat"), bob.full.Bare()); err != nil {
		t.Fatal(err)
	}
	bob.expect(t)

	// Priority is read from the registry: a negative-priority resource gets no bare message.
	bob.prio.Store(-1)
	b.PresenceChanged(bob, stanza.NewElement(stanza.NSClient, "presence").AddChild(stanza.NewElement(stanza.NSClient, "priority").AddText("-1")))
	eventually(t, "a sees bob's priority", func() bool {
		s := a.Sessions(bob.full.Bare())
		return len(s) == 1 && s[0].Priority() == -1
	})
	if err := a.Route(ctx, msg(bob.full.Bare().String(), "chat"), bob.full.Bare()); !errors.Is(err, router.ErrOffline) {
		t.Fatalf("bare message to a negative-priority resource: %v, want offline", err)
	}
	if lp := a.Session(bob.full).(interface{ LastPresence() *stanza.Element }).LastPresence(); lp == nil || lp.Child(stanza.NSClient, "priority").Text() != "-1" {
		t.Fatalf("presence for probes on node a: %v", lp)
	}

	// Order per sender is kept: 200 messages forwarded in a row arrive in order.
	bob.prio.Store(0)
	for i := 0; i < 200; i++ {
		el := msg(bob.full.String(), "chat")
		el.SetAttr("id", string(rune('A'+i%26))+string(rune('0'+i/26)))
		if err := a.Route(ctx, el, bob.full); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i++ {
		want := string(rune('A'+i%26)) + string(rune('0'+i/26))
		if got := bob.expect(t).Attr("id"); got != want {
			t.Fatalf("message %d arrived as %s, want %s", i, got, want)
		}
	}

	// Gone: unbound on b, messages to bob are offline on a.
	b.Unbind(bob)
	eventually(t, "a forgets bob", func() bool { return len(a.Sessions(bob.full.Bare())) == 0 })
	if err := a.Route(ctx, msg(bob.full.String(), "chat"), bob.full); !errors.Is(err, router.ErrOffline) {
		t.Fatalf("message to an unbound resource: %v, want offline", err)
	}
}

func TestResourceConflictAcrossNodes(t *testing.T) {
	url := testNATS(t)
	a := startNode(t, url, "a", nil, nil)
	b := startNode(t, url, "b", nil, nil)
	old := newFake(t, "carol@example.org/laptop")
	a.Bind(old)
	eventually(t, "b sees carol on a", func() bool {
		rec, ok := b.Registry().Lookup("carol@example.org", "laptop")
		return ok && rec.Node == "a"
	})
	nw := newFake(t, "carol@example.org/laptop")
	b.Bind(nw)
	// RFC 6120 §7.7.2.2: the new session wins, the old one is closed with <conflict/>.
	eventually(t, "the old session is replaced", old.replaced.Load)
	if nw.replaced.Load() {
		t.Fatal("the new session was replaced")
	}
	eventually(t, "a's replica names b", func() bool {
		rec, ok := a.Registry().Lookup("carol@example.org", "laptop")
		return ok && rec.Node == "b"
	})
	// The old session's late unbind does not remove the new session's entry.
	a.Unbind(old)
	if err := a.Route(context.Background(), msg(nw.full.String(), "chat"), nw.full); err != nil {
		t.Fatal(err)
	}
	nw.expect(t)
}

func TestNodeLossIsCleanedOnce(t *testing.T) {
	url := testNATS(t)
	g := &gone{}
	b := startNode(t, url, "b", g, nil)
	c := startNode(t, url, "c", g, nil)
	// Node d registers sessions and then stops renewing its lease, as a crashed node would.
	cfg := testConfig(url, "d")
	nc, err := connect(&cfg, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	d, err := OpenRegistry(ctx, nc, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	inc, err := d.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const users = 20
	for i := 0; i < users; i++ {
		if _, err := d.Claim(ctx, "u"+string(rune('a'+i))+"@example.org", "r", Entry{Node: "d", Inc: inc, Avail: true}, nil); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every lost session announced", func() bool { return g.count() >= users })
	eventually(t, "registry empty", func() bool { return len(b.Registry().Snapshot()) == 0 })
	// Exactly once across the two surviving nodes.
	if g.count() != users || b.Cleaned.Load()+c.Cleaned.Load() != users {
		t.Fatalf("announced %d, cleaned %d+%d, want %d each", g.count(), b.Cleaned.Load(), c.Cleaned.Load(), users)
	}
}

func TestFencing(t *testing.T) {
	url := testNATS(t)
	var fenced atomic.Int32
	a := startNode(t, url, "a", nil, &fenced)
	s := newFake(t, "dave@example.org/r")
	a.Bind(s)
	// Another party takes the lease away (as an expiry during a partition would).
	ctx := context.Background()
	if err := a.reg.leases.Purge(ctx, leaseKey("a")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the node fences itself", func() bool { return fenced.Load() == 1 })
	eventually(t, "its session is closed", func() bool {
		serr := s.closed.Load()
		return serr != nil && serr.Condition == "system-shutdown"
	})
	// It takes a new lease and accepts sessions again.
	eventually(t, "the node rejoins", func() bool { return !a.Fenced() })
	s2 := newFake(t, "dave@example.org/r2")
	a.Bind(s2)
	if s2.closed.Load() != nil {
		t.Fatal("a session bound after rejoining was closed")
	}
}

var _ = config.TypeInt
