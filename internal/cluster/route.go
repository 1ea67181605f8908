package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/nats-io/nats.go"
	"mellium.im/xmpp/jid"

	"impetus/internal/router"
	"impetus/internal/stanza"
)

// remote stands in for a session on another node: the rules of RFC 6121 read its availability
// and priority from the registry, and what is delivered to it goes to its node's subject.
type remote struct {
	n    *Node
	full jid.JID
	rec  Record

	once sync.Once
	pres *stanza.Element
}

func (n *Node) proxy(full jid.JID, rec Record) *remote { return &remote{n: n, full: full, rec: rec} }

// JID implements router.Session.
func (r *remote) JID() jid.JID { return r.full }

// Available implements router.Session.
func (r *remote) Available() bool { return r.rec.Avail }

// Priority implements router.Session.
func (r *remote) Priority() int { return r.rec.Prio }

// Deliver implements router.Session: the stanza is published to the owning node without
// waiting; broadcasts (presence, roster pushes) tolerate a session that just went away.
func (r *remote) Deliver(el *stanza.Element) {
	r.n.Forwarded.Add(1)
	if err := r.n.nc.Publish(r.n.nodeSubject(r.rec.Node), envelope(opDeliver, r.full.String(), el)); err != nil {
		r.n.log.Debug("cluster: forwarding failed", "node", r.rec.Node, "err", err)
	}
}

// Send writes el to the session, as module.Session asks.
func (r *remote) Send(el *stanza.Element) { r.Deliver(el) }

// Replaced implements router.Session. Replacing a remote session is done through the registry
// (Claim kicks the owner), never through a proxy.
func (r *remote) Replaced() {}

// Interested reports whether the session asked for the pushes of namespace ns on its node.
func (r *remote) Interested(ns string) bool { return slices.Contains(r.rec.Flags, ns) }

// Node returns the name of the node hosting the session.
func (r *remote) Node() string { return r.rec.Node }

// LastPresence returns the session's last available presence as its node registered it, so
// that this node can answer presence probes for it (RFC 6121 §4.3.2).
func (r *remote) LastPresence() *stanza.Element {
	r.once.Do(func() {
		if r.rec.Avail && r.rec.Pres != "" {
			if el, err := parseStanza([]byte(r.rec.Pres)); err == nil {
				r.pres = el
			}
		}
	})
	return r.pres
}

func (n *Node) nodeSubject(node string) string { return n.cfg.BucketPrefix + ".node." + node }

// forward delivers a message or iq to a remote session and waits for its node to accept it.
// It reports false when the session is not there: its node is gone (no responders), did not
// answer in time, or no longer hosts the session.
func (n *Node) forward(r *remote, el *stanza.Element) bool {
	n.Forwarded.Add(1)
	msg, err := n.nc.Request(n.nodeSubject(r.rec.Node), envelope(opRequest, r.full.String(), el), n.cfg.ForwardTimeout)
	if err == nil && string(msg.Data) == string(replyOK) {
		return true
	}
	if err != nil && !errors.Is(err, nats.ErrNoResponders) {
		n.log.Warn("cluster: forwarding to another node failed", "node", r.rec.Node, "to", r.full.String(), "err", err)
	} else {
		n.log.Debug("cluster: session not on the node the registry names", "node", r.rec.Node, "to", r.full.String(), "err", err)
	}
	// The replica was stale: stop routing to the record until the watch brings a new one.
	n.reg.forget(r.rec.Bare, r.rec.Resource, r.rec.Rev)
	return false
}

// Route implements router.Router. The rules of RFC 6121 §8.5 are applied here, once, on the
// sending node, over every resource of the account in the cluster (router.Rules).
func (n *Node) Route(ctx context.Context, el *stanza.Element, to jid.JID) error {
	if b, ok := ctx.Value(batchKey{}).(*batch); ok {
		return n.routeBatched(ctx, b, el, to)
	}
	if el.Local != "presence" {
		n.checkMiss(ctx, to)
	}
	return n.rules.Route(ctx, el, to)
}

// deliver hands el to a session on this node, or forwards it to the node holding it and reports
// whether that node took it. Presence is published without waiting: it is never stored offline.
func (n *Node) deliver(s router.Session, el *stanza.Element) bool {
	r, ok := s.(*remote)
	if !ok || el.Local == "presence" {
		s.Deliver(el)
		return true
	}
	return n.forward(r, el)
}

var _ router.Router = (*Node)(nil)
