package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// fakeS2S stands in for a node's server-to-server manager: it records what the node sends on
// its own outgoing streams and which streams it was told to close.
type fakeS2S struct {
	name string
	mu   sync.Mutex
	sent []string // bodies, in order
	drop []string // "local remote"
	// fail makes Send refuse stanzas whose body is "fail" with this condition.
	fail string
}

func (s *fakeS2S) hooks() FederationHooks {
	return FederationHooks{
		Send: func(_ context.Context, el *stanza.Element, _ jid.JID) error {
			body := ""
			if b := el.Child(stanza.NSClient, "body"); b != nil {
				body = b.Text()
			}
			if body == "fail" && s.fail != "" {
				return stanza.NewError(s.fail, "refused by "+s.name)
			}
			s.mu.Lock()
			s.sent = append(s.sent, body)
			s.mu.Unlock()
			return nil
		},
		Pair: func(el *stanza.Element, to jid.JID) (string, string, error) {
			from, err := jid.Parse(el.Attr("from"))
			if err != nil || from.Domainpart() != "example.org" {
				return "", "", stanza.NewError("remote-server-not-found", "not hosted")
			}
			return from.Domainpart(), to.Domainpart(), nil
		},
		Drop: func(local, remote string) {
			s.mu.Lock()
			s.drop = append(s.drop, local+" "+remote)
			s.mu.Unlock()
		},
	}
}

func (s *fakeS2S) bodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent...)
}

func (s *fakeS2S) dropped() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.drop...)
}

// fedNode is a cluster node with its federation and fake manager.
type fedNode struct {
	n   *Node
	f   *Federation
	out *fakeS2S
}

func startFed(t *testing.T, url, name string) *fedNode {
	t.Helper()
	n := startNode(t, url, name, nil, nil)
	out := &fakeS2S{name: name}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	f, err := n.StartFederation(ctx, out.hooks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return &fedNode{n: n, f: f, out: out}
}

// crash ends the node's NATS connection without leaving the cluster, as a killed process does:
// nothing answers on its subject any more, and its lease and keys stay until they expire.
func (fn *fedNode) crash() {
	fn.f.ready.Store(false)
	fn.n.nc.Close()
}

func s2sMsg(from, to, body string) *stanza.Element {
	return stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: from}, stanza.Attr{Name: "to", Value: to}, stanza.Attr{Name: "type", Value: "chat"}).
		AddChild(stanza.NewElement(stanza.NSClient, "body").AddText(body))
}

func (fn *fedNode) send(t *testing.T, from, to, body string) error {
	t.Helper()
	tj, err := jid.Parse(to)
	if err != nil {
		t.Fatal(err)
	}
	return fn.f.Send(context.Background(), s2sMsg(from, to, body), tj)
}

func (fn *fedNode) mustSend(t *testing.T, from, to, body string) {
	t.Helper()
	if err := fn.send(t, from, to, body); err != nil {
		t.Fatalf("%s sending %q: %v", fn.n.Name(), body, err)
	}
}

// ownerInKV reads the owner of a pair from the bucket itself.
func ownerInKV(t *testing.T, f *Federation, local, remote string) s2sOwner {
	t.Helper()
	rec, err := f.lookup(context.Background(), pairKey(local, remote), true)
	if err != nil {
		t.Fatal(err)
	}
	return rec.s2sOwner
}

func TestPairKeysRoundTrip(t *testing.T) {
	for _, c := range [][2]string{{"example.org", "remote.test"}, {"ü.example", "xn--bcher-kva.example"}} {
		l, r, ok := parsePairKey(pairKey(c[0], c[1]))
		if !ok || l != c[0] || r != c[1] {
			t.Errorf("%q %q: round trip gave %q %q %v", c[0], c[1], l, r, ok)
		}
	}
	if _, _, ok := parsePairKey(secretKey); ok {
		t.Error("the secret's key parsed as a pair")
	}
}

func TestFederationOneOwnerPerPair(t *testing.T) {
	url := testNATS(t)
	a, b, c := startFed(t, url, "a"), startFed(t, url, "b"), startFed(t, url, "c")

	// The first sender owns the pair and sends on its own stream.
	a.mustSend(t, "u@example.org/r", "v@remote.test", "from a")
	if got := a.out.bodies(); len(got) != 1 || got[0] != "from a" {
		t.Fatalf("a sent %v", got)
	}
	if o := ownerInKV(t, b.f, "example.org", "remote.test"); o.Node != "a" || o.Inc != a.n.reg.Inc() {
		t.Fatalf("owner %+v, want a#%d", o, a.n.reg.Inc())
	}
	// The other nodes forward to it, and one sender's stanzas keep their order.
	for i := 0; i < 30; i++ {
		b.mustSend(t, "w@example.org/r", "v@remote.test", fmt.Sprintf("b%d", i))
		c.mustSend(t, "x@example.org/r", "v@remote.test", fmt.Sprintf("c%d", i))
	}
	if len(b.out.bodies())+len(c.out.bodies()) != 0 {
		t.Fatalf("non-owners sent on their own streams: b %v, c %v", b.out.bodies(), c.out.bodies())
	}
	var nb, nc int
	for _, body := range a.out.bodies()[1:] {
		switch body[0] {
		case 'b':
			if body != fmt.Sprintf("b%d", nb) {
				t.Fatalf("b's stanza %d arrived as %s", nb, body)
			}
			nb++
		case 'c':
			if body != fmt.Sprintf("c%d", nc) {
				t.Fatalf("c's stanza %d arrived as %s", nc, body)
			}
			nc++
		}
	}
	if nb != 30 || nc != 30 || a.f.Received.Load() != 60 || b.f.Forwarded.Load() != 30 {
		t.Fatalf("a sent %d of b's and %d of c's stanzas; received %d, b forwarded %d", nb, nc, a.f.Received.Load(), b.f.Forwarded.Load())
	}
	// Another pair is owned independently, by its own first sender.
	c.mustSend(t, "u@example.org/r", "v@other.test", "other")
	if got := c.out.bodies(); len(got) != 1 || got[0] != "other" {
		t.Fatalf("c sent %v for its own pair", got)
	}
	// A stanza the owner's manager refuses comes back to the sender as that stanza error.
	a.out.fail = "remote-server-not-found"
	err := b.send(t, "w@example.org/r", "v@remote.test", "fail")
	var serr *stanza.Error
	if !errors.As(err, &serr) || serr.Condition != "remote-server-not-found" || serr.Text != "refused by a" {
		t.Fatalf("refused stanza: %v", err)
	}
	// A stanza refused before any stream (an unhosted sender) creates no key.
	if err := b.send(t, "w@elsewhere.org/r", "v@third.test", "x"); !errors.As(err, &serr) {
		t.Fatalf("unhosted sender: %v", err)
	}
	if _, ok := b.f.Owner("elsewhere.org", "third.test"); ok {
		t.Fatal("a refused stanza created an owner")
	}
	// Every node shares one dialback secret.
	if s := a.f.DialbackSecret(); len(s) < 32 || string(s) != string(b.f.DialbackSecret()) || string(s) != string(c.f.DialbackSecret()) {
		t.Fatal("the nodes do not share one dialback secret")
	}
}

func TestFederationConcurrentFirstSendersAgree(t *testing.T) {
	url := testNATS(t)
	nodes := []*fedNode{startFed(t, url, "a"), startFed(t, url, "b"), startFed(t, url, "c")}
	var wg sync.WaitGroup
	errs := make(chan error, 3*20)
	for _, fn := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				tj := jid.MustParse("v@race.test")
				if err := fn.f.Send(context.Background(), s2sMsg("u@example.org/"+fn.n.Name(), "v@race.test", fmt.Sprintf("%s%d", fn.n.Name(), i)), tj); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	senders := 0
	for _, fn := range nodes {
		if n := len(fn.out.bodies()); n > 0 {
			senders++
			if n != 60 {
				t.Errorf("%s sent %d stanzas, want all 60", fn.n.Name(), n)
			}
		}
	}
	if senders != 1 {
		t.Fatalf("%d nodes sent on their own stream, want exactly one", senders)
	}
}

func TestFederationTakeoverAfterCrash(t *testing.T) {
	url := testNATS(t)
	a, b, c := startFed(t, url, "a"), startFed(t, url, "b"), startFed(t, url, "c")
	a.mustSend(t, "u@example.org/r", "v@remote.test", "before")
	eventually(t, "b and c know the owner", func() bool {
		ob, okb := b.f.Owner("example.org", "remote.test")
		oc, okc := c.f.Owner("example.org", "remote.test")
		return okb && okc && ob == "a" && oc == "a"
	})
	a.crash()
	// b and c send at once: one of them takes the pair over by compare-and-set and the
	// other forwards to it.
	var wg sync.WaitGroup
	for _, fn := range []*fedNode{b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if err := fn.send(t, "w@example.org/"+fn.n.Name(), "v@remote.test", fmt.Sprintf("%s%d", fn.n.Name(), i)); err != nil {
					t.Errorf("%s after the crash: %v", fn.n.Name(), err)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	winner, loser := b, c
	if len(c.out.bodies()) > 0 {
		winner, loser = c, b
	}
	if len(winner.out.bodies()) != 20 || len(loser.out.bodies()) != 0 {
		t.Fatalf("after the crash b sent %v and c sent %v; want all 20 on one stream", b.out.bodies(), c.out.bodies())
	}
	if b.f.Takeovers.Load()+c.f.Takeovers.Load() != 1 {
		t.Fatalf("takeovers: b %d, c %d; want one in all", b.f.Takeovers.Load(), c.f.Takeovers.Load())
	}
	if o := ownerInKV(t, loser.f, "example.org", "remote.test"); o.Node != winner.n.Name() {
		t.Fatalf("owner after the takeover: %+v", o)
	}
}

func TestFederationFencedOwnerIsReplaced(t *testing.T) {
	url := testNATS(t)
	a, b := startFed(t, url, "a"), startFed(t, url, "b")
	a.mustSend(t, "u@example.org/r", "v@remote.test", "before")
	// While the owner cannot use its stream but still holds its lease, the pair is not taken
	// from it: the sender gets remote-server-timeout.
	a.f.ready.Store(false)
	err := b.send(t, "w@example.org/r", "v@remote.test", "refused")
	var serr *stanza.Error
	if !errors.As(err, &serr) || serr.Condition != "remote-server-timeout" {
		t.Fatalf("stanza for an owner that cannot serve: %v", err)
	}
	// a loses its lease (as an expiry during a partition would): it fences itself and closes
	// its stream, and b takes the pair over on its next stanza.
	if err := a.n.reg.leases.Purge(context.Background(), leaseKey("a")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a closes its stream of the pair", func() bool {
		d := a.out.dropped()
		return len(d) > 0 && d[0] == "example.org remote.test"
	})
	b.mustSend(t, "w@example.org/r", "v@remote.test", "after")
	if got := b.out.bodies(); len(got) != 1 || got[0] != "after" {
		t.Fatalf("b sent %v, want the stanza on its own stream", got)
	}
	if o := ownerInKV(t, b.f, "example.org", "remote.test"); o.Node != "b" || b.f.Takeovers.Load() != 1 {
		t.Fatalf("owner %+v, %d takeovers", o, b.f.Takeovers.Load())
	}
	// Once a serves again, its stanzas for the pair go to b.
	eventually(t, "a rejoins", func() bool { return !a.n.Fenced() })
	a.f.ready.Store(true)
	eventually(t, "a sees the new owner", func() bool { o, _ := a.f.Owner("example.org", "remote.test"); return o == "b" })
	a.mustSend(t, "u@example.org/r", "v@remote.test", "from a again")
	if got := b.out.bodies(); len(got) != 2 || got[1] != "from a again" {
		t.Fatalf("b sent %v", got)
	}
	if got := a.out.bodies(); len(got) != 1 {
		t.Fatalf("a sent %v on its own stream after losing the pair", got)
	}
}

func TestFederationOwnerSeesTakeoverAndDropsItsStream(t *testing.T) {
	url := testNATS(t)
	a, b := startFed(t, url, "a"), startFed(t, url, "b")
	a.mustSend(t, "u@example.org/r", "v@remote.test", "before")
	// b takes the pair over while a is alive (a's stanzas did not reach it in time, say).
	key := pairKey("example.org", "remote.test")
	rec, err := b.f.lookup(context.Background(), key, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.f.takeOver(context.Background(), key, rec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a closes its stream of the pair", func() bool { return len(a.out.dropped()) == 1 })
	// A second takeover attempt from the same revision fails: compare-and-set.
	if _, err := a.f.takeOver(context.Background(), key, rec); !isConflict(err) {
		t.Fatalf("a second takeover of revision %d: %v", rec.Rev, err)
	}
	a.mustSend(t, "u@example.org/r", "v@remote.test", "via b")
	if got := b.out.bodies(); len(got) != 1 || got[0] != "via b" {
		t.Fatalf("b sent %v", got)
	}
}

func TestFederationRestartedOwnerKeepsItsPair(t *testing.T) {
	url := testNATS(t)
	a, b := startFed(t, url, "a"), startFed(t, url, "b")
	a.mustSend(t, "u@example.org/r", "v@remote.test", "first")
	a.crash()
	// The node comes back under the same name with a new incarnation before anyone sent.
	a2 := startFed(t, url, "a")
	b.mustSend(t, "w@example.org/r", "v@remote.test", "to the new a")
	if got := a2.out.bodies(); len(got) != 1 || got[0] != "to the new a" {
		t.Fatalf("the restarted node sent %v (b sent %v)", got, b.out.bodies())
	}
	if o := ownerInKV(t, b.f, "example.org", "remote.test"); o.Node != "a" || o.Inc != a2.n.reg.Inc() {
		t.Fatalf("owner %+v, want a#%d", o, a2.n.reg.Inc())
	}
}

func TestFederationCloseReleasesPairs(t *testing.T) {
	url := testNATS(t)
	a, b := startFed(t, url, "a"), startFed(t, url, "b")
	a.mustSend(t, "u@example.org/r", "v@remote.test", "first")
	a.f.Close()
	b.mustSend(t, "w@example.org/r", "v@remote.test", "after a left")
	if got := b.out.bodies(); len(got) != 1 {
		t.Fatalf("b sent %v after a left", got)
	}
	if b.f.Takeovers.Load() != 0 {
		t.Fatal("a released pair was taken over instead of created")
	}
}

func TestS2SSingleStreamOption(t *testing.T) {
	src := strings.Replace(baseConfig, "xmpp {}", `xmpp { storage = "pg" }`, 1) + pgStorage
	on, err := parse(t, src+`xmpp_cluster { node_name = "a" embedded_nats = true }`)
	if err != nil || !on.S2SSingleStream {
		t.Fatalf("default: %+v %v", on, err)
	}
	off, err := parse(t, src+`xmpp_cluster { node_name = "a" embedded_nats = true s2s_single_stream = false }`)
	if err != nil || off.S2SSingleStream {
		t.Fatalf("s2s_single_stream = false: %+v %v", off, err)
	}
}

func TestFederationReconcile(t *testing.T) {
	url := testNATS(t)
	a, b := startFed(t, url, "a"), startFed(t, url, "b")
	ctx := context.Background()
	a.mustSend(t, "u@example.org/r", "v@remote.test", "first")
	key := pairKey("example.org", "remote.test")
	mine, _ := a.f.cached(key)
	if _, err := b.f.takeOver(ctx, key, mine); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a's watch sees b", func() bool { o, _ := a.f.Owner("example.org", "remote.test"); return o == "b" })
	drops := len(a.out.dropped())
	// A change the watch did not deliver: the replica still names a.
	a.f.mu.Lock()
	a.f.owners[key] = mine
	a.f.mu.Unlock()
	a.f.reconcile(ctx)
	if o, _ := a.f.Owner("example.org", "remote.test"); o != "b" || len(a.out.dropped()) != drops+1 {
		t.Fatalf("after reconciling: owner %s, %d drops (was %d)", o, len(a.out.dropped()), drops)
	}
	// A key NATS lost while a still holds the stream is written again for a.
	a.mustSend(t, "u@example.org/r", "v@other.test", "second")
	other := pairKey("example.org", "other.test")
	held, _ := a.f.cached(other)
	if err := a.f.kv.Purge(ctx, other); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a's watch sees the key gone", func() bool { _, ok := a.f.Owner("example.org", "other.test"); return !ok })
	a.f.mu.Lock()
	a.f.owners[other] = held
	a.f.mu.Unlock()
	a.f.reconcile(ctx)
	if o := ownerInKV(t, b.f, "example.org", "other.test"); o != a.f.self() {
		t.Fatalf("lost key written again as %+v, want %+v", o, a.f.self())
	}
	// A watch the server ended is started again.
	a.f.watching.Store(false)
	a.f.reconcile(ctx)
	if !a.f.watching.Load() {
		t.Fatal("the watch was not started again")
	}
}
