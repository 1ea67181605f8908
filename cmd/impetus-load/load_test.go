package main

import (
	"crypto/sha1"
	"encoding/base64"
	"os"
	"testing"
	"time"
)

// TestSCRAMVectors checks the key derivation against the example of RFC 5802 §5.
func TestSCRAMVectors(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("QSXCR+Q6sek8bf92")
	salted, err := saltedPassword("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	bare := "n=user,r=fyko+d2lbbFgONRv9qkxdawL"
	first := "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
	final := "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j"
	authMsg := bare + "," + first + "," + final
	clientKey := hmacSHA1(salted, "Client Key")
	h := sha1.Sum(clientKey)
	sig := hmacSHA1(h[:], authMsg)
	proof := make([]byte, len(clientKey))
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	if got := base64.StdEncoding.EncodeToString(proof); got != "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=" {
		t.Errorf("client proof %s", got)
	}
	if got := base64.StdEncoding.EncodeToString(hmacSHA1(hmacSHA1(salted, "Server Key"), authMsg)); got != "rmF9pqV8S7suAoZWja4dJRkFsKQ=" {
		t.Errorf("server signature %s", got)
	}
	// The second derivation comes from the cache and is the same.
	again, _ := saltedPassword("pencil", salt, 4096)
	if string(again) != string(salted) {
		t.Error("cached salted password differs")
	}
}

// TestSampleProc reads this process's own CPU time and memory.
func TestSampleProc(t *testing.T) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	s, err := sampleProcs([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if s.rss <= 0 || s.cpu < 0 {
		t.Fatalf("implausible sample %+v", s)
	}
	if _, err := sampleProcs([]int{1 << 30}); err == nil {
		t.Fatal("a missing process gave no error")
	}
}

func TestPercentile(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3}
	for i := range d {
		d[i] *= time.Millisecond
	}
	sortDurations(d)
	if p := percentile(d, 0.5); p != 3 {
		t.Errorf("p50 %v", p)
	}
	if p := percentile(d, 0.99); p != 4 {
		t.Errorf("p99 %v", p)
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("empty percentile")
	}
}
