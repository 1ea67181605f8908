//go:build linux

package listener

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

const header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"

// waitFor polls cond until it holds. It bounds the wait so a broken listener fails the test
// rather than hanging it; nothing is asserted about how long the condition took.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func allowAll(netip.Addr) (bool, xmlstream.Limits) { return true, xmlstream.Limits{} }

// start binds spec with the given client-stream handler and serves it until the test ends.
func start(t *testing.T, spec Spec, h Handler) *Listener {
	t.Helper()
	if spec.Network == "" {
		spec.Network, spec.Address = "tcp4", "127.0.0.1:0"
	}
	if spec.Policy == nil {
		spec.Policy = allowAll
	}
	spec.Streams = map[string]Handler{stanza.NSClient: h}
	spec.HeaderTimeout = 10 * time.Second
	l, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = l.Serve(context.Background()); close(served) }()
	t.Cleanup(func() {
		l.Close()
		<-served
		l.Wait(5 * time.Second)
	})
	return l
}

func dial(t *testing.T, l *Listener, local string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial(l.Addr().Network(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(header)); err != nil {
		t.Fatal(err)
	}
	return c
}

func fd(t *testing.T, c any) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out int
	_ = rc.Control(func(f uintptr) { out = int(f) })
	return out
}

func sockopt(t *testing.T, c any, level, opt int) int {
	t.Helper()
	v, err := syscall.GetsockoptInt(fd(t, c), level, opt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// listenQueue returns the current and the maximum length of a listening TCP socket's accept
// queue, which Linux reports in TCP_INFO's unacked and sacked fields for listening sockets.
func listenQueue(t *testing.T, l *Listener) (cur, maxLen int) {
	t.Helper()
	var info syscall.TCPInfo
	size := uint32(unsafe.Sizeof(info))
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd(t, l.ln)), syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	return int(info.Unacked), int(info.Sacked)
}

func TestSocketOptions(t *testing.T) {
	type seen struct{ rcv, snd, nodelay int }
	got := make(chan seen, 1)
	handler := func(_ context.Context, c *Conn) {
		got <- seen{
			sockopt(t, c.Conn, syscall.SOL_SOCKET, syscall.SO_RCVBUF),
			sockopt(t, c.Conn, syscall.SOL_SOCKET, syscall.SO_SNDBUF),
			sockopt(t, c.Conn, syscall.IPPROTO_TCP, syscall.TCP_NODELAY),
		}
	}

	// Momentum's defaults: 4096-byte buffers, Nagle on, a backlog of 500.
	l := start(t, Spec{ListenBacklog: 500, RecvBuffer: 4096, SendBuffer: 4096}, handler)
	if _, maxLen := listenQueue(t, l); maxLen != 500 {
		t.Errorf("listen backlog = %d, want 500", maxLen)
	}
	dial(t, l, "")
	s := <-got
	// Linux doubles the requested size to leave room for its bookkeeping.
	if s.rcv != 8192 || s.snd != 8192 {
		t.Errorf("SO_RCVBUF %d, SO_SNDBUF %d; want 8192 each (4096 doubled by the kernel)", s.rcv, s.snd)
	}
	if s.nodelay != 0 {
		t.Errorf("TCP_NODELAY set although disable_nagle_algorithm is false")
	}

	// disable_nagle_algorithm = true, buffers left to the system, another backlog.
	l = start(t, Spec{ListenBacklog: 7, NoDelay: true}, handler)
	if _, maxLen := listenQueue(t, l); maxLen != 7 {
		t.Errorf("listen backlog = %d, want 7", maxLen)
	}
	dial(t, l, "")
	s = <-got
	if s.nodelay == 0 {
		t.Errorf("TCP_NODELAY not set although disable_nagle_algorithm is true")
	}
	if s.rcv == 8192 || s.snd == 8192 {
		t.Errorf("buffer sizes of 0 did not leave the system's defaults: %d, %d", s.rcv, s.snd)
	}
}

func TestUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xmpp.sock")
	// A stale socket file from an earlier run is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	peers := make(chan netip.Addr, 1)
	handled := make(chan struct{}, 1)
	l := start(t, Spec{Network: "unix", Address: path, FileMode: 0o600, ListenBacklog: 3,
		Policy: func(p netip.Addr) (bool, xmlstream.Limits) { peers <- p; return true, xmlstream.Limits{} }},
		func(context.Context, *Conn) { handled <- struct{}{} })
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	dial(t, l, "")
	if p := <-peers; p != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("unix peer seen as %v, want loopback", p)
	}
	<-handled
	l.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
}

func TestPolicyRefuses(t *testing.T) {
	handled := make(chan netip.Addr, 2)
	refused := netip.MustParseAddr("127.0.0.2")
	l := start(t, Spec{Policy: func(p netip.Addr) (bool, xmlstream.Limits) { return p != refused, xmlstream.Limits{} }},
		func(_ context.Context, c *Conn) { handled <- c.Peer })
	c := dial(t, l, "127.0.0.2")
	// A refused connection is closed without a word.
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("refused connection read %d bytes, err %v", n, err)
	}
	dial(t, l, "127.0.0.1")
	if p := <-handled; p != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("handled %v", p)
	}
}

// blocker is a handler whose calls wait until released, one by one or all at once.
type blocker struct {
	entered chan *Conn
	mu      sync.Mutex
	gates   map[*Conn]chan struct{}
	ctxs    map[*Conn]context.Context
	open    bool // once set, new calls return at once
}

func newBlocker() *blocker {
	return &blocker{entered: make(chan *Conn, 64), gates: map[*Conn]chan struct{}{}, ctxs: map[*Conn]context.Context{}}
}

func (b *blocker) handle(ctx context.Context, c *Conn) {
	b.mu.Lock()
	if b.open {
		b.mu.Unlock()
		b.entered <- c
		return
	}
	g := make(chan struct{})
	b.gates[c], b.ctxs[c] = g, ctx
	b.mu.Unlock()
	b.entered <- c
	<-g
}

func (b *blocker) release(c *Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.gates[c])
	delete(b.gates, c)
}

func (b *blocker) releaseAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open = true
	for c, g := range b.gates {
		close(g)
		delete(b.gates, c)
	}
}

func TestConcurrencyBound(t *testing.T) {
	b := newBlocker()
	l := start(t, Spec{Concurrency: 2}, b.handle)
	t.Cleanup(b.releaseAll)
	for i := 0; i < 3; i++ {
		dial(t, l, "")
	}
	first, second := <-b.entered, <-b.entered
	waitFor(t, "the third connection to wait for a slot", func() bool {
		s := l.Stats()
		return s.Handshakes == 2 && s.WaitingSlot == 1
	})
	// A stream that finished its handshake frees its slot while it goes on.
	b.mu.Lock()
	ctx := b.ctxs[first]
	b.mu.Unlock()
	Established(ctx)
	Established(ctx) // twice is harmless
	third := <-b.entered
	if s := l.Stats(); s.Handshakes != 2 || s.WaitingSlot != 0 || s.Open != 3 {
		t.Errorf("after Established: %+v", s)
	}
	// A handler that returns frees its slot too.
	b.release(second)
	waitFor(t, "the slot of a finished handler", func() bool { return l.Stats().Handshakes == 1 })
	b.release(third)
	b.release(first)
	waitFor(t, "every connection to close", func() bool { return l.Stats().Open == 0 && l.Stats().Handshakes == 0 })
}

func TestMaxConcurrency(t *testing.T) {
	for _, c := range []struct{ conc, pool, want int }{{0, 50, 0}, {1, 50, 0}, {2, 50, 2}, {4, 4, 4}, {8, 4, 4}, {3, 50, 3}, {5, 0, 5}, {-1, 5, 0}} {
		if got := MaxConcurrency(c.conc, c.pool); got != c.want {
			t.Errorf("MaxConcurrency(%d, %d) = %d, want %d", c.conc, c.pool, got, c.want)
		}
	}
}

func TestAcceptQueueBacklog(t *testing.T) {
	b := newBlocker()
	l := start(t, Spec{Concurrency: 1, AcceptQueueBacklog: 2, ListenBacklog: 50}, b.handle)
	t.Cleanup(b.releaseAll)
	for i := 0; i < 6; i++ {
		dial(t, l, "")
	}
	<-b.entered
	// One connection is served, the dispatcher holds one, the queue two, the accept goroutine one
	// it cannot queue, and the last stays in the kernel's listen queue.
	waitFor(t, "the stages to fill", func() bool {
		s := l.Stats()
		cur, _ := listenQueue(t, l)
		return s.Handshakes == 1 && s.WaitingSlot == 1 && s.Queued == 2 && cur == 1
	})
	if s := l.Stats(); s.Open != 5 {
		t.Errorf("accepted %d connections, want 5 (one served, one dispatched, two queued, one accepted)", s.Open)
	}
	b.releaseAll()
	for i := 0; i < 5; i++ {
		<-b.entered
	}
	waitFor(t, "every connection to close", func() bool { return l.Stats().Open == 0 })
}

func TestEventsPerIter(t *testing.T) {
	for _, c := range []struct{ events, want int }{{0, 1}, {1, 1}, {2, 2}, {3, 3}, {10, 3}} {
		b := newBlocker()
		l := start(t, Spec{Concurrency: 1, AcceptQueueBacklog: 10, EventsPerIter: c.events}, b.handle)
		dial(t, l, "")
		first := <-b.entered
		dial(t, l, "")
		waitFor(t, "the dispatcher to wait for a slot", func() bool { return l.Stats().WaitingSlot == 1 })
		for i := 0; i < 3; i++ {
			dial(t, l, "")
		}
		waitFor(t, "three queued connections", func() bool { return l.Stats().Queued == 3 })
		b.mu.Lock()
		b.open = true
		b.mu.Unlock()
		b.release(first)
		for i := 0; i < 4; i++ {
			<-b.entered
		}
		if s := l.Stats(); s.MaxBatch != c.want {
			t.Errorf("events_per_iter %d: largest batch %d, want %d", c.events, s.MaxBatch, c.want)
		}
	}
}

func TestCloseDropsQueued(t *testing.T) {
	b := newBlocker()
	spec := Spec{Network: "tcp4", Address: "127.0.0.1:0", Concurrency: 1, AcceptQueueBacklog: 4, Policy: allowAll,
		Streams: map[string]Handler{stanza.NSClient: b.handle}}
	l, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = l.Serve(context.Background()); close(served) }()
	for i := 0; i < 3; i++ {
		dial(t, l, "")
	}
	<-b.entered
	waitFor(t, "queued connections", func() bool { return l.Stats().Queued == 1 && l.Stats().WaitingSlot == 1 })
	l.Close()
	<-served
	b.releaseAll()
	l.Wait(5 * time.Second)
	if s := l.Stats(); s.Open != 0 {
		t.Errorf("connections left open after Close: %+v", s)
	}
}
