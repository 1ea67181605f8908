package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/listener"
	"impetus/internal/metrics"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// A reload (SIGHUP or `impetus ctl reload`) loads the configuration file again, checks it
// completely, and then applies it in one step; until then nothing changes, so an invalid
// file leaves the running configuration in force. Sessions are never dropped: a stream keeps
// the settings it connected with, and new connections get the new ones.
//
// What a reload applies:
//   - debug_level of xmpp and of each xmpp_logger, log_authentication;
//   - xmpp_logger instances: added, removed, changed, and every file reopened;
//   - the auth store (AuthPlainParameters / AuthDigestMD5Parameters uri, realm, …);
//   - TLS certificates and keys, read from disk again;
//   - Listen scopes: added ones are bound, removed or disabled ones stop accepting;
//   - per-connection options of every Listen and Peer scope: Peer rules (enable), idle_time,
//     max_stanza_size, max_xml_depth, allow_plain_without_tls, TLS options.
//
// What needs a restart (a reload logs a warning and keeps the running value):
//   - the hosted domains (domain scopes with XMPP_Role = "server") and the xmpp scope's
//     storage, max_roster_items, max_offline_messages and mam_* options, which modules hold;
//   - control_socket and metrics_listen;
//   - socket options of a Listen already bound (file_mode, listen_backlog, buffer sizes):
//     they apply when the socket is bound, so remove and re-add the scope, or restart;
//   - federation settings the s2s manager copied at start.

// slot is one bound socket. The listener calls the handlers of the spec in the slot, so a
// reload changes what new connections get by storing a new spec.
type slot struct {
	l    *listener.Listener
	spec atomic.Pointer[listener.Spec]
}

func slotKey(spec *listener.Spec) string { return spec.Network + " " + spec.Address }

// bind binds spec's socket at start. During a reload it records spec and returns nil:
// reload applies the recorded specs once every Listen scope checked out.
func (s *Server) bind(spec listener.Spec) (*listener.Listener, error) {
	if s.ops.reloading {
		s.ops.pending = append(s.ops.pending, spec)
		return nil, nil
	}
	sl, err := newSlot(spec)
	if err != nil {
		return nil, err
	}
	if s.ops.slots == nil {
		s.ops.slots = make(map[string]*slot)
	}
	s.ops.slots[slotKey(&spec)] = sl
	return sl.l, nil
}

// newSlot binds a socket whose policy and handlers are read from the slot on every
// connection, and which counts stream connections for the metrics.
func newSlot(spec listener.Spec) (*slot, error) {
	sl := &slot{}
	sl.spec.Store(&spec)
	outer := spec
	outer.Policy = func(peer netip.Addr) (bool, xmlstream.Limits) {
		return sl.spec.Load().Policy(peer)
	}
	outer.Streams = make(map[string]listener.Handler, len(spec.Streams))
	for ns := range spec.Streams {
		outer.Streams[ns] = func(ctx context.Context, c *listener.Conn) {
			h := sl.spec.Load().Streams[ns]
			if h == nil {
				return
			}
			metrics.Default.ConnectionOpened()
			c.OnEnd(metrics.Default.ConnectionClosed)
			h(ctx, c)
		}
	}
	l, err := listener.Listen(outer)
	if err != nil {
		return nil, err
	}
	sl.l = l
	return sl, nil
}

// reload loads the configuration file again and applies it, or leaves everything as it was
// and returns the reasons.
func (s *Server) reload(ctx context.Context) (err error) {
	s.ops.mu.Lock()
	defer s.ops.mu.Unlock()
	defer func() {
		metrics.Default.Reload(err == nil)
		if err != nil {
			s.log.Error("configuration reload rejected; the running configuration stays", "err", err)
		}
	}()
	cfg, warnings, err := LoadConfig(s.opts.ConfigPath)
	if err != nil {
		var list config.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				s.log.Error("configuration: " + e.Error())
			}
		}
		return fmt.Errorf("server: reload: %w", err)
	}
	for _, w := range warnings {
		s.log.Warn("configuration: " + w.String())
	}
	lc := cfg.Listener
	if lc == nil || !lc.Options.Enable {
		return errors.New("server: reload: no enabled xmpp_listener")
	}
	if !slices.ContainsFunc(lc.Listens, func(ls *config.Listen) bool { return ls.Options.Enable }) {
		return errors.New("server: reload: every Listen scope is disabled")
	}
	for _, msg := range restartOnly(s.liveConfig(), cfg) {
		s.log.Warn("configuration reload: " + msg + " needs a restart; the running value stays")
	}

	// Everything that can fail is built before anything running is touched.
	loggers, err := s.openLoggers(cfg)
	if err != nil {
		return err
	}
	domains := s.cfg.HostedDomains()
	hosted := make(map[string]bool, len(domains))
	for _, d := range domains {
		hosted[d] = true
	}
	store, realm, logAuth, err := s.openAuth(lc, domains)
	if err != nil {
		closeLoggers(loggers)
		return err
	}
	oldTLS := s.tlsConfigs
	s.tlsConfigs = nil // read certificates from disk again
	s.ops.reloading, s.ops.pending = true, nil
	err = s.serveListens(ctx, lc, domains, hosted, store, realm, logAuth)
	s.ops.reloading = false
	pending := s.ops.pending
	s.ops.pending = nil
	fail := func(err error) error {
		s.tlsConfigs = oldTLS
		store.Close()
		closeLoggers(loggers)
		return err
	}
	if err != nil {
		return fail(err)
	}
	// New sockets are bound before the running ones change, so that a port in use leaves
	// the server exactly as it was.
	fresh := map[string]*slot{}
	for _, spec := range pending {
		k := slotKey(&spec)
		if s.ops.slots[k] != nil {
			continue
		}
		sl, err := newSlot(spec)
		if err != nil {
			for _, f := range fresh {
				f.l.Close()
			}
			return fail(fmt.Errorf("server: reload: listen %s: %w", spec.Address, err))
		}
		fresh[k] = sl
	}

	// Apply.
	keep := map[string]bool{}
	for _, spec := range pending {
		k := slotKey(&spec)
		keep[k] = true
		if sl := s.ops.slots[k]; sl != nil {
			sl.spec.Store(&spec)
		}
	}
	for k, sl := range s.ops.slots {
		if !keep[k] {
			s.log.Info("Listen scope removed or disabled; no longer accepting", "address", sl.spec.Load().Address)
			sl.l.Close()
			delete(s.ops.slots, k)
		}
	}
	for k, sl := range fresh {
		s.ops.slots[k] = sl
		s.listeners = append(s.listeners, sl.l)
		s.log.Info("listening", "address", sl.l.Addr().String())
		go func() {
			if err := sl.l.Serve(s.ops.ctx); err != nil {
				s.log.Error("listener failed", "err", err)
			}
		}()
	}
	if old := s.ops.store.Swap(&store); old != nil && *old != s.store {
		// Streams in the middle of authenticating may still hold the old store.
		s.ops.oldStores = append(s.ops.oldStores, *old)
	}
	s.ops.observer.Store(observers(loggers))
	closeLoggers(s.ops.loggers)
	s.ops.loggers = loggers
	if cfg.XMPP != nil {
		s.ops.xmpp.Set(logLevel(cfg.XMPP.DebugLevel))
	} else {
		s.ops.xmpp.Set(logLevel(config.LevelError))
	}
	s.ops.live.Store(cfg)
	s.log.Info("configuration reloaded", "listens", len(s.ops.slots), "xmpp_loggers", len(loggers))
	return nil
}

// restartOnly lists the differences between the running and the new configuration that a
// reload cannot apply.
func restartOnly(old, cfg *config.Config) []string {
	var out []string
	if !slices.Equal(sortedLower(old.HostedDomains()), sortedLower(cfg.HostedDomains())) {
		out = append(out, "a change of hosted domains")
	}
	ox, nx := old.XMPP, cfg.XMPP
	if ox == nil {
		ox = &config.XMPP{}
	}
	if nx == nil {
		nx = &config.XMPP{}
	}
	if ox.Storage != nx.Storage {
		out = append(out, "the storage option")
	}
	if ox.MaxRosterItems != nx.MaxRosterItems || ox.MaxOfflineMessages != nx.MaxOfflineMessages {
		out = append(out, "max_roster_items or max_offline_messages")
	}
	if ox.MAMDefault != nx.MAMDefault || ox.MAMRetention != nx.MAMRetention || ox.MAMPurgeInterval != nx.MAMPurgeInterval ||
		ox.MAMDefaultPage != nx.MAMDefaultPage || ox.MAMMaxPage != nx.MAMMaxPage || ox.MAMMaxScan != nx.MAMMaxScan {
		out = append(out, "the mam_* options")
	}
	if ox.ControlSocket != nx.ControlSocket {
		out = append(out, "control_socket")
	}
	if ox.MetricsListen != nx.MetricsListen || ox.MetricsPprof != nx.MetricsPprof {
		out = append(out, "metrics_listen")
	}
	return out
}

func sortedLower(in []string) []string {
	out := make([]string, len(in))
	for i, d := range in {
		out[i] = strings.ToLower(d)
	}
	slices.Sort(out)
	return out
}

// timedRouter measures local routing for the latency histogram; the session registry
// calls pass straight through.
type timedRouter struct{ router.Router }

func (t timedRouter) Route(ctx context.Context, el *stanza.Element, to jid.JID) error {
	start := time.Now()
	err := t.Router.Route(ctx, el, to)
	metrics.Default.ObserveRoute(time.Since(start))
	return err
}
