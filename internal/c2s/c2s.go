// Package c2s negotiates client-to-server streams (RFC 6120): stream headers, STARTTLS, SASL,
// resource binding, and then hands every stanza of the bound session to the core.
//
// A session's state belongs to its read goroutine. Other goroutines only queue bytes for it
// (Deliver) or ask it to close; its presence state is read through atomics.
package c2s

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/auth"
	"impetus/internal/core"
	"impetus/internal/limits"
	"impetus/internal/listener"
	"impetus/internal/observe"
	"impetus/internal/stanza"
	"impetus/internal/transport"
	"impetus/internal/xmlstream"
)

// Config is what client streams of one listener share. It is read-only once streams use it.
type Config struct {
	Core *core.Core
	// Hosted reports whether a domain is hosted here.
	Hosted func(domain string) bool
	// DefaultDomain is used when a client omits 'to' from its stream header.
	DefaultDomain string
	// TLS enables STARTTLS; nil disables it.
	TLS *tls.Config
	// Auth is the credential store; Realm the DIGEST-MD5 realm.
	Auth  auth.Store
	Realm string
	// AllowPlainWithoutTLS offers PLAIN on unencrypted streams (off by default).
	AllowPlainWithoutTLS bool
	// LogAuthentication logs every authentication attempt and its outcome.
	LogAuthentication bool
	Limits            xmlstream.Limits
	// IdleTime closes streams that send nothing for this long; 0 means never.
	IdleTime time.Duration
	// ParkAfter is how long a bound session reads nothing before its connection is parked in
	// Poller: its goroutine returns and its read buffer is dropped until input arrives
	// (transport.Poller). 0, or a nil Poller, keeps a goroutine waiting in every read.
	ParkAfter time.Duration
	Poller    *transport.Poller
	// HandshakeTimeout bounds the time from connect to a bound resource.
	HandshakeTimeout time.Duration
	// MaxQueue bounds bytes waiting to be written to one client.
	MaxQueue int
	// MaxAuthFailures closes the stream after this many failed SASL attempts.
	MaxAuthFailures int
	Log             *slog.Logger
	// Streams, when set, tracks every live stream for shutdown.
	Streams *Streams
	// Observer, when set, is told about every stanza read from and queued for the client.
	Observer observe.Observer

	// AuthThrottle, when set, counts failed authentications per IP address and per account
	// across streams; once either reaches its limit within AuthFailureWindow, attempts fail with
	// temporary-auth-failure after AuthFailureDelay, whatever the credentials.
	AuthThrottle           *limits.AuthThrottle
	AuthFailuresPerIP      int
	AuthFailuresPerAccount int
	AuthFailureWindow      time.Duration
	AuthFailureDelay       time.Duration
	// MaxResources bounds the resources one account binds at once; 0 means no bound.
	MaxResources int
	// ReadRate and ReadBurst shape reads from the client in bytes per second (limits.Shape);
	// a ReadRate of 0 reads as fast as the client sends.
	ReadRate  int
	ReadBurst int
	// SM configures XEP-0198 stream management and XEP-0352 client state indication; the zero
	// value offers neither. Resumption also needs Streams, which keeps hibernated sessions.
	SM SMConfig
	// SASL2 configures XEP-0388 SASL2, XEP-0386 Bind 2 and XEP-0484 FAST; the zero value
	// offers none of them.
	SASL2 SASL2Config
}

// Session is one client stream.
type Session struct {
	cfg    *Config
	nc     net.Conn // the current connection: the TLS one after STARTTLS
	dec    *xmlstream.Decoder
	w      *transport.Writer // set at bind; before that, writes are synchronous
	log    *slog.Logger
	remote string
	since  time.Time

	id         string
	domain     string
	lang       string
	tlsState   *tls.ConnectionState
	serverCert *tls.Certificate
	username   string
	jid        jid.JID
	headerSent bool
	// headerPending is set while our stream header waits to go out with the next write.
	headerPending bool
	authFails     int // weighted: three per wrong credential, one per protocol refusal

	available atomic.Bool
	priority  atomic.Int32
	closeOnce sync.Once
	scratch   []byte
	// peer is the JID the client claimed in its stream header's 'from', echoed as 'to'.
	peer string
	// raw is the accepted connection, never replaced, so other goroutines may set its deadline.
	raw net.Conn
	// pendingClose is a stream error another goroutine asked for before the stream was bound;
	// the read goroutine, which owns negotiation output, sends it.
	pendingClose atomic.Pointer[stanza.StreamError]
	// bound is set once the writer exists and other goroutines may close the stream directly.
	bound atomic.Bool
	// secured says the transport was encrypted before the stream began (ServeSecured).
	secured bool

	// out, once set, carries the session's output (XEP-0198 queue, XEP-0352 state): sm.go.
	out atomic.Pointer[outState]
	// owner is the session this connection resumed (XEP-0198), whose stanzas it reads.
	owner *Session
	// lost is set by the read goroutine when the connection failed rather than closed, which
	// lets a resumable session hibernate.
	lost bool
	// auth2 is the SASL2 exchange that authenticated the stream (sasl2.go), or nil.
	auth2 *sasl2Auth

	// ctx is the stream's context, kept for the goroutine that reads on after parking.
	ctx context.Context
	// end ends the listener's connection once the handler that accepted it has returned
	// (listener.Detach); nil while that handler still runs.
	end func()
	// parkMu orders parking against closing: a connection is never parked after it started
	// closing, and a parked one is woken before it closes.
	parkMu  sync.Mutex
	parked  *transport.Parked
	closing bool
	// parkOff is set once parking turned out impossible for this connection.
	parkOff bool
	// fromCache is the string form of jid stamped on every stanza the client sends.
	fromCache struct {
		jid jid.JID
		str string
	}
	// lastInput is when the last element was read, kept while parked for the idle timeout.
	lastInput time.Time
}

// newStreamID returns an unpredictable stream id (RFC 6120 §4.7.3).
func newStreamID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Serve runs a client stream whose header dec has already read. It returns when the stream ends.
func Serve(ctx context.Context, nc net.Conn, dec *xmlstream.Decoder, hdr *xmlstream.Header, cfg *Config) {
	serve(ctx, &Session{cfg: cfg, nc: nc, raw: nc, dec: dec, remote: nc.RemoteAddr().String(), since: time.Now()}, hdr)
}

// ServeSecured runs a client stream, like Serve, over a transport that was encrypted before
// the stream began (WebSocket or BOSH under HTTPS): STARTTLS is not offered and the stream
// counts as encrypted for SASL. state is the TLS connection the stream runs on, which enables
// channel binding and SASL EXTERNAL; it is nil when the stream spans several connections
// (BOSH), and then only the mechanisms that need no binding to one connection are offered.
func ServeSecured(ctx context.Context, nc net.Conn, dec *xmlstream.Decoder, hdr *xmlstream.Header, cfg *Config, state *tls.ConnectionState) {
	s := &Session{cfg: cfg, nc: nc, raw: nc, dec: dec, remote: nc.RemoteAddr().String(), since: time.Now()}
	s.secured = true
	s.tlsState = state
	serve(ctx, s, hdr)
}

func serve(ctx context.Context, s *Session, hdr *xmlstream.Header) {
	nc, dec, cfg := s.nc, s.dec, s.cfg
	s.ctx = ctx
	if cfg.Streams != nil {
		cfg.Streams.add(s)
	}
	s.log = cfg.Log.With("remote", s.remote)
	parked := false
	defer s.done(&parked)
	if cfg.ReadRate > 0 {
		// Shaping the raw connection also shapes TLS, which STARTTLS layers on top of it.
		s.nc = limits.Shape(nc, cfg.ReadRate, cfg.ReadBurst)
		dec.SetReader(s.nc)
	}
	if cfg.HandshakeTimeout > 0 {
		deadline := time.Now().Add(cfg.HandshakeTimeout)
		_ = nc.SetReadDeadline(deadline)
	}
	if err := s.negotiate(ctx, hdr); err != nil {
		s.fail(err)
		return
	}
	parked = s.readLoop(ctx)
}

// done ends the stream when its reading goroutine stops, unless the connection was parked and
// another goroutine reads on. It is deferred directly so that it can recover a panic.
func (s *Session) done(parked *bool) {
	if r := recover(); r != nil {
		s.log.Error("client stream panicked", "panic", r)
		s.closeWith(stanza.NewStreamError("internal-server-error", ""))
		*parked = false
	}
	if *parked {
		return
	}
	s.shutdown(s.ctx)
	if s.cfg.Streams != nil {
		s.cfg.Streams.remove(s)
	}
	if s.end != nil {
		s.end()
	}
}

// JID implements router.Session.
func (s *Session) JID() jid.JID { return s.jid }

// Available implements router.Session.
func (s *Session) Available() bool { return s.available.Load() }

// Priority implements router.Session.
func (s *Session) Priority() int { return int(s.priority.Load()) }

// Deliver implements router.Session: it queues el for the client.
func (s *Session) Deliver(el *stanza.Element) {
	if o := s.out.Load(); o != nil {
		o.deliver(el)
		return
	}
	if s.w == nil {
		return
	}
	err := s.w.Append(func(dst []byte) []byte { return el.AppendXML(dst, stanza.NSClient) })
	if errors.Is(err, transport.ErrQueueFull) {
		// The writer may be blocked in a write to a client that does not read: end that write
		// now so that the writer reports the overflow (writerFailed) instead of waiting for
		// its write timeout.
		_ = s.nc.SetWriteDeadline(time.Now())
	}
	if o := s.cfg.Observer; o != nil && err == nil {
		o.StanzaDelivered(s.remote, el)
	}
}

// Send implements module.Session.
func (s *Session) Send(el *stanza.Element) { s.Deliver(el) }

// Replaced implements router.Session.
func (s *Session) Replaced() {
	if s.smReplaced() {
		return
	}
	go s.closeWith(stanza.NewStreamError("conflict", "replaced by a new session with the same resource"))
}

// Remote returns the client's address: ip:port, or the unix socket's name.
func (s *Session) Remote() string { return s.remote }

// Since returns when the client connected.
func (s *Session) Since() time.Time { return s.since }

// TLSState returns the connection's TLS state, or nil.
func (s *Session) TLSState() *tls.ConnectionState { return s.tlsState }

// Close ends the stream with a stream error (e.g. system-shutdown); safe from any goroutine.
// Before the stream is bound, only the read goroutine writes, so it is woken to do so.
func (s *Session) Close(serr *stanza.StreamError) {
	if s.bound.Load() {
		s.closeWith(serr)
		return
	}
	s.pendingClose.Store(serr)
	_ = s.raw.SetReadDeadline(time.Now())
	if s.bound.Load() {
		// Bound meanwhile: the read loop may not look at pendingClose again.
		s.closeWith(serr)
	}
}

// streamHeader appends our stream header.
func (s *Session) streamHeader(dst []byte) []byte {
	dst = append(dst, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='"...)
	dst = append(dst, s.id...)
	dst = append(dst, "' from='"...)
	dst = append(dst, s.domain...)
	if s.peer != "" {
		// RFC 6120 §4.7.2: answer the initiating entity's 'from' with 'to'.
		dst = append(dst, "' to='"...)
		dst = stanza.AppendAttrValue(dst, s.peer)
	}
	dst = append(dst, "' version='1.0' xml:lang='"...)
	dst = append(dst, s.lang...)
	return append(dst, "'>"...)
}

// writeSync writes negotiation output directly; only the read goroutine writes before bind.
func (s *Session) writeSync(els ...*stanza.Element) error {
	buf := s.scratch[:0]
	if s.headerPending {
		buf = s.streamHeader(buf)
		s.headerPending = false
	}
	for _, el := range els {
		buf = el.AppendXML(buf, stanza.NSClient)
	}
	s.scratch = buf[:0]
	_ = s.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := s.nc.Write(buf)
	return err
}

// openStream validates a stream header and answers it (RFC 6120 §4.7, §4.8).
func (s *Session) openStream(hdr *xmlstream.Header) error {
	if s.id == "" || s.headerSent {
		// A restarted stream gets a new id (RFC 6120 §4.3.2 and §6.4.6).
		s.id = newStreamID()
	}
	s.headerSent = false
	s.peer = ""
	if hdr.From != "" {
		if j, err := jid.Parse(hdr.From); err == nil {
			s.peer = j.String()
		}
	}
	if s.lang == "" {
		s.lang = "en"
		if hdr.Lang != "" && len(hdr.Lang) < 36 && isLangTag(hdr.Lang) {
			s.lang = hdr.Lang
		}
	}
	if s.domain == "" {
		s.domain = s.cfg.DefaultDomain
		if hdr.To != "" {
			if d, err := jid.Parse(hdr.To); err == nil && d.Localpart() == "" && d.Resourcepart() == "" {
				s.domain = d.Domainpart()
			} else {
				return stanza.NewStreamError("improper-addressing", "the stream 'to' is not a domain")
			}
		}
	} else if hdr.To != "" && hdr.To != s.domain {
		return stanza.NewStreamError("host-unknown", "the restarted stream names another domain")
	}
	if hdr.Space != stanza.NSStream || hdr.Local != "stream" {
		if hdr.Local == "stream" {
			return stanza.NewStreamError("invalid-namespace", "the stream element is not in the streams namespace")
		}
		return stanza.NewStreamError("bad-format", "expected a stream header")
	}
	if hdr.DefaultNS != stanza.NSClient {
		return stanza.NewStreamError("invalid-namespace", "the content namespace of a client stream is jabber:client")
	}
	if !versionAtLeast1(hdr.Version) {
		return stanza.NewStreamError("unsupported-version", "XMPP 1.0 or later is required")
	}
	if !s.cfg.Hosted(s.domain) {
		d := s.domain
		s.domain = s.cfg.DefaultDomain
		return stanza.NewStreamError("host-unknown", "this server does not host "+d)
	}
	// The header goes out with the stream features that always follow it, in one write: two
	// small writes would wait on the peer's delayed acknowledgement when Nagle's algorithm is
	// on (Momentum's default), which halves the login rate.
	s.headerSent = true
	s.headerPending = true
	return nil
}

// versionAtLeast1 reports whether a stream version is 1.0 or later (RFC 6120 §4.7.5). A missing
// version means 0.9, which this server does not speak.
func versionAtLeast1(v string) bool {
	major, _, ok := cutDot(v)
	if !ok {
		return false
	}
	n, err := strconv.Atoi(major)
	return err == nil && n >= 1
}

func cutDot(v string) (string, string, bool) {
	for i := 0; i < len(v); i++ {
		if v[i] == '.' {
			return v[:i], v[i+1:], i > 0 && i < len(v)-1
		}
	}
	return "", "", false
}

func isLangTag(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return s != ""
}

// fail reports a negotiation or stream failure to the client as the right stream error.
func (s *Session) fail(err error) {
	if p := s.pendingClose.Load(); p != nil {
		s.closeWith(p)
		return
	}
	var serr *stanza.StreamError
	var xerr *xmlstream.Error
	var nerr net.Error
	switch {
	case errors.As(err, &serr):
	case errors.As(err, &xerr):
		serr = stanza.NewStreamError(xerr.Condition, xerr.Text)
		if xerr.TooBig {
			serr.App = stanza.NewElement(stanza.NSXMPPErrors, "stanza-too-big")
		}
	case errors.Is(err, xmlstream.ErrStreamClosed):
		s.closeClean()
		return
	case errors.As(err, &nerr) && nerr.Timeout():
		serr = stanza.NewStreamError("connection-timeout", "")
		s.lost = true
	default:
		s.lost = true
		// The connection itself failed: nobody is left to tell.
		s.log.Debug("connection ended", "err", err)
		s.nc.Close()
		return
	}
	s.closeWith(serr)
}

// closeWith sends a stream error and closes the stream (RFC 6120 §4.9.1.1). Safe from any goroutine.
func (s *Session) closeWith(serr *stanza.StreamError) {
	s.closeOnce.Do(func() {
		s.log.Info("closing stream with error", "condition", serr.Condition, "text", serr.Text, "jid", s.jid.String())
		var buf []byte
		if (!s.headerSent || s.headerPending) && s.w == nil {
			if s.id == "" {
				s.id = newStreamID()
			}
			if s.domain == "" {
				s.domain = s.cfg.DefaultDomain
			}
			if s.lang == "" {
				s.lang = "en"
			}
			buf = s.streamHeader(buf)
		}
		buf = serr.Element().AppendXML(buf, stanza.NSClient)
		buf = append(buf, "</stream:stream>"...)
		s.finalWrite(buf)
	})
}

// closeClean answers the client's </stream:stream> with ours.
func (s *Session) closeClean() {
	s.closeOnce.Do(func() { s.finalWrite([]byte("</stream:stream>")) })
}

func (s *Session) finalWrite(buf []byte) {
	s.stopParking()
	if s.w != nil {
		_, _ = s.w.Write(buf)
		s.w.Close(2 * time.Second)
	} else {
		_ = s.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, _ = s.nc.Write(buf)
	}
	s.nc.Close()
}

// shutdown runs once the read goroutine is done: unbind, tell modules, close.
func (s *Session) shutdown(ctx context.Context) {
	// The server's context is cancelled when it shuts down, which is when sessions end in
	// numbers; what they leave behind (unacknowledged stanzas rerouted to offline storage,
	// the time of logout) must still be written.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if s.w != nil && !s.detach() {
		s.identity().endSession(ctx)
	}
	s.closeClean()
}

// queueFull is called by the writer when the client does not read what it is sent.
func (s *Session) writerFailed(err error) {
	if errors.Is(err, transport.ErrQueueFull) {
		s.log.Warn("client does not keep up; closing", "jid", s.jid.String())
		s.closeOnce.Do(func() {
			serr := stanza.NewStreamError("policy-violation", "too much data waiting for this client")
			b := serr.Element().AppendXML(nil, stanza.NSClient)
			s.stopParking()
			_ = s.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = s.nc.Write(append(b, "</stream:stream>"...))
			s.nc.Close()
		})
		return
	}
	s.stopParking()
	s.nc.Close()
}

// readLoop processes stanzas of the bound session until the stream ends, or until it parks
// the idle connection (reported true), after which another goroutine calls it again.
func (s *Session) readLoop(ctx context.Context) (parked bool) {
	// Negotiation output is written from scratch; a bound session writes through its writer,
	// so an idle session should not keep that buffer (about 2 KiB after the features).
	s.scratch = nil
	// After a resumption this connection reads for the session it resumed.
	me := s.identity()
	// last is when the client last sent an element (for idle_time); quiet is when this
	// goroutine last saw input or started reading (for parking).
	quiet := time.Now()
	last := s.lastInput
	if last.IsZero() {
		last = quiet
	}
	s.armDeadline(last, quiet)
	for {
		el, err := s.dec.ReadElement()
		if err != nil {
			var nerr net.Error
			if errors.As(err, &nerr) && nerr.Timeout() && s.pendingClose.Load() == nil {
				if now := time.Now(); s.cfg.IdleTime <= 0 || now.Sub(last) < s.cfg.IdleTime {
					// The deadline is set once per quiet period, not per stanza, so it may
					// come while the stream is busy: then it is only set again.
					if now.Sub(quiet) >= s.cfg.ParkAfter {
						if s.park(last) {
							return true
						}
						// In the middle of an element (a slow or shaped sender): look
						// again after another period.
						quiet = now
					}
					s.armDeadline(last, quiet)
					continue
				}
			}
			s.fail(err)
			return false
		}
		last = time.Now()
		quiet = last
		if ok, err := s.nonza(el); ok || err != nil {
			if err != nil {
				s.fail(err)
				return false
			}
			continue
		}
		if !stanza.IsStanza(el, stanza.NSClient) {
			s.fail(stanza.NewStreamError("unsupported-stanza-type", "only message, presence and iq are accepted here"))
			return false
		}
		if err := s.stampFrom(el); err != nil {
			s.fail(err)
			return false
		}
		if o := s.cfg.Observer; o != nil {
			o.StanzaReceived(s.remote, el)
		}
		s.handled()
		if el.Local == "iq" && me.sessionIQ(el) {
			continue
		}
		if el.Local == "presence" && el.Attr("to") == "" {
			if serr := me.trackPresence(el); serr != nil {
				me.Deliver(stanza.ErrorReply(el, serr))
				continue
			}
		}
		s.cfg.Core.FromClient(ctx, me, el)
	}
}

// parkable reports whether idle periods of this stream give up its goroutine.
func (s *Session) parkable() bool {
	return s.cfg.ParkAfter > 0 && s.cfg.Poller != nil && !s.parkOff
}

// armDeadline sets the read deadline to the first moment the stream must act without input:
// its idle timeout, counted from the last element, or parking, counted from quiet.
func (s *Session) armDeadline(last, quiet time.Time) {
	var d time.Time
	if s.cfg.IdleTime > 0 {
		d = last.Add(s.cfg.IdleTime)
	}
	if s.parkable() {
		if p := quiet.Add(s.cfg.ParkAfter); d.IsZero() || p.Before(d) {
			d = p
		}
	}
	_ = s.nc.SetReadDeadline(d)
}

// park hands the idle connection to the poller and reports whether it did. The read that timed
// out left nothing above the socket: crypto/tls returns a timeout only when it has no complete
// record buffered, and a partial record's remainder is still to come from the socket.
func (s *Session) park(last time.Time) bool {
	if !s.parkable() || !s.dec.Idle() {
		return false
	}
	sc, ok := s.raw.(syscall.Conn)
	if !ok {
		s.parkOff = true // WebSocket, BOSH: not a socket of its own
		return false
	}
	s.parkMu.Lock()
	defer s.parkMu.Unlock()
	if s.closing {
		return false
	}
	if s.end == nil {
		if s.end = listener.Detach(s.ctx); s.end == nil {
			s.parkOff = true // not a listener's connection: nobody else could end it
			return false
		}
	}
	var timeout time.Duration
	if s.cfg.IdleTime > 0 {
		timeout = max(time.Until(last.Add(s.cfg.IdleTime)), time.Millisecond)
	}
	_ = s.nc.SetReadDeadline(time.Time{})
	s.lastInput = last
	s.dec.Release()
	k := s.cfg.Poller.Park(sc, timeout, s.unparked)
	if k == nil {
		s.parkOff = true
		return false
	}
	s.parked = k
	return true
}

// unparked reads on, on a new goroutine, once the parked connection has input, timed out, or
// is closing.
func (s *Session) unparked() {
	s.parkMu.Lock()
	s.parked = nil
	s.parkMu.Unlock()
	parked := false
	defer s.done(&parked)
	parked = s.readLoop(s.ctx)
}

// stopParking is called before the connection closes: it is not parked again, and a parked
// connection is woken so that its reader sees the close and ends the stream.
func (s *Session) stopParking() {
	s.parkMu.Lock()
	s.closing = true
	k := s.parked
	s.parked = nil
	s.parkMu.Unlock()
	if k != nil {
		k.Wake()
	}
}

// stampFrom enforces RFC 6120 §8.1.2.1: the server sets 'from' to the session's full JID;
// a client-supplied 'from' must be that full JID or its bare JID.
func (s *Session) stampFrom(el *stanza.Element) error {
	if f := el.Attr("from"); f != "" {
		j, err := jid.Parse(f)
		if err != nil || !(j.Equal(s.jid) || j.Equal(s.jid.Bare())) {
			return stanza.NewStreamError("invalid-from", "'from' does not match the authenticated identity")
		}
	}
	if !s.fromCache.jid.Equal(s.jid) || s.fromCache.str == "" {
		// jid.JID.String builds a new string on every call; this runs for every stanza.
		s.fromCache.jid, s.fromCache.str = s.jid, s.jid.String()
	}
	el.SetAttr("from", s.fromCache.str)
	return nil
}

// sessionIQ answers the legacy session establishment request (RFC 3921 §3, kept for old clients).
func (s *Session) sessionIQ(el *stanza.Element) bool {
	if el.Attr("type") != stanza.Set {
		return false
	}
	if to := el.Attr("to"); to != "" && to != s.domain {
		return false
	}
	if el.Child(stanza.NSSession, "session") == nil || el.ElementCount() != 1 {
		return false
	}
	r := stanza.ResultReply(el, nil)
	r.SetAttr("from", s.domain)
	s.Deliver(r)
	return true
}

// trackPresence records availability and priority from broadcast presence (RFC 6121 §4.7.2.3).
func (s *Session) trackPresence(el *stanza.Element) *stanza.Error {
	switch el.Attr("type") {
	case "":
		prio := 0
		if p := el.Child(stanza.NSClient, "priority"); p != nil {
			n, err := strconv.Atoi(p.Text())
			if err != nil || n < -128 || n > 127 {
				return stanza.NewError("bad-request", "priority must be an integer from -128 to 127")
			}
			prio = n
		}
		s.priority.Store(int32(prio))
		s.available.Store(true)
	case "unavailable":
		s.available.Store(false)
	}
	return nil
}
