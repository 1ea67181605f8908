package c2s

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"impetus/internal/auth"
	"impetus/internal/core"
	"impetus/internal/module"
	// The modules the tests provision, not modules/all: some modules import packages that
	// import c2s, which a test of c2s cannot.
	_ "impetus/internal/modules/carbons"
	_ "impetus/internal/modules/disco"
	_ "impetus/internal/modules/ping"
	_ "impetus/internal/modules/version"
	"impetus/internal/router"
	"impetus/internal/xmlstream"
)

// testServer runs client streams on a loopback listener with PLAIN allowed without TLS,
// so tests and benchmarks exercise the stream path without handshake costs.
type testServer struct {
	addr string
	ln   net.Listener
}

func newTestServer(tb testing.TB, users ...string) *testServer {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := testAuth(tb, log, users)
	r := router.NewLocal(nil)
	c := core.New(r, log)
	h := module.NewHost("localhost", r, c, nil, nil, log)
	if err := h.Provision([]string{"disco", "ping", "version"}); err != nil {
		tb.Fatal(err)
	}
	c.AddHost(h)
	cfg := &Config{
		Core: c, Hosted: func(d string) bool { return d == "localhost" }, DefaultDomain: "localhost",
		Auth: store, AllowPlainWithoutTLS: true, Limits: xmlstream.Limits{MaxStanzaSize: 262144},
		MaxQueue: 1 << 24, Log: log,
	}
	ln := listen(tb, servePlain(cfg))
	return &testServer{addr: ln.Addr().String(), ln: ln}
}

// testAuth writes a password file that gives each of users the password "secret" and opens
// it as the credential store of localhost, closed when the test ends.
func testAuth(tb testing.TB, log *slog.Logger, users []string) auth.Store {
	tb.Helper()
	pw := filepath.Join(tb.TempDir(), "passwd")
	var lines strings.Builder
	for _, u := range users {
		fmt.Fprintf(&lines, "%s:secret\n", u)
	}
	if err := os.WriteFile(pw, []byte(lines.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	store, err := auth.Open("file://"+pw, auth.Options{Domains: []string{"localhost"}, Logger: log, PollInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	return store
}

// listen accepts connections on a loopback port until the test ends, handing each to serve
// on a goroutine of its own; serve's context ends with the test.
func listen(tb testing.TB, serve func(ctx context.Context, nc net.Conn)) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(func() { cancel(); ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(ctx, nc)
		}
	}()
	return ln
}

// servePlain reads a client stream's header and serves the stream with cfg.
func servePlain(cfg *Config) func(ctx context.Context, nc net.Conn) {
	return func(ctx context.Context, nc net.Conn) {
		dec := xmlstream.NewDecoder(nc, cfg.Limits)
		hdr, err := dec.ReadHeader()
		if err != nil {
			nc.Close()
			return
		}
		Serve(ctx, nc, dec, hdr, cfg)
	}
}

// rawClient speaks XML by hand, so the test sees exactly what the server sends.
type rawClient struct {
	tb   testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func (s *testServer) dial(tb testing.TB) *rawClient {
	tb.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &rawClient{tb: tb, conn: c, r: bufio.NewReaderSize(c, 1<<16)}
}

func (c *rawClient) send(s string) {
	c.tb.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.tb.Fatal(err)
	}
}

// until reads until the server's output contains want, returning everything read.
func (c *rawClient) until(want string) string {
	c.tb.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := c.r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			c.tb.Fatalf("reading for %q: %v; got %q", want, err, got)
		}
	}
	return string(got)
}

const header = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`

// login authenticates with PLAIN and binds resource, returning after the bind result.
func (c *rawClient) login(user, resource string) {
	c.tb.Helper()
	c.send(header)
	c.until("</stream:features>")
	c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00secret")) + `</auth>`)
	c.until("<success")
	c.send(header)
	c.until("</stream:features>")
	c.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>` + resource + `</resource></bind></iq>`)
	c.until("</iq>")
}

func TestLoginPingAndMessage(t *testing.T) {
	srv := newTestServer(t, "alice", "bob")
	a := srv.dial(t)
	a.login("alice", "r1")
	b := srv.dial(t)
	b.login("bob", "r1")

	a.send(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if got := a.until(`id="p1"`); !strings.Contains(got, `type="result"`) {
		t.Fatalf("ping: %s", got)
	}
	a.send(`<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:unknown'/></iq>`)
	if got := a.until("</iq>"); !strings.Contains(got, "service-unavailable") {
		t.Fatalf("unknown payload: %s", got)
	}
	a.send(`<message to='bob@localhost/r1' type='chat' id='m1'><body>hello</body></message>`)
	got := b.until("</message>")
	if !strings.Contains(got, `from="alice@localhost/r1"`) || !strings.Contains(got, "<body>hello</body>") {
		t.Fatalf("message: %s", got)
	}
}

func TestForgedFromIsAStreamError(t *testing.T) {
	srv := newTestServer(t, "alice")
	a := srv.dial(t)
	a.login("alice", "r1")
	a.send(`<message to='alice@localhost' from='mallory@localhost/x'><body>x</body></message>`)
	if got := a.until("</stream:stream>"); !strings.Contains(got, "invalid-from") {
		t.Fatalf("forged from: %s", got)
	}
}

func TestResourceConflictReplacesOldSession(t *testing.T) {
	srv := newTestServer(t, "alice")
	a := srv.dial(t)
	a.login("alice", "same")
	b := srv.dial(t)
	b.login("alice", "same")
	if got := a.until("</stream:stream>"); !strings.Contains(got, "<conflict") {
		t.Fatalf("old session: %s", got)
	}
	b.send(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	b.until(`id="p1"`)
}

func TestStanzaBeforeAuthentication(t *testing.T) {
	srv := newTestServer(t, "alice")
	a := srv.dial(t)
	a.send(header)
	a.until("</stream:features>")
	a.send(`<message to='alice@localhost'><body>x</body></message>`)
	if got := a.until("</stream:stream>"); !strings.Contains(got, "not-authorized") {
		t.Fatalf("got %s", got)
	}
}

// BenchmarkC2SMessage measures the whole client stanza path: socket read, XML decoding, 'from'
// stamping, core dispatch, routing to a full JID, serialization into the recipient's queue and
// the socket write, with one sender and one receiver on loopback TCP.
func BenchmarkC2SMessage(b *testing.B) {
	srv := newTestServer(b, "alice", "bob")
	a := srv.dial(b)
	a.login("alice", "r1")
	rcv := srv.dial(b)
	rcv.login("bob", "r1")
	msg := []byte(`<message to='bob@localhost/r1' type='chat' id='m1'><body>Hello Bob, this is a typical short chat message.</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>`)
	done := make(chan error, 1)
	b.ResetTimer()
	b.ReportAllocs()
	go func() {
		end := []byte("</message>")
		seen := 0
		buf := make([]byte, 1<<16)
		var carry []byte
		_ = rcv.conn.SetReadDeadline(time.Now().Add(5 * time.Minute))
		for seen < b.N {
			n, err := rcv.r.Read(buf)
			if err != nil {
				done <- err
				return
			}
			data := append(carry, buf[:n]...)
			seen += bytes.Count(data, end)
			// Keep a tail so a closing tag split across reads is counted once.
			if i := bytes.LastIndex(data, end); i >= 0 {
				carry = append(carry[:0], data[i+len(end):]...)
			} else {
				carry = append(carry[:0], data...)
			}
			if len(carry) > len(end) {
				carry = carry[len(carry)-len(end):]
			}
		}
		done <- nil
	}()
	w := bufio.NewWriterSize(a.conn, 1<<16)
	for i := 0; i < b.N; i++ {
		if _, err := w.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
