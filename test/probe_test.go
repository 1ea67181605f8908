package test

import "testing"

// TestMechanismProbingIsNotThrottled logs in repeatedly from one address with slixmpp's default
// mechanism choice on TLS 1.3, where each login first meets several refused channel-binding
// attempts before a mechanism works. Only wrong credentials may count against the per-address
// throttle, so every one of these logins must succeed.
func TestMechanismProbingIsNotThrottled(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw", "bob": "pw"}, NoIPv6: true})
	for i, user := range []string{"alice", "bob", "alice", "bob"} {
		res := runSlix(t, srv, families[0], "login", "--jid", user+"@"+testDomain, "--password", "pw")
		if !res.OK {
			t.Fatalf("login %d as %s failed: %q %q (gs2 flag %q), stream error %q", i+1, user, res.Error, res.Text, res.GS2Flag, res.StreamErr)
		}
	}
}
