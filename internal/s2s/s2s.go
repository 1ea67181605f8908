// Package s2s implements server-to-server streams (RFC 6120) with Server Dialback (XEP-0220)
// and SASL EXTERNAL (XEP-0178): inbound streams accepted on the xmpp_listener next to client
// streams, outbound streams opened per pair of local and remote domain, and the three dialback
// roles (initiating, receiving and authoritative).
//
// A stream's negotiation state belongs to its read goroutine. Other goroutines hand a stream
// serialized bytes through its transport.Writer, never a half-built element, and the few fields
// that cross goroutines (verified domain pairs, the outbound queue) are guarded by a mutex.
package s2s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/observe"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// NSDialbackFeature is the stream feature of XEP-0220 §2.4.
const NSDialbackFeature = "urn:xmpp:features:dialback"

// Config is what every server stream shares. It is read-only once streams use it.
type Config struct {
	// Hosted reports whether this server hosts a domain.
	Hosted func(domain string) bool
	// Secret returns a hosted domain's XMPP_Dialback_Secret, or nil when it has none; those
	// domains share one random secret made when the process starts.
	Secret func(domain string) []byte
	// RemoteAllowed reports whether streams with a remote domain are allowed at all (the
	// s2s_remote_domains policy); nil allows every domain.
	RemoteAllowed func(domain string) bool
	// Gateway returns host:port to connect to for a remote domain instead of resolving it, or "".
	Gateway func(domain string) string
	// Route hands a stanza received from another server to the core.
	Route func(ctx context.Context, el *stanza.Element) error
	// Certificate is presented to peers on outbound TLS (for SASL EXTERNAL); nil presents none.
	Certificate *tls.Certificate
	// Roots validate peer certificates; nil means the system roots.
	Roots *x509.CertPool
	// DialbackWithoutValidCert lets peers whose certificate does not validate (or that do not
	// use TLS) authenticate with dialback, as XEP-0220 intends. When false, a peer must present
	// a certificate that validates for its domain.
	DialbackWithoutValidCert bool
	Limits                   xmlstream.Limits
	// IdleTime closes streams that carried nothing for this long; 0 means never.
	IdleTime time.Duration
	// ConnectTimeout bounds connecting, TLS and authentication of an outbound stream, and a
	// dialback verification.
	ConnectTimeout time.Duration
	// MaxQueue bounds the stanzas waiting for an outbound stream that is being set up.
	MaxQueue int
	// MaxWriteQueue bounds the bytes waiting to be written to one established stream.
	MaxWriteQueue int
	// Connect, when set, replaces resolving and dialing a remote domain (tests use it). The
	// connection it returns is plain TCP unless it is a *tls.Conn.
	Connect func(ctx context.Context, domain string) (net.Conn, error)
	// Resolver is used for SRV and address lookups, for delivery and for dialback checks
	// alike; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// Observer is told about every stanza an authenticated stream reads and every stanza
	// queued for writing to a peer; nil observes nothing.
	Observer observe.Observer
	Log      *slog.Logger
}

// pair is one authenticated direction between two domains.
type pair struct{ local, remote string }

// Manager owns every server stream.
type Manager struct {
	cfg      Config
	secret   []byte // for hosted domains without a configured secret
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ownValid bool // our certificate validates for our domains, so SASL EXTERNAL may succeed

	mu  sync.Mutex
	out map[pair]*outStream
	// links holds, per remote domain, an established outbound connection that other local
	// domains may join by sender multiplexing (XEP-0220 "Multiplexing Sender Domains").
	links   map[string]*outStream
	backoff map[pair]*retry
	in      map[*inStream]struct{}
	closed  bool
}

// retry remembers failed connection attempts to a pair.
type retry struct {
	until time.Time
	delay time.Duration
}

// Backoff bounds: the first failure refuses new attempts for minBackoff, each further one
// doubles it up to maxBackoff, so an unreachable peer costs one attempt per few minutes.
const (
	minBackoff = 5 * time.Second
	maxBackoff = 5 * time.Minute
)

// New returns a manager; Close stops it.
func New(cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 1000
	}
	if cfg.Secret == nil {
		cfg.Secret = func(string) []byte { return nil }
	}
	if cfg.RemoteAllowed == nil {
		cfg.RemoteAllowed = func(string) bool { return true }
	}
	if cfg.Gateway == nil {
		cfg.Gateway = func(string) string { return "" }
	}
	if cfg.Observer == nil {
		cfg.Observer = observe.Multi(nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		cfg:     cfg,
		secret:  randomSecret(),
		ctx:     ctx,
		cancel:  cancel,
		out:     make(map[pair]*outStream),
		links:   make(map[string]*outStream),
		backoff: make(map[pair]*retry),
		in:      make(map[*inStream]struct{}),
	}
	if c := cfg.Certificate; c != nil && c.Leaf != nil {
		_, err := c.Leaf.Verify(x509.VerifyOptions{Roots: cfg.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, Intermediates: intermediates(c)})
		m.ownValid = err == nil
	}
	return m
}

func intermediates(c *tls.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			pool.AddCert(ic)
		}
	}
	return pool
}

// dialbackSecret is the secret keys of a hosted domain are made with.
func (m *Manager) dialbackSecret(domain string) []byte {
	if s := m.cfg.Secret(domain); len(s) > 0 {
		return s
	}
	return m.secret
}

// Send queues a stanza for a remote domain: it is the core's Remote function. A stanza that
// cannot be sent is reported through the returned error, or bounced later when its stream fails.
func (m *Manager) Send(ctx context.Context, el *stanza.Element, to jid.JID) error {
	local, remote, err := m.Pair(el, to)
	if err != nil {
		return err
	}
	p := pair{local: local, remote: remote}
	for attempt := 0; attempt < 2; attempt++ {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return stanza.NewError("remote-server-timeout", "the server is shutting down")
		}
		s := m.out[p]
		if s == nil {
			if r := m.backoff[p]; r != nil && time.Now().Before(r.until) {
				m.mu.Unlock()
				return stanza.NewError("remote-server-not-found", "the last connection attempt to "+p.remote+" failed; retrying later")
			}
			s = newOutStream(m, p)
			// The stanza waits in the queue before the stream can fail, so a failure bounces
			// it instead of racing this call.
			s.queue = append(s.queue, el.Copy())
			m.out[p] = s
			m.wg.Add(1)
			// When another local domain has a connection to this peer, this one is proven on
			// it instead of opening another.
			go s.start(m.links[p.remote])
			m.mu.Unlock()
			return nil
		}
		m.mu.Unlock()
		switch err := s.enqueue(el); {
		case err == nil:
			return nil
		case errors.Is(err, errStreamGone):
			// The stream ended between the lookup and the enqueue; the next pass makes a new one.
			continue
		default:
			return err
		}
	}
	return stanza.NewError("remote-server-timeout", "")
}

// Pair returns the local and remote domain of the outbound stream a stanza for to goes on, or
// the stanza error that refuses it before any stream is involved.
func (m *Manager) Pair(el *stanza.Element, to jid.JID) (local, remote string, err error) {
	from, err := jid.Parse(el.Attr("from"))
	if err != nil || !m.cfg.Hosted(from.Domainpart()) {
		return "", "", stanza.NewError("remote-server-not-found", "only hosted domains send to other servers")
	}
	if m.cfg.Hosted(to.Domainpart()) {
		return "", "", stanza.NewError("remote-server-not-found", "the domain is hosted here")
	}
	if !m.cfg.RemoteAllowed(to.Domainpart()) {
		return "", "", stanza.NewError("remote-server-not-found", "federation with "+to.Domainpart()+" is not enabled on this server")
	}
	return from.Domainpart(), to.Domainpart(), nil
}

// CloseOutbound ends the outbound stream of a domain pair, if there is one, letting what is
// queued on it leave first. A cluster calls it when another node took the pair over.
func (m *Manager) CloseOutbound(local, remote string) {
	m.mu.Lock()
	s := m.out[pair{local: local, remote: remote}]
	m.mu.Unlock()
	if s != nil {
		s.close(nil, false)
	}
}

// streamDone forgets an outbound stream that ended, and records the failure for backoff.
func (m *Manager) streamDone(s *outStream, failed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.out[s.pair] == s {
		delete(m.out, s.pair)
	}
	if m.links[s.remote] == s {
		delete(m.links, s.remote)
	}
	if !failed {
		delete(m.backoff, s.pair)
		return
	}
	r := m.backoff[s.pair]
	if r == nil {
		r = &retry{delay: minBackoff}
		m.backoff[s.pair] = r
	} else {
		r.delay = min(2*r.delay, maxBackoff)
	}
	r.until = time.Now().Add(r.delay)
}

// bounce reports a stanza that could not be sent to its sender (RFC 6120 §8.3.1), unless it is
// itself an error or a result, which must never be answered with an error.
func (m *Manager) bounce(el *stanza.Element, serr *stanza.Error) {
	if t := el.Attr("type"); t == stanza.ErrorType || t == stanza.Result || el.Attr("from") == "" {
		return
	}
	if err := m.cfg.Route(m.ctx, stanza.ErrorReply(el, serr)); err != nil {
		m.cfg.Log.Debug("error reply not routable", "err", err)
	}
}

// Close ends every server stream and waits, at most timeout, for their goroutines.
func (m *Manager) Close(timeout time.Duration) {
	m.mu.Lock()
	m.closed = true
	outs := make([]*outStream, 0, len(m.out))
	for _, s := range m.out {
		outs = append(outs, s)
	}
	ins := make([]*inStream, 0, len(m.in))
	for s := range m.in {
		ins = append(ins, s)
	}
	m.mu.Unlock()
	m.cancel()
	for _, s := range outs {
		s.close(stanza.NewStreamError("system-shutdown", ""), false)
	}
	for _, s := range ins {
		s.closeWith(stanza.NewStreamError("system-shutdown", ""))
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}
