package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileStoreWriter(t *testing.T) {
	for _, tc := range []struct {
		name, scheme string
		cleartext    bool
	}{{"plain", "file", false}, {"digest", "digest", false}, {"digest-cleartext", "digest", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "passwd")
			initial := "# users\nbob:secret\n"
			if tc.scheme == "digest" {
				initial = "# users\n"
			}
			if err := os.WriteFile(path, []byte(initial), 0o640); err != nil {
				t.Fatal(err)
			}
			st, err := Open(tc.scheme+"://"+path, Options{Realm: "example.com", StoredCleartext: tc.cleartext, Domains: []string{"example.com", "example.net"}, PollInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			w := st.(Writer)
			if err := w.Create(ctx, "Alice", "example.com", "pw1"); err != nil {
				t.Fatal(err)
			}
			if err := w.Create(ctx, "alice", "example.com", "pw2"); !errors.Is(err, ErrExists) {
				t.Fatalf("second create: %v", err)
			}
			c, err := st.Lookup(ctx, "alice", "example.com")
			if err != nil || !c.CheckPassword("pw1") {
				t.Fatalf("lookup after create: %+v %v", c, err)
			}
			if _, err := st.Lookup(ctx, "alice", "example.net"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("account leaked to another domain: %v", err)
			}
			if err := w.SetPassword(ctx, "alice", "example.com", "pw3"); err != nil {
				t.Fatal(err)
			}
			if c, err := st.Lookup(ctx, "alice", "example.com"); err != nil || !c.CheckPassword("pw3") || c.CheckPassword("pw1") {
				t.Fatalf("lookup after set: %v", err)
			}
			if err := w.SetPassword(ctx, "nobody", "example.com", "x"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("set of missing user: %v", err)
			}
			if err := w.Create(ctx, "carol", "example.com", ""); err == nil {
				t.Fatal("empty password accepted")
			}
			if err := w.Delete(ctx, "alice", "example.com"); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Lookup(ctx, "alice", "example.com"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("lookup after delete: %v", err)
			}
			if err := w.Delete(ctx, "alice", "example.com"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second delete: %v", err)
			}
			data, _ := os.ReadFile(path)
			if !strings.HasPrefix(string(data), initial) {
				t.Fatalf("other lines changed: %q", data)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
				t.Fatalf("mode %v", fi.Mode())
			}
		})
	}
}
