package tlsconf

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"impetus/internal/config"
)

func names(t *testing.T, list string) []string {
	t.Helper()
	ids, err := ParseCiphers(list)
	if err != nil {
		t.Fatalf("ParseCiphers(%q): %v", list, err)
	}
	return CipherNames(ids)
}

func TestParseCiphers(t *testing.T) {
	for _, list := range []string{"", "DEFAULT", " default "} {
		if ids, err := ParseCiphers(list); err != nil || ids != nil {
			t.Errorf("ParseCiphers(%q) = %v, %v; want nil, nil (Go's defaults)", list, ids, err)
		}
	}
	got := names(t, "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
	if !slices.Equal(got, []string{"ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256"}) {
		t.Errorf("explicit list = %v", got)
	}
	got = names(t, "DEFAULT:!LOW:!EXP")
	for _, n := range got {
		if !strings.HasPrefix(n, "ECDHE-") || strings.Contains(n, "RC4") || strings.Contains(n, "DES") {
			t.Errorf("DEFAULT:!LOW:!EXP selected %s", n)
		}
	}
	if len(got) != 10 {
		t.Errorf("DEFAULT:!LOW:!EXP = %v, want Go's 10 default TLS 1.2 suites", got)
	}
	got = names(t, "HIGH:!aNULL")
	if slices.Contains(got, "DES-CBC3-SHA") || slices.Contains(got, "RC4-SHA") || !slices.Contains(got, "AES128-SHA") {
		t.Errorf("HIGH:!aNULL = %v", got)
	}
	got = names(t, "ECDHE+AESGCM:!ECDSA")
	if !slices.Equal(got, []string{"ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256"}) {
		t.Errorf("ECDHE+AESGCM:!ECDSA = %v", got)
	}
	// "!" removes for good; "-" lets a later element add back.
	if got := names(t, "ALL:!kRSA:AES128-SHA:-CHACHA20:ECDHE-RSA-CHACHA20-POLY1305"); slices.Contains(got, "AES128-SHA") ||
		!slices.Contains(got, "ECDHE-RSA-CHACHA20-POLY1305") || slices.Contains(got, "ECDHE-ECDSA-CHACHA20-POLY1305") {
		t.Errorf("kill and delete semantics wrong: %v", got)
	}
	// "+" moves to the end.
	if got := names(t, "CHACHA20:AESGCM+ECDHE:+CHACHA20"); got[len(got)-1] != "ECDHE-RSA-CHACHA20-POLY1305" || !strings.Contains(got[0], "GCM") {
		t.Errorf("+CHACHA20 did not move to the end: %v", got)
	}
	// Real OpenSSL suites Go lacks match nothing; with one Go has, the list works.
	if got := names(t, "DHE-RSA-AES256-SHA:DHE-DSS-AES256-SHA:DHE-RSA-CAMELLIA256-SHA:AES256-SHA:@STRENGTH"); !slices.Equal(got, []string{"AES256-SHA"}) {
		t.Errorf("Momentum's example list = %v", got)
	}
	if got := names(t, "TLS_AES_128_GCM_SHA256 ECDHE-RSA-AES128-SHA,@SECLEVEL=2"); !slices.Equal(got, []string{"ECDHE-RSA-AES128-SHA"}) {
		t.Errorf("TLS 1.3 name and separators: %v", got)
	}
	if got := names(t, "high:!medium"); len(got) == 0 {
		t.Errorf("lower-case keywords selected nothing")
	}
}

func TestParseCiphersErrors(t *testing.T) {
	for list, want := range map[string]string{
		"ECDHE-RSA-AES256-GCM-SHA348": `"ECDHE-RSA-AES256-GCM-SHA348": unknown cipher name or keyword`,
		"HIGH:NOPE":                   `"NOPE": unknown cipher name or keyword`,
		"DHE-RSA-AES256-SHA":          "selects no TLS 1.2 cipher suite",
		"HIGH:!HIGH":                  "selects no TLS 1.2 cipher suite",
		"HIGH:DEFAULT":                "DEFAULT may only be the first element",
		"@FOO":                        "unknown special element",
		"ECDHE+":                      "empty name",
		"aNULL:eNULL:EXP:LOW:TLS_AES_128_GCM_SHA256": "selects no",
	} {
		_, err := ParseCiphers(list)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "tlsconf: ") {
			t.Errorf("ParseCiphers(%q) = %v, want an error containing %q", list, err, want)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.conf")
	conf := `xmpp {}
domain "#xmpp#example.com" { XMPP_Role = "server" }
tls_ciphers = "HIGH"
xmpp_listener {
  AuthPlainParameters = [ uri = "file:///dev/null" ]
  Listen "127.0.0.1:5222" {
    Peer "10.0.0.0/8" {
      tls_ciphers = "HIGH:BOGUS-CIPHER"
    }
  }
}
`
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckConfig(cfg)
	if err == nil || !strings.Contains(err.Error(), "t.conf:8:") || !strings.Contains(err.Error(), `option "tls_ciphers": "BOGUS-CIPHER": unknown cipher name`) {
		t.Fatalf("CheckConfig = %v, want the file, line and option", err)
	}
}

// pki is a test CA with helpers to issue certificates.
type pki struct {
	t      *testing.T
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPath string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: t.TempDir(), caCert: cert, caKey: key}
	p.caPath = filepath.Join(p.dir, "ca.pem")
	if err := os.WriteFile(p.caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pki) issue(cn string, eku x509.ExtKeyUsage, mod func(*x509.Certificate)) tls.Certificate {
	p.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{eku},
	}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestXMPPAddrs(t *testing.T) {
	p := newPKI(t)
	ext, err := XMPPAddrExtension([]string{"juliet@example.com", "romeo@example.net"}, []string{"client.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	c := p.issue("ignored", x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{ext} })
	if got := ClientIdentities(c.Leaf); !slices.Equal(got, []string{"juliet@example.com", "romeo@example.net"}) {
		t.Errorf("identities = %v", got)
	}
	if !slices.Equal(c.Leaf.DNSNames, []string{"client.example.com"}) {
		t.Errorf("dNSName lost: %v", c.Leaf.DNSNames)
	}
	c = p.issue("nurse@example.com", x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) { c.EmailAddresses = []string{"juliet@example.com"} })
	if got := ClientIdentities(c.Leaf); !slices.Equal(got, []string{"juliet@example.com", "nurse@example.com"}) {
		t.Errorf("fallback identities = %v", got)
	}
	c = p.issue("just a name", x509.ExtKeyUsageClientAuth, nil)
	if got := ClientIdentities(c.Leaf); len(got) != 0 {
		t.Errorf("identities of a name-less certificate = %v", got)
	}
	// Garbage in the extension is skipped, never a panic.
	bad := &x509.Certificate{Extensions: []pkix.Extension{{Id: oidSubjectAltName, Value: []byte{0x30, 0x05, 0xa0, 0x03, 0x06, 0x01}}}}
	if got := XMPPAddrs(bad); len(got) != 0 {
		t.Errorf("malformed extension gave %v", got)
	}
}

// handshake runs a TLS handshake between a client with cert (may be empty)
// and a server with conf; it returns the server's state after
// CompleteVerification, or the server's handshake error.
func handshake(t *testing.T, conf *tls.Config, cert *tls.Certificate) (*tls.ConnectionState, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := &tls.Config{InsecureSkipVerify: true}
	if cert != nil {
		cc.Certificates = []tls.Certificate{*cert}
	}
	go func() {
		c := tls.Client(b, cc)
		_ = c.HandshakeContext(context.Background())
		// Read until the server closes, so TLS 1.3 client authentication
		// (which the server checks after the client's handshake ends) completes.
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}()
	s := tls.Server(a, conf)
	if err := s.HandshakeContext(context.Background()); err != nil {
		return nil, err
	}
	st := s.ConnectionState()
	_ = CompleteVerification(&st, conf)
	return &st, nil
}

func TestVerifyModes(t *testing.T) {
	p := newPKI(t)
	server := p.issue("localhost", x509.ExtKeyUsageServerAuth, nil)
	good := p.issue("juliet@example.com", x509.ExtKeyUsageClientAuth, nil)
	other := newPKI(t).issue("mallory@example.com", x509.ExtKeyUsageClientAuth, nil)
	fallback := func() (tls.Certificate, error) { return server, nil }
	build := func(mode config.TLSVerifyMode, ca string) *tls.Config {
		t.Helper()
		c, err := Build(Options{ClientCA: ca, VerifyMode: mode}, fallback, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Unset: requested, verified when presented, never fatal.
	conf := build(config.VerifyUnset, p.caPath)
	if conf.ClientAuth != tls.RequestClientCert {
		t.Fatalf("unset mode with a CA: ClientAuth = %v", conf.ClientAuth)
	}
	if st, err := handshake(t, conf, &good); err != nil || VerifiedClient(st) == nil {
		t.Errorf("unset mode, good certificate: err %v, verified %v", err, st != nil && VerifiedClient(st) != nil)
	}
	if st, err := handshake(t, conf, &other); err != nil || VerifiedClient(st) != nil {
		t.Errorf("unset mode, foreign certificate: err %v; it must be accepted unverified", err)
	}
	if st, err := handshake(t, conf, nil); err != nil || VerifiedClient(st) != nil {
		t.Errorf("unset mode, no certificate: err %v", err)
	}
	if c := build(config.VerifyUnset, ""); c.ClientAuth != tls.NoClientCert {
		t.Errorf("unset mode without a CA asks for a certificate")
	}

	// none: never asked, so never verified.
	conf = build(config.VerifyNone, p.caPath)
	if st, err := handshake(t, conf, &good); err != nil || VerifiedClient(st) != nil || len(st.PeerCertificates) != 0 {
		t.Errorf("none mode: err %v; a certificate was taken", err)
	}

	// require: the handshake fails without a valid certificate.
	conf = build(config.VerifyRequire, p.caPath)
	if st, err := handshake(t, conf, &good); err != nil || VerifiedClient(st) == nil {
		t.Errorf("require mode, good certificate: %v", err)
	}
	if _, err := handshake(t, conf, &other); err == nil {
		t.Errorf("require mode accepted a foreign certificate")
	}
	if _, err := handshake(t, conf, nil); err == nil {
		t.Errorf("require mode accepted no certificate")
	}
	if _, err := Build(Options{VerifyMode: config.VerifyRequire}, fallback, nil); err == nil {
		t.Errorf("require without tls_client_ca built")
	}
}

func TestBuildAndCache(t *testing.T) {
	p := newPKI(t)
	server := p.issue("localhost", x509.ExtKeyUsageServerAuth, nil)
	calls := 0
	cache := NewCache(func() (tls.Certificate, error) { calls++; return server, nil }, "xmpp-client")
	a, err := cache.Get(Options{Ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := cache.Get(Options{Ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256"})
	if a != b || calls != 1 {
		t.Errorf("the cache built the same options twice")
	}
	if !slices.Equal(a.CipherSuites, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}) || a.MinVersion != tls.VersionTLS12 || a.NextProtos[0] != "xmpp-client" {
		t.Errorf("config = %+v", a)
	}
	if _, err := cache.Get(Options{Ciphers: "NOPE"}); err == nil {
		t.Errorf("a bad cipher list built")
	}
	if _, err := cache.Get(Options{ClientCA: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Errorf("a missing tls_client_ca built")
	}
	// A TLS 1.2 client limited to another suite cannot connect; one with the suite can.
	a1, b1 := net.Pipe()
	go func() {
		c := tls.Client(b1, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}})
		_ = c.HandshakeContext(context.Background())
		c.Close()
	}()
	if err := tls.Server(a1, a).HandshakeContext(context.Background()); err == nil {
		t.Errorf("a TLS 1.2 handshake with an excluded suite succeeded")
	}
	a1.Close()
	a2, b2 := net.Pipe()
	go func() {
		c := tls.Client(b2, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
		_ = c.HandshakeContext(context.Background())
		c.Close()
	}()
	s := tls.Server(a2, a)
	if err := s.HandshakeContext(context.Background()); err != nil || s.ConnectionState().CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
		t.Errorf("TLS 1.2 handshake: %v, suite %x", err, s.ConnectionState().CipherSuite)
	}
	a2.Close()
}
