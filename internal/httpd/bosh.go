package httpd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"impetus/internal/c2s"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// Namespaces of BOSH (XEP-0124) and its XMPP binding (XEP-0206).
const (
	NSHTTPBind = "http://jabber.org/protocol/httpbind"
	NSXBOSH    = "urn:xmpp:xbosh"
)

// boshVersion is the XEP-0124 protocol version this connection manager speaks.
const boshVersion = "1.11"

// maxRID is the largest request id XEP-0124 §14.1 allows (2^53 - 1).
const maxRID = 1<<53 - 1

// errBOSHQueueFull is returned to c2s when a session's undelivered output passes its bound.
var errBOSHQueueFull = errors.New("httpd: BOSH output queue full")

// boshManager holds the BOSH sessions of a listener.
type boshManager struct {
	srv      *Server
	ctx      context.Context
	mu       sync.Mutex
	sessions map[string]*boshSession
}

func newBOSHManager(s *Server) *boshManager {
	return &boshManager{srv: s, ctx: context.Background(), sessions: map[string]*boshSession{}}
}

func (m *boshManager) start(ctx context.Context) { m.ctx = ctx }

// closeAll ends every session, as at shutdown.
func (m *boshManager) closeAll() {
	m.mu.Lock()
	all := make([]*boshSession, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	m.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		s.terminateLocked("system-shutdown")
		s.mu.Unlock()
	}
}

// count returns the number of live sessions.
func (m *boshManager) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions)
}

func (m *boshManager) remove(s *boshSession) {
	m.mu.Lock()
	if m.sessions[s.sid] == s {
		delete(m.sessions, s.sid)
	}
	m.mu.Unlock()
}

// ServeHTTP answers BOSH requests (XEP-0124 §7).
func (m *boshManager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.srv.corsHeaders(w)
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		w.Header().Set("Allow", "POST, OPTIONS")
		http.Error(w, "BOSH (XEP-0124) expects POST requests", http.StatusMethodNotAllowed)
		return
	}
	set := m.srv.set
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, set.BOSHMaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeBody(w, terminateBody("policy-violation", nil))
		}
		return
	}
	lim := m.srv.opts.Client.Limits
	lim.MaxStanzaSize = int(set.BOSHMaxBody)
	body, _, err := parseFramed(data, lim)
	if err != nil || body.Space != NSHTTPBind || body.Local != "body" {
		writeBody(w, terminateBody("bad-request", nil))
		return
	}
	rid, err := strconv.ParseInt(body.Attr("rid"), 10, 64)
	if err != nil || rid <= 0 || rid > maxRID {
		writeBody(w, terminateBody("bad-request", nil))
		return
	}
	sid := body.Attr("sid")
	if sid == "" {
		m.create(w, r, body, rid)
		return
	}
	m.mu.Lock()
	s := m.sessions[sid]
	m.mu.Unlock()
	if s == nil {
		writeBody(w, terminateBody("item-not-found", nil))
		return
	}
	s.handle(w, body, rid)
}

// boshSession is one BOSH session carrying one client stream.
type boshSession struct {
	m        *boshManager
	sid      string
	domain   string
	lang     string
	wait     time.Duration
	hold     int
	requests int
	inact    time.Duration
	polling  time.Duration
	maxPause time.Duration
	secure   bool
	maxOut   int
	maxIn    int // stream bytes waiting for c2s to read, at most

	mu        sync.Mutex
	nextRID   int64
	arrived   map[int64]*boshReq // requests that came before their predecessors
	held      []*boshReq         // processed requests waiting for data, oldest first
	out       [][]byte           // output elements not yet sent
	outBytes  int
	header    *xmlstream.Header // c2s's latest stream header
	answered  map[int64][]byte  // recent responses, for retransmission (XEP-0124 §14.3)
	answerIDs []int64
	key       string // the key the next request must hash to (XEP-0124 §15); "" without keys
	restart   bool   // SASL succeeded: the client restarts the stream next (XEP-0206 §5)
	closed    bool   // c2s ended the stream
	done      bool   // the session is over
	lastEmpty time.Time
	pause     time.Duration // the inactivity allowed until the next request, after a pause
	idle      *time.Timer
	conn      *boshConn
}

// boshReq is one HTTP request of a session.
type boshReq struct {
	rid    int64
	body   *stanza.Element
	resp   chan []byte // receives the response body once; nil means answer with an empty body
	create bool
	done   bool
}

func newSID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// create starts a session (XEP-0124 §7.1, XEP-0206 §3).
func (m *boshManager) create(w http.ResponseWriter, r *http.Request, body *stanza.Element, rid int64) {
	set := m.srv.set
	cfg := m.srv.opts.Client
	to := body.Attr("to")
	if to == "" {
		writeBody(w, terminateBody("improper-addressing", nil))
		return
	}
	if cfg.Hosted != nil && !cfg.Hosted(to) {
		writeBody(w, terminateBody("host-unknown", nil))
		return
	}
	if set.BOSHMaxSessions > 0 && m.count() >= set.BOSHMaxSessions {
		m.srv.log.Warn("BOSH session limit reached", "limit", set.BOSHMaxSessions)
		writeBody(w, terminateBody("policy-violation", nil))
		return
	}
	wait := set.BOSHMaxWait
	if v, err := strconv.Atoi(body.Attr("wait")); err == nil && v >= 0 && time.Duration(v)*time.Second < wait {
		wait = time.Duration(v) * time.Second
	}
	hold := min(1, set.BOSHMaxHold)
	if v, err := strconv.Atoi(body.Attr("hold")); err == nil && v >= 0 {
		hold = min(v, set.BOSHMaxHold)
	}
	secure, _ := m.srv.secure(r)
	maxOut := cfg.MaxQueue
	if maxOut <= 0 {
		maxOut = 1 << 20
	}
	s := &boshSession{
		m: m, sid: newSID(), domain: to, lang: body.Attr("xml:lang"), wait: wait, hold: hold, requests: hold + 1,
		inact: set.BOSHInactivity, polling: set.BOSHPolling, maxPause: set.BOSHMaxPause, secure: secure, maxOut: maxOut,
		maxIn:   4 * int(set.BOSHMaxBody),
		nextRID: rid + 1, arrived: map[int64]*boshReq{}, answered: map[int64][]byte{}, key: body.Attr("newkey"),
	}
	if s.lang == "" {
		s.lang = "en"
	}
	s.conn = newBOSHConn(s, remoteAddr(r))
	m.mu.Lock()
	m.sessions[s.sid] = s
	m.mu.Unlock()

	req := &boshReq{rid: rid, body: body, resp: make(chan []byte, 1), create: true}
	s.mu.Lock()
	s.conn.input(s.streamHeader())
	s.held = append(s.held, req)
	s.mu.Unlock()

	dec := xmlstream.NewDecoder(s.conn, cfg.Limits)
	hdr, err := dec.ReadHeader()
	if err != nil {
		// The header is ours; only a session already torn down fails here.
		s.mu.Lock()
		s.terminateLocked("internal-server-error")
		s.mu.Unlock()
	} else {
		m.srv.wg.Add(1)
		go func() {
			defer m.srv.wg.Done()
			// One goroutine per session runs the stream, as a TCP connection has one.
			if s.secure {
				c2s.ServeSecured(m.ctx, s.conn, dec, hdr, cfg, nil)
			} else {
				c2s.Serve(m.ctx, s.conn, dec, hdr, cfg)
			}
		}()
	}
	s.await(w, req)
}

// streamHeader is the stream header a session's creation or restart gives c2s.
func (s *boshSession) streamHeader() []byte {
	b := []byte(`<stream:stream xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams" version="1.0" to="`)
	b = stanza.AppendAttrValue(b, s.domain)
	b = append(b, `" xml:lang="`...)
	b = stanza.AppendAttrValue(b, s.lang)
	return append(b, `">`...)
}

// handle takes a request of an existing session.
func (s *boshSession) handle(w http.ResponseWriter, body *stanza.Element, rid int64) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		writeBody(w, terminateBody("item-not-found", nil))
		return
	}
	if rid < s.nextRID {
		// A retransmission (XEP-0124 §14.3): the same answer again, or, while the original is
		// still held, this request takes its place.
		if b, ok := s.answered[rid]; ok {
			s.mu.Unlock()
			writeBody(w, b)
			return
		}
		for i, h := range s.held {
			if h.rid == rid {
				req := &boshReq{rid: rid, body: h.body, resp: make(chan []byte, 1), create: h.create}
				s.held[i] = req
				h.done = true
				h.resp <- nil
				s.mu.Unlock()
				s.await(w, req)
				return
			}
		}
		s.terminateLocked("item-not-found")
		s.mu.Unlock()
		writeBody(w, terminateBody("item-not-found", nil))
		return
	}
	if rid >= s.nextRID+int64(s.requests) {
		// Beyond the window of requests the client may have outstanding (XEP-0124 §14.2).
		s.terminateLocked("item-not-found")
		s.mu.Unlock()
		writeBody(w, terminateBody("item-not-found", nil))
		return
	}
	if _, dup := s.arrived[rid]; dup {
		s.terminateLocked("item-not-found")
		s.mu.Unlock()
		writeBody(w, terminateBody("item-not-found", nil))
		return
	}
	req := &boshReq{rid: rid, body: body, resp: make(chan []byte, 1)}
	s.arrived[rid] = req
	s.stopIdleLocked()
	for {
		next, ok := s.arrived[s.nextRID]
		if !ok || s.done {
			break
		}
		delete(s.arrived, s.nextRID)
		s.nextRID++
		s.processLocked(next)
	}
	s.flushLocked()
	s.mu.Unlock()
	s.await(w, req)
}

// processLocked applies one request in rid order.
func (s *boshSession) processLocked(req *boshReq) {
	body := req.body
	if s.key != "" {
		// Key sequencing (XEP-0124 §15): each key hashes to the one before.
		k := body.Attr("key")
		sum := sha1.Sum([]byte(k))
		if k == "" || hex.EncodeToString(sum[:]) != s.key {
			s.held = append(s.held, req)
			s.terminateLocked("item-not-found")
			return
		}
		s.key = k
		if nk := body.Attr("newkey"); nk != "" {
			s.key = nk
		}
	}
	s.held = append(s.held, req)
	empty := body.ElementCount() == 0
	if p := body.Attr("pause"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || time.Duration(n)*time.Second > s.maxPause {
			s.terminateLocked("policy-violation")
			return
		}
		// XEP-0124 §10: answer everything held now; the session may be idle for the pause.
		s.pause = time.Duration(n) * time.Second
		s.answerAllLocked()
		return
	}
	var in []byte
	for c := range body.Elements() {
		in = c.AppendXML(in, stanza.NSClient)
	}
	if body.Attr("{"+NSXBOSH+"}restart") == "true" {
		if !s.restart {
			s.terminateLocked("bad-request")
			return
		}
		s.restart = false
		in = append(in, s.streamHeader()...)
		empty = false
	}
	if body.Attr("type") == "terminate" {
		in = append(in, streamClose...)
		empty = false
	}
	if len(in) == 0 {
		// An empty request is the client's keepalive: whitespace resets the stream's idle
		// timeout as a whitespace ping on TCP does.
		in = append(in, ' ')
	}
	if len(s.conn.inbuf)+len(in) > s.maxIn {
		// The client sends faster than its stream is read (c2s waits, e.g. on a throttled
		// authentication): refuse to buffer without bound.
		s.terminateLocked("policy-violation")
		return
	}
	s.conn.input(in)
	if empty && s.hold == 0 {
		// A polling session (hold 0) must not poll faster than advertised (XEP-0124 §12).
		now := time.Now()
		if !s.lastEmpty.IsZero() && now.Sub(s.lastEmpty) < s.polling {
			s.terminateLocked("policy-violation")
			return
		}
		s.lastEmpty = now
	}
}

// await waits, at most the session's wait time, for the response to req and writes it.
func (s *boshSession) await(w http.ResponseWriter, req *boshReq) {
	t := time.NewTimer(s.wait)
	defer t.Stop()
	var b []byte
	select {
	case b = <-req.resp:
	case <-t.C:
		s.mu.Lock()
		switch {
		case req.done:
		case s.arrived[req.rid] == req:
			// A predecessor never came within the wait: the client lost it.
			s.terminateLocked("item-not-found")
		default:
			s.answerLocked(req)
			s.flushLocked()
		}
		s.mu.Unlock()
		b = <-req.resp
	}
	if b == nil {
		b = []byte(`<body xmlns="` + NSHTTPBind + `"/>`)
	}
	writeBody(w, b)
}

// flushLocked answers held requests when there is output, when more are held than the client
// allowed, and when the session ended; then arms the inactivity timer if nothing is held.
func (s *boshSession) flushLocked() {
	for len(s.held) > 0 && !s.done && (len(s.out) > 0 || s.closed || len(s.held) > s.hold) {
		if s.held[0].create && s.header == nil && !s.closed {
			// The creation response carries the stream id: wait for the stream header.
			break
		}
		if s.closed {
			s.terminateLocked("")
			break
		}
		s.answerLocked(s.held[0])
	}
	for len(s.arrived) > 0 && s.done {
		for rid, r := range s.arrived {
			delete(s.arrived, rid)
			s.sendLocked(r, terminateBody("", nil))
		}
	}
	if len(s.held) == 0 && !s.done {
		s.armIdleLocked()
	}
}

// answerAllLocked answers every held request, the first with the pending output.
func (s *boshSession) answerAllLocked() {
	for len(s.held) > 0 {
		if s.held[0].create && s.header == nil {
			break
		}
		s.answerLocked(s.held[0])
	}
	s.flushLocked()
}

// answerLocked answers req, which must be held, with the pending output.
func (s *boshSession) answerLocked(req *boshReq) {
	for i, h := range s.held {
		if h == req {
			s.held = append(s.held[:i], s.held[i+1:]...)
			break
		}
	}
	b := []byte(`<body xmlns="` + NSHTTPBind + `" xmlns:stream="http://etherx.jabber.org/streams"`)
	if req.create {
		b = s.sessionAttrs(b)
	}
	b = append(b, '>')
	for _, el := range s.out {
		b = append(b, el...)
	}
	b = append(b, "</body>"...)
	s.out, s.outBytes = nil, 0
	s.sendLocked(req, b)
}

// sessionAttrs appends the attributes of the session creation response (XEP-0124 §7.1,
// XEP-0206 §3).
func (s *boshSession) sessionAttrs(b []byte) []byte {
	attr := func(name, v string) {
		b = append(b, ' ')
		b = append(b, name...)
		b = append(b, `="`...)
		b = stanza.AppendAttrValue(b, v)
		b = append(b, '"')
	}
	secs := func(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
	attr("xmlns:xmpp", NSXBOSH)
	attr("sid", s.sid)
	attr("wait", secs(s.wait))
	attr("hold", strconv.Itoa(s.hold))
	attr("requests", strconv.Itoa(s.requests))
	attr("inactivity", secs(s.inact))
	attr("polling", secs(s.polling))
	if s.maxPause > 0 {
		attr("maxpause", secs(s.maxPause))
	}
	attr("ver", boshVersion)
	attr("from", s.domain)
	if s.header != nil {
		attr("authid", s.header.ID)
	}
	attr("secure", strconv.FormatBool(s.secure))
	attr("xmpp:version", "1.0")
	attr("xmpp:restartlogic", "true")
	return b
}

// sendLocked delivers a response body to the request's handler and remembers it for a
// retransmission of the same rid.
func (s *boshSession) sendLocked(req *boshReq, b []byte) {
	if req.done {
		return
	}
	req.done = true
	req.resp <- b
	s.answered[req.rid] = b
	s.answerIDs = append(s.answerIDs, req.rid)
	for len(s.answerIDs) > s.requests {
		delete(s.answered, s.answerIDs[0])
		s.answerIDs = s.answerIDs[1:]
	}
}

// terminateLocked ends the session: every waiting request gets a terminate body, with the
// stream error c2s sent (remote-stream-error) or cond, and c2s sees the end of its input.
func (s *boshSession) terminateLocked(cond string) {
	if s.done {
		return
	}
	s.done = true
	var payload [][]byte
	for _, el := range s.out {
		if bytes.HasPrefix(el, []byte("<stream:error")) {
			cond = "remote-stream-error"
		}
		payload = append(payload, el)
	}
	s.out, s.outBytes = nil, 0
	first := true
	for _, h := range s.held {
		if first {
			s.sendLocked(h, terminateBody(cond, payload))
			first = false
			continue
		}
		s.sendLocked(h, terminateBody(cond, nil))
	}
	s.held = nil
	for rid, r := range s.arrived {
		delete(s.arrived, rid)
		s.sendLocked(r, terminateBody(cond, nil))
	}
	s.stopIdleLocked()
	s.conn.endInput()
	s.m.remove(s)
}

func (s *boshSession) armIdleLocked() {
	d := s.inact
	if s.pause > 0 {
		d = s.pause
		s.pause = 0
	}
	if d <= 0 {
		return
	}
	if s.idle == nil {
		s.idle = time.AfterFunc(d, s.expire)
		return
	}
	s.idle.Reset(d)
}

func (s *boshSession) stopIdleLocked() {
	if s.idle != nil {
		s.idle.Stop()
	}
}

// expire ends a session that had no request for its inactivity period (XEP-0124 §7.1).
func (s *boshSession) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.held) == 0 && !s.done {
		s.m.srv.log.Info("BOSH session inactive; ending it", "sid", s.sid)
		s.terminateLocked("")
	}
}

// output takes what c2s wrote.
func (s *boshSession) output(chunks []chunk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range chunks {
		switch ch.kind {
		case chunkHeader:
			s.header = ch.header
		case chunkClose:
			s.closed = true
		default:
			if bytes.HasPrefix(ch.data, []byte(`<success xmlns="`+stanza.NSSASL+`"`)) {
				s.restart = true
			}
			if s.done {
				continue
			}
			s.out = append(s.out, ch.data)
			s.outBytes += len(ch.data)
		}
	}
	s.flushLocked()
	if s.outBytes > s.maxOut {
		return errBOSHQueueFull
	}
	return nil
}

// terminateBody is a body with type='terminate' (XEP-0124 §17.2), cond empty for a normal end.
func terminateBody(cond string, payload [][]byte) []byte {
	b := []byte(`<body xmlns="` + NSHTTPBind + `" xmlns:stream="http://etherx.jabber.org/streams" type="terminate"`)
	if cond != "" {
		b = append(b, ` condition="`...)
		b = append(b, cond...)
		b = append(b, '"')
	}
	if len(payload) == 0 {
		return append(b, "/>"...)
	}
	b = append(b, '>')
	for _, p := range payload {
		b = append(b, p...)
	}
	return append(b, "</body>"...)
}

func writeBody(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

func remoteAddr(r *http.Request) net.Addr {
	if ap, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		return ap
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
}

// boshConn presents a BOSH session to c2s as a net.Conn: request payloads become stream bytes,
// and what c2s writes becomes the payload of responses.
type boshConn struct {
	s      *boshSession
	remote net.Addr
	inbuf  []byte // guarded by s.mu
	eof    bool   // guarded by s.mu
	notify chan struct{}
	rd     *deadline
	done   chan struct{}
	closed sync.Once
	wmu    sync.Mutex
	split  splitter
}

func newBOSHConn(s *boshSession, remote net.Addr) *boshConn {
	c := &boshConn{s: s, remote: remote, notify: make(chan struct{}, 1), rd: newDeadline(), done: make(chan struct{})}
	c.split.max = s.maxOut
	return c
}

// input queues stream bytes for c2s; the caller holds s.mu.
func (c *boshConn) input(b []byte) {
	c.inbuf = append(c.inbuf, b...)
	c.wake()
}

// endInput makes c2s's next read report the end of the connection; the caller holds s.mu.
func (c *boshConn) endInput() {
	c.eof = true
	c.wake()
}

func (c *boshConn) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Read implements net.Conn.
func (c *boshConn) Read(p []byte) (int, error) {
	for {
		c.s.mu.Lock()
		if len(c.inbuf) > 0 {
			n := copy(p, c.inbuf)
			c.inbuf = c.inbuf[n:]
			if len(c.inbuf) == 0 {
				c.inbuf = nil
			}
			c.s.mu.Unlock()
			return n, nil
		}
		eof := c.eof
		c.s.mu.Unlock()
		if eof {
			return 0, io.EOF
		}
		select {
		case <-c.notify:
		case <-c.rd.wait():
			return 0, os.ErrDeadlineExceeded
		case <-c.done:
			return 0, net.ErrClosed
		}
	}
}

// Write implements net.Conn. It never blocks on the client: output waits in the session,
// bounded by the client stream's max_outbound_queue.
func (c *boshConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	chunks, err := c.split.split(p)
	if oerr := c.s.output(chunks); oerr != nil {
		return 0, oerr
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close implements net.Conn: c2s is done with the stream, so the session ends.
func (c *boshConn) Close() error {
	c.closed.Do(func() {
		close(c.done)
		c.s.mu.Lock()
		// A held request carries the end of the session to the client now; without one, the
		// session waits for the next request or its inactivity timeout.
		c.s.closed = true
		c.s.flushLocked()
		c.s.mu.Unlock()
	})
	return nil
}

// LocalAddr implements net.Conn.
func (c *boshConn) LocalAddr() net.Addr { return &net.TCPAddr{} }

// RemoteAddr implements net.Conn: the address of the request that created the session.
func (c *boshConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline implements net.Conn.
func (c *boshConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *boshConn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

// SetWriteDeadline implements net.Conn; writes never wait for the client.
func (c *boshConn) SetWriteDeadline(time.Time) error { return nil }
