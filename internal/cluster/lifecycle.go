package cluster

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// renew keeps the node's lease. A node that could not renew for fence_after fences itself:
// it can no longer be sure it owns its sessions (other nodes remove them once the lease
// expires at lease_ttl), so it closes every client stream and tells the clients to come back.
// It then takes a new lease, with a new incarnation, as soon as NATS lets it.
func (n *Node) renew(ctx context.Context) {
	if n.fenced.Load() {
		inc, err := n.reg.Acquire(ctx)
		if err != nil {
			return
		}
		// Whatever happened to cut the node off may have ended its registry watch too.
		if err := n.reg.rewatch(); err != nil {
			n.log.Warn("cluster: reloading the registry after fencing", "err", err)
		}
		n.fenced.Store(false)
		n.log.Warn("cluster: node rejoined after fencing", "incarnation", inc)
		return
	}
	err := n.reg.Renew(ctx)
	if err == nil {
		return
	}
	lost := errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound)
	if !lost && n.reg.SinceRenewal() < n.cfg.FenceAfter {
		n.log.Warn("cluster: lease renewal failed", "err", err)
		return
	}
	n.fence(err)
}

// fence closes every session of the node after it lost its lease.
func (n *Node) fence(cause error) {
	if n.fenced.Swap(true) {
		return
	}
	n.reg.Drop()
	n.log.Error("cluster: lease lost; closing every client stream", "err", cause)
	n.mu.Lock()
	sessions := make([]*owned, 0, len(n.owned))
	for _, o := range n.owned {
		sessions = append(sessions, o)
	}
	n.owned = map[string]*owned{}
	n.dirty = map[string]bool{}
	n.mu.Unlock()
	for _, o := range sessions {
		n.local.Unbind(o.s)
	}
	if n.hooks.Fenced != nil {
		n.hooks.Fenced()
	}
	if f := n.fed.Load(); f != nil {
		f.fenced()
	}
	if r := n.rooms.Load(); r != nil {
		r.fenced()
	}
	for _, o := range sessions {
		closeSession(o.s, stanza.NewStreamError("system-shutdown", "this node lost contact with the cluster; connect again"))
	}
}

// sweep removes the registry entries of nodes whose lease expired. Each entry is deleted with
// compare-and-set on its revision, so when several nodes sweep at once exactly one removes a
// given entry, and only that one announces the session gone. The snapshot is taken before the
// leases are read: an entry is only ever written after its node's lease, so an entry whose
// lease is missing afterwards belongs to a lost node. A lease must be found missing by two
// sweeps in a row, because a read may be served by a replica that has not yet seen a lease
// just taken.
func (n *Node) sweep(ctx context.Context) {
	if !n.owner() {
		return
	}
	snap := n.reg.Snapshot()
	type owner struct {
		node string
		inc  uint64
	}
	byOwner := map[owner][]Record{}
	for _, rec := range snap {
		if rec.Node == n.cfg.NodeName && rec.Inc == n.reg.Inc() {
			continue
		}
		byOwner[owner{rec.Node, rec.Inc}] = append(byOwner[owner{rec.Node, rec.Inc}], rec)
	}
	seen := map[string]uint64{}
	confirmed := map[owner]bool{}
	for o := range byOwner {
		inc, ok := seen[o.node]
		if !ok {
			var err error
			if inc, err = n.reg.LeaseOf(ctx, o.node); err != nil {
				return // no verdict without the registry
			}
			seen[o.node] = inc
		}
		key := o.node + "#" + strconv.FormatUint(o.inc, 10)
		if inc == o.inc {
			delete(n.suspects, key)
			continue
		}
		if n.suspects[key] {
			confirmed[o] = true
			delete(n.suspects, key)
		} else {
			n.suspects[key] = true
		}
	}
	due := time.Now().Add(n.cfg.NodeLossGrace)
	for o := range confirmed {
		n.log.Warn("cluster: node lost; removing its sessions", "node", o.node, "incarnation", o.inc, "sessions", len(byOwner[o]))
		if r := n.rooms.Load(); r != nil {
			// Rooms of this node drop the occupants connected through the lost node.
			r.nodeLost(o.node, o.inc)
		}
		for _, rec := range byOwner[o] {
			if err := n.reg.Remove(ctx, rec.Bare, rec.Resource, rec.Rev); err != nil {
				// Another node removed it, it was written again, or the registry is electing
				// a leader: the next sweeps try again while the entry is there.
				n.log.Debug("cluster: removing a lost session", "jid", rec.Bare+"/"+rec.Resource, "err", err)
				continue
			}
			n.Cleaned.Add(1)
			if !rec.Avail {
				continue
			}
			full, err := jid.Parse(rec.Bare + "/" + rec.Resource)
			if err != nil {
				continue
			}
			n.mu.Lock()
			n.lost = append(n.lost, lostSession{full: full, rev: rec.Rev, due: due})
			n.mu.Unlock()
		}
	}
}

// announceLost tells the contacts of lost sessions, once node_loss_grace has passed, that they
// are unavailable, at most node_loss_presence_rate sessions a second; a user who logged in
// again with the same resource meanwhile is not announced.
func (n *Node) announceLost(ctx context.Context) {
	budget := n.cfg.NodeLossRate / 10
	if budget < 1 {
		budget = 1
	}
	now := time.Now()
	n.mu.Lock()
	var batch []lostSession
	i := 0
	for ; i < len(n.lost) && len(batch) < budget; i++ {
		if n.lost[i].due.After(now) {
			break
		}
		batch = append(batch, n.lost[i])
	}
	n.lost = n.lost[i:]
	n.mu.Unlock()
	for _, ls := range batch {
		// The replica may still show the removed entry (its watch lags behind a leader
		// change); only a newer entry means the user is back.
		if cur, ok := n.reg.Lookup(ls.full.Bare().String(), ls.full.Resourcepart()); ok && cur.Rev != ls.rev {
			continue
		}
		if n.hooks.Gone != nil {
			n.hooks.Gone(ctx, ls.full)
		}
	}
}

// antiEntropy first rebuilds the registry replica if its watch fell behind, then reconciles
// the registry with the sessions this node really hosts: a session
// missing from the registry, or recorded under an older incarnation, is claimed again; an entry
// naming this node for a session it does not host is removed; a session whose entry names
// another node was replaced there and is closed.
func (n *Node) antiEntropy(ctx context.Context) {
	if err := n.reg.CheckWatch(ctx); err != nil {
		n.log.Warn("cluster: checking the registry watch", "err", err)
	}
	inc := n.reg.Inc()
	if !n.owner() {
		return
	}
	type check struct {
		key string
		o   *owned
		rev uint64
	}
	n.mu.Lock()
	var checks []check
	for key, o := range n.owned {
		if !o.pending {
			checks = append(checks, check{key, o, o.rev})
		}
	}
	n.mu.Unlock()
	for _, c := range checks {
		full := c.o.s.JID()
		bare, res := full.Bare().String(), full.Resourcepart()
		rec, ok := n.reg.Lookup(bare, res)
		switch {
		case ok && rec.Node == n.cfg.NodeName && rec.Inc == inc && rec.Rev == c.rev:
			continue
		case ok && rec.Node != n.cfg.NodeName:
			if rec.Since >= c.o.since {
				n.replacedElsewhere(c.key)
				continue
			}
		}
		n.mu.Lock()
		e := n.entryOf(c.o)
		n.mu.Unlock()
		rev, err := n.reg.Claim(ctx, bare, res, e, n.kick)
		if err != nil {
			n.log.Warn("cluster: anti-entropy could not register a session", "jid", c.key, "err", err)
			continue
		}
		n.mu.Lock()
		if n.owned[c.key] == c.o {
			c.o.rev = rev
		}
		n.mu.Unlock()
		n.log.Info("cluster: anti-entropy registered a session again", "jid", c.key)
	}
	for _, rec := range n.reg.Snapshot() {
		if rec.Node != n.cfg.NodeName {
			continue
		}
		n.mu.Lock()
		_, hosted := n.owned[rec.Bare+"/"+rec.Resource]
		n.mu.Unlock()
		if !hosted {
			if err := n.reg.Remove(ctx, rec.Bare, rec.Resource, rec.Rev); err == nil {
				n.log.Info("cluster: anti-entropy removed an entry of a session this node does not host", "jid", rec.Bare+"/"+rec.Resource)
			}
		}
	}
}
