package tlsconf

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"impetus/internal/tlsutil"
)

// TestCertHolderReloads checks that a renewed certificate file is served by new handshakes
// without a restart, and that a broken renewal leaves the previous certificate in service.
func TestCertHolderReloads(t *testing.T) {
	dir := t.TempDir()
	a, err := tlsutil.SelfSigned(filepath.Join(dir, "a"), []string{"a.example"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tlsutil.SelfSigned(filepath.Join(dir, "b"), []string{"b.example"})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	install := func(from string, mod time.Time) {
		for src, dst := range map[string]string{"selfsigned.crt": certFile, "selfsigned.key": keyFile} {
			data, err := os.ReadFile(filepath.Join(dir, from, src))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(dst, mod, mod); err != nil {
				t.Fatal(err)
			}
		}
	}
	t0 := time.Now().Add(-time.Hour)
	install("a", t0)
	conf, err := Build(Options{Certificate: certFile, Key: keyFile}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if conf.GetCertificate == nil || conf.MinVersion < tls.VersionTLS12 {
		t.Fatal("the configuration has no GetCertificate or allows less than TLS 1.2")
	}
	if c, err := conf.GetCertificate(nil); err != nil || !bytes.Equal(c.Certificate[0], a.Certificate[0]) {
		t.Fatalf("Build's configuration does not serve the installed certificate: %v", err)
	}

	h, err := NewCertHolder(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	serving := func() []byte {
		c, err := h.GetCertificate(nil)
		if err != nil || c == nil {
			t.Fatalf("GetCertificate: %v, %v", c, err)
		}
		return c.Certificate[0]
	}
	install("b", t0.Add(time.Minute))
	h.nextTime.Store(0) // the next handshake checks the files
	if !bytes.Equal(serving(), b.Certificate[0]) {
		t.Fatal("the renewed certificate is not served")
	}
	if h.Reloads.Load() != 1 {
		t.Fatalf("%d reloads, want 1", h.Reloads.Load())
	}
	// Unchanged files are not read again.
	h.nextTime.Store(0)
	serving()
	if h.Reloads.Load() != 1 {
		t.Fatalf("%d reloads after a check of unchanged files, want 1", h.Reloads.Load())
	}

	// A half-written renewal is not used.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERT"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.Reload(); err == nil {
		t.Fatal("a broken certificate file loaded")
	}
	if !bytes.Equal(serving(), b.Certificate[0]) {
		t.Fatal("a broken renewal replaced the served certificate")
	}
}
