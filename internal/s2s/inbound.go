package s2s

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/metrics"
	"impetus/internal/stanza"
	"impetus/internal/transport"
	"impetus/internal/xmlstream"
)

// maxPending bounds the dialback verifications one inbound stream may have running, since each
// costs an outbound connection.
const maxPending = 8

// inStream is one stream another server opened to us (the receiving role).
type inStream struct {
	m       *Manager
	c       *conn
	tlsConf *tls.Config
	log     *slog.Logger
	baseLog *slog.Logger
	// remoteAddr is the peer's address as observers expect it.
	remoteAddr string
	local      string // the hosted domain the header named
	remote     string // the domain the header's 'from' claimed, if any
	ns         bool   // the peer declared the dialback namespace
	sasl       string // the domain authenticated with SASL EXTERNAL

	mu       sync.Mutex
	w        *transport.Writer
	verified map[pair]bool
	pending  map[pair]bool
	up       bool // counted by metrics.S2SLinkUp, so the end is counted once
	ended    bool // closeWith ran: a verification finishing later counts no link

	hdrPending bool // our stream header must precede the next bytes written
	closeOnce  sync.Once
}

// Serve runs an inbound server stream whose header dec has already read. tlsConf enables
// STARTTLS with the listener's certificate; nil disables it. It returns when the stream ends.
func (m *Manager) Serve(ctx context.Context, nc net.Conn, dec *xmlstream.Decoder, hdr *xmlstream.Header, tlsConf *tls.Config) {
	s := &inStream{
		m:          m,
		c:          &conn{nc: nc, dec: dec},
		tlsConf:    tlsConf,
		baseLog:    m.cfg.Log.With("remote_addr", nc.RemoteAddr().String(), "dir", "in"),
		remoteAddr: nc.RemoteAddr().String(),
		verified:   make(map[pair]bool),
		pending:    make(map[pair]bool),
	}
	s.log = s.baseLog
	if tc, ok := nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		s.c.tlsState = &st
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		nc.Close()
		return
	}
	m.in[s] = struct{}{}
	m.wg.Add(1)
	m.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("server stream panicked", "panic", r)
			s.closeWith(stanza.NewStreamError("internal-server-error", ""))
		}
		s.closeWith(nil)
		m.mu.Lock()
		delete(m.in, s)
		m.mu.Unlock()
		m.wg.Done()
	}()
	s.w = transport.NewWriter(nc, m.cfg.MaxWriteQueue, 0, func(error) { nc.Close() })
	if err := s.run(ctx, hdr); err != nil {
		s.fail(err)
	}
}

// handshakeTime bounds how long a stream may stay without any verified domain.
func (s *inStream) handshakeTime() time.Duration { return 2 * s.m.cfg.ConnectTimeout }

func (s *inStream) run(ctx context.Context, hdr *xmlstream.Header) error {
	_ = s.c.nc.SetReadDeadline(time.Now().Add(s.handshakeTime()))
	if err := s.open(hdr); err != nil {
		return err
	}
	for {
		if s.anyVerified() {
			if s.m.cfg.IdleTime > 0 {
				_ = s.c.nc.SetReadDeadline(time.Now().Add(s.m.cfg.IdleTime))
			} else {
				_ = s.c.nc.SetReadDeadline(time.Time{})
			}
		}
		el, err := s.c.dec.ReadElement()
		if err != nil {
			return err
		}
		if err := s.handle(ctx, el); err != nil {
			return err
		}
	}
}

// handle processes one top-level element.
func (s *inStream) handle(ctx context.Context, el *stanza.Element) error {
	switch {
	case stanza.IsStanza(el, stanza.NSServer):
		return s.stanza(ctx, el)
	case el.Space == stanza.NSDialback && el.Local == "result":
		if el.Attr("type") == "" {
			return s.dialbackResult(el)
		}
		// Replies to a request we never make on a stream we did not open: nothing to do.
		return nil
	case el.Space == stanza.NSDialback && el.Local == "verify":
		if el.Attr("type") == "" {
			// A peer may ask on any stream, authenticated or not (Prosody reuses its streams).
			s.write(s.m.authoritative(el))
		}
		return nil
	case el.Space == stanza.NSTLS && el.Local == "starttls":
		return s.startTLS()
	case el.Space == stanza.NSSASL && el.Local == "auth":
		return s.external(el)
	case el.Space == stanza.NSStream && el.Local == "error":
		s.log.Info("peer sent a stream error", "error", el.String())
		return xmlstream.ErrStreamClosed
	}
	return stanza.NewStreamError("unsupported-stanza-type", "unexpected <"+el.Local+"/> on a server stream")
}

// open checks a (possibly restarted) stream header, answers it and sends the features.
func (s *inStream) open(hdr *xmlstream.Header) error {
	s.mu.Lock()
	s.c.id = newStreamID()
	s.hdrPending = true
	s.mu.Unlock()
	if err := checkHeader(hdr); err != nil {
		return err
	}
	to, ok := domainOf(hdr.To)
	switch {
	case hdr.To == "":
		return stanza.NewStreamError("improper-addressing", "a server stream must name the domain it is for")
	case !ok || !s.m.cfg.Hosted(to):
		return stanza.NewStreamError("host-unknown", "this server does not host "+hdr.To)
	case s.local != "" && to != s.local:
		return stanza.NewStreamError("host-unknown", "the restarted stream names another domain")
	}
	from := s.remote
	if hdr.From != "" {
		var ok bool
		if from, ok = domainOf(hdr.From); !ok {
			return stanza.NewStreamError("invalid-from", "the stream 'from' is not a domain")
		}
	}
	// Verifications running in the background write headers with these; they change only
	// under the lock.
	s.mu.Lock()
	s.local, s.remote = to, from
	s.log = s.baseLog.With("local", s.local, "remote", s.remote)
	s.mu.Unlock()
	s.ns = hdr.Namespaces["db"] == stanza.NSDialback
	if !versionAtLeast1(hdr.Version) {
		// A pre-1.0 peer gets no features and goes straight to dialback.
		s.write(nil)
		return nil
	}
	s.write(s.features())
	return nil
}

// features lists STARTTLS before TLS; after it, SASL EXTERNAL when the peer's certificate
// validates for the domain it claims; and dialback with error support (XEP-0220 §2.4). Every
// features element carries the stream's limits (XEP-0478).
func (s *inStream) features() *stanza.Element {
	f := stanza.NewElement(stanza.NSStream, "features")
	f.AddChild(s.limitsFeature())
	if s.sasl != "" {
		return f
	}
	if s.tlsConf != nil && s.c.tlsState == nil {
		tlsEl := stanza.NewElement(stanza.NSTLS, "starttls")
		if !s.m.cfg.DialbackWithoutValidCert {
			tlsEl.AddChild(stanza.NewElement(stanza.NSTLS, "required"))
		}
		f.AddChild(tlsEl)
	}
	if certValidFor(s.c.tlsState, s.remote, s.m.cfg.Roots) {
		f.AddChild(stanza.NewElement(stanza.NSSASL, "mechanisms").AddChild(
			stanza.NewElement(stanza.NSSASL, "mechanism").AddText("EXTERNAL")))
	}
	if s.ns {
		f.AddChild(stanza.NewElement(NSDialbackFeature, "dialback").AddChild(stanza.NewElement(NSDialbackFeature, "errors")))
	}
	return f
}

// limitsFeature advertises the largest stanza this stream accepts and how long it may stay
// idle (XEP-0478).
func (s *inStream) limitsFeature() *stanza.Element {
	l := stanza.NewElement(stanza.NSStreamLimits, "limits")
	n := s.m.cfg.Limits.MaxStanzaSize
	if n <= 0 {
		n = xmlstream.DefaultMaxStanzaSize
	}
	l.AddChild(stanza.NewElement(stanza.NSStreamLimits, "max-bytes").AddText(strconv.Itoa(n)))
	if d := s.m.cfg.IdleTime; d >= time.Second {
		l.AddChild(stanza.NewElement(stanza.NSStreamLimits, "idle-seconds").AddText(strconv.Itoa(int(d / time.Second))))
	}
	return l
}

// write queues elements for the peer, preceded by our stream header when it is not sent yet.
func (s *inStream) write(el *stanza.Element) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hdr := s.hdrPending
	s.hdrPending = false
	_ = s.w.Append(func(dst []byte) []byte {
		if hdr {
			dst = appendHeader(dst, s.local, s.remote, s.c.id)
		}
		if el != nil {
			dst = el.AppendXML(dst, stanza.NSServer)
		}
		return dst
	})
}

// startTLS upgrades the connection (RFC 6120 §5.4.3) with the listener's certificate, asking
// for the peer's so that SASL EXTERNAL can be offered.
func (s *inStream) startTLS() error {
	if s.tlsConf == nil || s.c.tlsState != nil || s.anyVerified() || s.anyPending() {
		return stanza.NewStreamError("policy-violation", "STARTTLS is not available now")
	}
	if s.c.dec.Buffered() > 0 {
		return stanza.NewStreamError("policy-violation", "data pipelined before the TLS handshake")
	}
	s.write(stanza.NewElement(stanza.NSTLS, "proceed"))
	// The writer belongs to the plain connection: drain it before TLS takes the socket over.
	s.w.Close(5 * time.Second)
	conf := s.tlsConf.Clone()
	conf.ClientAuth = tls.RequestClientCert
	conf.NextProtos = nil
	tc := tls.Server(s.c.nc, conf)
	_ = tc.SetDeadline(time.Now().Add(s.m.cfg.ConnectTimeout))
	if err := tc.HandshakeContext(s.m.ctx); err != nil {
		s.log.Info("TLS handshake failed", "err", err)
		return err
	}
	_ = tc.SetDeadline(time.Time{})
	_ = tc.SetReadDeadline(time.Now().Add(s.handshakeTime()))
	st := tc.ConnectionState()
	nc := s.c.nc
	s.mu.Lock()
	s.c.nc, s.c.tlsState = tc, &st
	s.w = transport.NewWriter(tc, s.m.cfg.MaxWriteQueue, 0, func(error) { nc.Close() })
	s.mu.Unlock()
	s.c.dec.Reset(tc)
	hdr, err := s.c.dec.ReadHeader()
	if err != nil {
		return err
	}
	return s.open(hdr)
}

// external runs SASL EXTERNAL for the receiving side (XEP-0178): the peer's certificate must
// validate for the domain it authenticates as.
func (s *inStream) external(auth *stanza.Element) error {
	if auth.Attr("mechanism") != "EXTERNAL" || s.sasl != "" {
		s.saslFailure("invalid-mechanism")
		return nil
	}
	domain := s.remote
	if t := auth.Text(); t != "" && t != "=" {
		b, err := base64.StdEncoding.DecodeString(t)
		if err != nil {
			s.saslFailure("incorrect-encoding")
			return nil
		}
		domain = string(b)
	}
	d, ok := domainOf(domain)
	if !ok || !certValidFor(s.c.tlsState, d, s.m.cfg.Roots) || !s.m.cfg.RemoteAllowed(d) {
		s.saslFailure("not-authorized")
		return nil
	}
	s.write(stanza.NewElement(stanza.NSSASL, "success"))
	s.sasl = d
	s.mu.Lock()
	s.remote = d
	s.verified[pair{local: s.local, remote: d}] = true
	s.linkUpLocked()
	s.mu.Unlock()
	s.log.Info("peer authenticated with SASL EXTERNAL", "domain", d)
	s.c.dec.Restart()
	hdr, err := s.c.dec.ReadHeader()
	if err != nil {
		return err
	}
	return s.open(hdr)
}

func (s *inStream) saslFailure(cond string) {
	s.write(stanza.NewElement(stanza.NSSASL, "failure").AddChild(stanza.NewElement(stanza.NSSASL, cond)))
}

// dialbackResult handles a <db:result/> request: it checks the domain pair, then asks the
// claimed domain's authoritative server in the background and answers when it knows.
func (s *inStream) dialbackResult(el *stanza.Element) error {
	from, fromOK := domainOf(el.Attr("from"))
	to, toOK := domainOf(el.Attr("to"))
	reply := func(typ string, errEl *stanza.Element) {
		r := stanza.NewElement(stanza.NSDialback, "result",
			stanza.Attr{Name: "from", Value: el.Attr("to")}, stanza.Attr{Name: "to", Value: el.Attr("from")}, stanza.Attr{Name: "type", Value: typ})
		if errEl != nil {
			r.AddChild(errEl)
		}
		s.write(r)
	}
	key := el.Text()
	switch {
	case !fromOK || !toOK:
		reply("error", dbError("bad-request", "from and to must be domains"))
		return nil
	case !s.m.cfg.Hosted(to):
		reply("error", dbError("item-not-found", "this server does not host "+to))
		return nil
	case !s.m.cfg.RemoteAllowed(from):
		reply("error", dbError("policy-violation", "federation with "+from+" is not enabled on this server"))
		return nil
	case !s.m.cfg.DialbackWithoutValidCert && !certValidFor(s.c.tlsState, from, s.m.cfg.Roots):
		reply("error", dbError("policy-violation", "this server requires a certificate that validates for "+from))
		return nil
	case key == "":
		reply("error", dbError("bad-request", "the key is missing"))
		return nil
	}
	p := pair{local: to, remote: from}
	s.mu.Lock()
	switch {
	case s.verified[p]:
		s.mu.Unlock()
		reply("valid", nil)
		return nil
	case s.pending[p]:
		// XEP-0220 §2.1.2: a second request for a pair being verified is a protocol error.
		s.mu.Unlock()
		return stanza.NewStreamError("conflict", "a dialback request for this pair is already pending")
	case len(s.pending) >= maxPending:
		s.mu.Unlock()
		reply("error", dbError("resource-constraint", "too many dialback requests pending"))
		return nil
	}
	s.pending[p] = true
	s.mu.Unlock()
	// The verification runs beside the read goroutine, which owns these.
	id, log, encrypted := s.c.id, s.log, s.c.tlsState != nil
	s.m.wg.Add(1)
	go func() {
		defer s.m.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				log.Error("dialback verification panicked", "panic", r)
				s.closeWith(stanza.NewStreamError("internal-server-error", ""))
			}
		}()
		ctx, cancel := context.WithTimeout(s.m.ctx, s.m.cfg.ConnectTimeout)
		valid, serr := s.m.verify(ctx, to, from, id, key)
		cancel()
		s.mu.Lock()
		delete(s.pending, p)
		if valid {
			s.verified[p] = true
			s.linkUpLocked()
		}
		s.mu.Unlock()
		switch {
		case serr != nil:
			reply("error", dbError(serr.Condition, serr.Text))
		case valid:
			log.Info("peer verified with dialback", "pair_local", to, "pair_remote", from, "tls", encrypted)
			reply("valid", nil)
		default:
			log.Info("dialback key refused", "pair_local", to, "pair_remote", from)
			reply("invalid", nil)
		}
	}()
	return nil
}

// stanza routes a stanza from a verified domain pair; anything else ends the stream with the
// condition RFC 6120 §4.9.3 gives.
func (s *inStream) stanza(ctx context.Context, el *stanza.Element) error {
	fromAttr, toAttr := el.Attr("from"), el.Attr("to")
	if fromAttr == "" || toAttr == "" {
		return stanza.NewStreamError("improper-addressing", "stanzas between servers need 'from' and 'to'")
	}
	to, err := jid.Parse(toAttr)
	if err != nil {
		return stanza.NewStreamError("improper-addressing", "invalid 'to' address")
	}
	from, err := jid.Parse(fromAttr)
	if err != nil {
		return stanza.NewStreamError("invalid-from", "invalid 'from' address")
	}
	if !s.anyVerified() {
		return stanza.NewStreamError("not-authorized", "no domain is verified on this stream")
	}
	if !s.m.cfg.Hosted(to.Domainpart()) {
		return stanza.NewStreamError("host-unknown", "this server does not host "+to.Domainpart())
	}
	s.mu.Lock()
	ok := s.verified[pair{local: to.Domainpart(), remote: from.Domainpart()}]
	s.mu.Unlock()
	if !ok {
		return stanza.NewStreamError("invalid-from", from.Domainpart()+" is not verified for "+to.Domainpart()+" on this stream")
	}
	s.m.cfg.Observer.StanzaReceived(s.remoteAddr, el)
	in := stanza.ConvertNS(el, stanza.NSServer, stanza.NSClient)
	if err := s.m.cfg.Route(ctx, in); err != nil {
		var serr *stanza.Error
		if !errors.As(err, &serr) {
			serr = stanza.ErrInternalServerError
		}
		if t := el.Attr("type"); t != stanza.ErrorType && t != stanza.Result {
			reply := stanza.ErrorReply(el, serr)
			s.m.cfg.Observer.StanzaDelivered(s.remoteAddr, reply)
			s.write(reply)
		}
	}
	return nil
}

// linkUpLocked counts the stream as an authenticated link the first time a pair is verified
// on it. The caller holds s.mu.
func (s *inStream) linkUpLocked() {
	if !s.up && !s.ended {
		s.up = true
		metrics.Default.S2SLinkUp(metrics.Inbound)
	}
}

func (s *inStream) anyVerified() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.verified) > 0
}

func (s *inStream) anyPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0
}

// fail ends the stream with the stream error that err stands for.
func (s *inStream) fail(err error) {
	var serr *stanza.StreamError
	var xerr *xmlstream.Error
	switch {
	case errors.As(err, &serr):
	case errors.As(err, &xerr):
		serr = stanza.NewStreamError(xerr.Condition, xerr.Text)
	case errors.Is(err, xmlstream.ErrStreamClosed):
		// The peer closed its stream; ours only needs its end tag.
		serr = nil
	case timeoutError(err):
		serr = stanza.NewStreamError("connection-timeout", "")
	default:
		s.log.Debug("connection ended", "err", err)
		s.c.nc.Close()
		return
	}
	s.closeWith(serr)
}

// closeWith ends the stream, with a stream error when serr is set. Safe from any goroutine.
func (s *inStream) closeWith(serr *stanza.StreamError) {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		// Another goroutine (shutdown) may close the stream while its header is read.
		w, hdrNeeded, nc := s.w, s.hdrPending, s.c.nc
		local, remote, id, log := s.local, s.remote, s.c.id, s.log
		s.hdrPending = false
		wasUp := s.up
		s.up, s.ended = false, true
		s.mu.Unlock()
		if wasUp {
			metrics.Default.S2SLinkDown(metrics.Inbound)
		}
		if serr != nil {
			log.Info("closing server stream with error", "condition", serr.Condition, "text", serr.Text)
		}
		var b []byte
		if hdrNeeded {
			b = appendHeader(b, local, remote, id)
		}
		flush := 200 * time.Millisecond // enough for the end tag; the peer may not read any more
		if serr != nil {
			b = serr.Element().AppendXML(b, stanza.NSServer)
			flush = 2 * time.Second
		}
		b = append(b, "</stream:stream>"...)
		if w != nil {
			_, _ = w.Write(b)
			w.Close(flush)
		}
		nc.Close()
	})
}
