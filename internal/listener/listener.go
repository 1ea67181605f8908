// Package listener accepts connections for an xmpp_listener: one socket per Listen scope (TCP over
// IPv4 or IPv6, or a unix socket), the Peer access rules, and the hand-off of each connection to the
// stream type its header asks for (client streams now; server streams share the same port).
//
// Connections go through the stages Momentum's listeners have, mapped onto goroutines: an accept
// goroutine takes connections from the kernel's listen queue (listen_backlog) and puts them on the
// accept queue (accept_queue_backlog); a dispatcher takes at most events_per_iter of them per
// iteration and starts each one's handshake, of which at most concurrency run at once. A handshake
// lasts from dispatch until the stream handler calls [Established] (a client stream bound a
// resource) or returns.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
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
	// TLS is the state of the TLS handshake done before the stream (Spec.DirectTLS), or nil;
	// Conn is then the *tls.Conn.
	TLS *tls.ConnectionState

	life *lifetime
}

// OnEnd registers fn to run when the connection ends: when the handler returns or, if the
// handler detached the connection (Detach), when it calls the function Detach gave it.
// Functions run in the reverse order of registration, like deferred calls.
func (c *Conn) OnEnd(fn func()) { c.life.onEnd(fn) }

// lifetime collects what has to happen when a connection ends. A stream handler normally ends
// its connection by returning; an idle client stream may instead give up its goroutine while it
// waits for input (c2s parks it), and then ends the connection later from another goroutine.
type lifetime struct {
	mu       sync.Mutex
	ends     []func()
	detached bool
}

func (t *lifetime) onEnd(fn func()) {
	t.mu.Lock()
	t.ends = append(t.ends, fn)
	t.mu.Unlock()
}

// end runs the registered functions once.
func (t *lifetime) end() {
	t.mu.Lock()
	ends := t.ends
	t.ends = nil
	t.mu.Unlock()
	for i := len(ends) - 1; i >= 0; i-- {
		ends[i]()
	}
}

type lifetimeKey struct{}

// Detach lets the stream handler of the connection ctx belongs to return without ending the
// connection. It returns the function that ends it, which the handler's successor must call
// exactly once, or nil when the connection did not come from a listener. Call it from the
// handler's goroutine, before the handler returns.
func Detach(ctx context.Context) (end func()) {
	t, ok := ctx.Value(lifetimeKey{}).(*lifetime)
	if !ok {
		return nil
	}
	t.mu.Lock()
	t.detached = true
	t.mu.Unlock()
	return t.end
}

// Handler serves a stream after its first header was read.
type Handler func(ctx context.Context, c *Conn)

// Policy decides, per connection, whether it is accepted and with which limits.
type Policy func(peer netip.Addr) (allowed bool, limits xmlstream.Limits)

// Spec is one socket to listen on.
type Spec struct {
	Network  string // tcp, tcp4, tcp6 or unix
	Address  string
	FileMode os.FileMode // for unix sockets; 0 leaves the mode bind(2) gave
	// ListenBacklog is the listen(2) backlog: connections the kernel completes before they are
	// accepted. 0 keeps Go's choice (the system's somaxconn). The kernel caps it at somaxconn.
	ListenBacklog int
	// AcceptQueueBacklog is how many accepted connections may wait for the dispatcher. When the
	// queue is full the accept goroutine waits, and further connections stay in the kernel's
	// listen queue. 0 hands each connection straight to the dispatcher.
	AcceptQueueBacklog int
	// Concurrency bounds the handshakes in progress at once; 0 means no bound.
	Concurrency int
	// EventsPerIter is how many queued connections the dispatcher starts before it yields;
	// below 1 means 1.
	EventsPerIter int
	// NoDelay sets TCP_NODELAY on accepted TCP connections (disable_nagle_algorithm). Go sets it
	// by default; false turns Nagle's algorithm back on, as on any socket Momentum accepts.
	NoDelay bool
	// RecvBuffer and SendBuffer set SO_RCVBUF and SO_SNDBUF on the listening socket, which
	// accepted TCP connections inherit; 0 leaves the system's default and its auto-tuning.
	RecvBuffer int
	SendBuffer int
	Policy     Policy
	// Streams maps a stream's content namespace (jabber:client, jabber:server) to its handler.
	Streams map[string]Handler
	// HeaderTimeout bounds the wait for the first stream header (and the TLS handshake before it).
	HeaderTimeout time.Duration
	// DirectTLS, when set, makes every connection start with a TLS handshake before any XML
	// (XEP-0368 direct TLS); its NextProtos should list the ALPN protocols served.
	DirectTLS *tls.Config
	Log       *slog.Logger
}

// Stats is a snapshot of a listener's stages.
type Stats struct {
	Queued      int   // accepted connections on the accept queue
	WaitingSlot int   // connections the dispatcher holds until a handshake slot frees
	Handshakes  int   // handshakes in progress
	Open        int   // connections accepted and not yet closed
	Batches     int64 // dispatcher iterations that started connections
	MaxBatch    int   // the most connections one iteration started
}

// Listener is one bound socket.
type Listener struct {
	spec  Spec
	ln    net.Listener
	wg    sync.WaitGroup
	queue chan net.Conn
	slots chan struct{} // nil without a concurrency bound
	done  chan struct{}
	once  sync.Once
	// serving is set when Serve starts and served closed when it returns: connections are
	// added to wg only while Serve runs, and Wait must not start waiting before that ends.
	serving atomic.Bool
	served  chan struct{}

	waiting    atomic.Int32
	handshakes atomic.Int32
	batches    atomic.Int64
	maxBatch   atomic.Int32

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Listen binds the socket and applies the socket options of spec.
func Listen(spec Spec) (*Listener, error) {
	if spec.Log == nil {
		spec.Log = slog.New(slog.DiscardHandler)
	}
	if spec.Network == "unix" {
		// A stale socket from an earlier run would make bind fail.
		if fi, err := os.Lstat(spec.Address); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(spec.Address)
		}
	}
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if spec.Network == "unix" {
			return nil
		}
		// Set on the listening socket before listen(2), so that accepted sockets inherit the sizes
		// and the window scale offered in the handshake matches them.
		return setBuffers(c, spec.RecvBuffer, spec.SendBuffer)
	}}
	ln, err := lc.Listen(context.Background(), spec.Network, spec.Address)
	if err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	if spec.ListenBacklog > 0 {
		// Go always listens with somaxconn; calling listen(2) again on a listening socket sets
		// the backlog on Linux (and the BSDs).
		if err := relisten(ln, spec.ListenBacklog); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listener: listen backlog: %w", err)
		}
	}
	if spec.Network == "unix" && spec.FileMode != 0 {
		if err := os.Chmod(spec.Address, spec.FileMode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listener: %w", err)
		}
	}
	l := &Listener{
		spec:   spec,
		ln:     ln,
		queue:  make(chan net.Conn, max(spec.AcceptQueueBacklog, 0)),
		done:   make(chan struct{}),
		served: make(chan struct{}),
		conns:  make(map[net.Conn]struct{}),
	}
	if spec.Concurrency > 0 {
		l.slots = make(chan struct{}, spec.Concurrency)
	}
	return l, nil
}

func setBuffers(c syscall.RawConn, recv, send int) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if recv > 0 {
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, recv); serr != nil {
				return
			}
		}
		if send > 0 {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, send)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func relisten(ln net.Listener, backlog int) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), backlog) }); err != nil {
		return err
	}
	return lerr
}

// MaxConcurrency returns the handshake bound for a Listen whose concurrency option is
// concurrency when its pool_name's ThreadPool has poolConcurrency threads. Momentum accepts on
// its main loop unless concurrency is above 1, so 0 and 1 set no bound. Momentum's manual asks
// for a listener concurrency no larger than its pool's, so the pool's is the ceiling; a pool of 0
// threads sets none.
func MaxConcurrency(concurrency, poolConcurrency int) int {
	if concurrency <= 1 {
		return 0
	}
	if poolConcurrency > 0 && concurrency > poolConcurrency {
		return poolConcurrency
	}
	return concurrency
}

// Addr is the bound address (useful with port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Stats returns a snapshot of the listener's stages.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open := len(l.conns)
	l.mu.Unlock()
	return Stats{
		Queued:      len(l.queue),
		WaitingSlot: int(l.waiting.Load()),
		Handshakes:  int(l.handshakes.Load()),
		Open:        open,
		Batches:     l.batches.Load(),
		MaxBatch:    int(l.maxBatch.Load()),
	}
}

// Serve accepts until ctx ends or Close is called.
func (l *Listener) Serve(ctx context.Context) error {
	if !l.serving.CompareAndSwap(false, true) {
		return errors.New("listener: Serve called twice")
	}
	defer close(l.served)
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		l.dispatch(ctx)
	}()
	l.acceptLoop(ctx)
	close(l.queue)
	<-dispatched
	return nil
}

func (l *Listener) acceptLoop(ctx context.Context) {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
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
				return
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(l.spec.NoDelay)
		}
		l.wg.Add(1)
		l.track(c, true)
		select {
		case l.queue <- c:
		case <-l.done:
			l.drop(c)
			return
		case <-ctx.Done():
			l.drop(c)
			return
		}
	}
}

// dispatch starts queued connections, at most events_per_iter per iteration, each once a
// handshake slot is free, and yields between iterations as Momentum's scheduler loop does.
func (l *Listener) dispatch(ctx context.Context) {
	n := max(l.spec.EventsPerIter, 1)
	batch := make([]net.Conn, 0, n)
	for {
		c, ok := <-l.queue
		if !ok {
			return
		}
		batch = append(batch[:0], c)
	fill:
		for len(batch) < n {
			select {
			case c, ok := <-l.queue:
				if !ok {
					break fill
				}
				batch = append(batch, c)
			default:
				break fill
			}
		}
		l.batches.Add(1)
		if b := int32(len(batch)); b > l.maxBatch.Load() {
			l.maxBatch.Store(b)
		}
		for _, c := range batch {
			if !l.acquire() {
				l.drop(c)
				continue
			}
			go l.handle(ctx, c)
		}
		runtime.Gosched()
	}
}

// acquire takes a handshake slot; false when the listener closed while waiting.
func (l *Listener) acquire() bool {
	select {
	case <-l.done:
		return false
	default:
	}
	if l.slots != nil {
		l.waiting.Add(1)
		defer l.waiting.Add(-1)
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return false
		}
	}
	l.handshakes.Add(1)
	return true
}

func (l *Listener) releaser() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.handshakes.Add(-1)
			if l.slots != nil {
				<-l.slots
			}
		})
	}
}

// drop closes a connection that is never served.
func (l *Listener) drop(c net.Conn) {
	c.Close()
	l.track(c, false)
	l.wg.Done()
}

type establishedKey struct{}

// Established tells the listener that the connection ctx belongs to finished its handshake, so
// that its slot counts no longer against the concurrency bound. A handler that never calls it
// holds the slot until it returns. Calling it more than once, or with another context, is harmless.
func Established(ctx context.Context) {
	if f, ok := ctx.Value(establishedKey{}).(func()); ok {
		f()
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
	release := l.releaser()
	life := &lifetime{}
	raw := c
	life.onEnd(l.wg.Done)
	life.onEnd(func() { l.track(raw, false) })
	life.onEnd(func() { raw.Close() })
	life.onEnd(release)
	defer func() {
		life.mu.Lock()
		detached := life.detached
		life.mu.Unlock()
		if !detached {
			life.end()
		}
	}()
	ctx = context.WithValue(ctx, establishedKey{}, release)
	ctx = context.WithValue(ctx, lifetimeKey{}, life)
	peer := peerAddr(c)
	allowed, limits := l.spec.Policy(peer)
	log := l.spec.Log.With("remote", c.RemoteAddr().String())
	if !allowed {
		log.Info("connection refused by peer rules", "peer", peer.String())
		return
	}
	if l.spec.HeaderTimeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(l.spec.HeaderTimeout))
	}
	var state *tls.ConnectionState
	if l.spec.DirectTLS != nil {
		tc := tls.Server(c, l.spec.DirectTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			log.Info("TLS handshake failed", "err", err)
			return
		}
		st := tc.ConnectionState()
		state, c = &st, tc
	}
	dec := xmlstream.NewDecoder(c, limits)
	hdr, err := dec.ReadHeader()
	if err != nil {
		log.Debug("no stream header", "err", err)
		refuse(c, "", errorCondition(err))
		return
	}
	h := l.spec.Streams[hdr.DefaultNS]
	if h == nil {
		refuse(c, hdr.DefaultNS, stanza.NewStreamError("invalid-namespace", "unsupported stream content namespace "+hdr.DefaultNS))
		return
	}
	h(ctx, &Conn{Conn: c, Dec: dec, Header: hdr, Peer: peer, TLS: state, life: life})
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

// refuse answers a connection whose header could not be used: a stream header, the error, the
// close. The answering header has the content namespace of the refused stream when that is
// jabber:server, so a peer server parses the error as it would on its own kind of stream;
// anything else is answered as a client stream.
func refuse(c net.Conn, ns string, serr *stanza.StreamError) {
	if serr == nil {
		return
	}
	if ns != stanza.NSServer {
		ns = stanza.NSClient
	}
	buf := []byte("<?xml version='1.0'?><stream:stream xmlns='" + ns + "' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
	buf = serr.Element().AppendXML(buf, ns)
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

// Close stops accepting. Queued connections are closed; open streams are left to their owners,
// which the server closes first.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	err := l.ln.Close()
	if l.spec.Network == "unix" {
		_ = os.Remove(l.spec.Address)
	}
	return err
}

// Wait blocks until every connection handler has returned, or timeout passes, after which
// the remaining connections are closed.
func (l *Listener) Wait(timeout time.Duration) {
	if l.serving.Load() {
		// Serve adds accepted connections to wg until it returns, which it does promptly once
		// Close closed the socket; waiting on wg before that would race with those adds.
		<-l.served
	}
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
		select {
		case <-done:
		case <-time.After(timeout):
			// A handler that detached its connection (listener.Detach) and was never told
			// that it closed would otherwise hold the shutdown forever.
			l.spec.Log.Error("listener: connections still not ended after they were closed", "address", l.spec.Address)
		}
	}
}
