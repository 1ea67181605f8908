// Package listener accepts connections for an xmpp_listener: one socket per Listen scope (TCP over
// IPv4 or IPv6, or a unix socket), the Peer access rules, and the hand-off of each connection to the
// stream type its header asks for (client streams now; server streams share the same port).
package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// Conn is what the listener hands a stream handler.
type Conn struct {
	net.Conn
	Dec    *xmlstream.Decoder
	Header *xmlstream.Header
	// Peer is the remote address used for access rules (loopback for unix sockets).
	Peer netip.Addr
}

// Handler serves a stream after its first header was read.
type Handler func(ctx context.Context, c *Conn)

// Policy decides, per connection, whether it is accepted and with which limits.
type Policy func(peer netip.Addr) (allowed bool, limits xmlstream.Limits)

// Spec is one socket to listen on.
type Spec struct {
	Network  string // tcp, tcp4, tcp6 or unix
	Address  string
	FileMode os.FileMode // for unix sockets
	Policy   Policy
	// Streams maps a stream's content namespace (jabber:client, jabber:server) to its handler.
	Streams map[string]Handler
	// HeaderTimeout bounds the wait for the first stream header.
	HeaderTimeout time.Duration
	Log           *slog.Logger
}

// Listener is one bound socket.
type Listener struct {
	spec Spec
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Listen binds the socket.
func Listen(spec Spec) (*Listener, error) {
	if spec.Network == "unix" {
		// A stale socket from an earlier run would make bind fail.
		if fi, err := os.Lstat(spec.Address); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(spec.Address)
		}
	}
	ln, err := net.Listen(spec.Network, spec.Address)
	if err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	if spec.Network == "unix" && spec.FileMode != 0 {
		if err := os.Chmod(spec.Address, spec.FileMode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listener: %w", err)
		}
	}
	return &Listener{spec: spec, ln: ln, conns: make(map[net.Conn]struct{})}, nil
}

// Addr is the bound address (useful with port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Serve accepts until ctx ends or Close is called.
func (l *Listener) Serve(ctx context.Context) error {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off instead of spinning.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			l.spec.Log.Warn("accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		l.wg.Add(1)
		go l.handle(ctx, c)
	}
}

// peerAddr is the address access rules see: unix sockets count as loopback (as in Momentum).
func peerAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.MustParseAddr("127.0.0.1")
}

func (l *Listener) handle(ctx context.Context, c net.Conn) {
	defer l.wg.Done()
	l.track(c, true)
	defer l.track(c, false)
	defer c.Close()
	peer := peerAddr(c)
	allowed, limits := l.spec.Policy(peer)
	log := l.spec.Log.With("remote", c.RemoteAddr().String())
	if !allowed {
		log.Info("connection refused by peer rules")
		return
	}
	if l.spec.HeaderTimeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(l.spec.HeaderTimeout))
	}
	dec := xmlstream.NewDecoder(c, limits)
	hdr, err := dec.ReadHeader()
	if err != nil {
		log.Debug("no stream header", "err", err)
		refuse(c, errorCondition(err))
		return
	}
	h := l.spec.Streams[hdr.DefaultNS]
	if h == nil {
		refuse(c, stanza.NewStreamError("invalid-namespace", "unsupported stream content namespace "+hdr.DefaultNS))
		return
	}
	h(ctx, &Conn{Conn: c, Dec: dec, Header: hdr, Peer: peer})
}

func errorCondition(err error) *stanza.StreamError {
	var xerr *xmlstream.Error
	if errors.As(err, &xerr) {
		return stanza.NewStreamError(xerr.Condition, xerr.Text)
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return stanza.NewStreamError("connection-timeout", "")
	}
	return nil
}

// refuse answers a connection whose header could not be used: a stream header, the error, the close.
func refuse(c net.Conn, serr *stanza.StreamError) {
	if serr == nil {
		return
	}
	buf := []byte("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
	buf = serr.Element().AppendXML(buf, stanza.NSClient)
	buf = append(buf, "</stream:stream>"...)
	_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, _ = c.Write(buf)
}

func (l *Listener) track(c net.Conn, add bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if add {
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
}

// Close stops accepting. Open streams are left to their owners, which the server closes first.
func (l *Listener) Close() error {
	err := l.ln.Close()
	if l.spec.Network == "unix" {
		_ = os.Remove(l.spec.Address)
	}
	return err
}

// Wait blocks until every connection handler has returned, or timeout passes, after which
// the remaining connections are closed.
func (l *Listener) Wait(timeout time.Duration) {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		l.mu.Lock()
		for c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
		<-done
	}
}
