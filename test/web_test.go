package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/websocket"
)

// The end-to-end tests of the http_listener: XMPP over WebSocket with mellium's WebSocket
// client, host-meta discovery, BOSH session creation through the real binary, and XEP-0363
// upload with slixmpp. The browser test (browser_test.go) uses the same server.

// webServer is a Server with an http_listener, and its HTTP address.
type webServer struct {
	*Server
	HTTPAddr string // host:port of the http_listener
	HTTPS    bool
	CAPool   *x509.CertPool // trusts the http_listener's certificate when HTTPS
}

// webOptions says how the http_listener is set up.
type webOptions struct {
	Users map[string]string
	HTTPS bool   // serve HTTPS with a certificate made for the test
	Extra string // more configuration, e.g. an http_upload scope
}

// startWebServer starts impetus with an xmpp_listener on 127.0.0.1 and an http_listener.
func startWebServer(t *testing.T, opts webOptions) *webServer {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ws, retry, err := tryStartWebServer(t, opts)
		if err == nil {
			return ws
		}
		lastErr = err
		if !retry {
			break
		}
	}
	t.Fatalf("starting impetus with an http_listener: %v", lastErr)
	return nil
}

func tryStartWebServer(t *testing.T, opts webOptions) (*webServer, bool, error) {
	dir := t.TempDir()
	s := &Server{
		Dir:    filepath.Join(dir, "data"),
		Port4:  freePort(t, "tcp4", "127.0.0.1:0"),
		stderr: &syncBuffer{},
		exited: make(chan struct{}),
	}
	ws := &webServer{Server: s, HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "tcp4", "127.0.0.1:0"))), HTTPS: opts.HTTPS}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, false, err
	}
	s.PasswdPath = filepath.Join(dir, "passwd")
	if err := writePasswdFile(s.PasswdPath, opts.Users); err != nil {
		return nil, false, err
	}
	tlsOpts := ""
	if opts.HTTPS {
		certPath, pool, err := writeTestCert(dir)
		if err != nil {
			return nil, false, err
		}
		ws.CAPool = pool
		tlsOpts = fmt.Sprintf("tls_certificate = %q", certPath)
	}
	config := fmt.Sprintf(`xmpp { debug_level = "DEBUG" }
domain "#xmpp#%s" { XMPP_Role = "server" }
xmpp_listener {
  AuthPlainParameters = [ uri = %q ]
  Listen %q {}
}
http_listener {
  %s
  Listen %q {}
}
%s
`, testDomain, "file://"+s.PasswdPath, s.Addr4(), tlsOpts, ws.HTTPAddr, opts.Extra)
	s.ConfigPath = filepath.Join(dir, "impetus.conf")
	if err := os.WriteFile(s.ConfigPath, []byte(config), 0o600); err != nil {
		return nil, false, err
	}
	s.cmd = exec.Command(serverBin, "serve", "--config", s.ConfigPath, "--data", s.Dir)
	s.cmd.Stdout = s.stderr
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, false, err
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(); err != nil {
		s.kill()
		out := s.Stderr()
		return nil, strings.Contains(out, "address already in use"), fmt.Errorf("%w\nconfig:\n%s\nserver output:\n%s", err, config, out)
	}
	// The http_listener starts before the XMPP sockets, so it accepts by now.
	if err := s.loadCert(); err != nil {
		s.kill()
		return nil, false, fmt.Errorf("%w\nserver output:\n%s", err, s.Stderr())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server output:\n%s", s.Stderr())
		}
		s.stop(t)
	})
	return ws, false, nil
}

// writeTestCert writes a self-signed certificate and key for localhost and 127.0.0.1.
func writeTestCert(dir string) (string, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "http.pem")
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return path, pool, nil
}

func (w *webServer) httpClient() *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.CAPool}}}
}

func (w *webServer) baseURL() string {
	if w.HTTPS {
		return "https://" + w.HTTPAddr
	}
	return "http://" + w.HTTPAddr
}

// dialWebSocket logs user in over RFC 7395 with mellium's WebSocket client (golang.org/x/net's
// WebSocket underneath, an implementation independent of the server's).
func dialWebSocket(t *testing.T, w *webServer, user, resource string, mech sasl.Mechanism) *melliumClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), negotiateTimeout)
	defer cancel()
	// mellium counts a WebSocket session as encrypted when its local address, which
	// x/net/websocket sets to the Origin, has the wss scheme; without that it refuses to
	// authenticate at all, so the Origin says wss even for the ws:// case.
	d := websocket.Dialer{Origin: "wss://localhost", TLSConfig: &tls.Config{RootCAs: w.CAPool, ServerName: "localhost"}, InsecureNoTLS: !w.HTTPS}
	scheme := "ws"
	if w.HTTPS {
		scheme = "wss"
	}
	conn, err := d.DialDirect(ctx, scheme+"://"+w.HTTPAddr+"/xmpp-websocket")
	if err != nil {
		t.Fatalf("websocket dial: %v", err)
	}
	origin := jid.MustParse(user + "@" + testDomain + "/" + resource)
	s, err := websocket.NewSession(ctx, origin, conn, xmpp.SASL("", "secret", mech), bindResource())
	if err != nil {
		conn.Close()
		t.Fatalf("%s login over WebSocket: %v", user, err)
	}
	c := &melliumClient{Session: s, msgs: make(chan receivedMessage, 16), done: make(chan struct{})}
	go func() {
		c.serveErr = s.Serve(xmpp.HandlerFunc(c.handle))
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = s.Close()
		select {
		case <-c.done:
		case <-time.After(closeTimeout):
			t.Errorf("the server did not close the WebSocket stream within %v of <close/>", closeTimeout)
		}
		_ = s.Conn().Close()
	})
	return c
}

// TestWebSocketMellium logs in over wss:// (the HTTP listener's TLS counts as the stream's)
// and exchanges messages with a client on the TCP listener.
func TestWebSocketMellium(t *testing.T) {
	w := startWebServer(t, webOptions{Users: map[string]string{"alice": "secret", "bob": "secret"}, HTTPS: true})
	web := dialWebSocket(t, w, "alice", "web", sasl.Plain)
	tcp := connectMellium(t, w.Server, family{name: "IPv4", ip: "127.0.0.1"}, "bob", "secret", "tcp", sasl.ScramSha256)
	ctx, cancel := context.WithTimeout(context.Background(), negotiateTimeout)
	defer cancel()
	for _, c := range []*melliumClient{web, tcp} {
		if err := c.Send(ctx, stanza.Presence{}.Wrap(nil)); err != nil {
			t.Fatal(err)
		}
	}
	send := func(from *melliumClient, to, body string) {
		msg := stanza.Message{To: jid.MustParse(to), Type: stanza.ChatMessage}
		if err := from.Send(ctx, msg.Wrap(xmlBody(body))); err != nil {
			t.Fatal(err)
		}
	}
	send(web, "bob@localhost/tcp", "from the web")
	expectMessage(t, tcp, "alice@localhost/web", "from the web")
	send(tcp, "alice@localhost/web", "from tcp")
	expectMessage(t, web, "bob@localhost/tcp", "from tcp")
}

// TestWebSocketPlainNeedsSCRAM checks that over ws:// without TLS the stream is not counted
// as encrypted: PLAIN is refused and SCRAM works.
func TestWebSocketPlainNeedsSCRAM(t *testing.T) {
	w := startWebServer(t, webOptions{Users: map[string]string{"alice": "secret"}})
	resp, err := w.httpClient().Get(w.baseURL() + "/.well-known/host-meta.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"href":"ws://`+w.HTTPAddr+`/xmpp-websocket"`) || !strings.Contains(string(b), `"href":"http://`+w.HTTPAddr+`/http-bind"`) {
		t.Fatalf("host-meta.json: %s", b)
	}
	// BOSH session creation through the real server (XEP-0206 §3).
	body := `<body xmlns="http://jabber.org/protocol/httpbind" xmlns:xmpp="urn:xmpp:xbosh" rid="1" to="localhost" wait="5" hold="1" ver="1.6" xmpp:version="1.0"/>`
	resp, err = w.httpClient().Post(w.baseURL()+"/http-bind", "text/xml; charset=utf-8", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`sid="`, `authid="`, `<stream:features`, `<mechanism>SCRAM-SHA-256</mechanism>`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("BOSH creation response lacks %s: %s", want, b)
		}
	}
	if strings.Contains(string(b), "<mechanism>PLAIN</mechanism>") {
		t.Fatalf("PLAIN offered over plain HTTP: %s", b)
	}
	dialWebSocket(t, w, "alice", "scram", sasl.ScramSha256)
}

// xmlBody is a message <body/> with text s.
func xmlBody(s string) xml.TokenReader {
	return xmlstream.Wrap(xmlstream.Token(xml.CharData(s)), xml.StartElement{Name: xml.Name{Local: "body"}})
}

// expectMessage waits, bounded, for a message from from with body.
func expectMessage(t *testing.T, c *melliumClient, from, body string) {
	t.Helper()
	select {
	case m := <-c.msgs:
		if m.From.String() != from || m.Body != body {
			t.Fatalf("got message from %s %q, want from %s %q", m.From, m.Body, from, body)
		}
	case <-time.After(requestTimeout):
		t.Fatalf("no message from %s within %v", from, requestTimeout)
	}
}

// uploadResult is what test/slix/upload.py prints.
type uploadResult struct {
	OK          bool   `json:"ok"`
	Error       string `json:"error"`
	Service     string `json:"service"`
	MaxFileSize int    `json:"max_file_size"`
	GetURL      string `json:"get_url"`
	Fetched     bool   `json:"fetched"`
	TooLarge    string `json:"too_large"`
}

// TestUploadSlixmpp runs XEP-0363 with slixmpp's plugin: discovery of the service and its
// max-file-size, a slot, the PUT and the GET, and the file-too-large error.
func TestUploadSlixmpp(t *testing.T) {
	requireSlixmpp(t)
	w := startWebServer(t, webOptions{Users: map[string]string{"alice": "secret"}, Extra: "http_upload { max_file_size = 1m quota = 10m }"})
	script := filepath.Join(filepath.Dir(slixScript(t)), "upload.py")
	ctx, cancel := context.WithTimeout(context.Background(), slixTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, script, "--host", "127.0.0.1", "--port", strconv.Itoa(w.Port4), "--jid", "alice@localhost", "--password", "secret")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		t.Fatalf("upload.py did not finish within %v\n%s", slixTimeout, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res uploadResult
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &res); jerr != nil {
		t.Fatalf("upload.py printed no result (%v): %v\n%s\n%s", err, jerr, out, stderr.String())
	}
	if !res.OK || res.Service != "localhost" || res.MaxFileSize != 1<<20 || !res.Fetched || res.TooLarge != "1048576" {
		t.Fatalf("upload: %+v\n%s", res, stderr.String())
	}
	if !strings.HasPrefix(res.GetURL, "http://localhost:") {
		t.Errorf("GET URL %s", res.GetURL)
	}
}
