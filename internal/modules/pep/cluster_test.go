package pep_test

import (
	"context"
	"testing"

	"impetus/internal/modules/pep"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage/memory"
)

// clusterRouter is the router of a cluster node as modules see it: it names its node.
type clusterRouter struct{ router.Router }

func (clusterRouter) Name() string { return "n1" }

// remoteSession stands for a session on another node: the proxy the cluster router returns,
// which knows the presence that node registered.
type remoteSession struct{ *rostertest.Session }

func (remoteSession) Node() string    { return "n2" }
func (remoteSession) Available() bool { return true }
func (remoteSession) LastPresence() *stanza.Element {
	return stanza.NewElement(stanza.NSClient, "presence")
}

// clusterCaps answers for sessions as the caps module does, remote ones included.
type clusterCaps struct{ *fakeCaps }

func (c clusterCaps) FeaturesOf(_ context.Context, s router.Session) []string {
	return c.Features(s.JID())
}

// A publish on one node notifies, by their +notify caps, the publisher's own resources and the
// contacts' resources on other nodes, whose presence this node never handled.
func TestNotifyResourcesOnOtherNodes(t *testing.T) {
	s := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	h := s.Hosts["example.com"]
	h.Router = clusterRouter{h.Router}
	caps := &fakeCaps{f: map[string][]string{}}
	p := pep.New()
	p.Caps = clusterCaps{caps}
	if err := p.Provision(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	e := &env{Server: s, caps: caps, pep: p}
	e.befriend(t, "juliet@example.com", "romeo@example.com")
	e.befriend(t, "juliet@example.com", "nurse@example.com")

	remote := func(full string) *rostertest.Session {
		sess := e.Connect(full)
		e.Router.Unbind(sess)
		e.Router.Bind(remoteSession{sess})
		return sess
	}
	jb := e.Connect("juliet@example.com/balcony")
	jb.Input(`<presence/>`)
	jPhone := remote("juliet@example.com/phone")
	ro := remote("romeo@example.com/orchard")
	nurse := remote("nurse@example.com/kitchen") // no caps: no interest
	caps.set("juliet@example.com/phone", tune+"+notify")
	caps.set("romeo@example.com/orchard", tune+"+notify")
	for _, x := range []*rostertest.Session{jb, jPhone, ro, nurse} {
		x.Take()
	}

	jb.Input(publishTune("t1", "Suite"))
	has(t, jb.Take(), `type="result" id="pub"`)
	has(t, jPhone.Take(), `to="juliet@example.com/phone"`, `<title>Suite</title>`)
	has(t, ro.Take(), `to="romeo@example.com/orchard" type="headline"`, `<title>Suite</title>`)
	hasNot(t, nurse.Take(), "pubsub#event")
}
