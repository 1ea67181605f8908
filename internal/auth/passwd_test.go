package auth

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type passwdStep struct {
	name     string
	args     []string // FILE is replaced by the target
	stdin    string
	wantCode int
	wantOut  string
	wantErr  string
}

func runSteps(t *testing.T, target string, steps []passwdStep) {
	t.Helper()
	for _, st := range steps {
		args := make([]string, len(st.args))
		for i, a := range st.args {
			args[i] = strings.ReplaceAll(a, "FILE", target)
		}
		var out, errb bytes.Buffer
		code := RunPasswd(args, strings.NewReader(st.stdin), &out, &errb)
		if code != st.wantCode {
			t.Fatalf("%s: RunPasswd(%q) = %d, want %d; stderr: %s", st.name, args, code, st.wantCode, errb.String())
		}
		if st.wantOut != "" && out.String() != st.wantOut {
			t.Fatalf("%s: stdout = %q, want %q", st.name, out.String(), st.wantOut)
		}
		if st.wantErr != "" && !strings.Contains(errb.String(), st.wantErr) {
			t.Fatalf("%s: stderr = %q, want it to contain %q", st.name, errb.String(), st.wantErr)
		}
	}
}

func TestRunPasswd(t *testing.T) {
	t.Setenv("EC_DIGEST_REALM", "")
	tests := []struct {
		name      string
		target    func(dir string) string // returns the FILE-or-URI argument
		extra     []string                // options added to every command
		uri       func(path string) string
		digest    bool
		listAlice string
	}{
		{name: "plain path", target: func(d string) string { return filepath.Join(d, "pw") },
			uri: func(p string) string { return "file://" + p }, listAlice: "alice\nbob@example.org\n"},
		{name: "file uri", target: func(d string) string { return "file://" + filepath.Join(d, "pw") },
			uri: func(p string) string { return "file://" + p }, listAlice: "alice\nbob@example.org\n"},
		{name: "digest uri", target: func(d string) string { return "digest://" + filepath.Join(d, "pw") },
			uri: func(p string) string { return "digest://" + p }, digest: true,
			listAlice: "alice:Momentum Console\nbob@example.org:Momentum Console\n"},
		{name: "digest flag", target: func(d string) string { return filepath.Join(d, "pw") }, extra: []string{"--digest"},
			uri: func(p string) string { return "digest://" + p }, digest: true,
			listAlice: "alice:Momentum Console\nbob@example.org:Momentum Console\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "pw")
			x := func(args ...string) []string { return append(args, tt.extra...) }
			runSteps(t, tt.target(dir), []passwdStep{
				{name: "list missing file", args: x("list", "FILE"), wantCode: 1},
				{name: "delete from missing file", args: x("delete", "FILE", "alice"), wantCode: 1},
				{name: "add", args: x("add", "--password", "first", "FILE", "Alice"), wantCode: 0},
				{name: "add again", args: x("add", "--password", "x", "FILE", "alice"), wantCode: 1, wantErr: "already exists"},
				{name: "add from stdin", args: x("add", "FILE", "bob@Example.org"), stdin: "pw:with:colons\r\n", wantCode: 0},
				{name: "add with empty stdin", args: x("add", "FILE", "carol"), stdin: "", wantCode: 1, wantErr: "empty password"},
				{name: "set", args: x("set", "FILE", "alice", "--password=second"), wantCode: 0},
				{name: "set missing", args: x("set", "--password", "x", "FILE", "nobody"), wantCode: 1, wantErr: "does not exist"},
				{name: "invalid user", args: x("add", "--password", "x", "FILE", "a b"), wantCode: 1, wantErr: "invalid username"},
				{name: "list", args: x("list", "FILE"), wantCode: 0, wantOut: tt.listAlice},
			})
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
			}
			data, _ := os.ReadFile(path)
			if strings.Contains(string(data), "second") == tt.digest {
				t.Errorf("file contents %q: clear text present = %v, want %v", data, !tt.digest, !tt.digest)
			}

			s := openStore(t, tt.uri(path), Options{Realm: DefaultDigestRealm})
			for _, c := range []struct{ user, domain, pw string }{
				{"alice", "example.org", "second"},
				{"bob", "example.org", "pw:with:colons"},
			} {
				creds, err := s.Lookup(context.Background(), c.user, c.domain)
				if err != nil {
					t.Fatalf("Lookup(%s): %v", c.user, err)
				}
				if !creds.CheckPassword(c.pw) || creds.CheckPassword("first") {
					t.Errorf("%s: password check failed against %q", c.user, data)
				}
			}
			if _, err := s.Lookup(context.Background(), "bob", "example.net"); err == nil {
				t.Error("per-domain user found in another domain")
			}

			runSteps(t, tt.target(dir), []passwdStep{
				{name: "delete", args: x("delete", "FILE", "BOB@example.org"), wantCode: 0},
				{name: "delete again", args: x("delete", "FILE", "bob@example.org"), wantCode: 1},
				{name: "list after delete", args: x("list", "FILE"), wantCode: 0, wantOut: strings.SplitAfter(tt.listAlice, "\n")[0]},
			})
		})
	}
}

func TestRunPasswdKeepsOtherLines(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
		args                []string
	}{
		{
			name:    "plain set keeps comments and CRLF",
			content: "# users\r\nalice:old\r\n\r\n# bob below\r\nbob:b\r\nalice:dup\r\n",
			args:    []string{"set", "--password", "new", "FILE", "alice"},
			want:    "# users\r\nalice:new\r\n\r\n# bob below\r\nbob:b\r\n",
		},
		{
			name:    "plain add after a last line without newline",
			content: "# c\nalice:a",
			args:    []string{"add", "--password", "b", "FILE", "bob"},
			want:    "# c\nalice:a\nbob:b\n",
		},
		{
			name:    "plain delete keeps invalid lines",
			content: "bad user:x\nalice:a\n#alice:commented\n",
			args:    []string{"delete", "FILE", "alice"},
			want:    "bad user:x\n#alice:commented\n",
		},
		{
			name:    "digest set in one realm only",
			content: "# digest\nfred:R1:" + ha1hex("fred", "R1", "a") + "\nfred:R2:" + ha1hex("fred", "R2", "a") + "\n",
			args:    []string{"set", "--digest", "--realm", "R2", "--password", "b", "FILE", "fred"},
			want:    "# digest\nfred:R1:" + ha1hex("fred", "R1", "a") + "\nfred:R2:" + ha1hex("fred", "R2", "b") + "\n",
		},
		{
			name:    "digest stored cleartext",
			content: "",
			args:    []string{"add", "--digest", "--stored-cleartext", "--realm", "R", "--password", "p:w", "FILE", "fred"},
			want:    "fred:R:p:w\n",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "f"+string(rune('a'+i)))
			if err := os.WriteFile(path, []byte(tt.content), 0o640); err != nil {
				t.Fatal(err)
			}
			runSteps(t, path, []passwdStep{{name: tt.name, args: tt.args}})
			got, _ := os.ReadFile(path)
			if string(got) != tt.want {
				t.Fatalf("file = %q, want %q", got, tt.want)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
				t.Errorf("mode changed to %v", fi.Mode().Perm())
			}
		})
	}
}

func TestRunPasswdRealm(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d")
	t.Setenv("EC_DIGEST_REALM", "Env Realm")
	runSteps(t, "digest://"+path, []passwdStep{
		{name: "add with env realm", args: []string{"add", "--password", "x", "FILE", "u"}},
		{name: "add with flag realm", args: []string{"add", "--realm", "Flag", "--password", "y", "FILE", "u"}},
		{name: "list all", args: []string{"list", "FILE"}, wantOut: "u:Env Realm\nu:Flag\n"},
		{name: "list one realm", args: []string{"list", "--realm", "Flag", "FILE"}, wantOut: "u:Flag\n"},
	})
	want := "u:Env Realm:" + ha1hex("u", "Env Realm", "x") + "\nu:Flag:" + ha1hex("u", "Flag", "y") + "\n"
	if got, _ := os.ReadFile(path); string(got) != want {
		t.Fatalf("file = %q, want %q", got, want)
	}
}

func TestRunPasswdUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{name: "no arguments", args: nil},
		{name: "unknown subcommand", args: []string{"frob", "f", "u"}},
		{name: "help", args: []string{"--help"}},
		{name: "missing user", args: []string{"add", "f"}},
		{name: "too many arguments", args: []string{"list", "f", "u"}},
		{name: "unknown option", args: []string{"add", "--bogus", "f", "u"}},
		{name: "option without value", args: []string{"add", "f", "u", "--password"}},
		{name: "password on delete", args: []string{"delete", "--password", "x", "f", "u"}},
		{name: "realm on plain file", args: []string{"add", "--realm", "R", "--password", "x", "f", "u"}},
		{name: "unsupported scheme", args: []string{"add", "--password", "x", "ecauth://db", "u"}},
		{name: "digest flag on file uri", args: []string{"add", "--digest", "--password", "x", "file:///tmp/x", "u"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := RunPasswd(tt.args, strings.NewReader(""), &out, &errb); code != 2 {
				t.Fatalf("exit = %d, want 2; stderr %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), "usage: impetus passwd") {
				t.Fatalf("stderr lacks usage: %q", errb.String())
			}
		})
	}
}
