package test

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// python is Debian's interpreter, which is the one that sees Debian's
// python3-slixmpp; a python3 earlier on PATH (pyenv, a venv) would not.
const python = "/usr/bin/python3"

// slixTimeout bounds one run of test/slix/client.py. The script bounds each
// of its own steps to 10 s and has at most a few of them.
const slixTimeout = 45 * time.Second

// slixResult is the JSON line client.py prints; the fields used depend on the
// scenario.
type slixResult struct {
	OK         bool   `json:"ok"`
	Mech       string `json:"mech"`
	JID        string `json:"jid"`
	Peer       string `json:"peer"`
	TLS        string `json:"tls"`
	CertPinned *bool  `json:"cert_pinned"`
	Error      string `json:"error"`
	Text       string `json:"text"`
	GS2Flag    string `json:"gs2_flag"`
	StreamErr  string `json:"stream_error"`
	Slixmpp    string `json:"slixmpp"`

	Ping       string `json:"ping"`
	Disco      string `json:"disco"`
	DiscoFrom  string `json:"disco_from"`
	Identities []struct {
		Category string `json:"category"`
		Type     string `json:"type"`
		Name     string `json:"name"`
	} `json:"identities"`
	Features []string `json:"features"`
	Version  struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		OS      string `json:"os"`
		Error   string `json:"error"`
	} `json:"version"`

	AliceJID      string                  `json:"alice_jid"`
	Deliveries    map[string]slixDelivery `json:"deliveries"`
	AliceReceived []map[string]string     `json:"alice_received"`
}

type slixDelivery struct {
	To       string `json:"to"`
	SentBody string `json:"sent_body"`
	From     string `json:"from"`
	Body     string `json:"body"`
	Type     string `json:"type"`
	Error    string `json:"error"`
}

// slixScript returns the absolute path of client.py next to this file.
func slixScript(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test sources")
	}
	return filepath.Join(filepath.Dir(file), "slix", "client.py")
}

// requireSlixmpp fails the test when slixmpp cannot be imported: the suite's
// dependencies are installed by scripts/test-deps.sh, so a missing module is
// a broken setup to fix, not a reason to pass quietly.
func requireSlixmpp(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import slixmpp").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import slixmpp (run scripts/test-deps.sh): %v\n%s", python, err, out)
	}
}

// runSlix runs one client.py scenario against srv over family f and returns
// its result. The script's log, which has every XML exchange, is attached to
// the test log when the test fails.
func runSlix(t *testing.T, srv *Server, f family, scenario string, args ...string) slixResult {
	t.Helper()
	res, _ := runSlixScript[slixResult](t, "client.py", slixTimeout, f.ip, srv.port(t, f), srv.CertPath, scenario, args...)
	return res
}

// checkSession checks what every successful slixmpp login must show: a JID
// bound to the right account on the hosted domain, over TLS with the
// server's own certificate, on the address family that was asked for.
func checkSession(t *testing.T, res slixResult, user string, f family) {
	t.Helper()
	if !strings.HasPrefix(res.JID, user+"@"+testDomain+"/") {
		t.Errorf("bound JID = %q, want %s@%s/<resource>", res.JID, user, testDomain)
	}
	if res.Peer != f.ip {
		t.Errorf("slixmpp connected to %q, want %s", res.Peer, f.ip)
	}
	if !strings.HasPrefix(res.TLS, "TLS") {
		t.Errorf("session is not over TLS (version %q)", res.TLS)
	}
	if res.CertPinned == nil || !*res.CertPinned {
		t.Errorf("the certificate presented after STARTTLS is not the one in the data directory")
	}
}

// TestSlixmppLogin logs in with Debian's slixmpp over STARTTLS, forcing each
// SASL mechanism slixmpp implements, on IPv4 and IPv6.
func TestSlixmppLogin(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	const user, pass = "alice", "wonder land"
	plain := StartServer(t, ServerOptions{Users: map[string]string{user: pass}})
	digest := StartServer(t, ServerOptions{DigestUsers: map[string]string{user: pass}})

	cases := []struct {
		name string
		mech string
		srv  *Server
		// noCB makes slixmpp's SCRAM send gs2 flag "n" instead of "y".
		noCB bool
		// tls12 caps slixmpp at TLS 1.2, where tls-unique is defined.
		tls12 bool
		// wantFail is the SASL condition that must end the attempt instead
		// of a session; empty when the login must succeed.
		wantFail string
	}{
		{name: "PLAIN", mech: "PLAIN", srv: plain},
		{name: "DIGEST-MD5", mech: "DIGEST-MD5", srv: digest},
		// slixmpp's SCRAM, as a client without channel binding runs it.
		{name: "SCRAM-SHA-1/gs2-n", mech: "SCRAM-SHA-1", srv: plain, noCB: true},
		{name: "SCRAM-SHA-256/gs2-n", mech: "SCRAM-SHA-256", srv: plain, noCB: true},
		{name: "SCRAM-SHA-512/gs2-n", mech: "SCRAM-SHA-512", srv: plain, noCB: true},
		// Stock slixmpp 1.8 sends gs2 flag "y" ("I can bind, you cannot")
		// on non-PLUS SCRAM whenever it can read tls-unique. The server
		// advertises -PLUS mechanisms, so RFC 5802 §6 requires it to fail
		// the exchange as a possible downgrade; a session here would mean
		// the downgrade protection is missing.
		{name: "SCRAM-SHA-1/gs2-y", mech: "SCRAM-SHA-1", srv: plain, wantFail: "not-authorized"},
		{name: "SCRAM-SHA-256/gs2-y", mech: "SCRAM-SHA-256", srv: plain, wantFail: "not-authorized"},
		{name: "SCRAM-SHA-512/gs2-y", mech: "SCRAM-SHA-512", srv: plain, wantFail: "not-authorized"},
		// slixmpp's -PLUS mechanisms bind only to tls-unique. RFC 9266
		// leaves it undefined for TLS 1.3, which the server rightly does
		// not offer it on (XEP-0440 advertises tls-exporter and
		// tls-server-end-point there), so on TLS 1.3 the exchange must end
		// in a SASL <failure/>, not a session, a stream error or a hang.
		{name: "SCRAM-SHA-1-PLUS/TLS1.3", mech: "SCRAM-SHA-1-PLUS", srv: plain, wantFail: "any"},
		{name: "SCRAM-SHA-256-PLUS/TLS1.3", mech: "SCRAM-SHA-256-PLUS", srv: plain, wantFail: "any"},
		{name: "SCRAM-SHA-512-PLUS/TLS1.3", mech: "SCRAM-SHA-512-PLUS", srv: plain, wantFail: "any"},
		// On TLS 1.2 the server offers tls-unique, so slixmpp's -PLUS works.
		{name: "SCRAM-SHA-1-PLUS/TLS1.2", mech: "SCRAM-SHA-1-PLUS", srv: plain, tls12: true},
		{name: "SCRAM-SHA-256-PLUS/TLS1.2", mech: "SCRAM-SHA-256-PLUS", srv: plain, tls12: true},
		{name: "SCRAM-SHA-512-PLUS/TLS1.2", mech: "SCRAM-SHA-512-PLUS", srv: plain, tls12: true},
		{name: "PLAIN/TLS1.2", mech: "PLAIN", srv: plain, tls12: true},
	}
	for _, f := range families {
		for _, tc := range cases {
			t.Run(f.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				args := []string{"--jid", user + "@" + testDomain, "--password", pass, "--mech", tc.mech}
				if tc.noCB {
					args = append(args, "--no-channel-binding")
				}
				if tc.tls12 {
					args = append(args, "--tls12")
				}
				res := runSlix(t, tc.srv, f, "login", args...)
				t.Logf("%s: ok=%v jid=%q gs2=%q error=%q text=%q", tc.mech, res.OK, res.JID, res.GS2Flag, res.Error, res.Text)
				// The cases are about what slixmpp actually sent; a different
				// gs2 flag means the case no longer tests what it says.
				want := map[bool]string{true: "n", false: "y"}[tc.noCB]
				if strings.HasSuffix(tc.mech, "-PLUS") {
					want = "p=tls-unique"
				}
				if strings.HasPrefix(tc.mech, "SCRAM-") && res.GS2Flag != want {
					t.Fatalf("slixmpp sent gs2 flag %q with %s, the case expects %q", res.GS2Flag, tc.mech, want)
				}
				switch {
				case tc.wantFail != "" && res.OK:
					t.Fatalf("%s (gs2 flag %q) logged in as %s; want a SASL <failure/>", tc.mech, res.GS2Flag, res.JID)
				case tc.wantFail == "any":
					if !slices.Contains(saslConditions, res.Error) {
						t.Fatalf("%s: want a SASL <failure/>, got %q (stream error %q)", tc.mech, res.Error, res.StreamErr)
					}
				case tc.wantFail != "":
					if res.Error != tc.wantFail {
						t.Fatalf("%s (gs2 flag %q): got %q %q, want SASL failure %s", tc.mech, res.GS2Flag, res.Error, res.Text, tc.wantFail)
					}
				case !res.OK:
					t.Fatalf("login with %s failed: %s %s (gs2 flag %q, stream error %q)", tc.mech, res.Error, res.Text, res.GS2Flag, res.StreamErr)
				default:
					checkSession(t, res, user, f)
					if tc.tls12 && res.TLS != "TLSv1.2" {
						t.Errorf("slixmpp negotiated %s, the case asks for TLSv1.2", res.TLS)
					}
				}
			})
		}
	}
}

// TestSlixmppDefaultLogin logs in with slixmpp as an application would,
// letting slixmpp pick the mechanism. slixmpp walks down its preference
// list after each <failure/>: the -PLUS mechanisms (tls-unique only), then
// SCRAM with gs2 flag "y", then DIGEST-MD5 and PLAIN. Each step is refused
// for a reason of its own, so the test checks what users see: whether the
// walk ends in a session before the server's limit on failed attempts ends
// the stream.
func TestSlixmppDefaultLogin(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})
	for _, tc := range []struct {
		name  string
		tls12 bool
	}{{"TLS1.3", false}, {"TLS1.2", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"--jid", "alice@" + testDomain, "--password", "pw"}
			if tc.tls12 {
				args = append(args, "--tls12")
			}
			res := runSlix(t, srv, families[0], "login", args...)
			if !res.OK {
				t.Fatalf("slixmpp with its default mechanism choice could not log in: last SASL failure %q %q (gs2 flag %q), stream error %q",
					res.Error, res.Text, res.GS2Flag, res.StreamErr)
			}
			checkSession(t, res, "alice", families[0])
		})
	}
}

// saslConditions are the <failure/> conditions of RFC 6120 §6.5.
var saslConditions = []string{
	"aborted", "account-disabled", "credentials-expired", "encryption-required",
	"incorrect-encoding", "invalid-authzid", "invalid-mechanism", "malformed-request",
	"mechanism-too-weak", "not-authorized", "temporary-auth-failure",
}

// TestSlixmppWrongPassword checks that a wrong password ends in a SASL
// <failure/> with <not-authorized/> (RFC 6120 §6.5.10), whatever the
// mechanism and the password store.
func TestSlixmppWrongPassword(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	users := map[string]string{"alice": "right"}
	plain := StartServer(t, ServerOptions{Users: users})
	digest := StartServer(t, ServerOptions{DigestUsers: users})
	cases := []struct {
		mech string
		srv  *Server
	}{
		{"PLAIN", plain},
		{"SCRAM-SHA-256", plain},
		{"DIGEST-MD5", digest},
	}
	for _, tc := range cases {
		t.Run(tc.mech, func(t *testing.T) {
			t.Parallel()
			res := runSlix(t, tc.srv, families[0], "login", "--jid", "alice@"+testDomain, "--password", "wrong", "--mech", tc.mech)
			if res.OK {
				t.Fatalf("login with a wrong password succeeded as %s", res.JID)
			}
			if res.Error != "not-authorized" {
				t.Fatalf("wrong password with %s: got %q, want SASL failure not-authorized", tc.mech, res.Error)
			}
		})
	}
}

// TestSlixmppQueries asks the server, through slixmpp's plugins, for an
// XEP-0199 ping, XEP-0030 disco#info and XEP-0092 software version.
func TestSlixmppQueries(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "secret"}})
	res := runSlix(t, srv, families[0], "queries", "--jid", "alice@"+testDomain, "--password", "secret", "--mech", "PLAIN")
	if !res.OK {
		t.Fatalf("login failed: %s %s", res.Error, res.Text)
	}
	if res.Ping != "ok" {
		t.Errorf("ping to %s: %s, want an empty result", testDomain, res.Ping)
	}

	if res.Disco != "" {
		t.Errorf("disco#info to %s: %s", testDomain, res.Disco)
	} else {
		found := false
		for _, id := range res.Identities {
			if id.Category == "server" && id.Type == "im" {
				found = true
			}
		}
		if !found {
			t.Errorf("disco#info identities = %+v, want category=server type=im", res.Identities)
		}
		for _, feat := range []string{"http://jabber.org/protocol/disco#info", "urn:xmpp:ping", "jabber:iq:version"} {
			if !slices.Contains(res.Features, feat) {
				t.Errorf("disco#info features %v lack %s", res.Features, feat)
			}
		}
		if res.DiscoFrom != testDomain {
			t.Errorf("disco#info result from %q, want %s", res.DiscoFrom, testDomain)
		}
	}

	if res.Version.Error != "" {
		t.Errorf("version query: %s", res.Version.Error)
	} else {
		if res.Version.Name != "Impetus" {
			t.Errorf("version name = %q, want Impetus", res.Version.Name)
		}
		if res.Version.Version == "" {
			t.Errorf("version query returned no <version/>")
		}
	}
}

// TestSlixmppMessage sends a chat message from one slixmpp client to another,
// to the recipient's full JID and then to its bare JID, and checks that it
// arrives once with the body intact and 'from' stamped with the sender's full
// JID (RFC 6120 §8.1.2.1).
func TestSlixmppMessage(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	// Separate accounts per family: the cases run in parallel, and a message
	// to bob's bare JID may rightly reach every available resource of bob.
	srv := StartServer(t, ServerOptions{Users: map[string]string{
		"alice4": "a-pass", "bob4": "b-pass", "alice6": "a-pass", "bob6": "b-pass"}})
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			n := f.name[len(f.name)-1:]
			res := runSlix(t, srv, f, "message",
				"--jid", "alice"+n+"@"+testDomain, "--password", "a-pass",
				"--peer-jid", "bob"+n+"@"+testDomain, "--peer-password", "b-pass",
				"--mech", "PLAIN")
			if !res.OK {
				t.Fatalf("message scenario failed: %s", res.Error)
			}
			for _, kind := range []string{"full", "bare"} {
				d, ok := res.Deliveries[kind]
				switch {
				case !ok:
					t.Errorf("to %s JID: not attempted", kind)
				case d.Error != "":
					t.Errorf("to %s JID %s: %s", kind, d.To, d.Error)
				default:
					if d.From != res.AliceJID {
						t.Errorf("to %s JID: from = %q, want alice's full JID %q", kind, d.From, res.AliceJID)
					}
					if d.Body != d.SentBody {
						t.Errorf("to %s JID: body = %q, want %q", kind, d.Body, d.SentBody)
					}
					if d.Type != "chat" {
						t.Errorf("to %s JID: type = %q, want chat", kind, d.Type)
					}
				}
			}
			if len(res.AliceReceived) != 0 {
				t.Errorf("alice received %v; a delivered message must not bounce", res.AliceReceived)
			}
		})
	}
}
