package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"

	"impetus/internal/auth"
	"impetus/internal/c2s"
	"impetus/internal/config"
	"impetus/internal/listener"
	"impetus/internal/tlsconf"
	"impetus/internal/tlsutil"
	"impetus/internal/transport"
)

// listenWiring is what the connections of one configuration share to resolve their
// per-connection options: the TLS configurations and the auth stores of Listen and Peer scopes.
type listenWiring struct {
	tls     *tlsconf.Cache
	domains []string
	// base is the listener's auth parameters, which the server's main store serves.
	base config.AuthParams
}

// tlsCache returns the server's cache of TLS configurations, making it when a start or a reload
// needs certificates read from disk.
func (s *Server) tlsCache(domains []string) *tlsconf.Cache {
	if s.tlsConfigs == nil {
		dir := filepath.Join(s.opts.DataDir, "tls")
		var once sync.Once
		s.tlsConfigs = tlsconf.NewCache(func() (tls.Certificate, error) {
			cert, err := tlsutil.SelfSigned(dir, domains)
			if err == nil {
				once.Do(func() {
					s.log.Warn("no tls_certificate configured; using a self-signed certificate", "path", filepath.Join(dir, "selfsigned.crt"))
				})
			}
			return cert, err
		}, "xmpp-client")
	}
	return s.tlsConfigs
}

// tlsConfig returns the TLS configuration for resolved listener options: the configured
// certificate or the generated self-signed one, TLS 1.2 at least, the tls_ciphers suites, and
// the client certificate policy of tls_verify_mode and tls_client_ca.
func (s *Server) tlsConfig(o config.ListenerOptions, domains []string) (*tls.Config, error) {
	c, err := s.tlsCache(domains).Get(tlsconf.FromListener(o))
	if err != nil {
		return nil, fmt.Errorf("server: TLS: %w", err)
	}
	return c, nil
}

// listenerWiring prepares the per-connection resolution for lc. It builds the TLS configuration
// and opens the auth store of every Listen and Peer scope now, so that a bad certificate, CA
// file or password store stops the start (or the reload) instead of failing a client later.
func (s *Server) listenerWiring(lc *config.Listener, domains []string) (*listenWiring, error) {
	w := &listenWiring{tls: s.tlsCache(domains), domains: domains}
	if p := authParams(lc.Options); p != nil {
		w.base = *p
	}
	check := func(where string, o config.ListenerOptions) error {
		if !o.Enable {
			return nil
		}
		if _, err := w.tls.Get(tlsconf.FromListener(o)); err != nil {
			return fmt.Errorf("server: %s: %w", where, err)
		}
		if p := authParams(o); p != nil && *p != w.base {
			if _, err := s.peerAuth.get(s, *p, domains); err != nil {
				return fmt.Errorf("%w (for %s)", err, where)
			}
		}
		return nil
	}
	listens := append([]*config.Listen{nil}, lc.Listens...)
	for _, ls := range listens {
		peers := lc.Peers
		where := "xmpp_listener"
		if ls != nil {
			if !ls.Options.Enable {
				continue
			}
			peers = append(append([]*config.Peer(nil), lc.Peers...), ls.Peers...)
			where = fmt.Sprintf("Listen %q at %s", ls.Address, ls.Pos)
			if err := check(where, ls.Options); err != nil {
				return nil, err
			}
		}
		for _, p := range peers {
			// The block's first address resolves to this Peer or a more specific one; a
			// combination missed here is built on first use.
			if err := check(fmt.Sprintf("%s, Peer %q at %s", where, p.Address, p.Pos), lc.Effective(ls, p.Prefix.Addr())); err != nil {
				return nil, err
			}
		}
	}
	return w, nil
}

// authParams returns the auth parameters in force: DIGEST-MD5's when set, else PLAIN's.
func authParams(o config.ListenerOptions) *config.AuthParams {
	if o.AuthDigestMD5 != nil {
		return o.AuthDigestMD5
	}
	return o.AuthPlain
}

// peerConfig resolves the options of one connection from the most specific Peer scope: idle
// time, limits, PLAIN without TLS, the TLS configuration and the auth store.
func (s *Server) peerConfig(base *c2s.Config, w *listenWiring, lc *config.Listener, ls *config.Listen, peer netip.Addr) *c2s.Config {
	o := lc.Effective(ls, peer)
	c := *base
	c.IdleTime = o.IdleTime
	c.ParkAfter = o.IdleReleaseTime
	c.Poller = transport.DefaultPoller()
	c.AllowPlainWithoutTLS = o.AllowPlainWithoutTLS
	c.Limits = limits(o)
	s.applyLimits(&c, o)
	tc, err := w.tls.Get(tlsconf.FromListener(o))
	if err != nil {
		// Without its own TLS settings the connection gets no STARTTLS rather than a
		// weaker configuration of a parent scope.
		s.log.Error("TLS options for a peer unusable; STARTTLS not offered", "peer", peer.String(), "err", err)
		tc = nil
	}
	c.TLS = tc
	if p := authParams(o); p != nil && *p != w.base {
		ps, err := s.peerAuth.get(s, *p, w.domains)
		if err != nil {
			s.log.Error("auth store for a peer unusable", "peer", peer.String(), "err", err)
			c.Auth = nil
		} else {
			c.Auth, c.Realm, c.LogAuthentication = ps.store, ps.realm, p.LogAuthentication
		}
	}
	return &c
}

// socketOptions copies the options of a Listen that apply to its socket into spec.
func (s *Server) socketOptions(spec *listener.Spec, ls *config.Listen, o config.ListenerOptions) {
	spec.ListenBacklog = o.ListenBacklog
	spec.AcceptQueueBacklog = o.AcceptQueueBacklog
	spec.EventsPerIter = o.EventsPerIter
	spec.NoDelay = o.DisableNagle
	spec.RecvBuffer = o.TCPRecvBufferSize
	spec.SendBuffer = o.TCPSendBufferSize
	if o.Concurrency <= 1 {
		return
	}
	pool, ok := s.cfg.ThreadPool(o.PoolName)
	if !ok {
		// Momentum runs threaded accepts on the IO pool when pool_name names no pool.
		pool, _ = s.cfg.ThreadPool("IO")
		s.log.Warn("concurrency above 1 without a ThreadPool; the IO pool's concurrency is the ceiling",
			"listen", ls.Address, "pool_name", o.PoolName, "ceiling", pool.Concurrency)
	}
	spec.Concurrency = listener.MaxConcurrency(o.Concurrency, pool.Concurrency)
	if spec.Concurrency < o.Concurrency {
		s.log.Warn("concurrency exceeds its ThreadPool's; using the pool's", "listen", ls.Address,
			"concurrency", o.Concurrency, "pool", pool.Name, "pool_concurrency", pool.Concurrency)
	}
}

// peerStores opens each distinct set of auth parameters once and keeps the store for the life
// of the server, so that reloads reuse them and streams in the middle of authenticating keep
// theirs.
type peerStores struct {
	mu     sync.Mutex
	stores map[config.AuthParams]peerStore
}

type peerStore struct {
	store auth.Store
	realm string
}

func (p *peerStores) get(s *Server, params config.AuthParams, domains []string) (peerStore, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ps, ok := p.stores[params]; ok {
		return ps, nil
	}
	uri := s.resolveURI(params.URI)
	realm := params.Realm
	if realm == "" {
		realm = domains[0]
	}
	store, err := auth.Open(uri, auth.Options{Realm: realm, StoredCleartext: params.StoredCleartext, Domains: domains, Logger: s.log.With("auth", uri)})
	if err != nil {
		return peerStore{}, fmt.Errorf("server: auth store %s: %w", params.URI, err)
	}
	if p.stores == nil {
		p.stores = make(map[config.AuthParams]peerStore)
	}
	ps := peerStore{store: store, realm: realm}
	p.stores[params] = ps
	return ps, nil
}

// exists reports whether any of the stores holds the account.
func (p *peerStores) exists(ctx context.Context, localpart, domain string) (bool, error) {
	p.mu.Lock()
	stores := make([]auth.Store, 0, len(p.stores))
	for _, ps := range p.stores {
		stores = append(stores, ps.store)
	}
	p.mu.Unlock()
	for _, st := range stores {
		_, err := st.Lookup(ctx, localpart, domain)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, auth.ErrNotFound) {
			return false, err
		}
	}
	return false, nil
}

func (p *peerStores) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, ps := range p.stores {
		ps.store.Close()
		delete(p.stores, k)
	}
}
