package cluster

import (
	"context"

	"mellium.im/xmpp/jid"
)

// checkMiss reads the registry bucket itself before a message or iq would be treated as
// addressed to nobody: no session of the full JID, or none of the bare JID, on this node or in
// its replica. The replica is fed by a watch, and a watch can miss writes (a registry leader
// elected without the old leader's last writes, a watch the server dropped); the sender would
// then store a message offline for a user who is online on another node, where nothing reads
// it before the next login. What the bucket has and the replica lacks is put into the replica
// at once; the replica is rebuilt when the watch had passed over it (not when it only lags
// behind a session bound a moment ago). The read costs one round trip, only for recipients
// that look offline; presence, the bulk of the traffic, never takes this path.
func (n *Node) checkMiss(ctx context.Context, to jid.JID) {
	if to.Localpart() == "" {
		return // a server or component address: never in the registry
	}
	// An entry naming this node for a session it does not host is stale too: the session
	// just moved (a hand-over) or ended, and the watch has not brought the change yet.
	bare := to.Bare()
	res := to.Resourcepart()
	if res != "" {
		if n.local.Session(to) != nil {
			return
		}
		if rec, ok := n.reg.Lookup(bare.String(), res); ok && rec.Node != n.cfg.NodeName {
			return
		}
	} else {
		if len(n.local.Sessions(bare)) > 0 {
			return
		}
		for _, rec := range n.reg.Resources(bare.String()) {
			if rec.Node != n.cfg.NodeName {
				return
			}
		}
	}
	skipped, err := n.reg.Fetch(ctx, bare.String(), res)
	if err != nil {
		n.log.Debug("cluster: reading the registry for a recipient", "to", to.String(), "err", err)
		return
	}
	if skipped {
		n.log.Warn("cluster: the registry watch skipped an entry; rebuilding the replica", "to", to.String())
		select {
		case n.rebuild <- struct{}{}:
		default:
		}
	}
}
