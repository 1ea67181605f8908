package test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// startLimitServer starts impetus like StartServer, with extra options in the xmpp_listener
// scope, an IPv4 listener only, and a clear-text password file.
func startLimitServer(t *testing.T, users map[string]string, listenerOptions string) *Server {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir := t.TempDir()
		s := &Server{Dir: filepath.Join(dir, "data"), Port4: freePort(t, "tcp4", "127.0.0.1:0"), stderr: &syncBuffer{}, exited: make(chan struct{})}
		if err := os.MkdirAll(s.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		s.PasswdPath = filepath.Join(dir, "passwd")
		if err := writePasswdFile(s.PasswdPath, users); err != nil {
			t.Fatal(err)
		}
		config := fmt.Sprintf(`xmpp { debug_level = "DEBUG" }
domain "#xmpp#%s" { XMPP_Role = "server" }
xmpp_listener {
  AuthPlainParameters = [ uri = %q ]
%s
  Listen %q {}
}
`, testDomain, "file://"+s.PasswdPath, listenerOptions, s.Addr4())
		s.ConfigPath = filepath.Join(dir, "impetus.conf")
		if err := os.WriteFile(s.ConfigPath, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		s.cmd = exec.Command(serverBin, "serve", "--config", s.ConfigPath, "--data", s.Dir)
		s.cmd.Stdout, s.cmd.Stderr = s.stderr, s.stderr
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { s.err = s.cmd.Wait(); close(s.exited) }()
		if err := s.waitReady(); err != nil {
			s.kill()
			lastErr = fmt.Errorf("%w\nconfig:\n%s\noutput:\n%s", err, config, s.Stderr())
			if strings.Contains(s.Stderr(), "address already in use") {
				continue
			}
			break
		}
		if err := s.loadCert(); err != nil {
			s.kill()
			t.Fatal(err)
		}
		t.Cleanup(func() { s.stop(t) })
		return s
	}
	t.Fatalf("starting impetus: %v", lastErr)
	return nil
}

// dialFrom connects to srv's IPv4 listener from a chosen loopback source address, so that
// per-address limits can be tested from one machine.
func dialFrom(t *testing.T, srv *Server, src string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: rawTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", srv.Addr4())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", srv.Addr4(), src, err)
	}
	c := &rawConn{t: t, tcp: conn, conn: conn, trans: &bytes.Buffer{}}
	c.resetDecoder()
	t.Cleanup(func() {
		conn.Close()
		if t.Failed() {
			t.Logf("XML transcript from %s:\n%s", src, c.trans.String())
		}
	})
	return c
}

// refused reports whether the server closed c without a stream header: the connection
// limits close refused connections before reading from them.
func (c *rawConn) refused() bool {
	_, _ = io.WriteString(c.conn, header(testDomain))
	_ = c.conn.SetReadDeadline(time.Now().Add(rawTimeout))
	var b [1]byte
	n, err := c.conn.Read(b[:])
	if n > 0 {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("the server neither answered nor closed within %v", rawTimeout)
	}
	return true
}

// plainAttempt sends one SASL PLAIN attempt and returns the server's answer.
func (c *rawConn) plainAttempt(user, pass string) *element {
	c.t.Helper()
	c.send(fmt.Sprintf(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>`,
		base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))))
	return c.mustElement("the SASL answer")
}

func plainCondition(e *element) string {
	if !e.is(nsSASL, "failure") {
		return e.XMLName.Local
	}
	for _, ch := range e.Children {
		if ch.XMLName.Local != "text" {
			return ch.XMLName.Local
		}
	}
	return ""
}

// waitLog waits, within a bound, until the server logged want.
func waitLog(t *testing.T, srv *Server, want string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(srv.Stderr(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not log %q", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHandshakeTimeout checks the slowloris defence: a client that trickles its negotiation a
// byte at a time, which keeps any idle timer from firing, is still cut off with
// <connection-timeout/> once handshake_timeout has passed since it connected, and one that
// never sends a header is closed too.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	srv := startLimitServer(t, map[string]string{"alice": "pw"}, "  handshake_timeout = 2\n  allow_plain_without_tls = true")

	t.Run("trickle", func(t *testing.T) {
		c := dialRaw(t, srv)
		c.open()
		auth := "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + strings.Repeat("A", 10000)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < len(auth); i++ {
				_ = c.conn.SetWriteDeadline(time.Now().Add(rawTimeout))
				if _, err := c.conn.Write([]byte{auth[i]}); err != nil {
					return // the server closed the stream
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		c.expectStreamError("connection-timeout")
		c.conn.Close()
		<-done
	})

	t.Run("no header", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", srv.Addr4(), rawTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(rawTimeout))
		out, _ := io.ReadAll(conn)
		if !bytes.Contains(out, []byte("connection-timeout")) {
			t.Fatalf("a silent connection got %q, want <connection-timeout/> and the close", out)
		}
	})

	c := dialRaw(t, srv)
	c.open()
	if e := c.plainAttempt("alice", "pw"); !e.is(nsSASL, "success") {
		t.Fatalf("a prompt client failed: %s", e)
	}
}

// TestConnectionLimits checks max_connections_per_ip and max_connections: connections past
// either bound are closed before the server reads from them, others stay served, and closing a
// connection gives its place back (each connection is released exactly once).
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	// The harness's readiness probe from 127.0.0.1 connected and closed without a stream
	// header; such a connection keeps its place until the header wait has passed (see
	// docs/security.md), so five places are left for the test's own connections.
	srv := startLimitServer(t, map[string]string{"alice": "pw"}, "  max_connections = 6\n  max_connections_per_ip = 3")
	var open []*rawConn
	for i := 0; i < 3; i++ {
		c := dialFrom(t, srv, "127.0.0.2")
		c.open()
		open = append(open, c)
	}
	if !dialFrom(t, srv, "127.0.0.2").refused() {
		t.Fatal("a fourth connection from 127.0.0.2 was served with max_connections_per_ip = 3")
	}
	waitLog(t, srv, "max_connections_per_ip")
	for i := 0; i < 2; i++ {
		dialFrom(t, srv, "127.0.0.3").open()
	}
	if !dialFrom(t, srv, "127.0.0.4").refused() {
		t.Fatal("a connection past max_connections was served")
	}
	waitLog(t, srv, "limit=max_connections ")

	// Closing one connection frees its place; the release runs when the server notices the
	// close, so the new connection is retried within a bound.
	open[0].conn.Close()
	for deadline := time.Now().Add(30 * time.Second); ; {
		c := dialFrom(t, srv, "127.0.0.2")
		if !c.refused() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the place of a closed connection was never given back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestResourceLimit checks max_resources_per_account: a bind past it gets <resource-constraint/>
// (RFC 6120 §7.6.2.1), while binding a resource already in use still replaces that session
// (a conflict, RFC 6120 §7.7.2.2), even at the limit.
func TestResourceLimit(t *testing.T) {
	t.Parallel()
	srv := startLimitServer(t, map[string]string{"alice": "pw"}, "  max_resources_per_account = 2")
	first := dialRaw(t, srv)
	first.login(srv, "alice", "pw", "one")
	dialRaw(t, srv).login(srv, "alice", "pw", "two")

	third := dialRaw(t, srv)
	third.open()
	third.startTLS(srv)
	third.authPlain("alice", "pw")
	third.send(`<iq type='set' id='b3'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>three</resource></bind></iq>`)
	third.expectStanzaError("resource-constraint")

	// The same stream may bind an existing resource, which replaces its session.
	if full := third.bind("one"); full != "alice@localhost/one" {
		t.Fatalf("rebinding resource one gave %s", full)
	}
	first.expectStreamError("conflict")
	third.ping("after-replace")
}

// TestAuthThrottle checks throttling of failed authentications per IP address and per account:
// once a limit is reached, attempts get <temporary-auth-failure/> whatever the password, so
// the throttle confirms no guess; other addresses and accounts are unaffected.
func TestAuthThrottle(t *testing.T) {
	t.Parallel()
	srv := startLimitServer(t, map[string]string{"alice": "pw", "bob": "pw", "carol": "pw"},
		"  allow_plain_without_tls = true\n  auth_failures_per_ip = 3\n  auth_failures_per_account = 4\n  auth_failure_delay = 1\n  max_auth_failures = 10")

	a := dialFrom(t, srv, "127.0.0.2")
	a.open()
	for i := 0; i < 3; i++ {
		if got := plainCondition(a.plainAttempt("alice", "wrong")); got != "not-authorized" {
			t.Fatalf("wrong password %d: %s, want not-authorized", i, got)
		}
	}
	if got := plainCondition(a.plainAttempt("carol", "pw")); got != "temporary-auth-failure" {
		t.Fatalf("right password from a throttled address: %s, want temporary-auth-failure", got)
	}

	// A fourth failure for alice, from another address, reaches the account's limit.
	b := dialFrom(t, srv, "127.0.0.3")
	b.open()
	if got := plainCondition(b.plainAttempt("alice", "wrong")); got != "not-authorized" {
		t.Fatalf("wrong password from a second address: %s", got)
	}
	c := dialFrom(t, srv, "127.0.0.4")
	c.open()
	if got := plainCondition(c.plainAttempt("alice", "pw")); got != "temporary-auth-failure" {
		t.Fatalf("right password for a throttled account: %s, want temporary-auth-failure", got)
	}
	if got := plainCondition(c.plainAttempt("alice", "wrong")); got != "temporary-auth-failure" {
		t.Fatalf("wrong password for a throttled account: %s, want temporary-auth-failure", got)
	}
	if got := plainCondition(c.plainAttempt("bob", "pw")); got != "success" {
		t.Fatalf("another account from an unthrottled address: %s, want success", got)
	}
}

// TestSlowReaderDisconnected checks the bound on a session's outgoing queue: a client that
// never reads while another floods it is disconnected (policy-violation), and a session
// connected throughout, the server and new clients carry on.
func TestSlowReaderDisconnected(t *testing.T) {
	t.Parallel()
	srv := startLimitServer(t, map[string]string{"victim": "pw", "flooder": "pw"}, "  max_outbound_queue = 65536\n  read_rate = 0")
	victim := dialRaw(t, srv)
	victim.login(srv, "victim", "pw", "r")
	flooder := dialRaw(t, srv)
	flooder.login(srv, "flooder", "pw", "r")
	bystander := dialRaw(t, srv)
	bystander.login(srv, "flooder", "pw", "bystander")
	// The flooder reads what it is sent (bounces once the victim is gone), so that only the
	// victim is a slow reader.
	go func() { _, _ = io.Copy(io.Discard, flooder.conn) }()

	body := strings.Repeat("x", 4000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		msg := []byte(fmt.Sprintf("<message to='victim@localhost/r' type='chat'><body>%s</body></message>", body))
		for i := 0; i < 4000 && !strings.Contains(srv.Stderr(), "client does not keep up"); i++ {
			_ = flooder.conn.SetWriteDeadline(time.Now().Add(rawTimeout))
			if _, err := flooder.conn.Write(msg); err != nil {
				return
			}
		}
	}()
	waitLog(t, srv, "client does not keep up")
	<-done

	// The victim's connection ends: reading it now drains what was sent and reaches the close.
	_ = victim.conn.SetReadDeadline(time.Now().Add(3 * rawTimeout))
	n, err := io.Copy(io.Discard, victim.conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the slow reader's connection was not closed (read %d bytes)", n)
	}
	bystander.ping("bystander-after")
	fresh := dialRaw(t, srv)
	fresh.login(srv, "victim", "pw", "again")
	fresh.ping("fresh-after")
}

// TestTLSMinimumVersion checks that TLS 1.2 is the least version offered by default.
func TestTLSMinimumVersion(t *testing.T) {
	t.Parallel()
	srv := startLimitServer(t, map[string]string{"alice": "pw"}, "")
	c := dialRaw(t, srv)
	c.open()
	c.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
	if p := c.mustElement("<proceed/>"); !p.is(nsTLS, "proceed") {
		t.Fatalf("STARTTLS answered with %s", p)
	}
	cfg := srv.TLSConfig()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	tc := tls.Client(c.tcp, cfg)
	_ = tc.SetDeadline(time.Now().Add(rawTimeout))
	if err := tc.Handshake(); err == nil {
		t.Fatalf("TLS %s negotiated; TLS 1.2 is the minimum", tls.VersionName(tc.ConnectionState().Version))
	}
}

// TestPlainWithoutTLSOption checks allow_plain_without_tls: PLAIN is offered and accepted on
// an unencrypted stream only when the operator allows it (TestRawPlainNeedsTLS checks the
// default).
func TestPlainWithoutTLSOption(t *testing.T) {
	t.Parallel()
	srv := startLimitServer(t, map[string]string{"alice": "pw"}, "  allow_plain_without_tls = true")
	c := dialRaw(t, srv)
	_, f := c.open()
	if !slices.Contains(mechanisms(f), "PLAIN") {
		t.Fatalf("PLAIN not offered without TLS although allowed: %v", mechanisms(f))
	}
	c.authPlain("alice", "pw")
	c.bind("plain")
}
