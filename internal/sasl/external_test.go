package sasl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"testing"
	"time"

	"impetus/internal/tlsconf"
)

// verifiedState is a TLS state as the stream layer has it after a client
// certificate verified: the leaf built from mod heads VerifiedChains.
func verifiedState(t *testing.T, mod func(*x509.Certificate)) *tls.ConnectionState {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	mod(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}}
}

func xmppAddrs(t *testing.T, addrs ...string) func(*x509.Certificate) {
	return func(c *x509.Certificate) {
		ext, err := tlsconf.XMPPAddrExtension(addrs, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.ExtraExtensions = []pkix.Extension{ext}
	}
}

func runExternal(t *testing.T, st *tls.ConnectionState, initial []byte) (Negotiator, error) {
	t.Helper()
	cfg := Config{Domain: "example.com", Store: clearStore("juliet", "x", "romeo", "y"), TLS: st}
	neg, err := NewServer(External, cfg)
	if err != nil {
		return nil, err
	}
	ch, done, err := neg.Step(context.Background(), initial)
	if err != nil || done {
		return neg, err
	}
	if len(ch) != 0 {
		t.Fatalf("EXTERNAL challenge %q, want empty", ch)
	}
	_, done, err = neg.Step(context.Background(), []byte{})
	if err == nil && !done {
		t.Fatal("EXTERNAL did not finish")
	}
	return neg, err
}

func TestExternal(t *testing.T) {
	one := verifiedState(t, xmppAddrs(t, "juliet@example.com"))
	// No initial response: an empty challenge, then an empty response.
	neg, err := runExternal(t, one, nil)
	if err != nil || neg.Username() != "juliet" || neg.Authzid() != "" {
		t.Fatalf("empty authzid: %v, user %q", err, neg.Username())
	}
	// An explicit authzid the certificate names.
	neg, err = runExternal(t, one, []byte("juliet@example.com"))
	if err != nil || neg.Username() != "juliet" || neg.Authzid() != "juliet@example.com" {
		t.Fatalf("explicit authzid: %v", err)
	}
	if _, err := runExternal(t, one, []byte("romeo@example.com")); condition(err) != InvalidAuthzid {
		t.Errorf("authzid not in the certificate: %v", err)
	}
	if _, err := runExternal(t, one, []byte("@@")); condition(err) != InvalidAuthzid {
		t.Errorf("malformed authzid: %v", err)
	}
	// Several addresses: the client must pick one.
	two := verifiedState(t, xmppAddrs(t, "juliet@example.com", "romeo@example.com", "juliet@other.example"))
	if _, err := runExternal(t, two, []byte{}); condition(err) != InvalidAuthzid {
		t.Errorf("two addresses, no authzid: %v", err)
	}
	if neg, err := runExternal(t, two, []byte("romeo@example.com")); err != nil || neg.Username() != "romeo" {
		t.Errorf("two addresses, authzid romeo: %v", err)
	}
	// The account must exist.
	if _, err := runExternal(t, verifiedState(t, xmppAddrs(t, "nurse@example.com")), []byte{}); condition(err) != NotAuthorized {
		t.Errorf("unknown account: %v", err)
	}
	// Another domain's address does not count.
	if _, err := runExternal(t, verifiedState(t, xmppAddrs(t, "juliet@other.example")), []byte{}); condition(err) != NotAuthorized {
		t.Errorf("foreign domain: %v", err)
	}
	// Without id-on-xmppAddr, an e-mail address of the form user@domain serves.
	mail := verifiedState(t, func(c *x509.Certificate) { c.EmailAddresses = []string{"romeo@example.com"} })
	if neg, err := runExternal(t, mail, []byte{}); err != nil || neg.Username() != "romeo" {
		t.Errorf("e-mail identity: %v", err)
	}
	// Unverified certificates never get EXTERNAL.
	unverified := *one
	unverified.VerifiedChains = nil
	if _, err := NewServer(External, Config{Domain: "example.com", Store: clearStore(), TLS: &unverified}); condition(err) != InvalidMechanism {
		t.Errorf("unverified certificate: %v", err)
	}
	if _, err := NewServer(External, Config{Domain: "example.com", Store: clearStore()}); condition(err) != InvalidMechanism {
		t.Errorf("no TLS: %v", err)
	}
}

func TestWithExternal(t *testing.T) {
	base := []string{ScramSHA256, Plain}
	if got := WithExternal(base, verifiedState(t, xmppAddrs(t, "juliet@example.com"))); !slices.Equal(got, []string{External, ScramSHA256, Plain}) {
		t.Errorf("verified: %v", got)
	}
	if got := WithExternal(base, verifiedState(t, func(*x509.Certificate) {})); !slices.Equal(got, base) {
		t.Errorf("certificate without an address: %v", got)
	}
	if got := WithExternal(base, &tls.ConnectionState{}); !slices.Equal(got, base) {
		t.Errorf("no certificate: %v", got)
	}
	if got := WithExternal(base, nil); !slices.Equal(got, base) {
		t.Errorf("no TLS: %v", got)
	}
}
