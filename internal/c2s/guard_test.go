package c2s

import "testing"

// TestClaimedUser checks that failed attempts are attributed to the account they named, for
// each mechanism's message format.
func TestClaimedUser(t *testing.T) {
	for _, tc := range []struct {
		mech, msg, want string
	}{
		{"PLAIN", "\x00alice\x00pw", "alice"},
		{"PLAIN", "admin\x00alice\x00pw", "alice"},
		{"PLAIN", "alice", ""},
		{"SCRAM-SHA-256", "n,,n=alice,r=abc", "alice"},
		{"SCRAM-SHA-1-PLUS", "p=tls-exporter,,n=a=2Cb=3Dc,r=abc", "a,b=c"},
		{"SCRAM-SHA-1", "n,,r=abc", ""},
		{"DIGEST-MD5", `charset=utf-8,username="alice",realm="localhost",nonce="x"`, "alice"},
		{"DIGEST-MD5", `username="unterminated`, ""},
		{"EXTERNAL", "alice", ""},
	} {
		if got := claimedUser(tc.mech, []byte(tc.msg)); got != tc.want {
			t.Errorf("claimedUser(%s, %q) = %q, want %q", tc.mech, tc.msg, got, tc.want)
		}
	}
}
