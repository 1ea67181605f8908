package muc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/core"
	"impetus/internal/module"
	"impetus/internal/modules/muc"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/stanza"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
)

// fakeNet stands in for internal/cluster: room owners in a map, forwarding as a direct call.
type fakeNet struct {
	mu      sync.Mutex
	owners  map[string]string // room → node
	dead    map[string]bool
	nodes   map[string]*fakeNode
	nodeOf  map[string]string // full JID → node
	forward int
}

type fakeNode struct {
	net    *fakeNet
	name   string
	handle func(context.Context, *stanza.Element)
	lost   func(string, bool)
}

func (f *fakeNode) Owner(_ context.Context, room jid.JID, take bool) (string, bool, bool, error) {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	if f.net.dead[f.name] {
		return "", false, false, errors.New("fenced")
	}
	o := f.net.owners[room.String()]
	if o == "" || f.net.dead[o] {
		if !take {
			return "", false, false, nil
		}
		f.net.owners[room.String()] = f.name
		return f.name, true, o != "", nil
	}
	return o, o == f.name, false, nil
}

func (f *fakeNode) Forward(ctx context.Context, room jid.JID, node string, el *stanza.Element) error {
	f.net.mu.Lock()
	to := f.net.nodes[node]
	ok := !f.net.dead[node] && f.net.owners[room.String()] == node
	f.net.forward++
	f.net.mu.Unlock()
	if !ok {
		return errors.New("moved")
	}
	to.handle(ctx, el)
	return nil
}

func (f *fakeNode) Release(_ context.Context, room jid.JID) {
	f.net.mu.Lock()
	if f.net.owners[room.String()] == f.name {
		delete(f.net.owners, room.String())
	}
	f.net.mu.Unlock()
}

func (f *fakeNode) NodeOf(full jid.JID) string {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	return f.net.nodeOf[full.String()]
}

func (f *fakeNode) Serve(_ string, handle func(context.Context, *stanza.Element), lost func(string, bool)) {
	f.handle, f.lost = handle, lost
}

// clusterNode is one node of the fake cluster: its own core and MUC service, sharing the
// session router (which a cluster router is) and the storage.
type clusterNode struct {
	core *core.Core
	svc  *muc.Service
	fake *fakeNode
}

func newClusterNode(t *testing.T, srv *rostertest.Server, net *fakeNet, name string, c *core.Core) *clusterNode {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if c == nil {
		c = core.New(srv.Router, log)
		c.AddHost(srv.Hosts[domain])
	}
	o := muc.DefaultOptions()
	o.LocalDomains = []string{domain}
	o.Now = func() time.Time { return rostertest.Clock }
	h := module.NewHost(conf, srv.Router, c, srv.Storage, nil, log)
	svc := muc.New(o)
	if err := svc.Provision(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	c.AddHost(h)
	f := &fakeNode{net: net, name: name}
	net.nodes[name] = f
	svc.SetCluster(f)
	return &clusterNode{core: c, svc: svc, fake: f}
}

// input sends xml from sess through the node's core, as the node's client stream would.
func (n *clusterNode) input(t *testing.T, sess *rostertest.Session, xml string) {
	t.Helper()
	el, err := rostertest.Parse(xml)
	if err != nil {
		t.Fatal(err)
	}
	el.SetAttr("from", sess.JID().String())
	n.core.FromClient(context.Background(), sess, el)
}

func TestClusteredRoomFailsOver(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		srv := rostertest.New(t, b, rostertest.Config{}, domain)
		net := &fakeNet{owners: map[string]string{}, dead: map[string]bool{}, nodes: map[string]*fakeNode{}, nodeOf: map[string]string{}}
		a := newClusterNode(t, srv, net, "a", srv.Core)
		bn := newClusterNode(t, srv, net, "b", nil)
		alice := srv.Connect("alice@example.com/a")
		bob := srv.Connect("bob@example.com/b")
		net.nodeOf["alice@example.com/a"], net.nodeOf["bob@example.com/b"] = "a", "b"

		// alice creates a persistent room on node a.
		a.input(t, alice, `<presence to='`+room+`/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>`)
		if p := find(alice.Elements(), "presence", ""); p == nil || !hasStatus(p, "201") {
			t.Fatal("room not created")
		}
		a.input(t, alice, `<iq type='set' id='c1' to='`+room+`'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>`+
			`<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>`+
			`<field var='muc#roomconfig_persistentroom'><value>1</value></field>`+
			`<field var='muc#roomconfig_roomname'><value>Failover</value></field></x></query></iq>`)
		if find(alice.Elements(), "iq", "result") == nil {
			t.Fatal("configuration refused")
		}
		a.input(t, alice, `<message to='`+room+`' type='groupchat'><subject>survives</subject></message>`)
		alice.Elements()

		// bob enters through node b: the stanza is forwarded to a, which owns the room.
		bn.input(t, bob, `<presence to='`+room+`/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>`)
		got := bob.Elements()
		if p := findFrom(got, "presence", room+"/alice"); p == nil {
			t.Fatalf("bob did not see alice:\n%s", dump(got))
		}
		if self := findFrom(got, "presence", room+"/bob"); self == nil || !hasStatus(self, "110") {
			t.Fatalf("bob's join:\n%s", dump(got))
		}
		if m := find(got, "message", "groupchat"); m == nil || m.Child(stanza.NSClient, "subject").Text() != "survives" {
			t.Fatalf("no subject:\n%s", dump(got))
		}
		if findFrom(alice.Elements(), "presence", room+"/bob") == nil {
			t.Fatal("alice did not see bob enter")
		}
		bn.input(t, bob, `<message to='`+room+`' type='groupchat'><body>before</body></message>`)
		if m := findFrom(alice.Elements(), "message", room+"/bob"); m == nil {
			t.Fatal("alice did not get bob's message")
		}
		bob.Elements()
		if net.forward < 2 {
			t.Fatalf("%d forwards, want bob's stanzas forwarded", net.forward)
		}

		// Node a is lost: b tells its local occupant the room went down (332), and a, fenced,
		// drops its rooms.
		net.mu.Lock()
		net.dead["a"] = true
		net.mu.Unlock()
		a.fake.lost("a", true)
		bn.fake.lost("a", false)
		bn.fake.lost("a", false) // the sweep and the room watch may both report it
		got = bob.Elements()
		if len(got) != 1 || got[0].Attr("type") != "unavailable" || got[0].Attr("from") != room+"/bob" ||
			!hasStatus(got[0], "332") || !hasStatus(got[0], "110") {
			t.Fatalf("bob's notice of the lost room:\n%s", dump(got))
		}

		// bob enters again: b takes the room over and loads it from storage.
		bn.input(t, bob, `<presence to='`+room+`/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>`)
		got = bob.Elements()
		self := findFrom(got, "presence", room+"/bob")
		if self == nil || !hasStatus(self, "110") || hasStatus(self, "201") {
			t.Fatalf("rejoin after failover:\n%s", dump(got))
		}
		var history, subject bool
		for _, el := range got {
			if el.Local == "message" && el.Child(stanza.NSClient, "body") != nil && el.Child(stanza.NSClient, "body").Text() == "before" {
				history = true
			}
			if s := el.Child(stanza.NSClient, "subject"); s != nil && s.Text() == "survives" {
				subject = true
			}
		}
		if !history || !subject {
			t.Fatalf("history %v subject %v after failover:\n%s", history, subject, dump(got))
		}
		// The owner affiliation came back from storage: alice is still the owner.
		bn.input(t, bob, `<iq type='get' id='i1' to='`+room+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
		info := find(bob.Elements(), "iq", "result")
		if info == nil || !containsXML(info, "Failover") {
			t.Fatal("room configuration lost in the failover")
		}

		// dave, connected through node d, enters the room b now owns; d is lost and dave is
		// removed (333), which bob sees.
		dave := srv.Connect("dave@example.com/d")
		net.nodeOf["dave@example.com/d"] = "d"
		bn.input(t, dave, `<presence to='`+room+`/dave'><x xmlns='http://jabber.org/protocol/muc'/></presence>`)
		dave.Elements()
		bob.Elements()
		bn.fake.lost("d", false)
		leave := findTyped(bob.Elements(), "presence", room+"/dave", "unavailable")
		if leave == nil || !hasStatus(leave, "333") {
			t.Fatal("bob did not see dave removed with the lost node")
		}
		// bob, connected through a live node, stays.
		bn.input(t, bob, `<message to='`+room+`' type='groupchat'><body>after</body></message>`)
		if findFrom(bob.Elements(), "message", room+"/bob") == nil {
			t.Fatal("the room does not work after the failover")
		}
	})
}

func containsXML(el *stanza.Element, s string) bool {
	return strings.Contains(el.String(), s)
}

func TestClusteredMissingRoomTakesNoOwnership(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, domain)
	net := &fakeNet{owners: map[string]string{}, dead: map[string]bool{}, nodes: map[string]*fakeNode{}, nodeOf: map[string]string{}}
	a := newClusterNode(t, srv, net, "a", srv.Core)
	bob := srv.Connect("bob@example.com/b")
	a.input(t, bob, `<iq type='get' id='d1' to='nothere@`+conf+`'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	a.input(t, bob, `<message type='groupchat' id='m1' to='nothere@`+conf+`'><body>x</body></message>`)
	got := bob.Elements()
	if len(got) != 2 || errCond(got[0]) != "item-not-found" || errCond(got[1]) != "item-not-found" {
		t.Fatalf("stanzas to a missing room:\n%s", dump(got))
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	if len(net.owners) != 0 {
		t.Fatalf("a missing room left ownerships behind: %v", net.owners)
	}
}
