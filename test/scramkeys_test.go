package test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSlixmppStoredSCRAMKeys changes a user's password with `impetus passwd set --scram`,
// which stores SCRAM keys instead of the password in the file:// file, and logs in with
// slixmpp: SCRAM with the stored hashes and PLAIN (checked against the keys) work, the
// password is no longer in the file, and a wrong password is refused.
func TestSlixmppStoredSCRAMKeys(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	const user, pass = "alice", "wonder land"
	srv := StartServer(t, ServerOptions{Users: map[string]string{user: "before"}, NoIPv6: true})
	out, err := exec.Command(serverBin, "passwd", "set", "--scram", "--password", pass, srv.PasswdPath, user).CombinedOutput()
	if err != nil {
		t.Fatalf("impetus passwd set --scram: %v\n%s", err, out)
	}
	data, err := os.ReadFile(srv.PasswdPath)
	if err != nil {
		t.Fatal(err)
	}
	if line := string(data); !strings.Contains(line, "alice:{SCRAM-SHA-1}4096$") || !strings.Contains(line, ",{SCRAM-SHA-256}4096$") || strings.Contains(line, pass) {
		t.Fatalf("password file after --scram:\n%s", line)
	}
	login := func(mech string, extra ...string) slixResult {
		args := append([]string{"--jid", user + "@" + testDomain, "--password", pass, "--mech", mech}, extra...)
		return runSlix(t, srv, families[0], "login", args...)
	}
	// The store notices the rewritten file within its polling interval.
	deadline := time.Now().Add(20 * time.Second)
	for {
		res := login("SCRAM-SHA-1", "--no-channel-binding")
		if res.OK {
			checkSession(t, res, user, families[0])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SCRAM-SHA-1 with stored keys: %s %s", res.Error, res.Text)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, tc := range []struct {
		mech  string
		extra []string
	}{
		{"SCRAM-SHA-256", []string{"--no-channel-binding"}},
		{"SCRAM-SHA-1-PLUS", []string{"--tls12"}},
		{"PLAIN", nil},
	} {
		if res := login(tc.mech, tc.extra...); !res.OK {
			t.Errorf("%s with stored keys: %s %s (stream error %q)", tc.mech, res.Error, res.Text, res.StreamErr)
		}
	}
	// No SHA-512 keys are stored, so the mechanism is not offered and cannot succeed.
	if res := login("SCRAM-SHA-512", "--no-channel-binding"); res.OK {
		t.Error("SCRAM-SHA-512 succeeded without SHA-512 keys")
	}
	res := runSlix(t, srv, families[0], "login", "--jid", user+"@"+testDomain, "--password", "wrong", "--mech", "PLAIN")
	if res.OK || res.Error != "not-authorized" {
		t.Errorf("wrong password: ok=%v error %q, want not-authorized", res.OK, res.Error)
	}
}
