package test

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// scramHashes maps a SCRAM mechanism's hash name to its hash.
var scramHashes = map[string]func() hash.Hash{
	"SHA-1":   sha1.New,
	"SHA-256": sha256.New,
	"SHA-512": sha512.New,
}

// scramClient is a minimal SCRAM client (RFC 5802, RFC 7677) whose gs2
// header and channel binding data the test chooses freely, so that the
// server's handling of each gs2 flag and binding type can be checked,
// including the ones no well-behaved client library would send.
type scramClient struct {
	h           func() hash.Hash
	user, pass  string
	gs2         string // e.g. "n,,", "y,,", "p=tls-exporter,,"
	cbData      []byte // appended to gs2 in c=
	cnonce      string
	firstBare   string
	serverSig   []byte
	serverFirst string
}

func newSCRAM(mech, user, pass, gs2 string, cbData []byte) *scramClient {
	name := strings.TrimSuffix(strings.TrimPrefix(mech, "SCRAM-"), "-PLUS")
	var nonce [18]byte
	_, _ = rand.Read(nonce[:])
	return &scramClient{
		h: scramHashes[name], user: user, pass: pass, gs2: gs2, cbData: cbData,
		cnonce: base64.RawStdEncoding.EncodeToString(nonce[:]),
	}
}

// first is the client-first-message.
func (s *scramClient) first() []byte {
	s.firstBare = "n=" + s.user + ",r=" + s.cnonce
	return []byte(s.gs2 + s.firstBare)
}

func (s *scramClient) hmac(key []byte, msg string) []byte {
	m := hmac.New(s.h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// final computes the client-final-message from the server-first-message.
func (s *scramClient) final(serverFirst []byte) ([]byte, error) {
	s.serverFirst = string(serverFirst)
	var nonce, salt string
	iter := 0
	for _, f := range strings.Split(s.serverFirst, ",") {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "r":
			nonce = v
		case "s":
			salt = v
		case "i":
			iter, _ = strconv.Atoi(v)
		}
	}
	if !strings.HasPrefix(nonce, s.cnonce) || len(nonce) == len(s.cnonce) {
		return nil, fmt.Errorf("server nonce %q does not extend ours %q", nonce, s.cnonce)
	}
	rawSalt, err := base64.StdEncoding.DecodeString(salt)
	if err != nil || iter < 1 {
		return nil, fmt.Errorf("bad server-first-message %q", s.serverFirst)
	}
	salted, err := pbkdf2.Key(s.h, s.pass, rawSalt, iter, s.h().Size())
	if err != nil {
		return nil, err
	}
	withoutProof := "c=" + base64.StdEncoding.EncodeToString(append([]byte(s.gs2), s.cbData...)) + ",r=" + nonce
	authMessage := s.firstBare + "," + s.serverFirst + "," + withoutProof
	clientKey := s.hmac(salted, "Client Key")
	h := s.h()
	h.Write(clientKey)
	sig := s.hmac(h.Sum(nil), authMessage)
	proof := make([]byte, len(sig))
	subtle.XORBytes(proof, clientKey, sig)
	s.serverSig = s.hmac(s.hmac(salted, "Server Key"), authMessage)
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// verify checks the server-final-message (mutual authentication).
func (s *scramClient) verify(serverFinal []byte) error {
	want := "v=" + base64.StdEncoding.EncodeToString(s.serverSig)
	if string(serverFinal) != want {
		return fmt.Errorf("server-final-message %q, want %q", serverFinal, want)
	}
	return nil
}

// saslOutcome is how one SASL exchange ended.
type saslOutcome struct {
	ok        bool
	condition string // the <failure/> condition when !ok
	text      string
}

func (o saslOutcome) String() string {
	if o.ok {
		return "success"
	}
	return fmt.Sprintf("failure <%s/> %q", o.condition, o.text)
}

// failureOutcome reads a SASL <failure/>.
func failureOutcome(e *element) saslOutcome {
	var o saslOutcome
	for _, ch := range e.Children {
		if ch.XMLName.Local == "text" {
			o.text = ch.Text
		} else {
			o.condition = ch.XMLName.Local
		}
	}
	return o
}

// payload decodes the base64 text of a SASL element.
func payload(t *testing.T, e *element) []byte {
	t.Helper()
	text := strings.TrimSpace(e.Text)
	if text == "" || text == "=" {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		t.Fatalf("%s carries invalid base64: %v", e, err)
	}
	return b
}

// runSCRAM runs one SCRAM exchange on an open, post-TLS stream and reports
// its outcome; a success's server signature is verified.
func (c *rawConn) runSCRAM(mech string, s *scramClient) saslOutcome {
	t := c.t
	t.Helper()
	c.send(fmt.Sprintf(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='%s'>%s</auth>`,
		mech, base64.StdEncoding.EncodeToString(s.first())))
	e := c.mustElement("the server-first-message")
	switch {
	case e.is(nsSASL, "failure"):
		return failureOutcome(e)
	case !e.is(nsSASL, "challenge"):
		t.Fatalf("client-first-message answered with %s", e)
	}
	final, err := s.final(payload(t, e))
	if err != nil {
		t.Fatal(err)
	}
	c.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + base64.StdEncoding.EncodeToString(final) + `</response>`)
	e = c.mustElement("the server-final-message")
	var serverFinal []byte
	switch {
	case e.is(nsSASL, "failure"):
		return failureOutcome(e)
	case e.is(nsSASL, "success"):
		serverFinal = payload(t, e)
	case e.is(nsSASL, "challenge"):
		// RFC 6120 §6.4.3 also allows the additional data as a challenge
		// answered by an empty response.
		serverFinal = payload(t, e)
		c.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)
		if e = c.mustElement("<success/>"); !e.is(nsSASL, "success") {
			t.Fatalf("empty response answered with %s", e)
		}
	default:
		t.Fatalf("client-final-message answered with %s", e)
	}
	if err := s.verify(serverFinal); err != nil {
		t.Errorf("server signature: %v", err)
	}
	return saslOutcome{ok: true}
}

// serverEndPoint is RFC 5929 §4.1's tls-server-end-point data for cert.
func serverEndPoint(t *testing.T, cert *x509.Certificate) []byte {
	t.Helper()
	var h crypto.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.ECDSAWithSHA256, x509.SHA256WithRSAPSS:
		h = crypto.SHA256
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
		h = crypto.SHA384
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
		h = crypto.SHA512
	default:
		t.Skipf("tls-server-end-point is undefined for %v certificates", cert.SignatureAlgorithm)
	}
	hh := h.New()
	hh.Write(cert.Raw)
	return hh.Sum(nil)
}

// exporter is RFC 9266's tls-exporter data for the connection.
func exporter(t *testing.T, c *rawConn) []byte {
	t.Helper()
	st := c.conn.(*tls.Conn).ConnectionState()
	b, err := st.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
	if err != nil {
		t.Fatalf("tls-exporter: %v", err)
	}
	return b
}

// TestRawSCRAMChannelBinding runs SCRAM by hand with every gs2 flag and
// channel binding type, right and wrong, and checks the server's verdict
// against RFC 5802 §6, RFC 5929 and RFC 9266, on TLS 1.3 and TLS 1.2.
func TestRawSCRAMChannelBinding(t *testing.T) {
	t.Parallel()
	const user, pass = "alice", "pencil"
	srv := StartServer(t, ServerOptions{Users: map[string]string{user: pass}, NoIPv6: true})

	type cb int
	const (
		noData cb = iota
		exporterData
		endPointData
		uniqueData
		wrongData
	)
	cases := []struct {
		name   string
		tls12  bool
		mech   string
		gs2    string
		data   cb
		wantOK bool
	}{
		{name: "PLUS tls-exporter SHA-256", mech: "SCRAM-SHA-256-PLUS", gs2: "p=tls-exporter,,", data: exporterData, wantOK: true},
		{name: "PLUS tls-exporter SHA-1", mech: "SCRAM-SHA-1-PLUS", gs2: "p=tls-exporter,,", data: exporterData, wantOK: true},
		{name: "PLUS tls-exporter SHA-512", mech: "SCRAM-SHA-512-PLUS", gs2: "p=tls-exporter,,", data: exporterData, wantOK: true},
		{name: "PLUS tls-server-end-point", mech: "SCRAM-SHA-256-PLUS", gs2: "p=tls-server-end-point,,", data: endPointData, wantOK: true},
		{name: "PLUS tls-server-end-point TLS 1.2", tls12: true, mech: "SCRAM-SHA-256-PLUS", gs2: "p=tls-server-end-point,,", data: endPointData, wantOK: true},
		// tls-unique exists only up to TLS 1.2 (RFC 9266 retires it for
		// TLS 1.3), where the server offers it for older clients.
		{name: "PLUS tls-unique TLS 1.2", tls12: true, mech: "SCRAM-SHA-256-PLUS", gs2: "p=tls-unique,,", data: uniqueData, wantOK: true},
		{name: "PLUS authzid", mech: "SCRAM-SHA-256-PLUS", gs2: "p=tls-exporter,a=alice@localhost,", data: exporterData, wantOK: true},
		{name: "non-PLUS n", mech: "SCRAM-SHA-256", gs2: "n,,", wantOK: true},
		// Forged or mismatched binding data is exactly what channel
		// binding exists to catch.
		{name: "PLUS wrong exporter data", mech: "SCRAM-SHA-256-PLUS", gs2: "p=tls-exporter,,", data: wrongData},
		{name: "PLUS end-point data under exporter name", mech: "SCRAM-SHA-256-PLUS", gs2: "p=tls-exporter,,", data: endPointData},
		{name: "PLUS tls-unique on TLS 1.3", mech: "SCRAM-SHA-256-PLUS", gs2: "p=tls-unique,,", data: wrongData},
		{name: "PLUS without binding", mech: "SCRAM-SHA-256-PLUS", gs2: "n,,"},
		{name: "PLUS with y", mech: "SCRAM-SHA-256-PLUS", gs2: "y,,"},
		{name: "non-PLUS with p", mech: "SCRAM-SHA-256", gs2: "p=tls-exporter,,", data: exporterData},
		// RFC 5802 §6: "y" while the server advertises -PLUS means the
		// -PLUS mechanisms were stripped in transit; the server MUST fail.
		{name: "non-PLUS y (downgrade)", mech: "SCRAM-SHA-256", gs2: "y,,"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, srv)
			c.open()
			cfg := srv.TLSConfig()
			if tc.tls12 {
				cfg.MaxVersion = tls.VersionTLS12
			}
			f := c.startTLSWith(cfg)
			if v := c.conn.(*tls.Conn).ConnectionState().Version; tc.tls12 && v != tls.VersionTLS12 {
				t.Fatalf("negotiated TLS version %#x, want TLS 1.2", v)
			}
			if !slices.Contains(mechanisms(f), tc.mech) {
				t.Fatalf("%s not offered after STARTTLS: %v", tc.mech, mechanisms(f))
			}
			var data []byte
			switch tc.data {
			case exporterData:
				data = exporter(t, c)
			case endPointData:
				data = serverEndPoint(t, srv.Cert)
			case uniqueData:
				data = c.conn.(*tls.Conn).ConnectionState().TLSUnique
			case wrongData:
				data = bytes.Repeat([]byte{0x5a}, 32)
			}
			got := c.runSCRAM(tc.mech, newSCRAM(tc.mech, user, pass, tc.gs2, data))
			switch {
			case tc.wantOK && !got.ok:
				t.Fatalf("%s with gs2 header %q: %v, want success", tc.mech, tc.gs2, got)
			case !tc.wantOK && got.ok:
				t.Fatalf("%s with gs2 header %q succeeded; the server must refuse it", tc.mech, tc.gs2)
			case !tc.wantOK && !slices.Contains(saslConditions, got.condition):
				t.Fatalf("%s with gs2 header %q: %v is not an RFC 6120 §6.5 condition", tc.mech, tc.gs2, got)
			}
			t.Logf("%s %q: %v", tc.mech, tc.gs2, got)
		})
	}
}

// TestRawSASLNegotiation checks the SASL rules around the exchange itself:
// a failed attempt may be retried on the same stream (RFC 6120 §6.4.5), an
// unoffered mechanism is refused with invalid-mechanism (§6.5.6), an
// <abort/> gets <aborted/> (§6.4.4), and after authentication nothing but
// resource binding is accepted before a resource is bound (§7.1).
func TestRawSASLNegotiation(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})
	plain := func(user, pass string) string {
		return `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` +
			base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)) + `</auth>`
	}
	expectFailure := func(c *rawConn, what, cond string) {
		t.Helper()
		e := c.mustElement(what)
		if !e.is(nsSASL, "failure") {
			t.Fatalf("%s answered with %s, want <failure/>", what, e)
		}
		if o := failureOutcome(e); o.condition != cond {
			t.Errorf("%s: %v, want <%s/>", what, o, cond)
		}
	}

	t.Run("retry after failure", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv)
		c.open()
		c.startTLS(srv)
		c.send(plain("alice", "wrong"))
		expectFailure(c, "a wrong password", "not-authorized")
		c.send(plain("nobody", "pw"))
		expectFailure(c, "an unknown user", "not-authorized")
		c.send(plain("alice", "pw"))
		if e := c.mustElement("<success/>"); !e.is(nsSASL, "success") {
			t.Fatalf("the right password after two failures answered with %s", e)
		}
		c.resetDecoder()
		c.open()
		if j := c.bind("again"); j != "alice@"+testDomain+"/again" {
			t.Errorf("bound %q", j)
		}
	})

	t.Run("unoffered mechanism", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv)
		c.open()
		c.startTLS(srv)
		c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-IMPETUS-NOPE'>=</auth>`)
		expectFailure(c, "an unknown mechanism", "invalid-mechanism")
	})

	t.Run("abort", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv)
		c.open()
		c.startTLS(srv)
		s := newSCRAM("SCRAM-SHA-256", "alice", "pw", "n,,", nil)
		c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>` + base64.StdEncoding.EncodeToString(s.first()) + `</auth>`)
		if e := c.mustElement("the server-first-message"); !e.is(nsSASL, "challenge") {
			t.Fatalf("client-first-message answered with %s", e)
		}
		c.send(`<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)
		expectFailure(c, "<abort/>", "aborted")
	})

	t.Run("stanza before bind", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv)
		c.open()
		c.startTLS(srv)
		c.authPlain("alice", "pw")
		c.send(`<message to='alice@localhost'><body>too early</body></message>`)
		c.expectStreamError("not-authorized")
	})
}
