package sasl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"impetus/internal/auth"
)

// memStore is an in-memory auth.Store for tests.
type memStore struct {
	mu    sync.Mutex
	caps  auth.Capabilities
	users map[string]*auth.Credentials
	gen   uint64
	err   error
}

func (m *memStore) Lookup(ctx context.Context, username, domain string) (*auth.Credentials, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	u, err := auth.PrepareUsername(username)
	if err != nil {
		return nil, auth.ErrNotFound
	}
	c, ok := m.users[u]
	if !ok {
		return nil, auth.ErrNotFound
	}
	cp := *c
	cp.Generation = m.gen
	return &cp, nil
}

func (m *memStore) Capabilities() auth.Capabilities { return m.caps }
func (m *memStore) Close() error                    { return nil }

func (m *memStore) setPassword(user, pw string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.users[user] = &auth.Credentials{Username: user, Password: pw, HasPassword: true}
}

// clearStore holds clear-text passwords.
func clearStore(userPw ...string) *memStore {
	m := &memStore{caps: auth.Capabilities{Cleartext: true, Verify: true}, users: map[string]*auth.Credentials{}, gen: 1}
	for i := 0; i+1 < len(userPw); i += 2 {
		m.users[userPw[i]] = &auth.Credentials{Username: userPw[i], Password: userPw[i+1], HasPassword: true}
	}
	return m
}

func fixedNonce(s string) func() string { return func() string { return s } }

// scramTestClient is a minimal independent SCRAM client, used where
// mellium.im/sasl has no support (SHA-512, tls-server-end-point, crafted
// gs2 headers).
type scramTestClient struct {
	h          *scramHash
	user, pass string
	gs2        string // gs2 header, e.g. "n,," or "p=tls-exporter,,"
	cbData     []byte
	cnonce     string

	bare      string
	serverSig []byte
}

func (c *scramTestClient) first() []byte {
	if c.cnonce == "" {
		c.cnonce = "clientnonce123"
	}
	u := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(c.user)
	c.bare = "n=" + u + ",r=" + c.cnonce
	return []byte(c.gs2 + c.bare)
}

func (c *scramTestClient) final(serverFirst []byte) ([]byte, error) {
	var nonce, salt64 string
	iter := 0
	for _, f := range strings.Split(string(serverFirst), ",") {
		switch {
		case strings.HasPrefix(f, "r="):
			nonce = f[2:]
		case strings.HasPrefix(f, "s="):
			salt64 = f[2:]
		case strings.HasPrefix(f, "i="):
			iter, _ = strconv.Atoi(f[2:])
		}
	}
	if !strings.HasPrefix(nonce, c.cnonce) {
		return nil, errors.New("server nonce does not extend the client nonce")
	}
	if iter < 4096 {
		return nil, fmt.Errorf("iteration count %d too low", iter)
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		return nil, err
	}
	salted, err := pbkdf2.Key(c.h.new, c.pass, salt, iter, c.h.size)
	if err != nil {
		return nil, err
	}
	cbind := base64.StdEncoding.EncodeToString(append([]byte(c.gs2), c.cbData...))
	without := "c=" + cbind + ",r=" + nonce
	authMessage := c.bare + "," + string(serverFirst) + "," + without
	clientKey := c.h.hmac(salted, "Client Key")
	sig := c.h.hmac(c.h.sum(clientKey), authMessage)
	proof := make([]byte, len(sig))
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	c.serverSig = c.h.hmac(c.h.hmac(salted, "Server Key"), authMessage)
	return []byte(without + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

func (c *scramTestClient) verify(serverFinal []byte) bool {
	return hmac.Equal(serverFinal, []byte("v="+base64.StdEncoding.EncodeToString(c.serverSig)))
}

// runTestClient drives a full SCRAM exchange and returns the failure, if any.
func runTestClient(t *testing.T, mech string, cfg Config, c *scramTestClient) (Negotiator, error) {
	t.Helper()
	ctx := context.Background()
	n, err := NewServer(mech, cfg)
	if err != nil {
		return nil, err
	}
	sf, done, err := n.Step(ctx, c.first())
	if err != nil {
		return n, err
	}
	if done {
		t.Fatal("done after client-first")
	}
	cf, err := c.final(sf)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	v, done, err := n.Step(ctx, cf)
	if err != nil {
		return n, err
	}
	if !done {
		t.Fatal("not done after client-final")
	}
	if !c.verify(v) {
		t.Fatalf("server signature %q does not verify", v)
	}
	return n, nil
}

// tlsPair is a completed TLS handshake over an in-memory connection.
type tlsPair struct {
	server, client tls.ConnectionState
	leaf           *x509.Certificate
}

func newTLSPair(t testing.TB, version uint16) *tlsPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "example.org"},
		DNSNames:     []string{"example.org"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	c1, c2 := net.Pipe()
	srv := tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: version, MaxVersion: version})
	cli := tls.Client(c2, &tls.Config{InsecureSkipVerify: true, MinVersion: version, MaxVersion: version})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Closing the pipe, not the TLS layer, avoids close_notify writes that
	// block until a timeout because nobody reads the other end.
	t.Cleanup(func() { c1.Close(); c2.Close() })
	return &tlsPair{server: srv.ConnectionState(), client: cli.ConnectionState(), leaf: leaf}
}

// clientBinding returns the binding data as the client computes it.
func (p *tlsPair) clientBinding(t *testing.T, cbType string) []byte {
	t.Helper()
	switch cbType {
	case TLSExporter:
		b, err := p.client.ExportKeyingMaterial(exporterLabel, nil, exporterLength)
		if err != nil {
			t.Fatal(err)
		}
		return b
	default:
		b, err := TLSServerEndPointData(p.client.PeerCertificates[0])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func (p *tlsPair) config(store auth.Store) Config {
	return Config{
		Domain:         "example.org",
		Store:          store,
		TLS:            &p.server,
		ChannelBinding: NewChannelBinding(&p.server, p.leaf),
		PlusAdvertised: true,
	}
}

func condition(err error) string {
	var f *Failure
	if errors.As(err, &f) {
		return f.Condition
	}
	if err == nil {
		return ""
	}
	return "not a *Failure: " + err.Error()
}
