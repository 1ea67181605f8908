// Package server assembles and runs Impetus from a configuration: the auth store, the hosted
// domains with their modules, the router, and the listeners. Subsystems start in order and
// stop in reverse, each with a bounded wait.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"impetus/internal/auth"
	"impetus/internal/c2s"
	"impetus/internal/cluster"
	"impetus/internal/component"
	"impetus/internal/config"
	"impetus/internal/core"
	"impetus/internal/httpd"
	"impetus/internal/listener"
	"impetus/internal/module"
	"impetus/internal/modules/all"
	"impetus/internal/router"
	"impetus/internal/s2s"
	"impetus/internal/stanza"
	"impetus/internal/storage"
	_ "impetus/internal/storage/postgres" // the deployment backend
	_ "impetus/internal/storage/sqlite"   // the embedded default
	"impetus/internal/tlsconf"
	"impetus/internal/xmlstream"
)

// Options are the command-line inputs of a server.
type Options struct {
	ConfigPath string
	DataDir    string
	LogOutput  io.Writer
	// Ready, when set, receives the bound listener addresses once the server accepts connections.
	Ready func(addrs []string)
}

// Server is a running instance.
type Server struct {
	opts      Options
	cfg       *config.Config
	log       *slog.Logger
	store     auth.Store
	storage   storage.Backend
	router    *router.Local
	core      *core.Core
	hosts     []*module.Host
	listeners []*listener.Listener
	// streams holds every client stream, bound or not, for shutdown.
	streams c2s.Streams
	// s2s carries stanzas to and from other servers.
	s2s *s2s.Manager
	// components serves XEP-0114 external component streams.
	components *component.Manager
	// tlsConfigs shares one TLS configuration among the Listen and Peer scopes whose TLS
	// options resolve alike; nil until first used, and set to nil to read certificates again.
	tlsConfigs *tlsconf.Cache
	// peerAuth holds the auth stores of AuthDigestMD5Parameters and AuthPlainParameters set in
	// Listen or Peer scopes, which differ from the listener's (listenwiring.go).
	peerAuth peerStores
	// ops is what can change while running: reload, loggers, control socket, metrics (ops.go).
	ops opsState
	// guard counts connections and failed authentications (limits.go).
	guard limitState
	// web is the http_listener: WebSocket, BOSH, host-meta, file upload (web.go).
	web *httpd.Server
	// cluster is this node of a cluster, or nil for a single node (cluster.go).
	cluster *cluster.Node
	// fed holds the cluster's outgoing server streams, one node per domain pair, or is nil
	// (federation.go).
	fed *cluster.Federation
}

// LoadConfig loads and checks a configuration as the server will use it: the language and
// option rules, then what only the server knows how to check (cipher lists), while file and
// line are still known. Start, reload and `impetus config check` all go through it.
func LoadConfig(path string) (*config.Config, []config.Warning, error) {
	cfg, warnings, err := config.Load(path)
	if err != nil {
		return nil, warnings, err
	}
	if err := tlsconf.CheckConfig(cfg); err != nil {
		return nil, warnings, err
	}
	if err := checkCluster(cfg); err != nil {
		return nil, warnings, err
	}
	return cfg, warnings, nil
}

// Run loads the configuration, starts the server and blocks until ctx ends.
func Run(ctx context.Context, opts Options) error {
	cfg, warnings, err := LoadConfig(opts.ConfigPath)
	if err != nil {
		return err
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	s := &Server{opts: opts, cfg: cfg}
	level := config.LevelError
	if cfg.XMPP != nil {
		level = cfg.XMPP.DebugLevel
	}
	s.log = s.setupLogging(opts.LogOutput, level)
	for _, w := range warnings {
		s.log.Warn("configuration: " + w.String())
	}
	if err := os.MkdirAll(opts.DataDir, 0o750); err != nil {
		return fmt.Errorf("server: data directory: %w", err)
	}
	if err := s.startOps(ctx); err != nil {
		s.stop()
		return err
	}
	if err := s.start(ctx); err != nil {
		s.stop()
		return err
	}
	err = s.runOps(ctx) // blocks until ctx ends, serving SIGHUP, the control socket and metrics
	s.log.Info("shutting down")
	s.stop()
	return err
}

// logLevel maps Momentum's debug_level onto slog levels (NOTICE sits between INFO and WARNING).
func logLevel(l config.DebugLevel) slog.Level {
	switch l {
	case config.LevelDebug:
		return slog.LevelDebug
	case config.LevelInfo:
		return slog.LevelInfo
	case config.LevelNotice:
		return slog.LevelInfo + 2
	case config.LevelWarning:
		return slog.LevelWarn
	case config.LevelCritical:
		return slog.LevelError + 4
	}
	return slog.LevelError
}

func (s *Server) start(ctx context.Context) error {
	domains := s.cfg.HostedDomains()
	if len(domains) == 0 {
		return errors.New("server: no hosted domain: add a domain with XMPP_Role = \"server\"")
	}
	lc := s.cfg.Listener
	if lc == nil || !lc.Options.Enable {
		return errors.New("server: no enabled xmpp_listener")
	}
	store, realm, logAuth, err := s.openAuth(lc, domains)
	if err != nil {
		return err
	}
	s.store = store
	ds := s.cfg.Storage(s.opts.DataDir)
	s.storage, err = storage.OpenContext(ctx, ds.Driver, ds.DSN)
	if err != nil {
		return fmt.Errorf("server: storage %s (%s): %w", ds.Name, ds.Driver, err)
	}
	s.log.Info("storage opened", "driver", ds.Driver, "datasource", ds.Name)
	s.ops.store.Store(&store)
	acc := accounts{s}
	s.router = router.NewLocal(acc)
	rt, err := s.startCluster(ctx, acc)
	if err != nil {
		return err
	}
	s.core = core.New(timedRouter{rt}, s.log)
	for _, d := range domains {
		h := module.NewHost(d, rt, s.core, s.storage, acc, s.log.With("host", d))
		h.Config = s.cfg
		h.DataDir = s.opts.DataDir
		h.Auth = s.authStore
		mods := all.Standard
		if dom := s.cfg.Domain(d); dom != nil && dom.Service != "" {
			mods = all.Services[dom.Service]
		}
		if err := h.Provision(mods); err != nil {
			return err
		}
		s.core.AddHost(h)
		s.hosts = append(s.hosts, h)
	}
	listServices(s.hosts)
	s.clusterHooks()
	s.components = component.New(component.Config{
		Core:    s.core,
		Secrets: func() map[string]string { return s.liveConfig().ComponentDomains() },
		Log:     s.log.With("component", true),
	})
	hosted := make(map[string]bool, len(domains))
	for _, d := range domains {
		hosted[d] = true
	}
	if err := s.startFederation(lc, hosted, domains); err != nil {
		return err
	}
	if err := s.startWeb(ctx, lc, domains, hosted, store, realm, logAuth); err != nil {
		return err
	}
	return s.serveListens(ctx, lc, domains, hosted, store, realm, logAuth)
}

// serveListens starts one socket per enabled Listen scope. A reload runs it again with the
// new configuration; bind then only records each scope's settings, and reload.go applies
// them once every scope checked out.
func (s *Server) serveListens(ctx context.Context, lc *config.Listener, domains []string, hosted map[string]bool, store auth.Store, realm string, logAuth bool) error {
	wiring, err := s.listenerWiring(lc, domains)
	if err != nil {
		return err
	}
	var addrs []string
	for _, ls := range lc.Listens {
		// The Listen's own options, without any Peer scope: a Peer for loopback must not
		// disable or reconfigure the whole socket.
		opts := ls.Options
		if !opts.Enable {
			s.log.Info("listen scope disabled", "address", ls.Address)
			continue
		}
		tlsConf, err := s.tlsConfig(opts, domains)
		if err != nil {
			return err
		}
		cc := &c2s.Config{
			Core:                 s.core,
			Hosted:               func(d string) bool { return hosted[d] },
			DefaultDomain:        domains[0],
			TLS:                  tlsConf,
			Auth:                 store,
			Realm:                realm,
			AllowPlainWithoutTLS: opts.AllowPlainWithoutTLS,
			LogAuthentication:    logAuth,
			Limits:               limits(opts),
			IdleTime:             opts.IdleTime,
			Log:                  s.log.With("listen", ls.Address),
			Observer:             &s.ops.observer,
			Streams:              &s.streams,
		}
		s.applyLimits(cc, opts)
		if cc.SM, err = c2s.SMConfigFrom(s.cfg); err != nil {
			return err
		}
		if cc.SASL2, err = c2s.SASL2ConfigFrom(s.cfg); err != nil {
			return err
		}
		listen := ls
		spec := listener.Spec{
			Network:  ls.Network,
			Address:  ls.Addr,
			FileMode: opts.FileMode,
			Policy: s.admitting(lc, listen, func(peer netip.Addr) (bool, xmlstream.Limits) {
				o := lc.Effective(listen, peer)
				return o.Enable, limits(o)
			}),
			Streams: map[string]listener.Handler{
				stanza.NSClient: s.counted(func(ctx context.Context, c *listener.Conn) {
					pc := fromAdmission(ctx, s.peerConfig(cc, wiring, lc, listen, c.Peer))
					if c.TLS != nil {
						c2s.ServeDirectTLS(ctx, c.Conn, c.Dec, c.Header, pc, c.TLS)
						return
					}
					c2s.Serve(ctx, c.Conn, c.Dec, c.Header, pc)
				}),
				serverStreamNS: s.counted(func(ctx context.Context, c *listener.Conn) {
					s.s2s.Serve(ctx, c.Conn, c.Dec, c.Header, tlsConf)
				}),
				component.NS: s.counted(func(ctx context.Context, c *listener.Conn) {
					s.components.Serve(ctx, c.Conn, c.Dec, c.Header)
				}),
			},
			HeaderTimeout: headerTimeout(opts),
			Log:           s.log.With("listen", ls.Address),
		}
		if opts.TLS == "direct" {
			// XEP-0368: TLS first; server streams on this port reach s2s already encrypted.
			if tlsConf == nil {
				return fmt.Errorf("server: listen %s: tls = \"direct\" needs a certificate", ls.Address)
			}
			spec.DirectTLS = c2s.DirectTLSConfig(tlsConf)
		}
		s.socketOptions(&spec, ls, opts)
		l, err := s.bind(spec)
		if err != nil {
			return fmt.Errorf("server: listen %s: %w", ls.Address, err)
		}
		if l == nil {
			continue // a reload: reload.go applies the settings once every scope checked out
		}
		s.listeners = append(s.listeners, l)
		addrs = append(addrs, l.Addr().String())
		s.log.Info("listening", "address", l.Addr().String())
		go func() {
			if err := l.Serve(ctx); err != nil {
				s.log.Error("listener failed", "err", err)
			}
		}()
	}
	if s.ops.reloading {
		return nil
	}
	if len(s.listeners) == 0 {
		return errors.New("server: every Listen scope is disabled")
	}
	s.log.Info("Impetus started", "domains", strings.Join(domains, ","))
	if s.opts.Ready != nil {
		s.opts.Ready(addrs)
	}
	return nil
}

func limits(o config.ListenerOptions) xmlstream.Limits {
	return xmlstream.Limits{MaxStanzaSize: int(o.MaxStanzaSize), MaxDepth: int(o.MaxXMLDepth), MaxAttrs: o.MaxXMLAttributes, MaxAttrLen: o.MaxAttributeLength}
}

// openAuth opens the store named by AuthDigestMD5Parameters or AuthPlainParameters.
func (s *Server) openAuth(lc *config.Listener, domains []string) (auth.Store, string, bool, error) {
	p := lc.Options.AuthDigestMD5
	if p == nil {
		p = lc.Options.AuthPlain
	}
	if p == nil {
		return nil, "", false, errors.New("server: the xmpp_listener needs AuthPlainParameters or AuthDigestMD5Parameters")
	}
	uri := s.resolveURI(p.URI)
	realm := p.Realm
	if realm == "" {
		// Momentum uses the host name when no realm is set; the hosted domain is what clients know.
		realm = domains[0]
	}
	store, err := auth.Open(uri, auth.Options{Realm: realm, StoredCleartext: p.StoredCleartext, Domains: domains, Logger: s.log.With("auth", uri)})
	if err != nil {
		return nil, "", false, fmt.Errorf("server: auth store %s: %w", p.URI, err)
	}
	return store, realm, p.LogAuthentication, nil
}

// resolveURI makes a relative file:// or digest:// path relative to the data directory and
// creates an empty password file when none exists yet, so a new installation starts.
func (s *Server) resolveURI(uri string) string {
	scheme, path, ok := strings.Cut(uri, "://")
	if !ok || (scheme != "file" && scheme != "digest") {
		return uri
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(s.opts.DataDir, path)
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			f.Close()
			s.log.Warn("password file created empty; add users with impetus passwd", "path", path)
		}
	}
	return scheme + "://" + path
}

func (s *Server) stop() {
	for _, l := range s.listeners {
		l.Close()
	}
	s.streams.CloseAll(stanza.NewStreamError("system-shutdown", ""))
	if s.components != nil {
		s.components.Close()
	}
	s.stopWeb()
	s.stopFederation()
	for _, l := range s.listeners {
		l.Wait(5 * time.Second)
	}
	s.stopCluster()
	for i := len(s.hosts) - 1; i >= 0; i-- {
		s.hosts[i].Stop()
	}
	if s.store != nil {
		s.store.Close()
	}
	s.peerAuth.close()
	if s.storage != nil {
		if err := s.storage.Close(); err != nil {
			s.log.Error("storage close failed", "err", err)
		}
	}
	s.stopOps()
}

// accounts tells the router which accounts exist, from the auth store in use, which a
// reload may replace.
type accounts struct{ s *Server }

func (a accounts) Exists(ctx context.Context, localpart, domain string) (bool, error) {
	_, err := a.s.authStore().Lookup(ctx, localpart, domain)
	if errors.Is(err, auth.ErrNotFound) {
		// An account that may log in through a Listen or Peer scope's own store exists too.
		return a.s.peerAuth.exists(ctx, localpart, domain)
	}
	return err == nil, err
}

// listServices lists each service domain (MUC) in the disco items of the account domain it is a
// subdomain of, or of every account domain when it is nobody's subdomain, so that clients find
// it by XEP-0030 §4 item discovery of their own server.
func listServices(hosts []*module.Host) {
	for _, svc := range hosts {
		if svc.Service() == nil {
			continue
		}
		var parents []*module.Host
		for _, h := range hosts {
			if h.Service() == nil && strings.HasSuffix(svc.Domain, "."+h.Domain) {
				parents = append(parents, h)
			}
		}
		if len(parents) == 0 {
			for _, h := range hosts {
				if h.Service() == nil {
					parents = append(parents, h)
				}
			}
		}
		for _, h := range parents {
			h.AddItem(module.Item{JID: svc.Domain})
		}
	}
}
