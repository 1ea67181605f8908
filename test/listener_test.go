package test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"impetus/internal/tlsconf"
)

// These tests start the server with hand-written xmpp_listener scopes and connect from several
// loopback addresses (Linux routes all of 127.0.0.0/8 to lo without configuration), from ::1 and
// over a unix socket, to check that every option reaches the socket or the stream it is meant for.

// lstServer starts impetus with the xmpp_listener body listener (with %[1]d for the IPv4 port,
// %[2]d for the IPv6 one, %[3]s for the data directory) and the users in a clear-text password
// file at dir/passwd. prep functions run on dir before the start. It returns the server; Port6
// is 0 without IPv6 or when listener has no IPv6 Listen.
func lstServer(t *testing.T, users map[string]string, listener string, prep ...func(dir string)) *Server {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir := t.TempDir()
		s := &Server{
			Dir:    filepath.Join(dir, "data"),
			Port4:  freePort(t, "tcp4", "127.0.0.1:0"),
			stderr: &syncBuffer{},
			exited: make(chan struct{}),
		}
		if hasIPv6() && strings.Contains(listener, "%[2]d") {
			s.Port6 = freePort(t, "tcp6", "[::1]:0")
		}
		if err := os.MkdirAll(s.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range prep {
			f(dir)
		}
		s.PasswdPath = filepath.Join(dir, "passwd")
		if err := writePasswdFile(s.PasswdPath, users); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf(listener, s.Port4, s.Port6, dir)
		if s.Port6 == 0 {
			// Without IPv6 the [::1] Listen scope is left out.
			body = regexp.MustCompile(`(?s)Listen "\[::1\]:0" \{.*?\n  \}\n`).ReplaceAllString(body, "")
		}
		conf := fmt.Sprintf("xmpp { debug_level = \"DEBUG\" }\ndomain \"#xmpp#%s\" { XMPP_Role = \"server\" }\nxmpp_listener {\n  AuthPlainParameters = [ uri = %q ]\n%s}\n",
			testDomain, "file://"+s.PasswdPath, body)
		s.ConfigPath = filepath.Join(dir, "impetus.conf")
		if err := os.WriteFile(s.ConfigPath, []byte(conf), 0o600); err != nil {
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
			lastErr = fmt.Errorf("%w\nconfig:\n%s\nserver output:\n%s", err, conf, s.Stderr())
			if strings.Contains(s.Stderr(), "address already in use") {
				continue
			}
			break
		}
		t.Cleanup(func() { s.stop(t) })
		return s
	}
	t.Fatalf("starting impetus: %v", lastErr)
	return nil
}

// lstDial connects from the local address from (empty for any) to addr; network is tcp or unix.
func lstDial(t *testing.T, network, from, addr string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: rawTimeout}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial(network, addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	c := &rawConn{t: t, tcp: conn, conn: conn, trans: &bytes.Buffer{}}
	c.resetDecoder()
	t.Cleanup(func() {
		conn.Close()
		if t.Failed() {
			t.Logf("XML transcript from %s (C: client, S: server):\n%s", from, c.trans.String())
		}
	})
	return c
}

// lstLimits returns the idle-seconds and max-bytes a features element advertises (XEP-0478).
func lstLimits(t *testing.T, f *element) (idle, maxBytes int) {
	t.Helper()
	l := f.child(nsStreamLimits, "limits")
	if l == nil {
		t.Fatalf("no limits in %s", f)
	}
	if e := l.child(nsStreamLimits, "idle-seconds"); e != nil {
		idle, _ = strconv.Atoi(strings.TrimSpace(e.Text))
	}
	if e := l.child(nsStreamLimits, "max-bytes"); e != nil {
		maxBytes, _ = strconv.Atoi(strings.TrimSpace(e.Text))
	}
	return idle, maxBytes
}

// lstRefused checks that the server closes the connection without sending anything.
func lstRefused(t *testing.T, c *rawConn) {
	t.Helper()
	_, _ = lstWrite(c.conn, header(testDomain))
	_ = c.conn.SetReadDeadline(time.Now().Add(rawTimeout))
	buf := make([]byte, 64)
	n, err := c.conn.Read(buf)
	if n > 0 || err == nil {
		t.Fatalf("refused peer read %q, %v; want the connection closed", buf[:n], err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("refused peer was not disconnected")
	}
}

// lstLogged waits, within the start bound, until the server's output contains s; the output
// reaches the test through a pipe, after the event it reports.
func lstLogged(srv *Server, s string) bool {
	deadline := time.Now().Add(startTimeout)
	for !strings.Contains(srv.Stderr(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func lstWrite(c net.Conn, s string) (int, error) {
	_ = c.SetWriteDeadline(time.Now().Add(rawTimeout))
	return c.Write([]byte(s))
}

func writeHtdigest(t *testing.T, path string, users map[string]string) {
	t.Helper()
	if err := writeDigestFile(path, testDomain, users); err != nil {
		t.Fatal(err)
	}
}

// TestListenerPeers checks Peer scopes at listener and Listen level over IPv4, IPv6 and a unix
// socket: the most specific block wins, enable = false refuses, and idle_time,
// max_stanza_size and AuthDigestMD5Parameters apply per connection.
func TestListenerPeers(t *testing.T) {
	srv := lstServer(t, map[string]string{"juliet": "pw"}, `
  max_stanza_size = 10000
  Peer "10.0.0.0/8" { enable = false }
  Peer "2001:db8::/32" { enable = false }
  Peer "127.0.0.0/8" { idle_time = 300 }
  Peer "127.0.0.2" { enable = false }
  Peer "::1" { max_stanza_size = 20000 }
  Listen "127.0.0.1:%[1]d" {
    Peer "127.0.0.3/32" {
      idle_time = 100
    }
    Peer "127.0.0.4" {
      AuthDigestMD5Parameters = [ uri = "digest://%[3]s/htdigest" realm = "localhost" ]
    }
  }
  Listen "[::1]:%[2]d" {
    Peer "::/0" { idle_time = 50 }
  }
  Listen "%[3]s/xmpp.sock" {
    file_mode = 0600
  }
`, func(dir string) {
		writeHtdigest(t, filepath.Join(dir, "htdigest"), map[string]string{"nurse": "secret"})
	})
	sock := filepath.Join(filepath.Dir(srv.Dir), "xmpp.sock")

	features := func(c *rawConn) *element { _, f := c.open(); return f }

	t.Run("listener Peer", func(t *testing.T) {
		idle, maxBytes := lstLimits(t, features(lstDial(t, "tcp", "127.0.0.1", srv.Addr4())))
		if idle != 300 || maxBytes != 10000 {
			t.Errorf("127.0.0.1: idle %d, max-bytes %d; want 300 from Peer 127.0.0.0/8 and 10000", idle, maxBytes)
		}
	})
	t.Run("Listen Peer is more specific", func(t *testing.T) {
		idle, _ := lstLimits(t, features(lstDial(t, "tcp", "127.0.0.3", srv.Addr4())))
		if idle != 100 {
			t.Errorf("127.0.0.3: idle %d, want 100 from the Listen's Peer", idle)
		}
	})
	t.Run("enable false refuses", func(t *testing.T) {
		lstRefused(t, lstDial(t, "tcp", "127.0.0.2", srv.Addr4()))
		if !lstLogged(srv, "connection refused by peer rules") {
			t.Errorf("the refusal was not logged")
		}
	})
	t.Run("IPv6", func(t *testing.T) {
		if srv.Port6 == 0 {
			t.Skip("no IPv6 loopback")
		}
		idle, maxBytes := lstLimits(t, features(lstDial(t, "tcp", "::1", srv.Addr6())))
		if idle != 50 || maxBytes != 20000 {
			t.Errorf("::1: idle %d, max-bytes %d; want 50 (Listen Peer ::/0) and 20000 (Peer ::1)", idle, maxBytes)
		}
	})
	t.Run("unix socket is loopback", func(t *testing.T) {
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
		}
		// Both loopback addresses are candidates; Peer "::1" (128 bits) beats 127.0.0.0/8.
		idle, maxBytes := lstLimits(t, features(lstDial(t, "unix", "", sock)))
		if idle != 0 || maxBytes != 20000 {
			t.Errorf("unix: idle %d, max-bytes %d; want 0 and 20000 from Peer ::1", idle, maxBytes)
		}
	})
	t.Run("DIGEST-MD5 parameters per Peer", func(t *testing.T) {
		c := lstDial(t, "tcp", "127.0.0.4", srv.Addr4())
		mechs := mechanisms(features(c))
		if !slices.Contains(mechs, "DIGEST-MD5") || slices.Contains(mechs, "SCRAM-SHA-256") {
			t.Errorf("127.0.0.4 mechanisms %v; want the htdigest store's DIGEST-MD5 and no SCRAM", mechs)
		}
		c.startTLSWith(&tls.Config{InsecureSkipVerify: true, ServerName: testDomain})
		c.authPlain("nurse", "secret")
		if full := c.bind("ward"); full != "nurse@localhost/ward" {
			t.Errorf("bound %q", full)
		}
		// The same account does not exist for other peers.
		o := lstDial(t, "tcp", "127.0.0.1", srv.Addr4())
		mechs = mechanisms(features(o))
		if !slices.Contains(mechs, "SCRAM-SHA-256") {
			t.Errorf("127.0.0.1 mechanisms %v; want the password file's SCRAM", mechs)
		}
		o.startTLSWith(&tls.Config{InsecureSkipVerify: true, ServerName: testDomain})
		o.send(fmt.Sprintf(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>`,
			base64.StdEncoding.EncodeToString([]byte("\x00nurse\x00secret"))))
		if f := o.mustElement("<failure/>"); !f.is(nsSASL, "failure") || f.child(nsSASL, "not-authorized") == nil {
			t.Errorf("nurse from 127.0.0.1: %s, want not-authorized", f)
		}
	})
	t.Run("idle_time per Peer", func(t *testing.T) {
		// A bound session from 127.0.0.5 gets Peer 127.0.0.0/8's idle_time; set a short one
		// on a second server to see it enforced.
		short := lstServer(t, map[string]string{"juliet": "pw"}, `
  Listen "127.0.0.1:%[1]d" {
    Peer "127.0.0.5" { idle_time = 1 }
  }
`)
		c := lstDial(t, "tcp", "127.0.0.5", short.Addr4())
		c.open()
		c.startTLSWith(&tls.Config{InsecureSkipVerify: true, ServerName: testDomain})
		c.authPlain("juliet", "pw")
		c.bind("idle")
		c.expectStreamError("connection-timeout")
	})
}

// lstPKI is a test CA, the server's certificate, and helpers for client certificates.
type lstPKI struct {
	t      *testing.T
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	CAPath string
	// Server certificate and key files.
	CertPath, KeyPath string
	Server            *x509.Certificate
}

func newLstPKI(t *testing.T, name string) *lstPKI {
	t.Helper()
	p := &lstPKI{t: t, dir: t.TempDir()}
	p.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.CAPath = filepath.Join(p.dir, "ca.pem")
	p.write(p.CAPath, "CERTIFICATE", der)
	c := p.issue("localhost", x509.ExtKeyUsageServerAuth, func(c *x509.Certificate) { c.DNSNames = []string{testDomain} })
	p.Server = c.Leaf
	p.CertPath, p.KeyPath = filepath.Join(p.dir, "server.pem"), filepath.Join(p.dir, "server.key")
	p.write(p.CertPath, "CERTIFICATE", c.Certificate[0])
	keyDER, _ := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	p.write(p.KeyPath, "EC PRIVATE KEY", keyDER)
	return p
}

func (p *lstPKI) write(path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

func (p *lstPKI) issue(cn string, eku x509.ExtKeyUsage, mod func(*x509.Certificate)) tls.Certificate {
	p.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
	}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// client issues a client certificate whose id-on-xmppAddr is addr.
func (p *lstPKI) client(addr string) tls.Certificate {
	p.t.Helper()
	ext, err := tlsconf.XMPPAddrExtension([]string{addr}, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.issue(addr, x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{ext} })
}

// tlsClient trusts only the PKI's CA and presents cert when given.
func (p *lstPKI) tlsClient(cert *tls.Certificate) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	c := &tls.Config{RootCAs: roots, ServerName: testDomain}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// lstStartTLS runs STARTTLS and reopens the stream; it returns the features, or the error of the
// handshake or of the first read after it (where TLS 1.3 reports a rejected client certificate).
func lstStartTLS(c *rawConn, cfg *tls.Config) (*element, error) {
	c.t.Helper()
	c.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
	if p := c.mustElement("<proceed/>"); !p.is(nsTLS, "proceed") {
		c.t.Fatalf("STARTTLS answered with %s", p)
	}
	tc := tls.Client(c.tcp, cfg)
	_ = tc.SetDeadline(time.Now().Add(rawTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	c.conn = tc
	c.resetDecoder()
	if _, err := lstWrite(tc, header(testDomain)); err != nil {
		return nil, err
	}
	if _, err := c.readHeader(); err != nil {
		return nil, err
	}
	f, err := c.readElement()
	if err != nil {
		return nil, err
	}
	return f, nil
}

// TestListenerClientCertificates checks tls_certificate, tls_key, tls_client_ca, each
// tls_verify_mode per Peer, and SASL EXTERNAL (XEP-0178) with the certificate's XmppAddr.
func TestListenerClientCertificates(t *testing.T) {
	p := newLstPKI(t, "Impetus test CA")
	foreign := newLstPKI(t, "Someone else's CA")
	srv := lstServer(t, map[string]string{"juliet": "pw"}, fmt.Sprintf(`
  tls_certificate = %q
  tls_key = %q
  tls_client_ca = %q
  Listen "127.0.0.1:%%[1]d" {
    Peer "127.0.0.2" { tls_verify_mode = "require" }
    Peer "127.0.0.3" { tls_verify_mode = "none" }
  }
`, p.CertPath, p.KeyPath, p.CAPath))
	juliet := p.client("juliet@localhost")

	login := func(t *testing.T, from string, cert *tls.Certificate) (*rawConn, []string) {
		t.Helper()
		c := lstDial(t, "tcp", from, srv.Addr4())
		c.open()
		f, err := lstStartTLS(c, p.tlsClient(cert))
		if err != nil {
			t.Fatalf("from %s: %v", from, err)
		}
		if st := c.conn.(*tls.Conn).ConnectionState(); !st.PeerCertificates[0].Equal(p.Server) {
			t.Fatalf("the server did not present tls_certificate")
		}
		return c, mechanisms(f)
	}
	external := func(c *rawConn, authzid string) *element {
		payload := "="
		if authzid != "" {
			payload = base64.StdEncoding.EncodeToString([]byte(authzid))
		}
		c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>` + payload + `</auth>`)
		return c.mustElement("the EXTERNAL outcome")
	}

	t.Run("unset mode verifies a presented certificate", func(t *testing.T) {
		c, mechs := login(t, "127.0.0.1", &juliet)
		if len(mechs) == 0 || mechs[0] != "EXTERNAL" {
			t.Fatalf("mechanisms %v, want EXTERNAL first", mechs)
		}
		if r := external(c, ""); !r.is(nsSASL, "success") {
			t.Fatalf("EXTERNAL: %s", r)
		}
		c.resetDecoder()
		c.open()
		if full := c.bind("cert"); full != "juliet@localhost/cert" {
			t.Errorf("bound %q", full)
		}
	})
	t.Run("explicit authzid", func(t *testing.T) {
		c, _ := login(t, "127.0.0.1", &juliet)
		if r := external(c, "juliet@localhost"); !r.is(nsSASL, "success") {
			t.Fatalf("EXTERNAL with authzid: %s", r)
		}
		c2, _ := login(t, "127.0.0.1", &juliet)
		if r := external(c2, "romeo@localhost"); r.child(nsSASL, "invalid-authzid") == nil {
			t.Errorf("EXTERNAL for another JID: %s", r)
		}
	})
	t.Run("unset mode without or with a foreign certificate", func(t *testing.T) {
		if _, mechs := login(t, "127.0.0.1", nil); slices.Contains(mechs, "EXTERNAL") {
			t.Errorf("EXTERNAL offered without a certificate: %v", mechs)
		}
		other := foreign.client("juliet@localhost")
		if _, mechs := login(t, "127.0.0.1", &other); slices.Contains(mechs, "EXTERNAL") || !slices.Contains(mechs, "PLAIN") {
			t.Errorf("a certificate from another CA: mechanisms %v, want PLAIN and no EXTERNAL", mechs)
		}
	})
	t.Run("account must exist", func(t *testing.T) {
		romeo := p.client("romeo@localhost")
		c, mechs := login(t, "127.0.0.1", &romeo)
		if !slices.Contains(mechs, "EXTERNAL") {
			t.Fatalf("mechanisms %v", mechs)
		}
		if r := external(c, ""); r.child(nsSASL, "not-authorized") == nil {
			t.Errorf("EXTERNAL for a missing account: %s", r)
		}
	})
	t.Run("require", func(t *testing.T) {
		if _, mechs := login(t, "127.0.0.2", &juliet); !slices.Contains(mechs, "EXTERNAL") {
			t.Errorf("require mode with a valid certificate: %v", mechs)
		}
		for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "foreign": ptr(foreign.client("juliet@localhost"))} {
			c := lstDial(t, "tcp", "127.0.0.2", srv.Addr4())
			c.open()
			if _, err := lstStartTLS(c, p.tlsClient(cert)); err == nil {
				t.Errorf("require mode, %s: the stream went on", name)
			}
		}
	})
	t.Run("none", func(t *testing.T) {
		if _, mechs := login(t, "127.0.0.3", &juliet); slices.Contains(mechs, "EXTERNAL") {
			t.Errorf("none mode offered EXTERNAL: %v", mechs)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestListenerCiphers checks that tls_ciphers limits TLS 1.2 suites and that an unknown name is
// a configuration error naming the file, the line and the option.
func TestListenerCiphers(t *testing.T) {
	p := newLstPKI(t, "Impetus test CA")
	srv := lstServer(t, map[string]string{"juliet": "pw"}, fmt.Sprintf(`
  tls_certificate = %q
  tls_key = %q
  tls_ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256"
  Listen "127.0.0.1:%%[1]d" {
    Peer "127.0.0.2" { tls_ciphers = "HIGH:!aNULL" }
  }
`, p.CertPath, p.KeyPath))
	try := func(from string, suite uint16) error {
		c := lstDial(t, "tcp", from, srv.Addr4())
		c.open()
		cfg := p.tlsClient(nil)
		cfg.MaxVersion = tls.VersionTLS12
		cfg.CipherSuites = []uint16{suite}
		_, err := lstStartTLS(c, cfg)
		return err
	}
	if err := try("127.0.0.1", tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256); err != nil {
		t.Errorf("the configured suite: %v", err)
	}
	if err := try("127.0.0.1", tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384); err == nil {
		t.Errorf("a suite outside tls_ciphers was negotiated")
	}
	if err := try("127.0.0.2", tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384); err != nil {
		t.Errorf("the Peer's HIGH:!aNULL refused AES256-GCM: %v", err)
	}

	dir := t.TempDir()
	conf := filepath.Join(dir, "bad.conf")
	body := "xmpp {}\ndomain \"#xmpp#localhost\" { XMPP_Role = \"server\" }\nxmpp_listener {\n  AuthPlainParameters = [ uri = \"file:///dev/null\" ]\n  Listen \"127.0.0.1:0\" {\n    tls_ciphers = \"HIGH:ECDHE-RSA-AES256-GCM-SHA348\"\n  }\n}\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(serverBin, "serve", "--config", conf, "--data", filepath.Join(dir, "data")).CombinedOutput()
	if err == nil {
		t.Fatalf("the server started with an unknown cipher")
	}
	want := conf + `:6:19: option "tls_ciphers": "ECDHE-RSA-AES256-GCM-SHA348": unknown cipher name or keyword`
	if !strings.Contains(string(out), want) {
		t.Errorf("output %q, want %q", out, want)
	}
}

// TestListenerSockets checks the options that shape the socket, from outside the process with
// ss(8): listen_backlog, tcp_recv_buffer_size and tcp_send_buffer_size; and enable on a Listen.
func TestListenerSockets(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss (iproute2) is not installed")
	}
	closedPort := freePort(t, "tcp4", "127.0.0.1:0")
	srv := lstServer(t, map[string]string{"juliet": "pw"}, fmt.Sprintf(`
  listen_backlog = 37
  tcp_recv_buffer_size = 16384
  tcp_send_buffer_size = 32768
  concurrency = 4
  pool_name = "accept-pool"
  events_per_iter = 8
  accept_queue_backlog = 20
  Listen "127.0.0.1:%%[1]d" {}
  Listen "127.0.0.1:%d" { enable = false }
`, closedPort))
	ss := func(args ...string) string {
		out, err := exec.Command("ss", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ss %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// For a listening socket, ss shows the backlog as Send-Q.
	out := ss("-Hltn", fmt.Sprintf("sport = :%d", srv.Port4))
	if f := strings.Fields(out); len(f) < 3 || f[2] != "37" {
		t.Errorf("ss -ltn: %q; want Send-Q 37", out)
	}
	c := lstDial(t, "tcp", "127.0.0.1", srv.Addr4())
	c.open()
	out = ss("-Htnm", "state", "established", fmt.Sprintf("sport = :%d", srv.Port4))
	// Linux doubles the requested sizes.
	if !strings.Contains(out, "rb32768") || !strings.Contains(out, "tb65536") {
		t.Errorf("ss -tnm: %q; want rb32768 and tb65536", out)
	}
	if _, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(closedPort)), rawTimeout); err == nil {
		t.Errorf("a Listen with enable = false accepted a connection")
	}
	if !lstLogged(srv, "listen scope disabled") {
		t.Errorf("the disabled Listen was not logged")
	}
}
