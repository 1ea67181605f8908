package auth

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestSCRAMKeysInFileStore(t *testing.T) {
	keys, err := FormatSCRAM("secret", 4096, DefaultSCRAMHashes...)
	if err != nil {
		t.Fatal(err)
	}
	other, err := FormatSCRAM("other", 5000, SHA256)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := writeFile(t, dir, "passwd", "alice:"+keys+"\n"+
		"bob:"+other+"\n"+
		"carol:clear text\n"+
		"mallory:{SCRAM-SHA-1}4096$bm90$bad\n"+
		"trudy:{SCRAM-MD5}4096$a$b$c\n")
	logger, logs := testLogger()
	s := openStore(t, "file://"+path, Options{Logger: logger})
	for _, want := range []string{"passwd:4:", "passwd:5:", "unknown hash"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	ctx := context.Background()
	c, err := s.Lookup(ctx, "alice", "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if c.HasPassword || len(c.SCRAM) != 2 || c.SCRAM[SHA1].Iterations != 4096 || len(c.SCRAM[SHA256].StoredKey) != 32 {
		t.Fatalf("alice's credentials: %+v", c)
	}
	if !c.CheckPassword("secret") || c.CheckPassword("Secret") || c.CheckPassword("") {
		t.Error("CheckPassword against stored keys is wrong")
	}
	if b, _ := s.Lookup(ctx, "bob", ""); !b.CheckPassword("other") || b.SCRAM[SHA256].Iterations != 5000 {
		t.Errorf("bob: %+v", b)
	}
	if c, _ := s.Lookup(ctx, "carol", ""); !c.HasPassword || !c.CheckPassword("clear text") {
		t.Errorf("carol's clear-text line: %+v", c)
	}
	// Every user with keys has SHA-256 keys, only some have SHA-1: the store offers SHA-256,
	// and PLAIN, but not DIGEST-MD5 (which needs the password).
	caps := s.Capabilities()
	if caps.Cleartext || !caps.Verify || !slices.Equal(caps.SCRAM, []string{SHA256}) || caps.CanDigest("") {
		t.Errorf("capabilities: %+v", caps)
	}
	if _, err := FormatSCRAM("x", 1000, SHA1); err == nil {
		t.Error("FormatSCRAM accepted 1000 iterations")
	}
}

func TestSCRAMKeysWritten(t *testing.T) {
	keys, _ := FormatSCRAM("secret", 4096, DefaultSCRAMHashes...)
	dir := t.TempDir()
	path := writeFile(t, dir, "passwd", "alice:"+keys+"\n")
	s := openStore(t, "file://"+path, Options{Domains: []string{"example.org"}})
	w := s.(Writer)
	ctx := context.Background()
	if err := w.Create(ctx, "bob", "example.org", "fresh"); err != nil {
		t.Fatal(err)
	}
	// Any password, even one that looks like keys, is stored as keys here.
	if err := w.Create(ctx, "eve", "example.org", "{SCRAM-SHA-1}x"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "bob@example.org:{SCRAM-SHA-1}4096$") || strings.Contains(string(data), "fresh") {
		t.Fatalf("a file of keys got a new line that is not keys:\n%s", data)
	}
	b, err := s.Lookup(ctx, "bob", "example.org")
	if err != nil || !b.CheckPassword("fresh") {
		t.Fatalf("bob after Create: %+v, %v", b, err)
	}
	if e, err := s.Lookup(ctx, "eve", "example.org"); err != nil || !e.CheckPassword("{SCRAM-SHA-1}x") {
		t.Fatalf("eve after Create: %+v, %v", e, err)
	}
	// In a clear-text file such a password would be read back as keys: refused.
	plain := openStore(t, "file://"+writeFile(t, dir, "clear", "carol:clear\n"), Options{Domains: []string{"example.org"}})
	if err := plain.(Writer).Create(ctx, "eve", "example.org", "{SCRAM-SHA-1}x"); err == nil {
		t.Error("a clear-text password looking like keys was stored")
	}
}

func TestPasswdSCRAM(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "passwd", "carol:clear\n")
	var out, errs strings.Builder
	if code := RunPasswd([]string{"add", "--scram", "--iterations", "8192", "--password", "pw", path, "alice"}, nil, &out, &errs); code != 0 {
		t.Fatalf("passwd add --scram: %d %s", code, errs.String())
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "alice:{SCRAM-SHA-1}8192$") || !strings.Contains(string(data), "carol:clear\n") {
		t.Fatalf("file after add --scram:\n%s", data)
	}
	for _, args := range [][]string{
		{"add", "--scram", "--iterations", "100", "--password", "pw", path, "dave"},
		{"add", "--iterations", "5000", "--password", "pw", path, "dave"},
		{"add", "--scram", "--digest", "--password", "pw", path, "dave"},
		{"add", "--password", "{SCRAM-SHA-1}x", path, "dave"},
	} {
		errs.Reset()
		if code := RunPasswd(args, nil, &out, &errs); code == 0 {
			t.Errorf("passwd %v succeeded", args)
		}
	}
	s := openStore(t, "file://"+path, Options{})
	a, err := s.Lookup(context.Background(), "alice", "")
	if err != nil || !a.CheckPassword("pw") {
		t.Fatalf("alice: %+v %v", a, err)
	}
}
