package s2s

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"impetus/internal/metrics"
	"impetus/internal/stanza"
	"impetus/internal/transport"
	"impetus/internal/xmlstream"
)

// errStreamGone tells Send that the stream it found ended meanwhile.
var errStreamGone = errors.New("s2s: stream gone")

// Outbound stream states.
const (
	stateConnecting = iota
	stateUp
	stateClosed
)

// outStream is the outbound stream of one (local domain, remote domain) pair. While it is being
// set up, stanzas wait in queue as elements, so a failure can bounce each of them; once it is up
// they are serialized straight into the writer.
//
// A pair either owns its connection or, with sender multiplexing (XEP-0220, "Multiplexing
// Sender Domains"), shares the connection of another local domain's stream to the same remote
// domain, its host: then c and w are the host's, and the pair ends when the host's connection
// does.
type outStream struct {
	m *Manager
	pair
	lastUse atomic.Int64  // unix nanoseconds of the last stanza
	host    *outStream    // the stream whose connection this pair shares, or nil
	done    chan struct{} // closed when the pair's goroutine returns
	ended   chan struct{} // closed by close, for a multiplexed pair's goroutine

	mu    sync.Mutex
	state int
	queue []*stanza.Element
	c     *conn
	w     *transport.Writer
	idle  *time.Timer
	// remoteAddr is the peer's address as observers expect it, set with w.
	remoteAddr string
	// joining maps the local domains whose dialback on this connection awaits the peer's
	// answer to where the answer goes; only a stream that owns its connection has it.
	joining map[string]chan *stanza.Element

	closeOnce sync.Once
}

func newOutStream(m *Manager, p pair) *outStream {
	s := &outStream{m: m, pair: p, done: make(chan struct{}), ended: make(chan struct{})}
	s.lastUse.Store(time.Now().UnixNano())
	return s
}

// enqueue hands the stream one stanza.
func (s *outStream) enqueue(el *stanza.Element) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateConnecting:
		if len(s.queue) >= s.m.cfg.MaxQueue {
			return stanza.NewError("resource-constraint", "too many stanzas wait for the connection to "+s.remote)
		}
		// The caller may reuse el once Send returns.
		s.queue = append(s.queue, el.Copy())
	case stateUp:
		now := time.Now().UnixNano()
		s.lastUse.Store(now)
		if s.host != nil {
			// The shared connection is in use as long as any of its pairs is.
			s.host.lastUse.Store(now)
		}
		s.m.cfg.Observer.StanzaDelivered(s.remoteAddr, el)
		err := s.w.Append(func(dst []byte) []byte {
			return stanza.ConvertNS(el, stanza.NSClient, stanza.NSServer).AppendXML(dst, stanza.NSServer)
		})
		if errors.Is(err, transport.ErrClosed) {
			return errStreamGone
		}
		if err != nil {
			return stanza.NewError("remote-server-timeout", "the connection to "+s.remote+" failed")
		}
	default:
		return errStreamGone
	}
	return nil
}

// run sets the stream up, then reads what the peer sends on it until it ends.
// start runs the pair: on h's connection when h is set and still up, else on its own.
func (s *outStream) start(h *outStream) {
	defer s.m.wg.Done()
	defer close(s.done)
	defer func() {
		// A bug must cost one stream, not the server.
		if r := recover(); r != nil {
			s.m.cfg.Log.Error("outbound stream panicked", "local", s.local, "remote", s.remote, "panic", r)
			s.close(stanza.NewStreamError("internal-server-error", ""), false)
			s.fail(errors.New("internal error"))
		}
	}()
	if h != nil && s.runMultiplexed(h) {
		return
	}
	s.run()
}

// run opens the pair's own connection, authenticates it and reads from it until it ends.
func (s *outStream) run() {
	log := s.m.cfg.Log.With("local", s.local, "remote", s.remote, "dir", "out")
	ctx, cancel := context.WithTimeout(s.m.ctx, s.m.cfg.ConnectTimeout)
	c, feats, err := s.m.open(ctx, s.local, s.remote)
	if err == nil {
		err = s.authenticate(ctx, c, feats)
	}
	cancel()
	if err != nil {
		if c != nil {
			c.nc.Close()
		}
		log.Info("outbound stream failed", "err", err)
		s.fail(err)
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	s.mu.Lock()
	if s.state == stateClosed {
		// Closed during setup (shutdown): fail bounces what waits.
		s.mu.Unlock()
		c.nc.Close()
		s.fail(errors.New("stream closed during setup"))
		return
	}
	s.c = c
	s.remoteAddr = c.nc.RemoteAddr().String()
	s.w = transport.NewWriter(c.nc, s.m.cfg.MaxWriteQueue, 0, func(error) { c.nc.Close() })
	metrics.Default.S2SLinkUp(metrics.Outbound)
	for _, el := range s.queue {
		s.m.cfg.Observer.StanzaDelivered(s.remoteAddr, el)
		_ = s.w.Append(func(dst []byte) []byte {
			return stanza.ConvertNS(el, stanza.NSClient, stanza.NSServer).AppendXML(dst, stanza.NSServer)
		})
	}
	s.queue = nil
	s.state = stateUp
	if s.m.cfg.IdleTime > 0 {
		s.idle = time.AfterFunc(s.m.cfg.IdleTime, s.checkIdle)
	}
	s.mu.Unlock()
	s.m.mu.Lock()
	delete(s.m.backoff, s.pair)
	if multiplexable(feats) && s.m.links[s.remote] == nil && s.m.out[s.pair] == s {
		s.m.links[s.remote] = s
	}
	s.m.mu.Unlock()
	log.Info("outbound stream established", "tls", c.tlsState != nil)
	s.readLoop(c, log)
	s.close(nil, true)
	s.m.streamDone(s, false)
	log.Info("outbound stream ended")
}

// readLoop answers what a peer may send on a stream we opened: dialback verification requests
// (some servers ask on the stream they already have) and the end of the stream.
func (s *outStream) readLoop(c *conn, log *slog.Logger) {
	for {
		el, err := c.dec.ReadElement()
		if err != nil {
			log.Debug("outbound stream read ended", "err", err)
			return
		}
		switch {
		case el.Space == stanza.NSDialback && el.Local == "verify" && el.Attr("type") == "":
			reply := s.m.authoritative(el)
			_ = s.w.Append(func(dst []byte) []byte { return reply.AppendXML(dst, stanza.NSServer) })
		case el.Space == stanza.NSDialback && el.Local == "result" && el.Attr("type") != "" && el.Attr("from") == s.remote:
			// The answer to a multiplexed pair's dialback; one nobody waits for is ignored
			// (XEP-0220 §6: unsolicited answers prove nothing).
			s.mu.Lock()
			ch := s.joining[el.Attr("to")]
			delete(s.joining, el.Attr("to"))
			s.mu.Unlock()
			if ch != nil {
				ch <- el
			}
		case el.Space == stanza.NSStream && el.Local == "error":
			log.Debug("peer sent a stream error", "error", el.String())
			return
		}
	}
}

// checkIdle closes the stream when nothing was sent on it for IdleTime.
func (s *outStream) checkIdle() {
	idle := time.Since(time.Unix(0, s.lastUse.Load()))
	if idle >= s.m.cfg.IdleTime {
		s.m.cfg.Log.Debug("closing idle outbound stream", "local", s.local, "remote", s.remote)
		// Forget the stream first so new stanzas open a new one instead of racing the close.
		s.m.streamDone(s, false)
		s.close(nil, false)
		return
	}
	s.mu.Lock()
	if s.state == stateUp {
		s.idle.Reset(s.m.cfg.IdleTime - idle)
	}
	s.mu.Unlock()
}

// fail ends a stream that could not be set up and bounces every stanza that waited for it.
func (s *outStream) fail(err error) {
	s.mu.Lock()
	q := s.queue
	s.queue = nil
	s.state = stateClosed
	s.mu.Unlock()
	s.m.streamDone(s, true)
	serr := stanza.NewError("remote-server-not-found", "")
	var e *stanza.Error
	switch {
	case errors.As(err, &e):
		serr = e
	case timeoutError(err) || errors.Is(err, context.DeadlineExceeded):
		serr = stanza.NewError("remote-server-timeout", "")
	}
	for _, el := range q {
		s.m.bounce(el, serr)
	}
}

// close ends the stream, with a stream error when serr is set; peerGone says the peer ended
// it already. Safe from any goroutine.
func (s *outStream) close(serr *stanza.StreamError, peerGone bool) {
	s.mu.Lock()
	if s.state == stateConnecting {
		// run notices and bounces the queue once its setup returns.
		s.state = stateClosed
		s.mu.Unlock()
		return
	}
	w, c, host := s.w, s.c, s.host
	wasClosed := s.state == stateClosed
	s.state = stateClosed
	if s.idle != nil {
		s.idle.Stop()
	}
	s.mu.Unlock()
	if host != nil {
		// A multiplexed pair leaves the shared connection to its host.
		if !wasClosed {
			close(s.ended)
		}
		return
	}
	if w == nil {
		return
	}
	s.closeOnce.Do(func() {
		// The writer exists only once the stream was counted up, and this runs once.
		metrics.Default.S2SLinkDown(metrics.Outbound)
		var b []byte
		// Queued stanzas get time to leave when we end the stream; when the peer ended it,
		// only the end tag is left to send.
		flush := 2 * time.Second
		if serr != nil {
			b = serr.Element().AppendXML(b, stanza.NSServer)
		} else if peerGone {
			flush = 200 * time.Millisecond
		}
		_, _ = w.Write(append(b, "</stream:stream>"...))
		w.Close(flush)
		c.nc.Close()
	})
}

// multiplexable reports whether other local domains may join a stream with these features:
// the peer handles dialback errors (XEP-0220 §2.4), so a refused pair does not end the stream
// the other pairs use.
func multiplexable(feats *stanza.Element) bool {
	if feats == nil {
		return false
	}
	db := feats.Child(NSDialbackFeature, "dialback")
	return db != nil && db.Child(NSDialbackFeature, "errors") != nil
}

// runMultiplexed sets up the pair on h's connection (XEP-0220, "Multiplexing Sender Domains"):
// it sends a <db:result/> for its local domain there and, once the peer says valid, writes to
// h's connection until that or the pair ends. It reports false, having done nothing, when h's
// connection is gone already.
func (s *outStream) runMultiplexed(h *outStream) bool {
	log := s.m.cfg.Log.With("local", s.local, "remote", s.remote, "dir", "out")
	answer := make(chan *stanza.Element, 1)
	h.mu.Lock()
	ok := h.state == stateUp && h.joining[s.local] == nil
	if ok {
		if h.joining == nil {
			h.joining = make(map[string]chan *stanza.Element)
		}
		h.joining[s.local] = answer
	}
	c, addr := h.c, h.remoteAddr
	h.mu.Unlock()
	if !ok {
		return false
	}
	s.mu.Lock()
	s.host = h
	// Observers see the host's address.
	s.c, s.remoteAddr = c, addr
	s.mu.Unlock()
	key := Key(s.m.dialbackSecret(s.local), s.remote, s.local, c.id)
	req := stanza.NewElement(stanza.NSDialback, "result", stanza.Attr{Name: "from", Value: s.local}, stanza.Attr{Name: "to", Value: s.remote}).AddText(key)
	_ = h.w.Append(func(dst []byte) []byte { return req.AppendXML(dst, stanza.NSServer) })
	timer := time.NewTimer(s.m.cfg.ConnectTimeout)
	defer timer.Stop()
	var err error
	select {
	case res := <-answer:
		switch res.Attr("type") {
		case "valid":
		case "error":
			err = stanzaErrorOf(res)
		default:
			err = stanza.NewError("remote-server-not-found", s.remote+" did not accept our dialback key")
		}
	case <-timer.C:
		err = stanza.NewError("remote-server-timeout", "")
	case <-h.done:
		err = stanza.NewError("remote-server-timeout", "")
	case <-s.m.ctx.Done():
		err = errors.New("shutting down")
	}
	if err != nil {
		h.mu.Lock()
		delete(h.joining, s.local)
		h.mu.Unlock()
		log.Info("multiplexed pair refused", "err", err)
		s.fail(err)
		return true
	}
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		s.fail(errors.New("stream closed during setup"))
		return true
	}
	s.w = h.w
	for _, el := range s.queue {
		s.m.cfg.Observer.StanzaDelivered(s.remoteAddr, el)
		_ = s.w.Append(func(dst []byte) []byte {
			return stanza.ConvertNS(el, stanza.NSClient, stanza.NSServer).AppendXML(dst, stanza.NSServer)
		})
	}
	s.queue = nil
	s.state = stateUp
	if s.m.cfg.IdleTime > 0 {
		s.idle = time.AfterFunc(s.m.cfg.IdleTime, s.checkIdle)
	}
	s.mu.Unlock()
	s.m.mu.Lock()
	delete(s.m.backoff, s.pair)
	s.m.mu.Unlock()
	log.Info("outbound pair multiplexed", "on_local", h.local)
	select {
	case <-h.done:
	case <-s.ended:
	case <-s.m.ctx.Done():
	}
	s.close(nil, true)
	s.m.streamDone(s, false)
	log.Info("outbound pair ended")
	return true
}

// open connects to remote's server, exchanges stream headers and negotiates TLS when offered.
// It returns the stream's features after TLS (nil for a pre-1.0 peer).
func (m *Manager) open(ctx context.Context, local, remote string) (*conn, *stanza.Element, error) {
	nc, err := m.connect(ctx, remote)
	if err != nil {
		return nil, nil, err
	}
	c := &conn{nc: nc, dec: xmlstream.NewDecoder(nc, m.cfg.Limits)}
	if tc, ok := nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		c.tlsState = &st
	}
	// The context bounds every read and write of the negotiation.
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Now()) })
	defer stop()
	for {
		if err := c.writeRaw(appendHeader(nil, local, remote, "")); err != nil {
			return c, nil, err
		}
		hdr, err := c.dec.ReadHeader()
		if err != nil {
			return c, nil, err
		}
		if err := checkHeader(hdr); err != nil {
			return c, nil, err
		}
		c.id = hdr.ID
		if !versionAtLeast1(hdr.Version) {
			return c, nil, nil
		}
		feats, err := c.dec.ReadElement()
		if err != nil {
			return c, nil, err
		}
		if feats.Space == stanza.NSStream && feats.Local == "error" {
			return c, nil, fmt.Errorf("s2s: %s refused the stream: %s", remote, feats.String())
		}
		if feats.Space != stanza.NSStream || feats.Local != "features" {
			return c, nil, fmt.Errorf("s2s: %s sent <%s/> instead of stream features", remote, feats.Local)
		}
		if c.tlsState != nil || feats.Child(stanza.NSTLS, "starttls") == nil {
			return c, feats, nil
		}
		if err := c.writeSync(stanza.NewElement(stanza.NSTLS, "starttls")); err != nil {
			return c, nil, err
		}
		el, err := c.dec.ReadElement()
		if err != nil {
			return c, nil, err
		}
		if el.Space != stanza.NSTLS || el.Local != "proceed" {
			return c, nil, fmt.Errorf("s2s: %s refused STARTTLS", remote)
		}
		tc := tls.Client(c.nc, m.clientTLS(remote, false))
		if err := tc.HandshakeContext(ctx); err != nil {
			return c, nil, fmt.Errorf("s2s: TLS with %s: %w", remote, err)
		}
		st := tc.ConnectionState()
		c.nc, c.tlsState = tc, &st
		c.dec.Reset(tc)
	}
}

// clientTLS is the TLS configuration of outbound connections. Certificates are checked after
// the handshake rather than during it: a certificate that does not validate does not end the
// connection but only rules out SASL EXTERNAL, as XEP-0178 and XEP-0220 intend.
func (m *Manager) clientTLS(remote string, direct bool) *tls.Config {
	conf := &tls.Config{
		ServerName:         remote,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, //nolint:gosec // verified by certValidFor after the handshake
	}
	if direct {
		conf.NextProtos = []string{"xmpp-server"}
	}
	if m.cfg.Certificate != nil {
		conf.Certificates = []tls.Certificate{*m.cfg.Certificate}
	}
	return conf
}

// authenticate proves the local domain to the peer: SASL EXTERNAL when it is offered and our
// certificate can validate, dialback otherwise (the initiating role of XEP-0220).
func (s *outStream) authenticate(ctx context.Context, c *conn, feats *stanza.Element) error {
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Now()) })
	defer stop()
	if !s.m.cfg.DialbackWithoutValidCert && !certValidFor(c.tlsState, s.remote, s.m.cfg.Roots) {
		return stanza.NewError("remote-server-not-found", "the certificate of "+s.remote+" does not validate")
	}
	if s.m.ownValid && c.tlsState != nil && offersExternal(feats) {
		ok, err := s.external(c)
		if err != nil || ok {
			return err
		}
	}
	if c.id == "" {
		return stanza.NewError("remote-server-not-found", s.remote+" sent no stream id, so dialback cannot work")
	}
	key := Key(s.m.dialbackSecret(s.local), s.remote, s.local, c.id)
	res := stanza.NewElement(stanza.NSDialback, "result", stanza.Attr{Name: "from", Value: s.local}, stanza.Attr{Name: "to", Value: s.remote}).AddText(key)
	if err := c.writeSync(res); err != nil {
		return err
	}
	for {
		el, err := c.dec.ReadElement()
		if err != nil {
			return err
		}
		switch {
		case el.Space == stanza.NSDialback && el.Local == "result" && el.Attr("from") == s.remote && el.Attr("to") == s.local:
			switch el.Attr("type") {
			case "valid":
				return nil
			case "invalid":
				return stanza.NewError("remote-server-not-found", s.remote+" did not accept our dialback key")
			case "error":
				return stanzaErrorOf(el)
			}
		case el.Space == stanza.NSDialback && el.Local == "verify" && el.Attr("type") == "":
			if err := c.writeSync(s.m.authoritative(el)); err != nil {
				return err
			}
		case el.Space == stanza.NSStream && el.Local == "error":
			return fmt.Errorf("s2s: %s ended the stream: %s", s.remote, el.String())
		}
	}
}

func offersExternal(feats *stanza.Element) bool {
	if feats == nil {
		return false
	}
	mechs := feats.Child(stanza.NSSASL, "mechanisms")
	if mechs == nil {
		return false
	}
	for m := range mechs.Elements() {
		if m.Local == "mechanism" && m.Text() == "EXTERNAL" {
			return true
		}
	}
	return false
}

// external runs SASL EXTERNAL (XEP-0178). It reports false without error when the peer refused,
// so dialback can still be tried on the same stream.
func (s *outStream) external(c *conn) (bool, error) {
	auth := stanza.NewElement(stanza.NSSASL, "auth", stanza.Attr{Name: "mechanism", Value: "EXTERNAL"}).
		AddText(base64.StdEncoding.EncodeToString([]byte(s.local)))
	if err := c.writeSync(auth); err != nil {
		return false, err
	}
	el, err := c.dec.ReadElement()
	if err != nil {
		return false, err
	}
	if el.Space != stanza.NSSASL || el.Local != "success" {
		return false, nil
	}
	c.dec.Restart()
	if err := c.writeRaw(appendHeader(nil, s.local, s.remote, "")); err != nil {
		return false, err
	}
	hdr, err := c.dec.ReadHeader()
	if err != nil {
		return false, err
	}
	if err := checkHeader(hdr); err != nil {
		return false, err
	}
	if versionAtLeast1(hdr.Version) {
		if _, err := c.dec.ReadElement(); err != nil {
			return false, err
		}
	}
	return true, nil
}

// verify asks the authoritative server of remote whether key is the one it gave for a stream
// with id that claims remote towards local (the receiving role of XEP-0220). It uses a
// connection of its own, closed right after the answer.
func (m *Manager) verify(ctx context.Context, local, remote, id, key string) (bool, *stanza.Error) {
	c, _, err := m.open(ctx, local, remote)
	if c != nil {
		defer c.nc.Close()
	}
	if err != nil {
		m.cfg.Log.Info("dialback verification failed", "local", local, "remote", remote, "err", err)
		if timeoutError(err) || errors.Is(err, context.DeadlineExceeded) {
			return false, stanza.NewError("remote-server-timeout", "")
		}
		return false, stanza.NewError("remote-server-not-found", "")
	}
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Now()) })
	defer stop()
	req := stanza.NewElement(stanza.NSDialback, "verify",
		stanza.Attr{Name: "from", Value: local}, stanza.Attr{Name: "to", Value: remote}, stanza.Attr{Name: "id", Value: id}).AddText(key)
	if err := c.writeSync(req); err != nil {
		return false, stanza.NewError("remote-server-not-found", "")
	}
	for {
		el, err := c.dec.ReadElement()
		if err != nil {
			m.cfg.Log.Info("dialback verification failed", "local", local, "remote", remote, "err", err)
			if timeoutError(err) {
				return false, stanza.NewError("remote-server-timeout", "")
			}
			return false, stanza.NewError("remote-server-not-found", "")
		}
		if el.Space == stanza.NSDialback && el.Local == "verify" && el.Attr("id") == id {
			_ = c.writeRaw([]byte("</stream:stream>"))
			switch el.Attr("type") {
			case "valid":
				return true, nil
			case "invalid":
				return false, nil
			default:
				return false, stanzaErrorOf(el)
			}
		}
		if el.Space == stanza.NSStream && el.Local == "error" {
			m.cfg.Log.Info("dialback verification failed", "local", local, "remote", remote, "error", el.String())
			return false, stanza.NewError("remote-server-not-found", "")
		}
	}
}

// authoritative answers a <db:verify/> request for a key one of our domains handed out (the
// authoritative role of XEP-0220). It needs no state: the key is recomputed from the secret.
func (m *Manager) authoritative(el *stanza.Element) *stanza.Element {
	from, to, id := el.Attr("from"), el.Attr("to"), el.Attr("id")
	reply := stanza.NewElement(stanza.NSDialback, "verify",
		stanza.Attr{Name: "from", Value: to}, stanza.Attr{Name: "to", Value: from}, stanza.Attr{Name: "id", Value: id})
	if _, ok := domainOf(to); !ok || !m.cfg.Hosted(to) {
		reply.SetAttr("type", "error")
		return reply.AddChild(dbError("item-not-found", "this server does not host the domain"))
	}
	if _, ok := domainOf(from); !ok || id == "" {
		reply.SetAttr("type", "error")
		return reply.AddChild(dbError("bad-request", "from and id are required"))
	}
	typ := "invalid"
	if keyEqual(el.Text(), Key(m.dialbackSecret(to), from, to, id)) {
		typ = "valid"
	}
	reply.SetAttr("type", typ)
	return reply
}

// connect opens a connection to remote's server: the configured gateway, else the targets of
// its SRV records (XEP-0368 direct TLS first at equal priority), else its address on port 5269.
func (m *Manager) connect(ctx context.Context, remote string) (net.Conn, error) {
	if m.cfg.Connect != nil {
		return m.cfg.Connect(ctx, remote)
	}
	// The dialer resolves target host names with the configured resolver too: a domain is
	// reachable, and so can be asserted in dialback, only if our resolver finds it.
	d := net.Dialer{Resolver: m.cfg.Resolver}
	if gw := m.cfg.Gateway(remote); gw != "" {
		return d.DialContext(ctx, "tcp", gw)
	}
	var lastErr error
	for _, t := range m.targets(ctx, remote) {
		nc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(t.host, fmt.Sprint(t.port)))
		if err != nil {
			lastErr = err
			continue
		}
		if !t.directTLS {
			return nc, nil
		}
		tc := tls.Client(nc, m.clientTLS(remote, true))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			lastErr = err
			continue
		}
		return tc, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("s2s: no server found for %s", remote)
	}
	return nil, lastErr
}
