//go:build soak

// Package soak holds the bounded soak test of Impetus (make soak): thousands of client sessions
// with churn against the real server binary, after which the server's goroutines and heap must
// return to their baseline. It is kept out of make test by its build tag.
package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Bounds and sizes; SOAK_SESSIONS and SOAK_DURATION override the defaults. Every client
// connection costs a descriptor here and one in the server, and the machine allows 20,000 per
// process, so the default leaves ample room.
var (
	sessions = envInt("SOAK_SESSIONS", 3000)
	duration = envDuration("SOAK_DURATION", 2*time.Minute)
)

const (
	users       = 100
	connections = 50 // concurrent logins while filling up
	sources     = 50 // 127.0.0.2 … 127.0.0.51, so that per-address limits stay realistic
	ioTimeout   = 30 * time.Second
	// settleBound bounds the wait for the server to return to its baseline after the clients
	// left; it is a bound, not an expectation. An idle Go program collects garbage at least
	// every two minutes, so the heap is measured after one such collection at the latest.
	settleBound = 150 * time.Second
	// goroutineSlack allows for goroutines that come and go regardless of clients (the
	// metrics, the logger's heartbeat, a control connection in progress).
	goroutineSlack = 20
	// heapSlack allows for caches that grow once and stay (the TLS session cache, sync.Pools,
	// the router's map buckets) and for garbage not yet collected when the stats are read.
	heapSlack = 32 << 20
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

type server struct {
	bin, dir, addr string
	cmd            *exec.Cmd
	out            *lockedWriter
}

func startServer(t *testing.T) *server {
	t.Helper()
	bin := os.Getenv("IMPETUS_BIN")
	dir := t.TempDir()
	if bin == "" {
		bin = filepath.Join(dir, "impetus")
		if out, err := exec.Command("go", "build", "-o", bin, "impetus/cmd/impetus").CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var pw strings.Builder
	for i := 0; i < users; i++ {
		fmt.Fprintf(&pw, "user%d:pw\n", i)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`xmpp { debug_level = "WARNING" }
domain "#xmpp#localhost" { XMPP_Role = "server" }
xmpp_listener {
  AuthPlainParameters = [ uri = "file://%s" ]
  allow_plain_without_tls = true
  max_connections = 15000
  max_resources_per_account = 1000
  Listen %q {}
}
`, filepath.Join(dir, "passwd"), addr)
	if err := os.WriteFile(filepath.Join(dir, "impetus.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &server{bin: bin, dir: dir, addr: addr, out: &lockedWriter{}}
	s.cmd = exec.Command(bin, "serve", "--config", filepath.Join(dir, "impetus.conf"), "--data", filepath.Join(dir, "data"))
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not listen: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// lockedWriter collects the server's output, which the process writes while the test reads.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// stats reads `impetus ctl stats` and /proc/PID/status.
type stats struct {
	goroutines, sessions, heap int
	rssKB, threads             int
}

func (s *server) stats(t *testing.T) stats {
	t.Helper()
	out, err := exec.Command(s.bin, "ctl", "--data", filepath.Join(s.dir, "data"), "stats").CombinedOutput()
	if err != nil {
		t.Fatalf("impetus ctl stats: %v\n%s", err, out)
	}
	var st stats
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[len(f)-1])
		switch strings.Join(f[:len(f)-1], " ") {
		case "goroutines":
			st.goroutines = n
		case "sessions":
			st.sessions = n
		case "heap in use":
			st.heap = n
		}
	}
	if st.goroutines == 0 {
		t.Fatalf("impetus ctl stats reports no goroutine count:\n%s", out)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			st.rssKB, _ = strconv.Atoi(f[1])
		}
		if len(f) >= 2 && f[0] == "Threads:" {
			st.threads, _ = strconv.Atoi(f[1])
		}
	}
	return st
}

// client is one bound session that drains what it is sent.
type client struct {
	conn net.Conn
	jid  string
	done chan struct{}
}

// readUntil reads until the buffered input contains want.
func readUntil(r *bufio.Reader, conn net.Conn, want string) error {
	var buf []byte
	_ = conn.SetReadDeadline(time.Now().Add(ioTimeout))
	for !bytes.Contains(buf, []byte(want)) {
		b, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("waiting for %q after %q: %w", want, buf, err)
		}
		buf = append(buf, b)
		if bytes.Contains(buf, []byte("<stream:error")) && bytes.Contains(buf, []byte("</stream:error>")) {
			return fmt.Errorf("stream error: %s", buf)
		}
	}
	return nil
}

const header = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"

func login(addr string, n int) (*client, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+n%sources))}
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: src}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*client, error) { conn.Close(); return nil, err }
	r := bufio.NewReaderSize(conn, 4096)
	user := fmt.Sprintf("user%d", n%users)
	_ = conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(conn, header); err != nil {
		return fail(err)
	}
	if err := readUntil(r, conn, "</stream:features>"); err != nil {
		return fail(err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00pw"))
	if _, err := io.WriteString(conn, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"+auth+"</auth>"); err != nil {
		return fail(err)
	}
	if err := readUntil(r, conn, "<success"); err != nil {
		return fail(err)
	}
	if _, err := io.WriteString(conn, header); err != nil {
		return fail(err)
	}
	if err := readUntil(r, conn, "</stream:features>"); err != nil {
		return fail(err)
	}
	res := fmt.Sprintf("r%d-%d", n, rand.IntN(1<<30))
	if _, err := io.WriteString(conn, "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>"+res+"</resource></bind></iq><presence/>"); err != nil {
		return fail(err)
	}
	if err := readUntil(r, conn, "</iq>"); err != nil {
		return fail(err)
	}
	c := &client{conn: conn, jid: user + "@localhost/" + res, done: make(chan struct{})}
	_ = conn.SetReadDeadline(time.Time{})
	go func() {
		defer close(c.done)
		_, _ = io.Copy(io.Discard, r)
	}()
	return c, nil
}

// close ends the stream politely or, for a share of clients, drops the connection, as phones
// losing coverage do.
func (c *client) close(abrupt bool) {
	if !abrupt {
		_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
		_, _ = io.WriteString(c.conn, "</stream:stream>")
		select {
		case <-c.done:
		case <-time.After(ioTimeout):
		}
	}
	c.conn.Close()
	<-c.done
}

func (c *client) send(to, body string) {
	_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, _ = io.WriteString(c.conn, "<message type='chat' to='"+to+"'><body>"+body+"</body></message>")
}

// TestSoak fills the server with sessions, churns them while they exchange messages, closes
// them all, and checks that goroutines and heap come back to the baseline measured before.
func TestSoak(t *testing.T) {
	srv := startServer(t)
	// One session in and out first, so that lazily made state (module stores, pools) is part
	// of the baseline rather than of the growth.
	c, err := login(srv.addr, 0)
	if err != nil {
		t.Fatalf("first login: %v\n%s", err, srv.out.String())
	}
	c.close(false)
	var base stats
	settle(t, srv, func(st stats) bool { base = st; return st.sessions == 0 })
	t.Logf("baseline: %+v", base)

	// Fill up.
	// Workers read one another's slots (the peer they message), hence atomic pointers.
	clients := make([]atomic.Pointer[client], sessions)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failures atomic.Int64
	for w := 0; w < connections; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= sessions {
					return
				}
				c, err := login(srv.addr, i)
				if err != nil {
					if failures.Add(1) <= 5 {
						t.Errorf("login %d: %v", i, err)
					}
					continue
				}
				clients[i].Store(c)
			}
		}()
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d logins failed\n%s", failures.Load(), sessions, tail(srv.out.String()))
	}
	peak := srv.stats(t)
	t.Logf("with %d sessions: %+v", sessions, peak)

	// Churn: each worker owns a slice of the clients, replaces them one at a time and sends
	// messages between them, until the duration has passed.
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var churned, sent atomic.Int64
	for w := 0; w < connections; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ctx.Err() == nil; i += connections {
				i %= sessions
				old := clients[i].Load()
				peer := clients[(i+connections/2)%sessions].Load()
				if peer != nil && old != nil {
					old.send(peer.jid, "soak")
					old.send(strings.SplitN(peer.jid, "/", 2)[0], "to the bare JID")
					sent.Add(2)
				}
				if old != nil {
					old.close(i%5 == 0)
				}
				c, err := login(srv.addr, i)
				if err != nil {
					if failures.Add(1) <= 5 {
						t.Errorf("churn login %d: %v", i, err)
					}
					clients[i].Store(nil)
					continue
				}
				clients[i].Store(c)
				churned.Add(1)
			}
		}()
	}
	wg.Wait()
	mid := srv.stats(t)
	t.Logf("after %v of churn (%d sessions replaced, %d messages): %+v", duration, churned.Load(), sent.Load(), mid)
	if failures.Load() > 0 {
		t.Fatalf("%d logins failed during churn\n%s", failures.Load(), tail(srv.out.String()))
	}

	// Everyone leaves.
	for i := range clients {
		if c := clients[i].Load(); c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.close(i%5 == 0) }()
		}
	}
	wg.Wait()
	var after stats
	ok := settle(t, srv, func(st stats) bool {
		after = st
		return st.sessions == 0 && st.goroutines <= base.goroutines+goroutineSlack && st.heap <= base.heap+heapSlack
	})
	t.Logf("after the clients left: %+v", after)
	if !ok {
		t.Errorf("no return to baseline within %v: goroutines %d (baseline %d), heap %d (baseline %d), sessions %d",
			settleBound, after.goroutines, base.goroutines, after.heap, base.heap, after.sessions)
	}
	if after.threads > base.threads+8 {
		// Threads are only created, never given back, by the Go runtime; growth past what
		// the blocking system calls of the peak needed would point at a leak of blocked ones.
		t.Logf("threads grew from %d to %d", base.threads, after.threads)
	}
}

// settle polls the stats until cond holds or settleBound passes.
func settle(t *testing.T, srv *server, cond func(stats) bool) bool {
	t.Helper()
	for deadline := time.Now().Add(settleBound); ; {
		if cond(srv.stats(t)) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}
