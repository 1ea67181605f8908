package s2s

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// testCA issues certificates for test domains.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) issue(t *testing.T, domain string) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: domain},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{domain},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// With certificates that validate, the streams use STARTTLS and SASL EXTERNAL: delivery works
// even though the authoritative server cannot be reached for dialback.
func TestStartTLSAndSASLExternal(t *testing.T) {
	ca := newTestCA(t)
	n := newNetwork()
	withCert := func(domain string) func(*Config) {
		return func(c *Config) {
			c.Certificate = ca.issue(t, domain)
			c.Roots = ca.pool
			c.DialbackWithoutValidCert = false
		}
	}
	a := n.add(t, withCert("a.test"), "a.test")
	b := n.add(t, withCert("b.test"), "b.test")
	b.tls = &tls.Config{Certificates: []tls.Certificate{*ca.issue(t, "b.test")}, MinVersion: tls.VersionTLS12}
	if err := send(t, a, message("alice@a.test", "bob@b.test", "over tls")); err != nil {
		t.Fatal(err)
	}
	got := receive(t, b)
	if got.Child("", "body").Text() != "over tls" {
		t.Fatalf("routed %s", got)
	}
	b.m.mu.Lock()
	var sasl string
	for s := range b.m.in {
		sasl = s.sasl
	}
	b.m.mu.Unlock()
	if sasl != "a.test" {
		t.Fatalf("inbound stream authenticated as %q, want a.test by SASL EXTERNAL", sasl)
	}
}

// A peer whose certificate does not validate may use dialback only when the operator allows
// it; with DialbackWithoutValidCert off, the stanza bounces.
func TestUntrustedCertificatePolicy(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t) // a's certificate comes from a CA b does not trust
	for _, allow := range []bool{true, false} {
		n := newNetwork()
		a := n.add(t, func(c *Config) { c.Certificate = other.issue(t, "a.test"); c.Roots = other.pool }, "a.test")
		b := n.add(t, func(c *Config) { c.Roots = ca.pool; c.DialbackWithoutValidCert = allow }, "b.test")
		b.tls = &tls.Config{Certificates: []tls.Certificate{*other.issue(t, "b.test")}, MinVersion: tls.VersionTLS12}
		if err := send(t, a, message("alice@a.test", "bob@b.test", "x")); err != nil {
			t.Fatal(err)
		}
		if allow {
			if got := receive(t, b); got.Child("", "body").Text() != "x" {
				t.Fatalf("routed %s", got)
			}
			continue
		}
		got := receive(t, a)
		if got.Attr("type") != "error" {
			t.Fatalf("expected a bounce, got %s", got)
		}
	}
}
