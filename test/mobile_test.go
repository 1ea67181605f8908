package test

// End-to-end tests of the mobile and modern-client features: XEP-0198 stream management and
// XEP-0352 client state indication with slixmpp, XEP-0368 direct TLS with slixmpp and by hand,
// and XEP-0357 push and XEP-0215 external services with hand-written XML (slixmpp 1.8 has no
// plugins for those two).

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mobileServer is a running server with a STARTTLS listener (Port4) and a direct TLS one.
type mobileServer struct {
	*Server
	DirectPort int
}

// startMobileServer starts impetus with users, a STARTTLS and a direct TLS Listen, and extra
// top-level configuration.
func startMobileServer(t *testing.T, users map[string]string, extra string) *mobileServer {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, retry, err := tryStartMobile(t, users, extra)
		if err == nil {
			return s
		}
		lastErr = err
		if !retry {
			break
		}
	}
	t.Fatalf("starting impetus: %v", lastErr)
	return nil
}

func tryStartMobile(t *testing.T, users map[string]string, extra string) (*mobileServer, bool, error) {
	dir := t.TempDir()
	s := &Server{Dir: filepath.Join(dir, "data"), Port4: freePort(t, "tcp4", "127.0.0.1:0"), stderr: &syncBuffer{}, exited: make(chan struct{})}
	direct := freePort(t, "tcp4", "127.0.0.1:0")
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, false, err
	}
	s.PasswdPath = filepath.Join(dir, "passwd")
	if err := writePasswdFile(s.PasswdPath, users); err != nil {
		return nil, false, err
	}
	config := fmt.Sprintf(`xmpp { debug_level = "DEBUG" }
domain "#xmpp#%s" { XMPP_Role = "server" }
xmpp_listener {
  AuthPlainParameters = [ uri = %q ]
  Listen "127.0.0.1:%d" {}
  Listen "127.0.0.1:%d" { tls = "direct" }
}
%s
`, testDomain, "file://"+s.PasswdPath, s.Port4, direct, extra)
	s.ConfigPath = filepath.Join(dir, "impetus.conf")
	if err := os.WriteFile(s.ConfigPath, []byte(config), 0o600); err != nil {
		return nil, false, err
	}
	retry, err := launch(t, s)
	if err != nil {
		return nil, retry, fmt.Errorf("%w\nconfig:\n%s", err, config)
	}
	return &mobileServer{Server: s, DirectPort: direct}, false, nil
}

// launch runs the server process of s and waits until it listens.
func launch(t *testing.T, s *Server) (bool, error) {
	s.cmd = exec.Command(serverBin, "serve", "--config", s.ConfigPath, "--data", s.Dir)
	s.cmd.Stdout, s.cmd.Stderr = s.stderr, s.stderr
	if err := s.cmd.Start(); err != nil {
		return false, err
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(); err != nil {
		s.kill()
		out := s.Stderr()
		return strings.Contains(out, "address already in use"), fmt.Errorf("%w\nserver output:\n%s", err, out)
	}
	if err := s.loadCert(); err != nil {
		s.kill()
		return false, fmt.Errorf("%w\nserver output:\n%s", err, s.Stderr())
	}
	t.Cleanup(func() { s.stop(t) })
	return false, nil
}

// restart stops the server and starts it again on the same configuration and data.
func (m *mobileServer) restart(t *testing.T) {
	t.Helper()
	m.Stop(t)
	old := m.Server
	s := &Server{Dir: old.Dir, ConfigPath: old.ConfigPath, PasswdPath: old.PasswdPath, Port4: old.Port4, stderr: &syncBuffer{}, exited: make(chan struct{})}
	if _, err := launch(t, s); err != nil {
		t.Fatalf("restarting impetus: %v", err)
	}
	m.Server = s
}

// runMobile runs one mobile.py scenario.
func runMobile(t *testing.T, port int, cert, scenario string, args ...string) map[string]any {
	t.Helper()
	requireSlixmpp(t)
	res, _ := runSlixScript[map[string]any](t, "mobile.py", slixTimeout, "127.0.0.1", port, cert, scenario, args...)
	return res
}

var mobileUsers = map[string]string{"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}

func TestSlixmppStreamManagementResumption(t *testing.T) {
	srv := startMobileServer(t, mobileUsers, "")
	res := runMobile(t, srv.Port4, srv.CertPath, "sm", "--jid", "alice@localhost/phone", "--password", "alicepw",
		"--peer-jid", "bob@localhost/desk", "--peer-password", "bobpw")
	if res["ok"] != true {
		t.Fatalf("sm: %v\nserver:\n%s", res, srv.Stderr())
	}
	if res["resumable"] != true || res["before"] != "before" || res["after"] != "while away" || res["bob_got"] != "back" {
		t.Fatalf("sm: %v", res)
	}
	// Alice sent her presence and a ping before the connection broke: the server's h says so.
	if fmt.Sprint(res["resumed_h"]) != "2" {
		t.Fatalf("resumed h: %v", res)
	}
	if !strings.Contains(srv.Stderr(), "session resumed") {
		t.Fatalf("the server did not log a resumption")
	}
}

func TestSlixmppClientStateIndication(t *testing.T) {
	srv := startMobileServer(t, mobileUsers, "")
	res := runMobile(t, srv.Port4, srv.CertPath, "csi", "--jid", "alice@localhost/phone", "--password", "alicepw",
		"--peer-jid", "bob@localhost/desk", "--peer-password", "bobpw")
	if res["ok"] != true {
		t.Fatalf("csi: %v", res)
	}
	before := fmt.Sprint(res["before_active"])
	if before != "[presence:two message:wake]" {
		t.Fatalf("while inactive alice saw %s, want the latest presence flushed before the message", before)
	}
	if got := fmt.Sprint(res["events"]); got != "[presence:two message:wake presence:three]" {
		t.Fatalf("after active: %s", got)
	}
}

func TestSlixmppDirectTLS(t *testing.T) {
	srv := startMobileServer(t, mobileUsers, "")
	res := runMobile(t, srv.DirectPort, srv.CertPath, "directtls", "--jid", "alice@localhost/phone", "--password", "alicepw")
	if res["ok"] != true || res["cert_pinned"] != true || res["alpn"] != "xmpp-client" {
		t.Fatalf("direct TLS: %v\nserver:\n%s", res, srv.Stderr())
	}
}

// rawTLS is a hand-driven client on a TLS connection.
type rawTLS struct {
	t    *testing.T
	conn *tls.Conn
	r    *bufio.Reader
}

func dialDirect(t *testing.T, port int, alpn ...string) (*rawTLS, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		&tls.Config{InsecureSkipVerify: true, ServerName: testDomain, NextProtos: alpn})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &rawTLS{t: t, conn: c, r: bufio.NewReader(c)}, nil
}

func (c *rawTLS) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawTLS) until(want string) string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := c.r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			c.t.Fatalf("reading for %q: %v; got %q", want, err, got)
		}
	}
	return string(got)
}

const rawHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`

// login authenticates with PLAIN and binds a resource on a direct TLS stream.
func (c *rawTLS) login(user, pass, res string) {
	c.t.Helper()
	c.send(rawHeader)
	f := c.until("</stream:features>")
	if strings.Contains(f, "starttls") {
		c.t.Fatalf("STARTTLS offered on a direct TLS stream: %s", f)
	}
	c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)) + `</auth>`)
	c.until("<success")
	c.send(rawHeader)
	c.until("</stream:features>")
	c.send(`<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>` + res + `</resource></bind></iq>`)
	c.until("</iq>")
}

func TestDirectTLSByHand(t *testing.T) {
	srv := startMobileServer(t, mobileUsers, "")
	c, err := dialDirect(t, srv.DirectPort, "xmpp-client")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.conn.ConnectionState().NegotiatedProtocol; p != "xmpp-client" {
		t.Fatalf("ALPN %q", p)
	}
	c.login("alice", "alicepw", "r1")
	// Without ALPN, as older clients connect, the port still serves.
	c2, err := dialDirect(t, srv.DirectPort)
	if err != nil {
		t.Fatal(err)
	}
	c2.login("bob", "bobpw", "r1")
	// A client that only speaks another protocol is refused in the handshake (RFC 7301 §3.2).
	if c3, err := dialDirect(t, srv.DirectPort, "h2"); err == nil {
		if herr := c3.conn.Handshake(); herr == nil {
			t.Fatalf("handshake with ALPN h2 succeeded: %q", c3.conn.ConnectionState().NegotiatedProtocol)
		}
	}
}

// TestDirectTLSServerStream opens a server-to-server stream on the direct TLS port with ALPN
// xmpp-server: it reaches the server-stream handler already encrypted, so no STARTTLS is offered.
func TestDirectTLSServerStream(t *testing.T) {
	srv := startMobileServer(t, mobileUsers, "")
	c, err := dialDirect(t, srv.DirectPort, "xmpp-server")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.conn.ConnectionState().NegotiatedProtocol; p != "xmpp-server" {
		t.Fatalf("ALPN %q", p)
	}
	c.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='remote.example' to='localhost' version='1.0'>`)
	f := c.until("</stream:features>")
	if !strings.Contains(f, `xmlns="jabber:server"`) && !strings.Contains(f, `jabber:server`) {
		t.Fatalf("not a server stream: %s", f)
	}
	if strings.Contains(f, "starttls") {
		t.Fatalf("STARTTLS offered on a direct TLS server stream: %s", f)
	}
}
