package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"impetus/internal/cluster"
	"impetus/internal/config"
	"impetus/internal/metrics"
	"impetus/internal/s2s"
	"impetus/internal/stanza"
)

// startFederation creates the server-to-server manager and makes it the core's path to
// domains this server does not host. cert is presented to peers for SASL EXTERNAL.
func (s *Server) startFederation(lc *config.Listener, hosted map[string]bool, domains []string) error {
	x := s.cfg.XMPP
	if x == nil {
		// Without an xmpp scope the option defaults apply.
		x = &config.XMPP{S2SRemoteDomains: "all", S2SDialbackWithoutValidCert: true, S2SIdleTime: 10 * time.Minute, S2SConnectTimeout: 30 * time.Second, S2SMaxQueue: 1000}
	}
	var roots *x509.CertPool
	if x.S2SCAFile != "" {
		pem, err := os.ReadFile(x.S2SCAFile)
		if err != nil {
			return fmt.Errorf("server: s2s_ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("server: s2s_ca_file %s holds no PEM certificate", x.S2SCAFile)
		}
	}
	var cert *tls.Certificate
	if len(lc.Listens) > 0 {
		if tc, err := s.tlsConfig(lc.Effective(lc.Listens[0], netip.Addr{}), domains); err == nil && tc != nil && len(tc.Certificates) > 0 {
			cert = &tc.Certificates[0]
		}
	}
	// The hosted domains are fixed at start; the secrets, the remote domain scopes and the
	// remote domain policy are read from the configuration in force, so a reload changes them
	// for the next stream or dialback check.
	s.s2s = s2s.New(s2s.Config{
		Hosted: func(d string) bool { return hosted[d] },
		Secret: func(d string) []byte {
			if dom := s.liveConfig().Domain(d); dom != nil && dom.Role == config.RoleServer && dom.DialbackSecret != "" {
				return []byte(dom.DialbackSecret)
			}
			if s.fed != nil {
				// In a cluster every node must answer a peer's db:verify for keys any node gave.
				return s.fed.DialbackSecret()
			}
			return nil
		},
		RemoteAllowed: func(d string) bool {
			live := s.liveConfig()
			dom := live.Domain(d)
			if hosted[d] || (dom != nil && dom.Role == config.RoleServer) {
				return false // hosted here, never a peer
			}
			listedOnly := live.XMPP != nil && strings.EqualFold(live.XMPP.S2SRemoteDomains, "listed")
			return !listedOnly || (dom != nil && dom.Role == config.RoleClient)
		},
		Gateway: func(d string) string {
			if dom := s.liveConfig().Domain(d); dom != nil && dom.Role == config.RoleClient {
				return dom.Gateway
			}
			return ""
		},
		Observer:                 &s.ops.observer,
		Route:                    s.core.Route,
		Certificate:              cert,
		Roots:                    roots,
		DialbackWithoutValidCert: x.S2SDialbackWithoutValidCert,
		Limits:                   limits(lc.Options),
		IdleTime:                 x.S2SIdleTime,
		ConnectTimeout:           x.S2SConnectTimeout,
		MaxQueue:                 x.S2SMaxQueue,
		Log:                      s.log.With("subsystem", "s2s"),
	})
	s.core.Remote = s.s2s.Send
	return s.clusterFederation()
}

// clusterFederation gives the nodes of a cluster one dialback secret and makes a node hold the
// outgoing stream of a domain pair only when it owns the pair, forwarding to the owner
// otherwise (cluster.md, "Federation"). A single node keeps the manager's Send, and so does a
// cluster with s2s_single_stream = false.
func (s *Server) clusterFederation() error {
	if s.cluster == nil {
		return nil
	}
	cc, err := cluster.FromConfig(s.cfg)
	if err != nil || cc == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := s.cluster.StartFederation(ctx, cluster.FederationHooks{
		Send: s.s2s.Send,
		Pair: s.s2s.Pair,
		Drop: s.s2s.CloseOutbound,
	})
	if err != nil {
		return err
	}
	s.fed = f
	if !cc.S2SSingleStream {
		return nil
	}
	s.core.Remote = f.Send
	metrics.Default.CounterFunc("impetus_cluster_s2s_stanzas_total", "Stanzas for other servers forwarded to and received from the cluster node holding their stream.", "direction", func() map[string]uint64 {
		return map[string]uint64{"forwarded": uint64(f.Forwarded.Load()), "received": uint64(f.Received.Load())}
	})
	metrics.Default.CounterFunc("impetus_cluster_s2s_takeovers_total", "Domain pairs this node took over from a lost or fenced node.", "node", func() map[string]uint64 {
		return map[string]uint64{cc.NodeName: uint64(f.Takeovers.Load())}
	})
	return nil
}

// stopFederation ends every server stream; outbound streams say system-shutdown.
func (s *Server) stopFederation() {
	if s.fed != nil {
		// The pairs are released first, so other nodes open their own streams at once.
		s.fed.Close()
	}
	if s.s2s != nil {
		s.s2s.Close(5 * time.Second)
	}
}

// serverStreamNS is the content namespace the listener hands to the s2s manager.
const serverStreamNS = stanza.NSServer
