package c2s

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"impetus/internal/core"
	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/sasl"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/tlsutil"
	"impetus/internal/xmlstream"
)

// tlsServer serves client streams over direct TLS (the XEP-0368 entry point) with a memory
// store, so SASL2, Bind 2 and FAST run as in production.
type tlsServer struct {
	addr    string
	cert    tls.Certificate
	storage storage.Backend
	cfg     *Config
}

func newTLSServer(tb testing.TB, users ...string) *tlsServer {
	tb.Helper()
	dir := tb.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := testAuth(tb, log, users)
	cert, err := tlsutil.SelfSigned(filepath.Join(dir, "tls"), []string{"localhost"})
	if err != nil {
		tb.Fatal(err)
	}
	backend := memory.New()
	r := router.NewLocal(nil)
	c := core.New(r, log)
	h := module.NewHost("localhost", r, c, backend, nil, log)
	if err := h.Provision([]string{"disco", "ping", "carbons"}); err != nil {
		tb.Fatal(err)
	}
	c.AddHost(h)
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}}
	cfg := &Config{
		Core: c, Hosted: func(d string) bool { return d == "localhost" }, DefaultDomain: "localhost",
		TLS: tlsConf, Auth: store, Limits: xmlstream.Limits{MaxStanzaSize: 262144},
		MaxQueue: 1 << 24, Log: log, Streams: &Streams{}, SM: smTestConfig(), SASL2: DefaultSASL2Config(),
	}
	direct := DirectTLSConfig(tlsConf)
	ln := listen(tb, func(ctx context.Context, nc net.Conn) {
		tc := tls.Server(nc, direct)
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return
		}
		st := tc.ConnectionState()
		dec := xmlstream.NewDecoder(tc, cfg.Limits)
		hdr, err := dec.ReadHeader()
		if err != nil {
			nc.Close()
			return
		}
		ServeDirectTLS(ctx, tc, dec, hdr, cfg, &st)
	})
	return &tlsServer{addr: ln.Addr().String(), cert: cert, storage: backend, cfg: cfg}
}

func (s *tlsServer) dial(tb testing.TB) (*rawClient, *tls.Conn) {
	tb.Helper()
	tc, err := tls.Dial("tcp", s.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPNClient}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tc.Close() })
	return &rawClient{tb: tb, conn: tc, r: bufio.NewReaderSize(tc, 1<<16)}, tc
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

const headerFrom = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' from='alice@localhost' version='1.0'>`

var (
	tokenRe = regexp.MustCompile(`<token xmlns="urn:xmpp:fast:0" expiry="([^"]+)" token="([^"]+)"/>`)
	authzRe = regexp.MustCompile(`<authorization-identifier>([^<]+)</authorization-identifier>`)
	addRe   = regexp.MustCompile(`<additional-data>([^<]+)</additional-data>`)
	smIDRe  = regexp.MustCompile(`<enabled xmlns="urn:xmpp:sm:3" id="([0-9a-f]+)"`)
)

func TestSASL2Features(t *testing.T) {
	srv := newTLSServer(t, "alice")
	c, tc := srv.dial(t)
	if p := tc.ConnectionState().NegotiatedProtocol; p != ALPNClient {
		t.Fatalf("ALPN %q", p)
	}
	c.send(headerFrom)
	f := c.until("</stream:features>")
	for _, want := range []string{
		`<authentication xmlns="urn:xmpp:sasl:2"><mechanism>SCRAM-SHA-512-PLUS</mechanism>`,
		`<inline><bind xmlns="urn:xmpp:bind:0"><inline><feature var="urn:xmpp:carbons:2"/><feature var="urn:xmpp:csi:0"/><feature var="urn:xmpp:sm:3"/></inline></bind><sm xmlns="urn:xmpp:sm:3"/>`,
		`<fast xmlns="urn:xmpp:fast:0"><mechanism>HT-SHA-256-ENDP</mechanism><mechanism>HT-SHA-256-EXPR</mechanism><mechanism>HT-SHA-256-NONE</mechanism>`,
	} {
		if !strings.Contains(f, want) {
			t.Fatalf("features lack %s:\n%s", want, f)
		}
	}
	if strings.Contains(f, "starttls") || strings.Contains(f, "HT-SHA-256-UNIQ") {
		t.Fatalf("STARTTLS or tls-unique offered on direct TLS 1.3: %s", f)
	}
}

// TestSASL2PlainBind2 authenticates with PLAIN, binds with Bind 2 enabling stream management,
// carbons and inactivity inline, and asks for a FAST token, all in one round trip.
func TestSASL2PlainBind2(t *testing.T) {
	srv := newTLSServer(t, "alice", "bob")
	other := srv.newLegacyTLS(t, "alice", "desk")
	bob := srv.newLegacyTLS(t, "bob", "r1")

	c, _ := srv.dial(t)
	c.send(headerFrom)
	c.until("</stream:features>")
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64("\x00alice\x00secret") + `</initial-response>` +
		`<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>AwesomeXMPP</software><device>Kiva's Phone</device></user-agent>` +
		`<bind xmlns='urn:xmpp:bind:0'><tag>AwesomeXMPP</tag><enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/><inactive xmlns='urn:xmpp:csi:0'/></bind>` +
		`<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/></authenticate>`)
	got := c.until("</stream:features>")
	m := authzRe.FindStringSubmatch(got)
	if m == nil || !strings.HasPrefix(m[1], "alice@localhost/AwesomeXMPP/") {
		t.Fatalf("success: %s", got)
	}
	full := m[1]
	for _, want := range []string{`<success xmlns="urn:xmpp:sasl:2">`, `<bound xmlns="urn:xmpp:bind:0"><enabled xmlns="urn:xmpp:sm:3" id="`, `resume="true"`, `<token xmlns="urn:xmpp:fast:0" expiry="`} {
		if !strings.Contains(got, want) {
			t.Fatalf("success lacks %s: %s", want, got)
		}
	}
	if feats := got[strings.Index(got, "<stream:features"):]; strings.Contains(feats, "xmpp-bind") {
		t.Fatalf("bind offered after Bind 2: %s", feats)
	}
	// The session is bound: stanzas flow and count for stream management.
	c.send(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>`)
	if got := c.until(`<a xmlns="urn:xmpp:sm:3"`); !strings.Contains(got, `id="p1"`) || !strings.Contains(got, `h="1"`) {
		t.Fatalf("after bind: %s", got)
	}
	// Carbons are on: bob's message to alice's other resource comes as a copy.
	c.send(`<presence/>`)
	c.send(`<iq type='get' id='p3' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	c.until(`id="p3"`)
	bob.send(`<message to='alice@localhost/desk' type='chat' id='m1'><body>to the desk</body></message>`)
	other.until("to the desk")
	if got := c.until("</message>"); !strings.Contains(got, `<received xmlns="urn:xmpp:carbons:2">`) {
		t.Fatalf("carbon: %s", got)
	}
	// Inactive inline: presence is held back until the client is active.
	bob.send(`<presence to='` + full + `'><status>held</status></presence>`)
	c.send(`<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if got := c.until(`id="p2"`); strings.Contains(got, "held") {
		t.Fatalf("presence not held back: %s", got)
	}
	c.send(`<active xmlns='urn:xmpp:csi:0'/>`)
	c.until("held")
	// The same client (user-agent id) binding again gets the same resource and replaces the
	// earlier session (XEP-0386 §3.2).
	c2, _ := srv.dial(t)
	c2.send(headerFrom)
	c2.until("</stream:features>")
	c2.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64("\x00alice\x00secret") + `</initial-response>` +
		`<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'/><bind xmlns='urn:xmpp:bind:0'><tag>AwesomeXMPP</tag></bind></authenticate>`)
	if got := c2.until("</stream:features>"); !strings.Contains(got, "<authorization-identifier>"+full+"<") {
		t.Fatalf("second bind: %s", got)
	}
	if got := c.until("</stream:stream>"); !strings.Contains(got, "conflict") {
		t.Fatalf("old session: %s", got)
	}
}

// newLegacyTLS logs in over direct TLS with RFC 6120 SASL and binding.
func (s *tlsServer) newLegacyTLS(t *testing.T, user, res string) *rawClient {
	c, _ := s.dial(t)
	c.send(header)
	c.until("</stream:features>")
	c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + b64("\x00"+user+"\x00secret") + `</auth>`)
	c.until("<success")
	c.send(header)
	c.until("</stream:features>")
	c.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>` + res + `</resource></bind></iq><presence/>`)
	c.until("</iq>")
	return c
}

func TestSASL2FailureThenLegacyBind(t *testing.T) {
	srv := newTLSServer(t, "alice")
	c, _ := srv.dial(t)
	c.send(headerFrom)
	c.until("</stream:features>")
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64("\x00alice\x00wrong") + `</initial-response></authenticate>`)
	if got := c.until("</failure>"); !strings.Contains(got, `<failure xmlns="urn:xmpp:sasl:2"><not-authorized xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>`) {
		t.Fatalf("failure: %s", got)
	}
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN' upgrade='SCRAM-SHA-256'><initial-response>` + b64("\x00alice\x00secret") + `</initial-response></authenticate>`)
	if got := c.until("</failure>"); !strings.Contains(got, "invalid-mechanism") {
		t.Fatalf("unannounced upgrade: %s", got)
	}
	// No stream restart: <success/> and the bind features follow at once.
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64("\x00alice\x00secret") + `</initial-response></authenticate>`)
	got := c.until("</stream:features>")
	if !strings.Contains(got, "<authorization-identifier>alice@localhost</authorization-identifier>") || !strings.Contains(got, `<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>`) {
		t.Fatalf("success: %s", got)
	}
	c.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>`)
	if got := c.until("</iq>"); !strings.Contains(got, "alice@localhost/r") {
		t.Fatalf("bind: %s", got)
	}
}

// scramClient is a hand-written SCRAM-SHA-256 client that checks the XEP-0474 hash.
type scramClient struct {
	user, pass, cnonce, bare string
	serverSig                []byte
}

func (c *scramClient) first() string {
	c.cnonce = "fyko+d2lbbFgONRv9qkxdawL"
	c.bare = "n=" + c.user + ",r=" + c.cnonce
	return "n,," + c.bare
}

func (c *scramClient) final(t *testing.T, serverFirst string, wantH string) string {
	attrs := map[string]string{}
	for _, f := range strings.Split(serverFirst, ",") {
		k, v, _ := strings.Cut(f, "=")
		attrs[k] = v
	}
	if attrs["h"] != wantH {
		t.Fatalf("SSDP h=%q, computed %q from the advertised lists", attrs["h"], wantH)
	}
	salt, _ := base64.StdEncoding.DecodeString(attrs["s"])
	iter, _ := strconv.Atoi(attrs["i"])
	salted, err := pbkdf2.Key(sha256.New, c.pass, salt, iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(key []byte, s string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s))
		return m.Sum(nil)
	}
	without := "c=biws,r=" + attrs["r"]
	authMsg := c.bare + "," + serverFirst + "," + without
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	sig := mac(stored[:], authMsg)
	proof := make([]byte, len(sig))
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	c.serverSig = mac(mac(salted, "Server Key"), authMsg)
	return without + ",p=" + base64.StdEncoding.EncodeToString(proof)
}

var mechRe = regexp.MustCompile(`<mechanism>([^<]+)</mechanism>`)

// TestSASL2SCRAMDowngradeProtection runs SCRAM-SHA-256 over SASL2 with a client that computes
// the XEP-0474 hash from the features it saw, as a client must.
func TestSASL2SCRAMDowngradeProtection(t *testing.T) {
	srv := newTLSServer(t, "alice")
	c, tc := srv.dial(t)
	c.send(headerFrom)
	f := c.until("</stream:features>")
	auth := f[strings.Index(f, "<authentication"):strings.Index(f, "</authentication>")]
	auth = auth[:strings.Index(auth, "<inline>")]
	var mechs []string
	for _, m := range mechRe.FindAllStringSubmatch(auth, -1) {
		mechs = append(mechs, m[1])
	}
	_ = tc
	var types []string
	for _, m := range regexp.MustCompile(`<channel-binding type="([^"]+)"/>`).FindAllStringSubmatch(f, -1) {
		types = append(types, m[1])
	}
	want := sasl.SSDPHash(sha256.New, mechs, types)
	sc := &scramClient{user: "alice", pass: "secret"}
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'><initial-response>` + b64(sc.first()) + `</initial-response></authenticate>`)
	ch := c.until("</challenge>")
	data := ch[strings.Index(ch, ">")+1 : strings.Index(ch, "</challenge>")]
	sf, _ := base64.StdEncoding.DecodeString(data)
	c.send(`<response xmlns='urn:xmpp:sasl:2'>` + b64(sc.final(t, string(sf), want)) + `</response>`)
	got := c.until("</stream:features>")
	m := addRe.FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("success: %s", got)
	}
	v, _ := base64.StdEncoding.DecodeString(m[1])
	if string(v) != "v="+base64.StdEncoding.EncodeToString(sc.serverSig) {
		t.Fatalf("server signature %q", v)
	}
}

// fastLogin authenticates with a FAST token over a fresh connection and returns what the
// server answered.
func (s *tlsServer) fastLogin(t *testing.T, mech, token, extra string) (string, []byte) {
	c, tc := s.dial(t)
	c.send(headerFrom)
	c.until("</stream:features>")
	st := tc.ConnectionState()
	var cb []byte
	switch mech {
	case "HT-SHA-256-EXPR":
		cb, _ = sasl.TLSExporterData(&st)
	case "HT-SHA-256-ENDP":
		cb, _ = sasl.TLSServerEndPointData(st.PeerCertificates[0])
	}
	proof := sasl.HTProof(mech, []byte(token), "Initiator", cb)
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='` + mech + `'><initial-response>` +
		base64.StdEncoding.EncodeToString(append([]byte("alice\x00"), proof...)) + `</initial-response>` +
		`<user-agent id='ua-1'/><fast xmlns='urn:xmpp:fast:0'` + extra + `</authenticate>`)
	got := c.until(">")
	for !strings.Contains(got, "</failure>") && !strings.Contains(got, "</stream:features>") {
		got += c.until(">")
	}
	return got, sasl.HTProof(mech, []byte(token), "Responder", cb)
}

func TestFASTTokens(t *testing.T) {
	srv := newTLSServer(t, "alice")
	// A password login asks for a token bound to tls-exporter.
	c, _ := srv.dial(t)
	c.send(headerFrom)
	c.until("</stream:features>")
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64("\x00alice\x00secret") + `</initial-response>` +
		`<user-agent id='ua-1'/><request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-EXPR'/></authenticate>`)
	m := tokenRe.FindStringSubmatch(c.until("</stream:features>"))
	if m == nil {
		t.Fatal("no token")
	}
	exp, err := time.Parse(time.RFC3339, m[1])
	if err != nil || time.Until(exp) < 13*24*time.Hour {
		t.Fatalf("expiry %q", m[1])
	}
	token := m[2]

	got, responder := srv.fastLogin(t, "HT-SHA-256-EXPR", token, `/>`)
	am := addRe.FindStringSubmatch(got)
	if am == nil || am[1] != base64.StdEncoding.EncodeToString(responder) || !strings.Contains(got, "<authorization-identifier>alice@localhost</authorization-identifier>") {
		t.Fatalf("token login: %s", got)
	}
	if strings.Contains(got, "<token ") {
		t.Fatalf("a fresh token was rotated: %s", got)
	}
	// The token is bound to its mechanism and to its value.
	if got, _ := srv.fastLogin(t, "HT-SHA-256-NONE", token, `/>`); !strings.Contains(got, "not-authorized") {
		t.Fatalf("other mechanism: %s", got)
	}
	if got, _ := srv.fastLogin(t, "HT-SHA-256-EXPR", token+"x", `/>`); !strings.Contains(got, "not-authorized") {
		t.Fatalf("wrong token: %s", got)
	}

	// A token in the second half of its life is rotated; the old one keeps working until the
	// new one is used, and not after.
	srv.ageTokens(t, "alice@localhost", "ua-1", time.Hour)
	got, _ = srv.fastLogin(t, "HT-SHA-256-EXPR", token, `/>`)
	nm := tokenRe.FindStringSubmatch(got)
	if nm == nil {
		t.Fatalf("no rotation: %s", got)
	}
	// The client may have missed the new token: the old one still works, and the answer carries
	// another token that replaces the unused one (§4.5).
	got, _ = srv.fastLogin(t, "HT-SHA-256-EXPR", token, `/>`)
	missed := nm[2]
	if nm = tokenRe.FindStringSubmatch(got); nm == nil || nm[2] == missed {
		t.Fatalf("old token before the new one is used: %s", got)
	}
	if got, _ := srv.fastLogin(t, "HT-SHA-256-EXPR", missed, `/>`); !strings.Contains(got, "not-authorized") {
		t.Fatalf("replaced unused token: %s", got)
	}
	if got, _ := srv.fastLogin(t, "HT-SHA-256-EXPR", nm[2], `/>`); !strings.Contains(got, "<success") || strings.Contains(got, "<token ") {
		t.Fatalf("new token: %s", got)
	}
	if got, _ := srv.fastLogin(t, "HT-SHA-256-EXPR", token, `/>`); !strings.Contains(got, "not-authorized") {
		t.Fatalf("old token after the new one was used: %s", got)
	}
	// Invalidation logs the client out of the token.
	if got, _ := srv.fastLogin(t, "HT-SHA-256-EXPR", nm[2], ` invalidate='true'/>`); !strings.Contains(got, "<success") || strings.Contains(got, "<token ") {
		t.Fatalf("invalidate: %s", got)
	}
	if got, _ := srv.fastLogin(t, "HT-SHA-256-EXPR", nm[2], `/>`); !strings.Contains(got, "not-authorized") {
		t.Fatalf("after invalidation: %s", got)
	}
	// An expired token fails with credentials-expired.
	c, _ = srv.dial(t)
	c.send(headerFrom)
	c.until("</stream:features>")
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64("\x00alice\x00secret") + `</initial-response>` +
		`<user-agent id='ua-1'/><request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-ENDP'/></authenticate>`)
	em := tokenRe.FindStringSubmatch(c.until("</stream:features>"))
	srv.ageTokens(t, "alice@localhost", "ua-1", -time.Minute)
	if got, _ := srv.fastLogin(t, "HT-SHA-256-ENDP", em[2], `/>`); !strings.Contains(got, "credentials-expired") {
		t.Fatalf("expired: %s", got)
	}
}

// ageTokens sets the expiry of the stored tokens to now+left.
func (s *tlsServer) ageTokens(t *testing.T, user, ua string, left time.Duration) {
	ctx := context.Background()
	err := s.storage.Map(FASTStore).Update(ctx, user, func(tx storage.MapTx) error {
		data, err := tx.Get(ua)
		if err != nil {
			return err
		}
		var rec fastRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			return err
		}
		for _, sl := range []*fastSlot{rec.Current, rec.New} {
			if sl != nil {
				sl.Expiry = time.Now().Add(left)
			}
		}
		data, _ = json.Marshal(rec)
		return tx.Set(ua, data)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSASL2InlineResumption resumes a hibernated session inside SASL2 (XEP-0198 with XEP-0388).
func TestSASL2InlineResumption(t *testing.T) {
	srv := newTLSServer(t, "alice", "bob")
	bob := srv.newLegacyTLS(t, "bob", "r1")
	c, _ := srv.dial(t)
	c.send(headerFrom)
	c.until("</stream:features>")
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64("\x00alice\x00secret") + `</initial-response>` +
		`<bind xmlns='urn:xmpp:bind:0'><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind></authenticate>`)
	got := c.until("</stream:features>")
	id := smIDRe.FindStringSubmatch(got)
	full := authzRe.FindStringSubmatch(got)
	if id == nil || full == nil {
		t.Fatalf("success: %s", got)
	}
	c.send(`<presence/>`)
	bob.send(`<message to='` + full[1] + `' type='chat'><body>one</body></message>`)
	c.until("one</body>")
	c.conn.Close()
	bob.send(`<message to='` + full[1] + `' type='chat'><body>two</body></message>`)

	c2, _ := srv.dial(t)
	c2.send(headerFrom)
	c2.until("</stream:features>")
	c2.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64("\x00alice\x00secret") + `</initial-response>` +
		`<resume xmlns='urn:xmpp:sm:3' previd='` + id[1] + `' h='1'/><bind xmlns='urn:xmpp:bind:0'/></authenticate>`)
	got = c2.until("two</body>")
	if !strings.Contains(got, `<resumed xmlns="urn:xmpp:sm:3" previd="`+id[1]+`" h="1"/>`) || !strings.Contains(got, "<authorization-identifier>"+full[1]+"<") {
		t.Fatalf("resumed: %s", got)
	}
	if strings.Contains(got, "one</body>") || strings.Contains(got, "<bound") {
		t.Fatalf("acknowledged stanza resent or bound anew: %s", got)
	}
	// A second resumption of the same id from an unknown session fails inline, and Bind 2 binds.
	c3, _ := srv.dial(t)
	c3.send(headerFrom)
	c3.until("</stream:features>")
	c3.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64("\x00alice\x00secret") + `</initial-response>` +
		`<resume xmlns='urn:xmpp:sm:3' previd='nope' h='0'/><bind xmlns='urn:xmpp:bind:0'/></authenticate>`)
	got = c3.until("</stream:features>")
	if !strings.Contains(got, `<failed xmlns="urn:xmpp:sm:3"><item-not-found`) || !strings.Contains(got, "<bound") {
		t.Fatalf("failed resumption: %s", got)
	}
}
