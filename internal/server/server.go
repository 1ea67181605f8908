// Package server assembles and runs Impetus from a configuration: the auth store, the hosted
// domains with their modules, the router, and the listeners. Subsystems start in order and
// stop in reverse, each with a bounded wait.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"impetus/internal/auth"
	"impetus/internal/c2s"
	"impetus/internal/config"
	"impetus/internal/core"
	"impetus/internal/listener"
	"impetus/internal/module"
	"impetus/internal/modules/all"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage"
	_ "impetus/internal/storage/postgres" // the deployment backend
	_ "impetus/internal/storage/sqlite"   // the embedded default
	"impetus/internal/tlsutil"
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
	// tlsConfigs shares one TLS configuration among Listen scopes with the same certificate.
	tlsConfigs map[string]*tls.Config
}

// Run loads the configuration, starts the server and blocks until ctx ends.
func Run(ctx context.Context, opts Options) error {
	cfg, warnings, err := config.Load(opts.ConfigPath)
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
	s.log = slog.New(slog.NewTextHandler(opts.LogOutput, &slog.HandlerOptions{Level: logLevel(level)}))
	for _, w := range warnings {
		s.log.Warn("configuration: " + w.String())
	}
	if err := os.MkdirAll(opts.DataDir, 0o750); err != nil {
		return fmt.Errorf("server: data directory: %w", err)
	}
	if err := s.start(ctx); err != nil {
		s.stop()
		return err
	}
	<-ctx.Done()
	s.log.Info("shutting down")
	s.stop()
	return nil
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
	acc := accounts{store}
	s.router = router.NewLocal(acc)
	s.core = core.New(s.router, s.log)
	for _, d := range domains {
		h := module.NewHost(d, s.router, s.core, s.storage, acc, s.log.With("host", d))
		h.XMPP = s.cfg.XMPP
		if err := h.Provision(all.Standard); err != nil {
			return err
		}
		s.core.AddHost(h)
		s.hosts = append(s.hosts, h)
	}
	hosted := make(map[string]bool, len(domains))
	for _, d := range domains {
		hosted[d] = true
	}
	var addrs []string
	for _, ls := range lc.Listens {
		opts := lc.Effective(ls, netip.Addr{})
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
			HandshakeTimeout:     60 * time.Second,
			MaxAuthFailures:      5,
			Log:                  s.log.With("listen", ls.Address),
		}
		listen := ls
		spec := listener.Spec{
			Network:  ls.Network,
			Address:  ls.Addr,
			FileMode: opts.FileMode,
			Policy: func(peer netip.Addr) (bool, xmlstream.Limits) {
				o := lc.Effective(listen, peer)
				return o.Enable, limits(o)
			},
			Streams: map[string]listener.Handler{
				stanza.NSClient: func(ctx context.Context, c *listener.Conn) {
					c2s.Serve(ctx, c.Conn, c.Dec, c.Header, s.peerConfig(cc, lc, listen, c.Peer))
				},
			},
			HeaderTimeout: 60 * time.Second,
			Log:           s.log.With("listen", ls.Address),
		}
		l, err := listener.Listen(spec)
		if err != nil {
			return fmt.Errorf("server: listen %s: %w", ls.Address, err)
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
	if len(s.listeners) == 0 {
		return errors.New("server: every Listen scope is disabled")
	}
	s.log.Info("Impetus started", "domains", strings.Join(domains, ","))
	if s.opts.Ready != nil {
		s.opts.Ready(addrs)
	}
	return nil
}

// peerConfig applies the options of the most specific Peer scope to one connection.
func (s *Server) peerConfig(base *c2s.Config, lc *config.Listener, ls *config.Listen, peer netip.Addr) *c2s.Config {
	o := lc.Effective(ls, peer)
	if o.IdleTime == base.IdleTime && o.AllowPlainWithoutTLS == base.AllowPlainWithoutTLS && limits(o) == base.Limits {
		return base
	}
	c := *base
	c.IdleTime = o.IdleTime
	c.AllowPlainWithoutTLS = o.AllowPlainWithoutTLS
	c.Limits = limits(o)
	return &c
}

func limits(o config.ListenerOptions) xmlstream.Limits {
	return xmlstream.Limits{MaxStanzaSize: int(o.MaxStanzaSize), MaxDepth: int(o.MaxXMLDepth)}
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

// tlsConfig builds the listener's TLS settings: the configured certificate, or a generated
// self-signed one; TLS 1.2 at least.
func (s *Server) tlsConfig(o config.ListenerOptions, domains []string) (*tls.Config, error) {
	key := o.TLSCertificate + "\x00" + o.TLSKey
	if c, ok := s.tlsConfigs[key]; ok {
		return c, nil
	}
	c, err := s.newTLSConfig(o, domains)
	if err == nil {
		if s.tlsConfigs == nil {
			s.tlsConfigs = make(map[string]*tls.Config)
		}
		s.tlsConfigs[key] = c
	}
	return c, err
}

func (s *Server) newTLSConfig(o config.ListenerOptions, domains []string) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	if o.TLSCertificate != "" && !strings.EqualFold(o.TLSCertificate, "none") {
		cert, err = tlsutil.Load(o.TLSCertificate, o.TLSKey)
	} else if strings.EqualFold(o.TLSCertificate, "none") {
		return nil, nil
	} else {
		cert, err = tlsutil.SelfSigned(filepath.Join(s.opts.DataDir, "tls"), domains)
		if err == nil {
			s.log.Warn("no tls_certificate configured; using a self-signed certificate", "path", filepath.Join(s.opts.DataDir, "tls", "selfsigned.crt"))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("server: TLS certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"xmpp-client"},
	}, nil
}

func (s *Server) stop() {
	for _, l := range s.listeners {
		l.Close()
	}
	var wg sync.WaitGroup
	if s.router != nil {
		for _, sess := range s.router.All() {
			if cs, ok := sess.(interface{ Close(*stanza.StreamError) }); ok {
				wg.Add(1)
				go func() { defer wg.Done(); cs.Close(stanza.NewStreamError("system-shutdown", "")) }()
			}
		}
	}
	wg.Wait()
	for _, l := range s.listeners {
		l.Wait(5 * time.Second)
	}
	for i := len(s.hosts) - 1; i >= 0; i-- {
		s.hosts[i].Stop()
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.storage != nil {
		if err := s.storage.Close(); err != nil {
			s.log.Error("storage close failed", "err", err)
		}
	}
}

// accounts tells the router which accounts exist, from the auth store.
type accounts struct{ store auth.Store }

func (a accounts) Exists(ctx context.Context, localpart, domain string) (bool, error) {
	_, err := a.store.Lookup(ctx, localpart, domain)
	if errors.Is(err, auth.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
