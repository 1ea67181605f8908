package sasl

import (
	"context"
	"crypto/pbkdf2"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	msasl "mellium.im/sasl"

	"impetus/internal/auth"
)

func TestMechanisms(t *testing.T) {
	tests := []struct {
		name       string
		caps       auth.Capabilities
		tls, plain bool
		want       []string
	}{
		{name: "clear text over TLS", caps: auth.Capabilities{Cleartext: true, Verify: true}, tls: true,
			want: []string{ScramSHA512Plus, ScramSHA256Plus, ScramSHA1Plus, ScramSHA512, ScramSHA256, ScramSHA1, DigestMD5, Plain}},
		{name: "clear text without TLS", caps: auth.Capabilities{Cleartext: true, Verify: true},
			want: []string{ScramSHA512, ScramSHA256, ScramSHA1, DigestMD5}},
		{name: "clear text without TLS, PLAIN allowed", caps: auth.Capabilities{Cleartext: true, Verify: true}, plain: true,
			want: []string{ScramSHA512, ScramSHA256, ScramSHA1, DigestMD5, Plain}},
		{name: "htdigest over TLS", caps: auth.Capabilities{Verify: true, DigestRealms: []string{"r"}}, tls: true,
			want: []string{DigestMD5, Plain}},
		{name: "stored SCRAM-SHA-256 keys", caps: auth.Capabilities{SCRAM: []string{auth.SHA256}}, tls: true,
			want: []string{ScramSHA256Plus, ScramSHA256}},
		{name: "nothing", caps: auth.Capabilities{}, tls: true, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Mechanisms(tt.caps, tt.tls, tt.plain); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestChannelBindingTypes(t *testing.T) {
	tls13 := newTLSPair(t, tls.VersionTLS13)
	tls12 := newTLSPair(t, tls.VersionTLS12)
	tests := []struct {
		name string
		st   *tls.ConnectionState
		want []string
	}{
		{name: "no TLS", st: nil, want: nil},
		{name: "TLS 1.3", st: &tls13.server, want: []string{TLSExporter, TLSServerEndPoint}},
		// crypto/tls negotiates the extended master secret on TLS 1.2.
		{name: "TLS 1.2 with EMS", st: &tls12.server, want: []string{TLSExporter, TLSServerEndPoint, TLSUnique}},
		{name: "TLS 1.2 state without exporter", st: &tls.ConnectionState{Version: tls.VersionTLS12, HandshakeComplete: true},
			want: []string{TLSServerEndPoint}},
		{name: "incomplete handshake", st: &tls.ConnectionState{Version: tls.VersionTLS13}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ChannelBindingTypes(tt.st); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	// Both ends must compute the same binding data.
	for _, cb := range []string{TLSExporter, TLSServerEndPoint} {
		srv, err := NewChannelBinding(&tls13.server, tls13.leaf)(cb)
		if err != nil {
			t.Fatal(err)
		}
		if cli := tls13.clientBinding(t, cb); string(cli) != string(srv) || len(srv) != 32 {
			t.Errorf("%s: server %x, client %x", cb, srv, cli)
		}
	}
	if _, err := NewChannelBinding(&tls13.server, tls13.leaf)("tls-unique"); err == nil {
		t.Error("tls-unique accepted")
	}
}

func TestPlain(t *testing.T) {
	store := clearStore("tim", "tanstaaftanstaaf", "kurt", "xipj3plmq", "juliet", "Pass Word")
	tests := []struct {
		name        string
		noInitial   bool
		msg         string
		wantCond    string
		wantUser    string
		wantAuthzid string
	}{
		// RFC 4616 §4 examples.
		{name: "rfc4616 no authzid", msg: "\x00tim\x00tanstaaftanstaaf", wantUser: "tim"},
		{name: "rfc4616 with authzid", msg: "Ursel\x00Kurt\x00xipj3plmq", wantUser: "kurt", wantAuthzid: "Ursel"},
		{name: "after empty challenge", noInitial: true, msg: "\x00tim\x00tanstaaftanstaaf", wantUser: "tim"},
		{name: "bare JID authcid", msg: "\x00tim@Example.org\x00tanstaaftanstaaf", wantUser: "tim"},
		{name: "password prepared", msg: "\x00juliet\x00Pass\u00A0Word", wantUser: "juliet"},
		{name: "wrong password", msg: "\x00tim\x00tanstaaf", wantCond: NotAuthorized},
		{name: "password case matters", msg: "\x00tim\x00TANSTAAFTANSTAAF", wantCond: NotAuthorized},
		{name: "unknown user", msg: "\x00nobody\x00tanstaaftanstaaf", wantCond: NotAuthorized},
		{name: "other domain JID", msg: "\x00tim@example.com\x00tanstaaftanstaaf", wantCond: NotAuthorized},
		{name: "invalid username", msg: "\x00a b\x00x", wantCond: NotAuthorized},
		{name: "no separators", msg: "timtanstaaf", wantCond: MalformedRequest},
		{name: "one separator", msg: "tim\x00tanstaaf", wantCond: MalformedRequest},
		{name: "three separators", msg: "\x00tim\x00tan\x00staaf", wantCond: MalformedRequest},
		{name: "empty authcid", msg: "\x00\x00pw", wantCond: MalformedRequest},
		{name: "empty password", msg: "\x00tim\x00", wantCond: MalformedRequest},
		{name: "empty message", msg: "", wantCond: MalformedRequest},
		{name: "invalid UTF-8", msg: "\x00tim\x00\xff", wantCond: MalformedRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := NewServer(Plain, Config{Domain: "example.org", Store: store, TLS: &tls.ConnectionState{}})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tt.noInitial {
				ch, done, err := n.Step(ctx, nil)
				if err != nil || done || len(ch) != 0 {
					t.Fatalf("first step: %q %v %v", ch, done, err)
				}
			}
			_, done, err := n.Step(ctx, []byte(tt.msg))
			if got := condition(err); got != tt.wantCond {
				t.Fatalf("condition = %q, want %q (%v)", got, tt.wantCond, err)
			}
			if tt.wantCond != "" {
				if n.Username() != "" {
					t.Fatal("Username set after failure")
				}
				return
			}
			if !done || n.Username() != tt.wantUser || n.Authzid() != tt.wantAuthzid {
				t.Fatalf("done=%v user=%q authzid=%q", done, n.Username(), n.Authzid())
			}
			if _, _, err := n.Step(ctx, nil); err == nil {
				t.Fatal("Step after success did not fail")
			}
		})
	}
}

func TestNewServer(t *testing.T) {
	clear := clearStore("u", "p")
	digest := &memStore{caps: auth.Capabilities{Verify: true, DigestRealms: []string{"R"}}}
	tlsState := &tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true}
	cb := func(string) ([]byte, error) { return []byte("x"), nil }
	tests := []struct {
		name, mech string
		cfg        Config
		wantCond   string
	}{
		{name: "plain without TLS", mech: Plain, cfg: Config{Store: clear}, wantCond: EncryptionRequired},
		{name: "plain without TLS allowed", mech: Plain, cfg: Config{Store: clear, AllowPlainWithoutTLS: true}},
		{name: "no store", mech: ScramSHA1, cfg: Config{}, wantCond: TemporaryAuthFailure},
		{name: "unknown mechanism", mech: "CRAM-MD5", cfg: Config{Store: clear}, wantCond: InvalidMechanism},
		{name: "unknown SCRAM hash", mech: "SCRAM-SHA-3", cfg: Config{Store: clear}, wantCond: InvalidMechanism},
		{name: "PLUS without TLS", mech: ScramSHA256Plus, cfg: Config{Store: clear}, wantCond: InvalidMechanism},
		{name: "PLUS with TLS", mech: ScramSHA256Plus, cfg: Config{Store: clear, TLS: tlsState, ChannelBinding: cb}},
		{name: "SCRAM from htdigest", mech: ScramSHA1, cfg: Config{Store: digest}, wantCond: InvalidMechanism},
		{name: "DIGEST-MD5 in stored realm", mech: DigestMD5, cfg: Config{Store: digest, Realm: "R"}},
		{name: "DIGEST-MD5 in other realm", mech: DigestMD5, cfg: Config{Store: digest, Domain: "example.org"}, wantCond: InvalidMechanism},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewServer(tt.mech, tt.cfg)
			if got := condition(err); got != tt.wantCond {
				t.Fatalf("condition = %q, want %q", got, tt.wantCond)
			}
		})
	}
}

func TestDigestMD5RFC2831(t *testing.T) {
	// RFC 2831 §4, first example (IMAP, chris/secret).
	const (
		challenge = `realm="elwood.innosoft.com",nonce="OA6MG9tEQGm2hh",qop="auth",charset=utf-8,algorithm=md5-sess`
		response  = `charset=utf-8,username="chris",realm="elwood.innosoft.com",nonce="OA6MG9tEQGm2hh",nc=00000001,cnonce="OA6MHXh6VqTrRk",digest-uri="imap/elwood.innosoft.com",response=d388dad90d4bbd760a152321f2143af7,qop=auth`
		rspauth   = "rspauth=ea40f60335c427b5527b84dbabcdfffd"
	)
	ha1 := auth.DigestHA1("chris", "elwood.innosoft.com", "secret")
	stores := []struct {
		name  string
		store auth.Store
	}{
		{name: "clear text", store: clearStore("chris", "secret")},
		{name: "htdigest", store: &memStore{
			caps: auth.Capabilities{Verify: true, DigestRealms: []string{"elwood.innosoft.com"}},
			users: map[string]*auth.Credentials{"chris": {Username: "chris",
				HA1: map[string]string{"elwood.innosoft.com": hex.EncodeToString(ha1[:])}}},
		}},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			cfg := Config{Domain: "elwood.innosoft.com", Store: s.store, nonce: fixedNonce("OA6MG9tEQGm2hh"), service: "imap"}
			n, err := NewServer(DigestMD5, cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			ch, done, err := n.Step(ctx, nil)
			if err != nil || done || string(ch) != challenge {
				t.Fatalf("challenge %q, %v, %v", ch, done, err)
			}
			ch, done, err = n.Step(ctx, []byte(response))
			if err != nil || done || string(ch) != rspauth {
				t.Fatalf("rspauth %q, %v, %v", ch, done, err)
			}
			if n.Username() != "" {
				t.Fatal("Username set before the exchange finished")
			}
			ch, done, err = n.Step(ctx, nil)
			if err != nil || !done || len(ch) != 0 || n.Username() != "chris" {
				t.Fatalf("final %q, %v, %v, user %q", ch, done, err, n.Username())
			}
		})
	}
}

// digestResponse computes a client digest-response for the test cases.
func digestResponse(user, realm, pw, nonce, cnonce, nc, uri, authzid string) string {
	ha1 := auth.DigestHA1(user, realm, pw)
	a1 := string(ha1[:]) + ":" + nonce + ":" + cnonce
	extra := ""
	if authzid != "" {
		a1 += ":" + authzid
		extra = `,authzid="` + authzid + `"`
	}
	resp := hexMD5(hexMD5(a1) + ":" + nonce + ":" + nc + ":" + cnonce + ":auth:" + hexMD5("AUTHENTICATE:"+uri))
	return `username="` + user + `",realm="` + realm + `",nonce="` + nonce + `",cnonce="` + cnonce +
		`",nc=` + nc + `,qop=auth,digest-uri="` + uri + `",response=` + resp + `,charset=utf-8` + extra
}

func TestDigestMD5(t *testing.T) {
	store := clearStore("juliet", "r0m30myr0m30", "hänsel", "grätel")
	const nonce = "servernonce"
	ok := digestResponse("juliet", "example.org", "r0m30myr0m30", nonce, "cn", "00000001", "xmpp/example.org", "")
	tests := []struct {
		name        string
		initial     string
		response    string
		final       string
		wantCond    string
		wantUser    string
		wantAuthzid string
	}{
		{name: "success", response: ok, wantUser: "juliet"},
		{name: "authzid", response: digestResponse("juliet", "example.org", "r0m30myr0m30", nonce, "cn", "00000001", "xmpp/example.org", "juliet@example.org/r"),
			wantUser: "juliet", wantAuthzid: "juliet@example.org/r"},
		{name: "host and serv-name", response: digestResponse("juliet", "example.org", "r0m30myr0m30", nonce, "cn", "00000001", "xmpp/host.example.org/example.org", ""), wantUser: "juliet"},
		{name: "non-ASCII user hashed as ISO 8859-1", response: digestResponse("hänsel", "example.org", "grätel", nonce, "cn", "00000001", "xmpp/example.org", ""), wantUser: "hänsel"},
		{name: "whitespace and empty elements", response: " , " + strings.ReplaceAll(ok, ",", " ,\t"), wantUser: "juliet"},
		{name: "wrong password", response: digestResponse("juliet", "example.org", "wrong", nonce, "cn", "00000001", "xmpp/example.org", ""), wantCond: NotAuthorized},
		{name: "unknown user", response: digestResponse("romeo", "example.org", "r0m30myr0m30", nonce, "cn", "00000001", "xmpp/example.org", ""), wantCond: NotAuthorized},
		{name: "wrong digest-uri service", response: digestResponse("juliet", "example.org", "r0m30myr0m30", nonce, "cn", "00000001", "imap/example.org", ""), wantCond: NotAuthorized},
		{name: "wrong digest-uri domain", response: digestResponse("juliet", "example.org", "r0m30myr0m30", nonce, "cn", "00000001", "xmpp/example.com", ""), wantCond: NotAuthorized},
		{name: "nonce-count 2", response: digestResponse("juliet", "example.org", "r0m30myr0m30", nonce, "cn", "00000002", "xmpp/example.org", ""), wantCond: NotAuthorized},
		{name: "wrong nonce", response: digestResponse("juliet", "example.org", "r0m30myr0m30", "other", "cn", "00000001", "xmpp/example.org", ""), wantCond: NotAuthorized},
		{name: "wrong realm", response: digestResponse("juliet", "example.com", "r0m30myr0m30", nonce, "cn", "00000001", "xmpp/example.org", ""), wantCond: NotAuthorized},
		{name: "qop auth-conf", response: strings.Replace(ok, "qop=auth", "qop=auth-conf", 1), wantCond: MalformedRequest},
		{name: "duplicate directive", response: ok + `,nc=00000001`, wantCond: MalformedRequest},
		{name: "missing cnonce", response: strings.Replace(ok, `cnonce="cn",`, "", 1), wantCond: MalformedRequest},
		{name: "unterminated quote", response: `username="juliet`, wantCond: MalformedRequest},
		{name: "garbage", response: "\x00\x01", wantCond: MalformedRequest},
		{name: "response not hex", response: ok[:strings.Index(ok, "response=")] + "response=zz" + ok[strings.Index(ok, ",charset"):], wantCond: MalformedRequest},
		{name: "initial response", initial: "x", wantCond: MalformedRequest},
		{name: "non-empty reply to rspauth", response: ok, final: "rspauth", wantCond: MalformedRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := NewServer(DigestMD5, Config{Domain: "example.org", Store: store, nonce: fixedNonce(nonce)})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var initial []byte
			if tt.initial != "" {
				initial = []byte(tt.initial)
			}
			_, _, err = n.Step(ctx, initial)
			if err == nil {
				_, _, err = n.Step(ctx, []byte(tt.response))
			}
			var done bool
			if err == nil {
				var final []byte
				if tt.final != "" {
					final = []byte(tt.final)
				}
				_, done, err = n.Step(ctx, final)
			}
			if got := condition(err); got != tt.wantCond {
				t.Fatalf("condition = %q, want %q (%v)", got, tt.wantCond, err)
			}
			if tt.wantCond == "" && (!done || n.Username() != tt.wantUser || n.Authzid() != tt.wantAuthzid) {
				t.Fatalf("done=%v user=%q authzid=%q", done, n.Username(), n.Authzid())
			}
		})
	}
}

func storedKeys(t *testing.T, h *scramHash, pw string, salt64 string) auth.SCRAMKeys {
	t.Helper()
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		t.Fatal(err)
	}
	salted, err := pbkdf2.Key(h.new, pw, salt, 4096, h.size)
	if err != nil {
		t.Fatal(err)
	}
	sk, srv := h.keys(salted)
	return auth.SCRAMKeys{Salt: salt, Iterations: 4096, StoredKey: sk, ServerKey: srv}
}

func TestSCRAMVectors(t *testing.T) {
	tests := []struct {
		name, mech, hash, salt, snonce string
		clientFirst, serverFirst       string
		clientFinal, serverFinal       string
	}{
		{
			name: "RFC 5802 §5", mech: ScramSHA1, hash: auth.SHA1, salt: "QSXCR+Q6sek8bf92", snonce: "3rfcNHYJY1ZVvWVs7j",
			clientFirst: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
			serverFirst: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
			clientFinal: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
			serverFinal: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
		},
		{
			name: "RFC 7677 §3", mech: ScramSHA256, hash: auth.SHA256, salt: "W22ZaJ0SNY7soEsUEjb6gQ==", snonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
			clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
			serverFirst: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
			clientFinal: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
			serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := scramHashes[tt.hash]
			store := &memStore{caps: auth.Capabilities{SCRAM: []string{tt.hash}}, users: map[string]*auth.Credentials{
				"user": {Username: "user", SCRAM: map[string]auth.SCRAMKeys{tt.hash: storedKeys(t, h, "pencil", tt.salt)}},
			}}
			n, err := NewServer(tt.mech, Config{Domain: "example.org", Store: store, nonce: fixedNonce(tt.snonce)})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			sf, done, err := n.Step(ctx, []byte(tt.clientFirst))
			if err != nil || done || string(sf) != tt.serverFirst {
				t.Fatalf("server-first %q, %v, %v", sf, done, err)
			}
			v, done, err := n.Step(ctx, []byte(tt.clientFinal))
			if err != nil || !done || string(v) != tt.serverFinal {
				t.Fatalf("server-final %q, %v, %v", v, done, err)
			}
			if n.Username() != "user" || n.Authzid() != "" {
				t.Fatalf("user %q authzid %q", n.Username(), n.Authzid())
			}
		})
	}
}

// TestSCRAMMellium runs full exchanges against mellium.im/sasl's client.
func TestSCRAMMellium(t *testing.T) {
	store := clearStore("juliet", "r0m30myr0m30", "a,b=c", "pw")
	tls13 := newTLSPair(t, tls.VersionTLS13)
	tests := []struct {
		name        string
		mech        msasl.Mechanism
		user, pass  string
		authzid     string
		tls         bool
		wantCond    string
		wantAuthzid string
	}{
		{name: "SCRAM-SHA-1", mech: msasl.ScramSha1, user: "juliet", pass: "r0m30myr0m30"},
		{name: "SCRAM-SHA-256", mech: msasl.ScramSha256, user: "juliet", pass: "r0m30myr0m30"},
		{name: "SCRAM-SHA-256 mapped username", mech: msasl.ScramSha256, user: "Juliet", pass: "r0m30myr0m30"},
		{name: "escaped username", mech: msasl.ScramSha256, user: "a,b=c", pass: "pw"},
		{name: "authzid", mech: msasl.ScramSha256, user: "juliet", pass: "r0m30myr0m30", authzid: "admin@example.org", wantAuthzid: "admin@example.org"},
		{name: "SCRAM-SHA-1-PLUS tls-exporter", mech: msasl.ScramSha1Plus, user: "juliet", pass: "r0m30myr0m30", tls: true},
		{name: "SCRAM-SHA-256-PLUS tls-exporter", mech: msasl.ScramSha256Plus, user: "juliet", pass: "r0m30myr0m30", tls: true},
		{name: "wrong password", mech: msasl.ScramSha256, user: "juliet", pass: "wrong", wantCond: NotAuthorized},
		{name: "unknown user", mech: msasl.ScramSha1, user: "romeo", pass: "x", wantCond: NotAuthorized},
		{name: "wrong password PLUS", mech: msasl.ScramSha256Plus, user: "juliet", pass: "wrong", tls: true, wantCond: NotAuthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []msasl.Option{msasl.Credentials(func() ([]byte, []byte, []byte) {
				return []byte(tt.user), []byte(tt.pass), []byte(tt.authzid)
			})}
			cfg := Config{Domain: "example.org", Store: store}
			if tt.tls {
				cfg = tls13.config(store)
				opts = append(opts, msasl.TLSState(tls13.client), msasl.RemoteMechanisms(tt.mech.Name))
			}
			client := msasl.NewClient(tt.mech, opts...)
			server, err := NewServer(tt.mech.Name, cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			_, resp, err := client.Step(nil)
			if err != nil {
				t.Fatal(err)
			}
			var serr error
			for i := 0; i < 3; i++ {
				ch, done, err := server.Step(ctx, resp)
				if err != nil {
					serr = err
					break
				}
				more, r, err := client.Step(ch)
				if err != nil {
					t.Fatalf("client rejected %q: %v", ch, err)
				}
				if done {
					if more {
						t.Fatal("client wants more after success")
					}
					break
				}
				resp = r
			}
			if got := condition(serr); got != tt.wantCond {
				t.Fatalf("condition = %q, want %q (%v)", got, tt.wantCond, serr)
			}
			if tt.wantCond == "" {
				want, _ := auth.PrepareUsername(tt.user)
				if server.Username() != want || server.Authzid() != tt.wantAuthzid {
					t.Fatalf("user %q authzid %q", server.Username(), server.Authzid())
				}
			}
		})
	}
}

func TestSCRAMChannelBinding(t *testing.T) {
	store := clearStore("juliet", "r0m30myr0m30")
	tls13 := newTLSPair(t, tls.VersionTLS13)
	tls12 := newTLSPair(t, tls.VersionTLS12)
	tests := []struct {
		name     string
		mech     string
		pair     *tlsPair
		gs2      string
		cbType   string // binding data the client computes; "" for none
		corrupt  bool
		noPlus   bool // PlusAdvertised false
		noTLS    bool
		wantCond string
	}{
		{name: "SHA-512-PLUS tls-exporter", mech: ScramSHA512Plus, pair: tls13, gs2: "p=tls-exporter,,", cbType: TLSExporter},
		{name: "SHA-256-PLUS tls-server-end-point", mech: ScramSHA256Plus, pair: tls13, gs2: "p=tls-server-end-point,,", cbType: TLSServerEndPoint},
		{name: "SHA-1-PLUS tls-exporter on TLS 1.2", mech: ScramSHA1Plus, pair: tls12, gs2: "p=tls-exporter,,", cbType: TLSExporter},
		{name: "PLUS with authzid", mech: ScramSHA256Plus, pair: tls13, gs2: "p=tls-exporter,a=juliet@example.org,", cbType: TLSExporter},
		{name: "SHA-512 without binding", mech: ScramSHA512, noTLS: true, gs2: "n,,"},
		{name: "wrong binding data", mech: ScramSHA256Plus, pair: tls13, gs2: "p=tls-exporter,,", cbType: TLSExporter, corrupt: true, wantCond: NotAuthorized},
		{name: "binding data of the other type", mech: ScramSHA256Plus, pair: tls13, gs2: "p=tls-exporter,,", cbType: TLSServerEndPoint, wantCond: NotAuthorized},
		{name: "binding data of another connection", mech: ScramSHA256Plus, pair: tls12, gs2: "p=tls-exporter,,", cbType: TLSExporter, corrupt: true, wantCond: NotAuthorized},
		{name: "tls-unique unsupported", mech: ScramSHA256Plus, pair: tls13, gs2: "p=tls-unique,,", cbType: TLSExporter, wantCond: NotAuthorized},
		{name: "downgrade: y after PLUS advertised", mech: ScramSHA256, pair: tls13, gs2: "y,,", wantCond: NotAuthorized},
		{name: "y without PLUS advertised", mech: ScramSHA256, pair: tls13, gs2: "y,,", noPlus: true},
		{name: "y on PLUS mechanism", mech: ScramSHA256Plus, pair: tls13, gs2: "y,,", wantCond: MalformedRequest},
		{name: "n on PLUS mechanism", mech: ScramSHA256Plus, pair: tls13, gs2: "n,,", wantCond: MalformedRequest},
		{name: "p on non-PLUS mechanism", mech: ScramSHA256, pair: tls13, gs2: "p=tls-exporter,,", cbType: TLSExporter, wantCond: MalformedRequest},
		{name: "gs2 header differs in final", mech: ScramSHA256, pair: tls13, gs2: "n,,", cbType: TLSExporter, wantCond: NotAuthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Domain: "example.org", Store: store}
			if !tt.noTLS {
				cfg = tt.pair.config(store)
				cfg.PlusAdvertised = !tt.noPlus
			}
			h := scramHashes[strings.TrimSuffix(strings.TrimPrefix(tt.mech, "SCRAM-"), "-PLUS")]
			c := &scramTestClient{h: h, user: "juliet", pass: "r0m30myr0m30", gs2: tt.gs2}
			if tt.cbType != "" {
				c.cbData = tt.pair.clientBinding(t, tt.cbType)
				if tt.corrupt {
					if tt.pair == tls12 {
						c.cbData = tls13.clientBinding(t, tt.cbType)
						cfg = tls12.config(store)
					} else {
						c.cbData = slices.Clone(c.cbData)
						c.cbData[0] ^= 1
					}
				}
			}
			n, err := runTestClient(t, tt.mech, cfg, c)
			if got := condition(err); got != tt.wantCond {
				t.Fatalf("condition = %q, want %q (%v)", got, tt.wantCond, err)
			}
			if tt.wantCond == "" && n.Username() != "juliet" {
				t.Fatalf("user %q", n.Username())
			}
			if tt.wantCond != "" && n != nil && n.Username() != "" {
				t.Fatal("Username set after failure")
			}
		})
	}
}

func TestSCRAMMalformed(t *testing.T) {
	store := clearStore("user", "pencil")
	tests := []struct {
		name        string
		clientFirst string
		clientFinal string // with NONCE replaced by the combined nonce
		wantCond    string
	}{
		{name: "empty", clientFirst: "", wantCond: MalformedRequest},
		{name: "no gs2 header", clientFirst: "n=user,r=abc", wantCond: MalformedRequest},
		{name: "bad flag", clientFirst: "x,,n=user,r=abc", wantCond: MalformedRequest},
		{name: "empty cb name", clientFirst: "p=,,n=user,r=abc", wantCond: MalformedRequest},
		{name: "bad authzid", clientFirst: "n,b=x,n=user,r=abc", wantCond: MalformedRequest},
		{name: "bad authzid escape", clientFirst: "n,a=x=2Dy,n=user,r=abc", wantCond: MalformedRequest},
		{name: "mandatory extension", clientFirst: "n,,m=ext,n=user,r=abc", wantCond: MalformedRequest},
		{name: "missing nonce", clientFirst: "n,,n=user", wantCond: MalformedRequest},
		{name: "order swapped", clientFirst: "n,,r=abc,n=user", wantCond: MalformedRequest},
		{name: "bad username escape", clientFirst: "n,,n=us=er,r=abc", wantCond: MalformedRequest},
		{name: "empty username", clientFirst: "n,,n=,r=abc", wantCond: MalformedRequest},
		{name: "nonce with control char", clientFirst: "n,,n=user,r=a\x01b", wantCond: MalformedRequest},
		{name: "invalid UTF-8", clientFirst: "n,,n=\xff,r=abc", wantCond: MalformedRequest},
		{name: "bad extension", clientFirst: "n,,n=user,r=abc,zz", wantCond: MalformedRequest},
		{name: "invalid username", clientFirst: "n,,n=a b,r=abc", wantCond: NotAuthorized},
		{name: "final without proof", clientFirst: "n,,n=user,r=abc", clientFinal: "c=biws,r=NONCE", wantCond: MalformedRequest},
		{name: "final with short proof", clientFirst: "n,,n=user,r=abc", clientFinal: "c=biws,r=NONCE,p=AAAA", wantCond: MalformedRequest},
		{name: "final with bad base64", clientFirst: "n,,n=user,r=abc", clientFinal: "c=b!ws,r=NONCE,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", wantCond: MalformedRequest},
		{name: "final order swapped", clientFirst: "n,,n=user,r=abc", clientFinal: "r=NONCE,c=biws,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", wantCond: MalformedRequest},
		{name: "final with client nonce only", clientFirst: "n,,n=user,r=abc", clientFinal: "c=biws,r=abc,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", wantCond: NotAuthorized},
		{name: "final with wrong proof", clientFirst: "n,,n=user,r=abc", clientFinal: "c=biws,r=NONCE,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", wantCond: NotAuthorized},
		{name: "final with wrong binding", clientFirst: "n,,n=user,r=abc", clientFinal: "c=eSws,r=NONCE,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", wantCond: NotAuthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := NewServer(ScramSHA1, Config{Domain: "example.org", Store: store, nonce: fixedNonce("srv")})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			_, _, err = n.Step(ctx, []byte(tt.clientFirst))
			if err == nil && tt.clientFinal != "" {
				_, _, err = n.Step(ctx, []byte(strings.ReplaceAll(tt.clientFinal, "NONCE", "abcsrv")))
			}
			if got := condition(err); got != tt.wantCond {
				t.Fatalf("condition = %q, want %q (%v)", got, tt.wantCond, err)
			}
			if _, _, err := n.Step(ctx, []byte("n,,n=user,r=abc")); err == nil {
				t.Fatal("Step after failure succeeded")
			}
		})
	}
}

func TestSCRAMUnknownUserLooksReal(t *testing.T) {
	store := clearStore("juliet", "pw")
	first := func(user string) string {
		n, err := NewServer(ScramSHA256, Config{Domain: "example.org", Store: store, Secret: []byte("s"), nonce: fixedNonce("x")})
		if err != nil {
			t.Fatal(err)
		}
		sf, _, err := n.Step(context.Background(), []byte("n,,n="+user+",r=abc"))
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		return string(sf)
	}
	known, unknown := first("juliet"), first("romeo")
	if len(known) != len(unknown) || !strings.Contains(unknown, ",i=4096") {
		t.Fatalf("server-first differs in shape: %q vs %q", known, unknown)
	}
	if unknown != first("romeo") {
		t.Fatal("fake salt is not stable")
	}
}

func TestSCRAMCache(t *testing.T) {
	store := clearStore("cached", "one")
	cfg := Config{Domain: "cache.example", Store: store}
	login := func(pw string) error {
		_, err := runTestClient(t, ScramSHA256, cfg, &scramTestClient{h: scramHashes[auth.SHA256], user: "cached", pass: pw, gs2: "n,,"})
		return err
	}
	if err := login("one"); err != nil {
		t.Fatal(err)
	}
	entries := func() int {
		keyCache.Lock()
		defer keyCache.Unlock()
		n := 0
		for k := range keyCache.m {
			if k.domain == "cache.example" {
				n++
			}
		}
		return n
	}
	if entries() != 1 {
		t.Fatalf("cache entries = %d, want 1", entries())
	}
	if err := login("one"); err != nil {
		t.Fatal(err)
	}
	// A reload with a new password must not be served from the cache.
	store.setPassword("cached", "two")
	if err := login("one"); condition(err) != NotAuthorized {
		t.Fatalf("old password after reload: %v", err)
	}
	if err := login("two"); err != nil {
		t.Fatalf("new password after reload: %v", err)
	}
	if entries() != 1 {
		t.Fatalf("cache entries = %d, want 1 (same salt and iterations)", entries())
	}
}

func TestStoreErrors(t *testing.T) {
	store := clearStore("u", "p")
	store.err = errors.New("database down")
	for _, mech := range []string{ScramSHA1, DigestMD5, Plain} {
		t.Run(mech, func(t *testing.T) {
			n, err := NewServer(mech, Config{Domain: "example.org", Store: store, AllowPlainWithoutTLS: true, nonce: fixedNonce("n")})
			if err != nil {
				t.Fatal(err)
			}
			msg := map[string]string{
				ScramSHA1: "n,,n=u,r=abc",
				Plain:     "\x00u\x00p",
				DigestMD5: digestResponse("u", "example.org", "p", "n", "c", "00000001", "xmpp/example.org", ""),
			}[mech]
			ctx := context.Background()
			if mech == DigestMD5 {
				if _, _, err := n.Step(ctx, nil); err != nil {
					t.Fatal(err)
				}
			}
			_, _, err = n.Step(ctx, []byte(msg))
			if condition(err) != TemporaryAuthFailure || !errors.Is(err, store.err) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestFailureError(t *testing.T) {
	tests := []struct {
		name string
		f    *Failure
		want string
	}{
		{name: "with text", f: &Failure{Condition: NotAuthorized, Text: "x"}, want: "sasl: not-authorized: x"},
		{name: "without text", f: &Failure{Condition: Aborted}, want: "sasl: aborted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.Error(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
