package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"mellium.im/xmpp/jid"

	"impetus/internal/router"
	"impetus/internal/stanza"
)

// waitSeen waits until node n's replica holds every session.
func waitSeen(t *testing.T, n *Node, sessions ...*fakeSession) {
	t.Helper()
	eventually(t, n.Name()+" sees the sessions", func() bool {
		for _, s := range sessions {
			if n.Session(s.full) == nil {
				return false
			}
		}
		return true
	})
}

func TestPresenceBroadcastIsBatchedPerNode(t *testing.T) {
	url := testNATS(t)
	a, b := startNode(t, url, "a", nil, nil), startNode(t, url, "b", nil, nil)
	var contacts []*fakeSession
	for i := range 5 {
		s := newFake(t, fmt.Sprintf("c%d@example.org/r", i))
		b.Bind(s)
		contacts = append(contacts, s)
	}
	waitSeen(t, a, contacts...)
	pres := stanza.NewElement(stanza.NSClient, "presence", stanza.Attr{Name: "from", Value: "u@example.org/home"}).
		AddChild(stanza.NewElement(stanza.NSClient, "status").AddText("here"))
	before := a.Forwarded.Load()
	ctx, done := router.Batch(context.Background(), a)
	for _, c := range contacts {
		// As the presence module stamps it: the children shared, 'to' the contact's bare JID.
		el := &stanza.Element{Space: pres.Space, Local: pres.Local, Children: pres.Children,
			Attrs: []stanza.Attr{{Name: "from", Value: "u@example.org/home"}, {Name: "to", Value: c.full.Bare().String()}}}
		if err := a.Route(ctx, el, c.full.Bare()); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.Forwarded.Load() - before; got != 0 {
		t.Fatalf("%d transfers before the batch was sent, want none", got)
	}
	// A message after the presence, to the same node: it must not overtake the batch.
	if err := a.Route(ctx, msg(contacts[0].full.String(), "chat"), contacts[0].full); err != nil {
		t.Fatal(err)
	}
	done()
	if got := a.Forwarded.Load() - before; got != 2 {
		t.Fatalf("%d transfers for a broadcast to 5 sessions of one node and a message, want 2", got)
	}
	for i, c := range contacts {
		el := c.expect(t)
		if el.Local != "presence" || el.Attr("to") != c.full.Bare().String() || el.Child(stanza.NSClient, "status") == nil {
			t.Fatalf("contact %d got %s", i, el.AppendXML(nil, stanza.NSClient))
		}
	}
	if el := contacts[0].expect(t); el.Local != "message" {
		t.Fatalf("after the presence contact 0 got %s, want the message", el.AppendXML(nil, stanza.NSClient))
	}
}

func TestBatchSplitsDistinctStanzasAndBound(t *testing.T) {
	url := testNATS(t)
	a, b := startNode(t, url, "a", nil, nil), startNode(t, url, "b", nil, nil)
	a.cfg.MaxBatch = 2
	var sessions []*fakeSession
	for i := range 3 {
		s := newFake(t, fmt.Sprintf("d%d@example.org/r r", i)) // a resource with a space
		b.Bind(s)
		sessions = append(sessions, s)
	}
	waitSeen(t, a, sessions...)
	before := a.Forwarded.Load()
	ctx, done := router.Batch(context.Background(), a)
	for i, s := range sessions {
		el := stanza.NewElement(stanza.NSClient, "presence", stanza.Attr{Name: "from", Value: "u@example.org/x"}, stanza.Attr{Name: "to", Value: s.full.String()})
		if i == 2 {
			el.SetAttr("type", "unavailable")
		}
		if err := a.Route(ctx, el, s.full); err != nil {
			t.Fatal(err)
		}
	}
	done()
	// The first two differ only in 'to' and share a transfer; the third is another stanza.
	if got := a.Forwarded.Load() - before; got != 2 {
		t.Fatalf("%d transfers, want 2", got)
	}
	if el := sessions[2].expect(t); el.Attr("type") != "unavailable" || el.Attr("to") != sessions[2].full.String() {
		t.Fatalf("got %s", el.AppendXML(nil, stanza.NSClient))
	}
	// One shared stanza, without 'to' as given, to three sessions with a bound of two: two
	// transfers, and the sessions get it as given.
	shared := stanza.NewElement(stanza.NSClient, "presence", stanza.Attr{Name: "from", Value: "u@example.org/x"})
	before = a.Forwarded.Load()
	ctx, done = router.Batch(context.Background(), a)
	for _, s := range sessions {
		if err := a.Route(ctx, shared, s.full); err != nil {
			t.Fatal(err)
		}
	}
	done()
	if got := a.Forwarded.Load() - before; got != 2 {
		t.Fatalf("%d transfers, want 2", got)
	}
	for _, s := range sessions[:2] {
		s.expect(t)
	}
	for _, s := range sessions {
		if el := s.expect(t); el.Attr("to") != "" || el.Attr("type") != "" {
			t.Fatalf("%s got %s", s.full, el.AppendXML(nil, stanza.NSClient))
		}
	}
}

// roomSvc records what a node's rooms subject hands to the service.
type roomSvc struct {
	mu   sync.Mutex
	got  []*stanza.Element
	lost []string
}

func (s *roomSvc) handle(_ context.Context, el *stanza.Element) {
	s.mu.Lock()
	s.got = append(s.got, el)
	s.mu.Unlock()
}

func (s *roomSvc) lostNode(node string, self bool) {
	s.mu.Lock()
	s.lost = append(s.lost, fmt.Sprintf("%s:%v", node, self))
	s.mu.Unlock()
}

func (s *roomSvc) count() (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got), append([]string(nil), s.lost...)
}

func roomsOf(t *testing.T, n *Node) (*Rooms, *roomSvc) {
	t.Helper()
	r, err := n.Rooms(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := &roomSvc{}
	r.Serve("conference.example.org", s.handle, s.lostNode)
	return r, s
}

func TestRoomHasOneOwnerAndFailsOver(t *testing.T) {
	url := testNATS(t)
	a, b, c := startNode(t, url, "a", nil, nil), startNode(t, url, "b", nil, nil), startNode(t, url, "c", nil, nil)
	ra, sa := roomsOf(t, a)
	rb, sb := roomsOf(t, b)
	rc, sc := roomsOf(t, c)
	ctx := context.Background()
	room := jid.MustParse("lobby@conference.example.org")

	// Without take, nobody owns a room that was never taken.
	if node, local, _, err := rb.Owner(ctx, room, false); err != nil || node != "" || local {
		t.Fatalf("looking without taking: %q %v %v, want no owner", node, local, err)
	}
	node, local, fresh, err := ra.Owner(ctx, room, true)
	if err != nil || node != "a" || !local || fresh {
		t.Fatalf("first claim: %s %v %v %v, want a, local and not fresh", node, local, fresh, err)
	}
	if node, local, fresh, err = ra.Owner(ctx, room, true); err != nil || !local || fresh {
		t.Fatalf("second look on the owner: %s %v %v %v, want local and not fresh", node, local, fresh, err)
	}
	for _, r := range []*Rooms{rb, rc} {
		node, local, _, err := r.Owner(ctx, room, false)
		if err != nil || node != "a" || local {
			t.Fatalf("%s sees owner %s local %v (%v), want a", r.n.Name(), node, local, err)
		}
	}
	// Stanzas from b and c reach a's service, in order per sender.
	for i := range 3 {
		el := stanza.NewElement(stanza.NSClient, "message", stanza.Attr{Name: "to", Value: room.String()},
			stanza.Attr{Name: "from", Value: "u@example.org/r"}, stanza.Attr{Name: "id", Value: fmt.Sprint(i)})
		if err := rb.Forward(ctx, room, "a", el); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "a's service got the forwarded stanzas", func() bool { n, _ := sa.count(); return n == 3 })
	sa.mu.Lock()
	for i, el := range sa.got {
		if el.Attr("id") != fmt.Sprint(i) {
			t.Fatalf("stanza %d has id %s: order lost", i, el.Attr("id"))
		}
	}
	sa.mu.Unlock()
	// A node that does not own the room refuses stanzas for it.
	if err := rb.Forward(ctx, room, "c", stanza.NewElement(stanza.NSClient, "message", stanza.Attr{Name: "to", Value: room.String()})); err == nil {
		t.Fatal("c took a stanza for a room it does not own")
	}
	if n, _ := sc.count(); n != 0 {
		t.Fatalf("c's service got %d stanzas", n)
	}

	// a is lost: its lease expires. b and c notice (they forwarded to a's rooms or own none),
	// and exactly one of them takes the room over.
	a.cancel()
	a.wg.Wait()
	a.nc.Close()
	// Both must have learned of the loss: a node that has not yet still names a as the owner.
	for name, sv := range map[string]*roomSvc{"b": sb, "c": sc} {
		eventually(t, name+" is told that a was lost", func() bool {
			_, lost := sv.count()
			return len(lost) > 0 && lost[0] == "a:false"
		})
	}
	type claim struct {
		node         string
		local, fresh bool
		err          error
	}
	results := make(chan claim, 2)
	for _, r := range []*Rooms{rb, rc} {
		go func(r *Rooms) {
			node, local, fresh, err := r.Owner(ctx, room, true)
			results <- claim{node, local, fresh, err}
		}(r)
	}
	one, two := <-results, <-results
	if one.err != nil || two.err != nil {
		t.Fatalf("takeover: %v, %v", one.err, two.err)
	}
	if one.local == two.local || one.node != two.node {
		t.Fatalf("takeover gave %+v and %+v: want exactly one owner both agree on", one, two)
	}
	winner := one
	if two.local {
		winner = two
	}
	if !winner.fresh {
		t.Fatal("the node that took the room over must load it afresh")
	}
	// The new owner releases the room; a later claim creates it anew.
	owner := rb
	if winner.node == "c" {
		owner = rc
	}
	owner.Release(ctx, room)
	node, local, fresh, err = rc.Owner(ctx, room, true)
	if winner.node == "b" {
		// c still remembers b as the owner; a forward to b is refused, and c asks again.
		if err := rc.Forward(ctx, room, node, stanza.NewElement(stanza.NSClient, "message", stanza.Attr{Name: "to", Value: room.String()})); err == nil {
			t.Fatal("b took a stanza for a room it released")
		}
		node, local, fresh, err = rc.Owner(ctx, room, true)
	}
	if err != nil || node != "c" || !local || fresh {
		t.Fatalf("claim after release: %s %v %v %v, want c, local and not fresh", node, local, fresh, err)
	}
}

func TestFencedNodeDropsItsRooms(t *testing.T) {
	url := testNATS(t)
	a := startNode(t, url, "a", nil, nil)
	ra, sa := roomsOf(t, a)
	room := jid.MustParse("r@conference.example.org")
	if _, local, _, err := ra.Owner(context.Background(), room, true); err != nil || !local {
		t.Fatalf("claim: %v %v", local, err)
	}
	a.fence(fmt.Errorf("test"))
	if _, lost := sa.count(); len(lost) != 1 || lost[0] != "a:true" {
		t.Fatalf("lost notices %v, want a:true", lost)
	}
	if _, _, _, err := ra.Owner(context.Background(), room, true); err == nil {
		t.Fatal("a fenced node still acts as a room owner")
	}
	eventually(t, "a rejoins", func() bool { return !a.Fenced() })
	_, local, fresh, err := ra.Owner(context.Background(), room, true)
	if err != nil || !local || !fresh {
		t.Fatalf("after rejoining: local %v fresh %v %v; the room of the old incarnation must be taken afresh", local, fresh, err)
	}
}

func TestMaxBatchRecipientsIsChecked(t *testing.T) {
	c := Defaults()
	c.NodeName, c.NATSURLs = "a", []string{"nats://127.0.0.1:4222"}
	if c.MaxBatch != DefaultMaxBatchRecipients {
		t.Fatalf("default max_batch_recipients %d, want %d", c.MaxBatch, DefaultMaxBatchRecipients)
	}
	if err := c.Check(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	c.MaxBatch = 0
	if err := c.Check(); err == nil {
		t.Fatal("max_batch_recipients = 0 accepted")
	}
}
