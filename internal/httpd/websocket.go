package httpd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"impetus/internal/c2s"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// Subprotocol is the WebSocket subprotocol of XMPP (RFC 7395 §3.1).
const Subprotocol = "xmpp"

// serveWebSocket upgrades a request to an RFC 7395 WebSocket and runs a client stream over it
// on this goroutine, which net/http no longer needs once the connection is hijacked.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this endpoint speaks XMPP over WebSocket (RFC 7395)", http.StatusUpgradeRequired)
		return
	}
	if !slices.Contains(websocket.Subprotocols(r), Subprotocol) {
		// RFC 7395 §3.1: without the xmpp subprotocol there is no XMPP WebSocket connection.
		http.Error(w, "the xmpp WebSocket subprotocol is required (RFC 7395 §3.1)", http.StatusBadRequest)
		return
	}
	up := websocket.Upgrader{
		Subprotocols:     []string{Subprotocol},
		HandshakeTimeout: s.set.ReadTimeout,
		// Authentication happens inside the stream, never through cookies, so a page of any
		// origin gains nothing from a connection it could not authenticate itself.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	cfg := s.opts.Client
	lim := cfg.Limits
	maxMsg := lim.MaxStanzaSize
	if maxMsg <= 0 {
		maxMsg = xmlstream.DefaultMaxStanzaSize
	}
	// A message is one element; room for an XML declaration and white space around it.
	ws.SetReadLimit(int64(maxMsg) + 1024)
	c := newWSConn(ws, lim, maxMsg)
	s.wsMu.Lock()
	s.ws[c] = struct{}{}
	s.wsMu.Unlock()
	defer func() {
		s.wsMu.Lock()
		delete(s.ws, c)
		s.wsMu.Unlock()
		c.Close()
	}()
	go c.pump()

	dec := xmlstream.NewDecoder(c, lim)
	if cfg.HandshakeTimeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(cfg.HandshakeTimeout))
	}
	hdr, err := dec.ReadHeader()
	if err != nil {
		c.failBeforeOpen(err, s.opts.Domains)
		return
	}
	if secure, state := s.secure(r); secure {
		c2s.ServeSecured(s.ctx, c, dec, hdr, cfg, state)
	} else {
		c2s.Serve(s.ctx, c, dec, hdr, cfg)
	}
}

// wsConn presents an RFC 7395 WebSocket to c2s as a net.Conn carrying an RFC 6120 stream.
// Reading, a pump goroutine turns each message into stream bytes (<open/> into a stream
// header, <close/> into </stream:stream>); writing, c2s's bytes are cut into one element per
// message, its stream header becoming <open/> and its end <close/>.
type wsConn struct {
	ws     *websocket.Conn
	lim    xmlstream.Limits
	in     chan []byte // stream bytes from the pump; closed when the pump ends
	perr   error       // why the pump ended; read only after in is closed
	rest   []byte      // the unread part of the last input
	rd     *deadline
	done   chan struct{}
	closed sync.Once

	// expectOpen is set while the client must send <open/> next: at first, and after SASL
	// success (RFC 7395 §3.5, the stream restart).
	expectOpen atomic.Bool

	wmu   sync.Mutex // one writer at a time, as the WebSocket library requires
	split splitter
}

func newWSConn(ws *websocket.Conn, lim xmlstream.Limits, maxMsg int) *wsConn {
	c := &wsConn{ws: ws, lim: lim, in: make(chan []byte), rd: newDeadline(), done: make(chan struct{})}
	c.split.max = maxMsg * 4
	c.expectOpen.Store(true)
	ws.SetPingHandler(func(data string) error {
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		// A WebSocket ping is the client's keepalive (RFC 7395 §3.4): it reaches c2s as
		// whitespace, which resets the stream's idle timeout as a whitespace ping on TCP does.
		select {
		case c.in <- []byte(" "):
		case <-c.done:
		}
		var nerr net.Error
		if errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &nerr) && nerr.Timeout()) {
			return nil
		}
		return err
	})
	return c
}

// pump reads messages until the connection fails or closes. Unbuffered hand-over to Read
// means a client is never read ahead of what c2s consumes.
func (c *wsConn) pump() {
	defer close(c.in)
	for {
		typ, msg, err := c.ws.ReadMessage()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				c.perr = &xmlstream.Error{Condition: "policy-violation", TooBig: true, Text: "message too big"}
			case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway):
				c.perr = io.EOF
			default:
				c.perr = err
			}
			return
		}
		if typ != websocket.TextMessage {
			// RFC 7395 §3.2: XMPP is carried in text frames only.
			c.perr = &xmlstream.Error{Condition: "bad-format", Text: "XMPP over WebSocket uses text messages only"}
			return
		}
		b, err := c.convert(msg)
		if err != nil {
			c.perr = err
			return
		}
		select {
		case c.in <- b:
		case <-c.done:
			return
		}
	}
}

// convert turns one message into stream bytes.
func (c *wsConn) convert(msg []byte) ([]byte, error) {
	el, raw, err := parseFramed(msg, c.lim)
	if err != nil {
		return nil, err
	}
	if el.Space == NSFraming {
		switch el.Local {
		case "open":
			if !c.expectOpen.Swap(false) {
				return nil, &xmlstream.Error{Condition: "bad-format", Text: "<open/> is only valid at the start of a stream"}
			}
			return openToHeader(el), nil
		case "close":
			return []byte(streamClose), nil
		}
		return nil, &xmlstream.Error{Condition: "bad-format", Text: "unknown framing element <" + el.Local + "/>"}
	}
	if c.expectOpen.Load() {
		return nil, &xmlstream.Error{Condition: "bad-format", Text: "the stream starts with <open/>"}
	}
	return raw, nil
}

// Read implements net.Conn.
func (c *wsConn) Read(p []byte) (int, error) {
	if len(c.rest) == 0 {
		select {
		case b, ok := <-c.in:
			if !ok {
				if c.perr != nil {
					return 0, c.perr
				}
				return 0, io.EOF
			}
			c.rest = b
		case <-c.rd.wait():
			return 0, os.ErrDeadlineExceeded
		case <-c.done:
			return 0, net.ErrClosed
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

// Write implements net.Conn: one message per element (RFC 7395 §3.3.3).
func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	chunks, err := c.split.split(p)
	for _, ch := range chunks {
		var msg []byte
		switch ch.kind {
		case chunkHeader:
			msg = openElement(ch.header)
		case chunkClose:
			msg = []byte(closeElement)
		default:
			msg = ch.data
			if bytes.HasPrefix(msg, []byte(`<success xmlns="`+stanza.NSSASL+`"`)) {
				// The client restarts the stream with a new <open/> after success.
				c.expectOpen.Store(true)
			}
		}
		if werr := c.ws.WriteMessage(websocket.TextMessage, msg); werr != nil {
			return 0, werr
		}
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// failBeforeOpen answers a client whose first message was not a valid <open/>.
func (c *wsConn) failBeforeOpen(err error, domains []string) {
	cond := "bad-format"
	var xerr *xmlstream.Error
	var nerr net.Error
	switch {
	case errors.As(err, &xerr):
		cond = xerr.Condition
	case errors.As(err, &nerr) && nerr.Timeout():
		cond = "connection-timeout"
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return
	}
	from := ""
	if len(domains) > 0 {
		from = domains[0]
	}
	open := openElement(&xmlstream.Header{From: from, Version: "1.0", Lang: "en"})
	serr := stanza.NewStreamError(cond, "").Element().AppendXML(nil, stanza.NSClient)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_ = c.ws.WriteMessage(websocket.TextMessage, open)
	_ = c.ws.WriteMessage(websocket.TextMessage, selfContained(serr))
	_ = c.ws.WriteMessage(websocket.TextMessage, []byte(closeElement))
}

// Close implements net.Conn: the WebSocket closing handshake is started and the connection
// closed (RFC 7395 §3.6).
func (c *wsConn) Close() error {
	c.closed.Do(func() {
		close(c.done)
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = c.ws.Close()
	})
	return nil
}

// LocalAddr implements net.Conn.
func (c *wsConn) LocalAddr() net.Addr { return c.ws.LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

// SetDeadline implements net.Conn.
func (c *wsConn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn; it bounds Read, not the pump, so a deadline that
// passed leaves the connection usable (c2s uses one to wake its reader for shutdown).
func (c *wsConn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
