package auth

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a goroutine-safe log sink for the polling store.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func openStore(t *testing.T, uri string, opts Options) Store {
	t.Helper()
	if opts.PollInterval == 0 {
		opts.PollInterval = -1
	}
	s, err := Open(uri, opts)
	if err != nil {
		t.Fatalf("Open(%q): %v", uri, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ha1hex(user, realm, pw string) string {
	s := DigestHA1(user, realm, pw)
	return hex.EncodeToString(s[:])
}

func TestFileStore(t *testing.T) {
	content := "# comment line\r\n" +
		"\r\n" +
		"alice:wonderland\r\n" +
		"bob:pa:ss:word\n" +
		"   # indented comment\n" +
		"Carol:Secret \n" +
		"dave:global\n" +
		"dave@example.org:perdomain\n" +
		"erin@example.net:onlynet\n" +
		"bad user:x\n" +
		"nocolon\n" +
		"frank:\n" +
		"grace@:pw\n" +
		"henry:pw\x07\n" +
		"alice:replaced"
	dir := t.TempDir()
	path := writeFile(t, dir, "passwd", content)
	logger, logs := testLogger()
	s := openStore(t, "file://"+path, Options{Domains: []string{"example.org", "Example.NET"}, Logger: logger})

	tests := []struct {
		name, user, domain string
		wantErr            error
		wantPassword       string
	}{
		{name: "later line wins", user: "alice", domain: "example.org", wantPassword: "replaced"},
		{name: "colon in password", user: "bob", domain: "example.org", wantPassword: "pa:ss:word"},
		{name: "case mapped username", user: "CAROL", domain: "example.net", wantPassword: "Secret "},
		{name: "per-domain line wins", user: "dave", domain: "example.org", wantPassword: "perdomain"},
		{name: "global line in other domain", user: "dave", domain: "example.net", wantPassword: "global"},
		{name: "domain-only user", user: "erin", domain: "EXAMPLE.NET", wantPassword: "onlynet"},
		{name: "domain-only user elsewhere", user: "erin", domain: "example.org", wantErr: ErrNotFound},
		{name: "unhosted domain", user: "alice", domain: "example.com", wantErr: ErrNotFound},
		{name: "unknown user", user: "zed", domain: "example.org", wantErr: ErrNotFound},
		{name: "comment is not a user", user: "# comment line", domain: "example.org", wantErr: ErrNotFound},
		{name: "empty password skipped", user: "frank", domain: "example.org", wantErr: ErrNotFound},
		{name: "control char password skipped", user: "henry", domain: "example.org", wantErr: ErrNotFound},
		{name: "invalid username", user: "bad user", domain: "example.org", wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.Lookup(context.Background(), tt.user, tt.domain)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Lookup: err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if !c.HasPassword || c.Password != tt.wantPassword {
				t.Fatalf("password = %q (%v), want %q", c.Password, c.HasPassword, tt.wantPassword)
			}
			if !c.CheckPassword(tt.wantPassword) || c.CheckPassword(tt.wantPassword+"x") {
				t.Fatal("CheckPassword disagrees with the stored password")
			}
		})
	}

	for _, want := range []string{path + ":10:", path + ":11:", path + ":12:", path + ":13:", path + ":14:", "duplicate user"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if caps := s.Capabilities(); !caps.Cleartext || !caps.CanPlain() || !caps.CanSCRAM(SHA512) || !caps.CanDigest("any") {
		t.Errorf("Capabilities = %+v, want clear text", caps)
	}
}

func TestDigestStore(t *testing.T) {
	dir := t.TempDir()
	content := "# htdigest\n" +
		"fred:Momentum Console:" + ha1hex("fred", "Momentum Console", "secret") + "\n" +
		"fred:other:" + strings.ToUpper(ha1hex("fred", "other", "another")) + "\r\n" +
		"jane@example.org:Momentum Console:" + ha1hex("jane", "Momentum Console", "pw") + "\n" +
		"short:Momentum Console:abcd\n" +
		"norealm:0123\n"
	path := writeFile(t, dir, "digest", content)
	logger, logs := testLogger()
	s := openStore(t, "digest://"+path, Options{Logger: logger})

	tests := []struct {
		name, user, domain, password string
		wantOK                       bool
	}{
		{name: "plain against first realm", user: "fred", domain: "example.org", password: "secret", wantOK: true},
		{name: "plain against second realm", user: "fred", domain: "example.org", password: "another", wantOK: true},
		{name: "wrong password", user: "fred", domain: "example.org", password: "nope"},
		{name: "per-domain user", user: "jane", domain: "example.org", password: "pw", wantOK: true},
		{name: "per-domain user other domain", user: "jane", domain: "example.com", password: "pw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.Lookup(context.Background(), tt.user, tt.domain)
			if err != nil {
				if tt.wantOK {
					t.Fatalf("Lookup: %v", err)
				}
				return
			}
			if got := c.CheckPassword(tt.password); got != tt.wantOK {
				t.Fatalf("CheckPassword = %v, want %v", got, tt.wantOK)
			}
		})
	}
	c, err := s.Lookup(context.Background(), "fred", "x")
	if err != nil {
		t.Fatal(err)
	}
	if c.HasPassword || c.HA1["Momentum Console"] != ha1hex("fred", "Momentum Console", "secret") {
		t.Errorf("credentials = %+v", c)
	}
	caps := s.Capabilities()
	if caps.Cleartext || !caps.CanPlain() || !caps.CanDigest("other") || caps.CanDigest("nope") || caps.CanSCRAM(SHA1) {
		t.Errorf("Capabilities = %+v", caps)
	}
	for _, want := range []string{path + ":5:", path + ":6:"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	t.Run("stored cleartext", func(t *testing.T) {
		p := writeFile(t, dir, "clear", "fred:Momentum Console:pa:ss\n")
		s := openStore(t, "digest://"+p, Options{StoredCleartext: true})
		c, err := s.Lookup(context.Background(), "fred", "example.org")
		if err != nil {
			t.Fatal(err)
		}
		if !c.HasPassword || c.Password != "pa:ss" || !s.Capabilities().Cleartext {
			t.Fatalf("credentials = %+v", c)
		}
	})
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "passwd", "alice:one\n")
	logger, logs := testLogger()
	s := openStore(t, "file://"+path, Options{Logger: logger, PollInterval: 20 * time.Millisecond})
	pw := func() string {
		c, err := s.Lookup(context.Background(), "alice", "example.org")
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return c.Password
	}
	first, _ := s.Lookup(context.Background(), "alice", "example.org")

	// A different size guarantees a detectable change even on coarse mtimes.
	if err := os.WriteFile(path+".new", []byte("alice:two-longer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for pw() != "two-longer" {
		if time.Now().After(deadline) {
			t.Fatalf("poller did not reload; password %q", pw())
		}
		time.Sleep(10 * time.Millisecond)
	}
	second, _ := s.Lookup(context.Background(), "alice", "example.org")
	if first.Generation == second.Generation {
		t.Error("generation did not change on reload")
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := s.(Reloader).Reload(); err == nil {
		t.Error("Reload of a missing file succeeded")
	}
	if pw() != "two-longer" {
		t.Errorf("failed reload dropped the contents: %q", pw())
	}
	if !strings.Contains(logs.String(), "keeping previous contents") {
		t.Errorf("failed reload not logged:\n%s", logs.String())
	}

	// An explicit Reload picks up a change without waiting for the poller.
	s2 := openStore(t, "file://"+writeFile(t, dir, "p2", "bob:x\n"), Options{Logger: logger})
	writeFile(t, dir, "p2", "bob:yy\n")
	if err := s2.(Reloader).Reload(); err != nil {
		t.Fatal(err)
	}
	if c, err := s2.Lookup(context.Background(), "bob", "d"); err != nil || c.Password != "yy" {
		t.Errorf("after Reload: %+v, %v", c, err)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "passwd", "a:b\n")
	Register("test-scheme", func(u *url.URL, opts Options) (Store, error) {
		return nil, errors.New("auth: test opener " + u.Host)
	})
	defer Register("test-scheme", nil)
	tests := []struct {
		name, uri string
		wantErr   string
	}{
		{name: "file", uri: "file://" + path},
		{name: "upper-case scheme", uri: "FILE://" + path},
		{name: "digest of a missing file", uri: "digest://" + filepath.Join(dir, "missing"), wantErr: "no such file"},
		{name: "no scheme", uri: path, wantErr: "no scheme"},
		{name: "unknown scheme", uri: "ecauth://", wantErr: "unknown uri scheme"},
		{name: "registered scheme", uri: "test-scheme://db", wantErr: "test opener db"},
		{name: "no path", uri: "file://", wantErr: "no path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.uri, Options{PollInterval: -1})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if !strings.Contains(strings.Join(Schemes(), ","), "digest,file") {
		t.Errorf("Schemes() = %v", Schemes())
	}
}

func TestPrepare(t *testing.T) {
	tests := []struct {
		name, in, want string
		password       bool
		wantErr        bool
	}{
		{name: "case mapping", in: "JuLiEt", want: "juliet"},
		{name: "width mapping", in: "\uFF41bc", want: "abc"},
		{name: "space in username", in: "a b", wantErr: true},
		{name: "empty username", in: "", wantErr: true},
		{name: "invalid utf-8", in: "a\xff", wantErr: true},
		{name: "password keeps case", in: "PassWord", want: "PassWord", password: true},
		{name: "password maps non-ASCII space", in: "a\u00A0b", want: "a b", password: true},
		{name: "password control char", in: "a\x00b", password: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := PrepareUsername
			if tt.password {
				f = PreparePassword
			}
			got, err := f(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("got %q, %v; want %q, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
