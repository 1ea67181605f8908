package server

import (
	"context"

	"mellium.im/xmpp/jid"

	"impetus/internal/cluster"
	"impetus/internal/config"
	"impetus/internal/metrics"
	"impetus/internal/module"
	"impetus/internal/modules/blocking"
	"impetus/internal/modules/carbons"
	"impetus/internal/modules/muc"
	"impetus/internal/modules/roster"
	"impetus/internal/router"
	"impetus/internal/stanza"
)

// checkCluster validates the cluster scope with the rest of the configuration, so that
// `impetus config check` refuses a cluster without the shared PostgreSQL storage.
func checkCluster(cfg *config.Config) error {
	_, err := cluster.FromConfig(cfg)
	return err
}

// startCluster joins the cluster when the configuration has a cluster scope, and returns the
// router the core and the modules use: the cluster node, or else the local router unchanged,
// so that a single node runs exactly as without clustering.
func (s *Server) startCluster(ctx context.Context, acc router.Accounts) (router.Router, error) {
	cc, err := cluster.FromConfig(s.cfg)
	if err != nil || cc == nil {
		return s.router, err
	}
	n, err := cluster.Start(ctx, *cc, s.opts.DataDir, s.router, acc, cluster.Hooks{
		Fenced: func() {
			s.streams.CloseAll(stanza.NewStreamError("system-shutdown", "this node lost contact with the cluster; connect again"))
		},
		Gone: s.announceGone,
	}, s.log.With("cluster", cc.NodeName))
	if err != nil {
		return nil, err
	}
	s.cluster = n
	if err := n.ServeHandover(&s.streams); err != nil {
		n.Close()
		return nil, err
	}
	metrics.Default.CounterFunc("impetus_cluster_stanzas_total", "Stanzas forwarded to and received from other cluster nodes.", "direction", func() map[string]uint64 {
		return map[string]uint64{"forwarded": uint64(n.Forwarded.Load()), "received": uint64(n.Received.Load())}
	})
	metrics.Default.CounterFunc("impetus_cluster_lost_sessions_total", "Registry entries of lost nodes this node removed.", "node", func() map[string]uint64 {
		return map[string]uint64{cc.NodeName: uint64(n.Cleaned.Load())}
	})
	metrics.Default.GaugeFunc("impetus_cluster_registry_sessions", "Sessions in this node's replica of the cluster registry.", func() float64 {
		return float64(n.Registry().Len())
	})
	metrics.Default.GaugeFunc("impetus_cluster_fenced", "1 while this node has no lease and refuses sessions.", func() float64 {
		if n.Fenced() {
			return 1
		}
		return 0
	})
	return n, nil
}

// clusterHooks lets the node see each local session's broadcast presence, which it writes to
// the registry so other nodes apply the delivery rules and answer probes with it.
func (s *Server) clusterHooks() {
	if s.cluster == nil {
		return
	}
	for _, h := range s.hosts {
		if svc := muc.ForHost(h); svc != nil {
			// Every room gets one owner node; the others forward its stanzas there.
			if rooms, err := s.cluster.Rooms(context.Background()); err != nil {
				s.log.Error("cluster: MUC rooms stay local to this node", "domain", h.Domain, "err", err)
			} else {
				svc.SetCluster(rooms)
			}
		}
		if h.Service() != nil {
			continue
		}
		h.Hook(module.PresenceIn, 1<<20, func(_ context.Context, st *module.Stanza) (module.Verdict, error) {
			if st.Session != nil && st.El.Attr("to") == "" {
				s.cluster.PresenceChanged(st.Session, st.El)
			}
			return module.Continue, nil
		})
		h.Hook(module.IQIn, 1<<20, func(_ context.Context, st *module.Stanza) (module.Verdict, error) {
			if st.Session == nil {
				return module.Continue, nil
			}
			// Per-session interests that modules keep in memory, mirrored into the registry so
			// that the modules on other nodes push to this session too.
			switch typ := st.El.Attr("type"); {
			case typ == stanza.Get && st.El.Child(roster.NS, "query") != nil:
				s.cluster.MarkInterested(st.Session, roster.NS, true)
			case typ == stanza.Get && st.El.Child(blocking.NS, "blocklist") != nil:
				s.cluster.MarkInterested(st.Session, blocking.NS, true)
			case typ == stanza.Set && st.El.Child(carbons.NS, "enable") != nil:
				s.cluster.MarkInterested(st.Session, carbons.NS, true)
			case typ == stanza.Set && st.El.Child(carbons.NS, "disable") != nil:
				s.cluster.MarkInterested(st.Session, carbons.NS, false)
				// A session resumed from another node forgets it enabled carbons there.
				if r, ok := st.Session.(interface{ SetInterested(string, bool) }); ok {
					r.SetInterested(carbons.NS, false)
				}
			}
			return module.Continue, nil
		})
	}
}

// announceGone sends the unavailable presence a session of a lost node could not send: to the
// contacts subscribed to its user's presence and to the user's other resources (RFC 6121 §4.5.2).
func (s *Server) announceGone(ctx context.Context, full jid.JID) {
	h := s.core.Host(full.Domainpart())
	if h == nil {
		return
	}
	unavailable := func(to string) *stanza.Element {
		return stanza.NewElement(stanza.NSClient, "presence",
			stanza.Attr{Name: "type", Value: "unavailable"},
			stanza.Attr{Name: "from", Value: full.String()},
			stanza.Attr{Name: "to", Value: to})
	}
	ctx, done := router.Batch(ctx, s.cluster)
	defer done()
	if r := roster.ForHost(h); r != nil {
		items, _, err := r.Store().All(ctx, full.Bare().String())
		if err != nil {
			s.log.Error("cluster: reading the roster of a lost session", "jid", full.String(), "err", err)
		}
		for i := range items {
			if it := &items[i]; it.Listed() && it.HasFrom() {
				_ = s.core.Route(ctx, unavailable(it.JID))
			}
		}
	}
	for _, o := range s.cluster.Sessions(full.Bare()) {
		if o.Available() {
			o.Deliver(unavailable(full.Bare().String()))
		}
	}
}

// stopCluster leaves the cluster once the client streams are closed.
func (s *Server) stopCluster() {
	if s.cluster != nil {
		s.cluster.Close()
	}
}

var _ muc.Cluster = (*cluster.Rooms)(nil)
