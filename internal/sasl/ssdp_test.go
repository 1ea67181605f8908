package sasl

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"strings"
	"testing"
)

// TestSSDPHashExample checks the hash against the example of XEP-0474 §4.3.
func TestSSDPHashExample(t *testing.T) {
	got := SSDPHash(sha1.New, []string{"SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"}, []string{"tls-server-end-point", "tls-exporter"})
	if want := "G6k/rBLDqgOhRRaCuuatSDFkJ08="; got != want {
		t.Fatalf("SSDP hash %s, want %s", got, want)
	}
	if SSDPHash(sha1.New, []string{"SCRAM-SHA-1"}, nil) == SSDPHash(sha1.New, []string{"SCRAM-SHA-1"}, []string{}) {
		t.Fatal("an advertised empty channel-binding list must differ from none advertised")
	}
}

// TestSCRAMSendsSSDP runs SCRAM-SHA-256 with an advertised list: the server-first-message
// carries the hash the client computes from what it was offered, a client that was offered a
// tampered list notices, and the exchange completes with the attribute inside the proof.
func TestSCRAMSendsSSDP(t *testing.T) {
	store := clearStore("juliet", "r0m30")
	advertised := []string{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}
	cfg := Config{Domain: "example.org", Store: store, Advertised: advertised}
	c := &scramTestClient{h: scramHashes["SHA-256"], user: "juliet", pass: "r0m30", gs2: "n,,"}
	n, err := NewServer("SCRAM-SHA-256", cfg)
	if err != nil {
		t.Fatal(err)
	}
	sf, _, err := n.Step(context.Background(), c.first())
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, f := range strings.Split(string(sf), ",") {
		if v, ok := strings.CutPrefix(f, "h="); ok {
			got = v
		}
	}
	if want := SSDPHash(sha256.New, []string{"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"}, nil); got != want {
		t.Fatalf("h=%q in %q, want %q", got, sf, want)
	}
	if tampered := SSDPHash(sha256.New, []string{"PLAIN", "SCRAM-SHA-1"}, nil); tampered == got {
		t.Fatal("a downgraded list hashes the same")
	}
	cf, err := c.final(sf)
	if err != nil {
		t.Fatal(err)
	}
	v, done, err := n.Step(context.Background(), cf)
	if err != nil || !done || !c.verify(v) {
		t.Fatalf("final: %v %v %q", err, done, v)
	}
	// Without an advertised list (the server cannot tell what the client saw), no attribute.
	if _, err := runTestClient(t, "SCRAM-SHA-256", Config{Domain: "example.org", Store: store}, &scramTestClient{h: scramHashes["SHA-256"], user: "juliet", pass: "r0m30", gs2: "n,,"}); err != nil {
		t.Fatal(err)
	}
}
