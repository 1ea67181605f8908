package test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// Namespaces the raw tests check replies against.
const (
	nsStream       = "http://etherx.jabber.org/streams"
	nsStreamErrors = "urn:ietf:params:xml:ns:xmpp-streams"
	nsClient       = "jabber:client"
	nsTLS          = "urn:ietf:params:xml:ns:xmpp-tls"
	nsSASL         = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind         = "urn:ietf:params:xml:ns:xmpp-bind"
	nsStreamLimits = "urn:xmpp:stream-limits:0"
	nsSASLCB       = "urn:xmpp:sasl-cb:0"
)

// rawTimeout bounds every single read or write of a raw connection.
const rawTimeout = 10 * time.Second

// wantMaxBytes is the XEP-0478 stanza size limit the server is documented to
// advertise.
const wantMaxBytes = 262144

// element is a generic XML element as the server sent it.
type element struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Children []element  `xml:",any"`
	Text     string     `xml:",chardata"`
}

func (e *element) attr(local string) string {
	for _, a := range e.Attrs {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

func (e *element) child(space, local string) *element {
	for i := range e.Children {
		c := &e.Children[i]
		if c.XMLName.Space == space && c.XMLName.Local == local {
			return c
		}
	}
	return nil
}

func (e *element) is(space, local string) bool {
	return e != nil && e.XMLName.Space == space && e.XMLName.Local == local
}

// String renders the element back to XML for failure messages.
func (e *element) String() string {
	if e == nil {
		return "<nil>"
	}
	var b strings.Builder
	b.WriteString("<" + e.XMLName.Local)
	if e.XMLName.Space != "" {
		fmt.Fprintf(&b, " xmlns=%q", e.XMLName.Space)
	}
	for _, a := range e.Attrs {
		fmt.Fprintf(&b, " %s=%q", a.Name.Local, a.Value)
	}
	b.WriteString(">")
	b.WriteString(strings.TrimSpace(e.Text))
	for i := range e.Children {
		b.WriteString(e.Children[i].String())
	}
	b.WriteString("</" + e.XMLName.Local + ">")
	return b.String()
}

// errStreamEnd is returned by readElement when the server closes its stream
// with </stream:stream>.
var errStreamEnd = errors.New("server sent </stream:stream>")

// rawConn is a client connection that speaks hand-written XML and keeps a
// transcript of both directions, which failing tests print.
type rawConn struct {
	t     *testing.T
	tcp   net.Conn
	conn  net.Conn // tcp, or the TLS connection over it after STARTTLS
	dec   *xml.Decoder
	trans *bytes.Buffer
}

// transcriptWriter records what the server sends, prefixed per chunk.
type transcriptWriter struct{ buf *bytes.Buffer }

func (w transcriptWriter) Write(p []byte) (int, error) {
	w.buf.WriteString("S: " + clip(string(p)) + "\n")
	return len(p), nil
}

// clip shortens the huge stanzas of the size-limit tests in transcripts.
func clip(s string) string {
	const max = 1500
	if len(s) <= max {
		return s
	}
	return fmt.Sprintf("%s ...(%d bytes in all)... %s", s[:max-200], len(s), s[len(s)-200:])
}

// dialRaw opens a TCP connection to srv's IPv4 listener.
func dialRaw(t *testing.T, srv *Server) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", srv.Addr4(), rawTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", srv.Addr4(), err)
	}
	c := &rawConn{t: t, tcp: conn, conn: conn, trans: &bytes.Buffer{}}
	c.resetDecoder()
	t.Cleanup(func() {
		conn.Close()
		if t.Failed() {
			t.Logf("XML transcript (C: client, S: server):\n%s", c.trans.String())
		}
	})
	return c
}

// resetDecoder starts parsing afresh, as after STARTTLS or a SASL success,
// where the server begins a new XML document.
func (c *rawConn) resetDecoder() {
	c.dec = xml.NewDecoder(io.TeeReader(c.conn, transcriptWriter{c.trans}))
}

// send writes raw XML.
func (c *rawConn) send(s string) {
	c.t.Helper()
	fmt.Fprintf(c.trans, "C: %s\n", clip(s))
	_ = c.conn.SetWriteDeadline(time.Now().Add(rawTimeout))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("writing %q: %v", s, err)
	}
}

// token reads the next token within the read bound.
func (c *rawConn) token() (xml.Token, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(rawTimeout))
	tok, err := c.dec.Token()
	if err != nil {
		return nil, err
	}
	return xml.CopyToken(tok), nil
}

// readHeader reads the server's opening <stream:stream> tag, skipping the
// XML declaration.
func (c *rawConn) readHeader() (xml.StartElement, error) {
	for {
		tok, err := c.token()
		if err != nil {
			return xml.StartElement{}, fmt.Errorf("reading the stream header: %w", err)
		}
		switch t := tok.(type) {
		case xml.ProcInst:
			continue
		case xml.CharData:
			if len(bytes.TrimSpace(t)) == 0 {
				continue
			}
			return xml.StartElement{}, fmt.Errorf("text %q before the stream header", t)
		case xml.StartElement:
			if t.Name.Space != nsStream || t.Name.Local != "stream" {
				return t, fmt.Errorf("first element is <%s xmlns=%q>, want <stream:stream>", t.Name.Local, t.Name.Space)
			}
			return t, nil
		default:
			return xml.StartElement{}, fmt.Errorf("unexpected %T before the stream header", tok)
		}
	}
}

// readElement reads the next child of the stream, or errStreamEnd.
func (c *rawConn) readElement() (*element, error) {
	for {
		tok, err := c.token()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.CharData:
			if len(bytes.TrimSpace(t)) == 0 {
				continue // whitespace keepalives are allowed between stanzas
			}
			return nil, fmt.Errorf("text %q at stream level", t)
		case xml.StartElement:
			var e element
			_ = c.conn.SetReadDeadline(time.Now().Add(rawTimeout))
			if err := c.dec.DecodeElement(&e, &t); err != nil {
				return nil, err
			}
			return &e, nil
		case xml.EndElement:
			if t.Name.Space == nsStream && t.Name.Local == "stream" {
				return nil, errStreamEnd
			}
			return nil, fmt.Errorf("unexpected </%s>", t.Name.Local)
		default:
			return nil, fmt.Errorf("unexpected %T at stream level", tok)
		}
	}
}

// mustElement reads the next element and fails the test on anything else.
func (c *rawConn) mustElement(what string) *element {
	c.t.Helper()
	e, err := c.readElement()
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
	return e
}

// header opens a client stream with the usual attributes, overridable.
func header(to string) string {
	return fmt.Sprintf(`<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`, to)
}

// open sends a stream header to the hosted domain and returns the server's
// header and features.
func (c *rawConn) open() (xml.StartElement, *element) {
	c.t.Helper()
	c.send(header(testDomain))
	h, err := c.readHeader()
	if err != nil {
		c.t.Fatal(err)
	}
	f := c.mustElement("<stream:features/>")
	if !f.is(nsStream, "features") {
		c.t.Fatalf("after the stream header the server sent %s, want <stream:features/>", f)
	}
	return h, f
}

// startTLS negotiates STARTTLS with the server's pinned configuration and
// reopens the stream, returning the new features.
func (c *rawConn) startTLS(srv *Server) *element {
	c.t.Helper()
	return c.startTLSWith(srv.TLSConfig())
}

// startTLSWith is startTLS with a caller-provided TLS configuration.
func (c *rawConn) startTLSWith(cfg *tls.Config) *element {
	c.t.Helper()
	c.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
	if p := c.mustElement("<proceed/>"); !p.is(nsTLS, "proceed") {
		c.t.Fatalf("STARTTLS answered with %s, want <proceed/>", p)
	}
	tc := tls.Client(c.tcp, cfg)
	_ = tc.SetDeadline(time.Now().Add(rawTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.trans.WriteString("-- TLS established --\n")
	c.resetDecoder()
	_, f := c.open()
	return f
}

// authPlain authenticates with SASL PLAIN and reopens the stream, returning
// the post-authentication features.
func (c *rawConn) authPlain(user, pass string) *element {
	c.t.Helper()
	c.send(fmt.Sprintf(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>`,
		base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))))
	if s := c.mustElement("<success/>"); !s.is(nsSASL, "success") {
		c.t.Fatalf("PLAIN answered with %s, want <success/>", s)
	}
	c.resetDecoder()
	_, f := c.open()
	return f
}

// bind binds resource and returns the full JID the server assigned.
func (c *rawConn) bind(resource string) string {
	c.t.Helper()
	c.send(fmt.Sprintf(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource></bind></iq>`, resource))
	r := c.mustElement("the bind result")
	j := r.child(nsBind, "bind")
	if !r.is(nsClient, "iq") || r.attr("type") != "result" || r.attr("id") != "bind1" || j == nil || j.child(nsBind, "jid") == nil {
		c.t.Fatalf("bind answered with %s", r)
	}
	return j.child(nsBind, "jid").Text
}

// login takes a fresh connection to a bound resource over TLS.
func (c *rawConn) login(srv *Server, user, pass, resource string) (features *element, full string) {
	c.t.Helper()
	c.open()
	c.startTLS(srv)
	features = c.authPlain(user, pass)
	return features, c.bind(resource)
}

// expectStreamError reads until a stream error, checks its condition (one
// of several when cond lists them separated by "|"), and checks that the
// server then closes the stream and the connection (RFC 6120 §4.9.1.1).
func (c *rawConn) expectStreamError(cond string) {
	c.t.Helper()
	var e *element
	for {
		var err error
		e, err = c.readElement()
		if err != nil {
			c.t.Fatalf("want stream error <%s/>, got %v", cond, err)
		}
		if e.is(nsStream, "error") {
			break
		}
		c.t.Logf("skipping %s while waiting for the stream error", e)
	}
	got := ""
	for _, ch := range e.Children {
		if ch.XMLName.Space == nsStreamErrors && ch.XMLName.Local != "text" {
			got = ch.XMLName.Local
		}
	}
	if !slices.Contains(strings.Split(cond, "|"), got) {
		c.t.Fatalf("stream error %s, want <%s xmlns='%s'/>", e, cond, nsStreamErrors)
	}
	c.expectClose()
}

// expectClose checks that the server sends </stream:stream> and then closes
// the TCP connection, each within the read bound.
func (c *rawConn) expectClose() {
	c.t.Helper()
	e, err := c.readElement()
	if !errors.Is(err, errStreamEnd) {
		c.t.Fatalf("want </stream:stream>, got %s, %v", e, err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(rawTimeout))
	var one [1]byte
	n, err := c.conn.Read(one[:])
	var ne net.Error
	switch {
	case n > 0:
		c.t.Fatalf("server sent %q after </stream:stream>", one[:n])
	case errors.As(err, &ne) && ne.Timeout():
		c.t.Fatalf("server did not close the connection within %v of </stream:stream>", rawTimeout)
	}
}

// mechanisms lists the SASL mechanisms in a features element.
func mechanisms(features *element) []string {
	var out []string
	if m := features.child(nsSASL, "mechanisms"); m != nil {
		for _, ch := range m.Children {
			if ch.XMLName.Local == "mechanism" {
				out = append(out, strings.TrimSpace(ch.Text))
			}
		}
	}
	return out
}

// checkLimits checks the XEP-0478 advertisement in a features element.
func checkLimits(t *testing.T, where string, features *element) {
	t.Helper()
	l := features.child(nsStreamLimits, "limits")
	if l == nil {
		t.Errorf("%s: features %s lack <limits xmlns='%s'/>", where, features, nsStreamLimits)
		return
	}
	mb := l.child(nsStreamLimits, "max-bytes")
	if mb == nil || strings.TrimSpace(mb.Text) != fmt.Sprint(wantMaxBytes) {
		t.Errorf("%s: limits %s, want <max-bytes>%d</max-bytes>", where, l, wantMaxBytes)
	}
}

// TestRawStreamHeader checks the server's answer to a well-formed opening
// (RFC 6120 §4.7): version 1.0, a fresh id, from the hosted domain, the
// jabber:client default namespace, and the pre-TLS features.
func TestRawStreamHeader(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})
	ids := map[string]bool{}
	for i := 0; i < 2; i++ {
		c := dialRaw(t, srv)
		h, f := c.open()
		attrs := map[string]string{}
		for _, a := range h.Attr {
			key := a.Name.Local
			if a.Name.Space != "" && a.Name.Space != "xmlns" {
				key = a.Name.Space + " " + key
			}
			if a.Name.Space == "xmlns" {
				key = "xmlns:" + a.Name.Local
			}
			attrs[key] = a.Value
		}
		if attrs["version"] != "1.0" {
			t.Errorf("stream header version = %q, want 1.0", attrs["version"])
		}
		id := attrs["id"]
		if id == "" {
			t.Errorf("stream header has no id")
		}
		if ids[id] {
			t.Errorf("stream id %q reused for a second stream", id)
		}
		ids[id] = true
		if attrs["from"] != testDomain {
			t.Errorf("stream header from = %q, want %s", attrs["from"], testDomain)
		}
		if attrs["xmlns"] != nsClient {
			t.Errorf("stream header default namespace = %q, want %s", attrs["xmlns"], nsClient)
		}
		if f.child(nsTLS, "starttls") == nil {
			t.Errorf("pre-TLS features %s do not offer STARTTLS", f)
		}
		checkLimits(t, "pre-TLS features", f)

		// RFC 6120 §4.4: the peer answers a closing tag with its own and
		// then closes the connection.
		c.send(`</stream:stream>`)
		c.expectClose()
	}

	// RFC 6120 §4.7.2: when the client's header carries 'from', the
	// server's response header MUST carry 'to' set to that bare JID.
	t.Run("to echoes from", func(t *testing.T) {
		c := dialRaw(t, srv)
		c.send(`<?xml version='1.0'?><stream:stream from='alice@localhost' to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`)
		h, err := c.readHeader()
		if err != nil {
			t.Fatal(err)
		}
		to := ""
		for _, a := range h.Attr {
			if a.Name.Space == "" && a.Name.Local == "to" {
				to = a.Value
			}
		}
		if to != "alice@localhost" {
			t.Errorf("response header to = %q after from='alice@localhost', want alice@localhost (RFC 6120 §4.7.2)", to)
		}
	})

	// RFC 6120 §4.7.5: a higher version from the client is answered with
	// the server's own (1.0), and it is up to the client to give up.
	t.Run("higher version", func(t *testing.T) {
		c := dialRaw(t, srv)
		c.send(`<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='2.1'>`)
		h, err := c.readHeader()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range h.Attr {
			if a.Name.Space == "" && a.Name.Local == "version" && a.Value != "1.0" {
				t.Errorf("response header version = %q to a 2.1 client, want 1.0", a.Value)
			}
		}
		if f := c.mustElement("<stream:features/>"); !f.is(nsStream, "features") {
			t.Errorf("a 2.1 client got %s, want the stream features", f)
		}
	})
}

// TestRawPlainNeedsTLS checks that PLAIN is not offered, and not accepted,
// before STARTTLS (RFC 6120 §13.8, §6.4.1), and that it is offered after.
func TestRawPlainNeedsTLS(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})

	t.Run("advertisement", func(t *testing.T) {
		c := dialRaw(t, srv)
		_, f := c.open()
		if slices.Contains(mechanisms(f), "PLAIN") {
			t.Errorf("PLAIN offered on a stream without TLS: %v", mechanisms(f))
		}
		tf := c.startTLS(srv)
		if !slices.Contains(mechanisms(tf), "PLAIN") {
			t.Errorf("PLAIN not offered after STARTTLS: %v", mechanisms(tf))
		}
		if tf.child(nsTLS, "starttls") != nil {
			t.Errorf("STARTTLS offered again after TLS was established: %s", tf)
		}
		checkLimits(t, "post-TLS features", tf)
		// XEP-0440: with -PLUS mechanisms the server names the channel
		// binding types it supports.
		plus := false
		for _, m := range mechanisms(tf) {
			plus = plus || strings.HasSuffix(m, "-PLUS")
		}
		cb := tf.child(nsSASLCB, "sasl-channel-binding")
		if plus && cb == nil {
			t.Errorf("-PLUS mechanisms offered without <sasl-channel-binding xmlns='%s'/>: %s", nsSASLCB, tf)
		}
		if cb != nil {
			var types []string
			for _, ch := range cb.Children {
				types = append(types, ch.attr("type"))
			}
			if !slices.Contains(types, "tls-exporter") || !slices.Contains(types, "tls-server-end-point") {
				t.Errorf("channel binding types %v, want tls-exporter and tls-server-end-point on TLS 1.3", types)
			}
		}
		c.send(`</stream:stream>`)
		c.expectClose()
	})

	t.Run("attempt", func(t *testing.T) {
		c := dialRaw(t, srv)
		c.open()
		c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` +
			base64.StdEncoding.EncodeToString([]byte("\x00alice\x00pw")) + `</auth>`)
		e := c.mustElement("the answer to PLAIN without TLS")
		if !e.is(nsSASL, "failure") {
			t.Fatalf("PLAIN without TLS answered with %s, want a SASL <failure/>", e)
		}
		// RFC 6120 §6.5.4 names encryption-required for this; a server that
		// simply does not list PLAIN may answer invalid-mechanism (§6.5.6).
		if e.child(nsSASL, "encryption-required") == nil && e.child(nsSASL, "invalid-mechanism") == nil {
			t.Errorf("PLAIN without TLS: %s, want encryption-required or invalid-mechanism", e)
		}
	})
}

// TestRawStreamErrors sends malformed or forbidden input and checks the
// stream error the server answers with (RFC 6120 §4.9.3) and that it then
// closes the stream. When the error is in the opening itself, the server
// must still send its own header first (RFC 6120 §4.9.1.2).
func TestRawStreamErrors(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})
	const goodHeader = `<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`
	cases := []struct {
		name string
		// opening is sent first; when afterFeatures is set, the server's
		// header and features are read before it is sent.
		opening       string
		afterFeatures string
		want          string
	}{
		{
			name:    "unhosted domain",
			opening: header("example.net"),
			want:    "host-unknown",
		},
		{
			name:    "wrong stream namespace",
			opening: `<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://example.com/streams' version='1.0'>`,
			want:    "invalid-namespace",
		},
		{
			name:    "wrong content namespace",
			opening: `<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:server:nope' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`,
			want:    "invalid-namespace",
		},
		{
			name:    "doctype",
			opening: `<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY boom 'x'>]>` + goodHeader[len(`<?xml version='1.0'?>`):],
			want:    "restricted-xml",
		},
		{
			name:          "comment",
			opening:       goodHeader,
			afterFeatures: `<!-- a comment -->`,
			want:          "restricted-xml",
		},
		{
			name:          "processing instruction",
			opening:       goodHeader,
			afterFeatures: `<?evil data?>`,
			want:          "restricted-xml",
		},
		{
			name:          "garbage",
			opening:       goodHeader,
			afterFeatures: `<iq type='get' id='1'><<<>>></iq>`,
			want:          "not-well-formed",
		},
		{
			name:          "mismatched end tag",
			opening:       goodHeader,
			afterFeatures: `<message><body>hi</message></body>`,
			want:          "not-well-formed",
		},
		{
			// RFC 6120 §11.6: UTF-8 only; §4.9.3.22 names the condition.
			name:    "non-UTF-8 encoding declaration",
			opening: `<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`,
			want:    "unsupported-encoding",
		},
		{
			// RFC 6120 §4.9.3.22: improperly encoded UTF-8 is also
			// unsupported-encoding.
			name:          "invalid UTF-8",
			opening:       goodHeader,
			afterFeatures: "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' a='\xff\xfe'/>",
			want:          "unsupported-encoding",
		},
		{
			// RFC 6120 §11.1: entity references other than the five
			// predefined ones are restricted XML.
			name:          "entity reference",
			opening:       goodHeader,
			afterFeatures: `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>&xxe;</auth>`,
			want:          "restricted-xml",
		},
		{
			name:          "stanza before authentication",
			opening:       goodHeader,
			afterFeatures: `<message to='alice@localhost' type='chat'><body>hi</body></message>`,
			want:          "not-authorized",
		},
		{
			name:          "iq before authentication",
			opening:       goodHeader,
			afterFeatures: `<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`,
			want:          "not-authorized",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, srv)
			c.send(tc.opening)
			if _, err := c.readHeader(); err != nil {
				t.Fatalf("the server must send its stream header before the error (RFC 6120 §4.9.1.2): %v", err)
			}
			if tc.afterFeatures != "" {
				if f := c.mustElement("<stream:features/>"); !f.is(nsStream, "features") {
					t.Fatalf("got %s, want <stream:features/>", f)
				}
				c.send(tc.afterFeatures)
			}
			c.expectStreamError(tc.want)
		})
	}
}

// TestRawSessionClose checks that an authenticated, bound session over TLS
// answers </stream:stream> with its own and closes (RFC 6120 §4.4), and that
// the features after authentication offer bind and keep the XEP-0478 limit.
func TestRawSessionClose(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})
	c := dialRaw(t, srv)
	features, full := c.login(srv, "alice", "pw", "raw")
	if full != "alice@"+testDomain+"/raw" {
		t.Errorf("bound %q, want alice@%s/raw", full, testDomain)
	}
	if features.child(nsBind, "bind") == nil {
		t.Errorf("post-authentication features %s do not offer bind", features)
	}
	if len(mechanisms(features)) != 0 {
		t.Errorf("SASL offered again after authentication: %s", features)
	}
	checkLimits(t, "post-authentication features", features)

	// A ping proves the session is live before it is closed.
	c.send(`<iq type='get' id='ping1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if r := c.mustElement("the ping result"); !r.is(nsClient, "iq") || r.attr("type") != "result" || r.attr("id") != "ping1" {
		t.Fatalf("ping answered with %s", r)
	}
	c.send(`</stream:stream>`)
	c.expectClose()
}

// TestRawStanzaLimit sends a stanza larger than the advertised XEP-0478
// max-bytes and expects a <policy-violation/> stream error, both before
// authentication and in a bound session.
func TestRawStanzaLimit(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})
	big := strings.Repeat("x", wantMaxBytes+16*1024)

	// The server may stop reading as soon as the limit is crossed, so the
	// stanza is written concurrently and a failed write is not an error:
	// the stream error is what is checked.
	sendBig := func(c *rawConn, stanza string) {
		c.trans.WriteString("C: " + clip(stanza) + "\n")
		conn := c.conn
		go func() {
			_ = conn.SetWriteDeadline(time.Now().Add(rawTimeout))
			_, _ = io.WriteString(conn, stanza)
		}()
	}

	t.Run("bound session", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv)
		_, full := c.login(srv, "alice", "pw", "big")
		sendBig(c, fmt.Sprintf(`<message to='%s' type='chat'><body>%s</body></message>`, full, big))
		c.expectStreamError("policy-violation")
	})

	t.Run("before authentication", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv)
		_, f := c.open()
		checkLimits(t, "pre-TLS features", f)
		sendBig(c, fmt.Sprintf(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>%s</auth>`, big))
		c.expectStreamError("policy-violation")
	})

	t.Run("just under the limit", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, srv)
		_, full := c.login(srv, "alice", "pw", "fits")
		// A stanza comfortably below the limit is delivered: the limit is
		// on size, not on every large stanza.
		body := strings.Repeat("y", wantMaxBytes/2)
		c.send(fmt.Sprintf(`<message to='%s' type='chat' id='m1'><body>%s</body></message>`, full, body))
		m := c.mustElement("the message sent to self")
		if b := m.child(nsClient, "body"); !m.is(nsClient, "message") || b == nil || len(b.Text) != len(body) {
			t.Fatalf("a %d-byte body to self came back as %.200s", len(body), m)
		}
	})
}

// TestRawBoundStreamErrors checks the stream errors a bound session gets for
// input the server must not accept there (RFC 6120 §4.9.3, §8.1.2.1, §11).
func TestRawBoundStreamErrors(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw", "bob": "pw"}, NoIPv6: true})
	cases := []struct {
		name, send, want string
	}{
		// §8.1.2.1: a 'from' other than the session's own JID is spoofing.
		{"spoofed from", `<message from='bob@localhost/x' to='alice@localhost'><body>it was bob</body></message>`, "invalid-from"},
		{"spoofed bare from", `<message from='bob@localhost' to='alice@localhost'><body>it was bob</body></message>`, "invalid-from"},
		// §4.9.3.24: only message, presence and iq are stanzas.
		{"unknown top-level element", `<query xmlns='jabber:client'/>`, "unsupported-stanza-type"},
		// §4.9.3.24 covers "does not understand the namespace" as well as
		// §4.9.3.10 does a wrong content namespace; either is right.
		{"stanza in a foreign namespace", `<message xmlns='jabber:server' to='alice@localhost'><body>x</body></message>`, "unsupported-stanza-type|invalid-namespace"},
		{"mismatched end tag", `<message to='alice@localhost'><body>x</message></body>`, "not-well-formed"},
		{"entity reference", `<message to='alice@localhost'><body>&xxe;</body></message>`, "restricted-xml"},
		{"comment", `<message to='alice@localhost'><!-- hi --><body>x</body></message>`, "restricted-xml"},
		{"invalid UTF-8", "<message to='alice@localhost'><body>\xc3\x28</body></message>", "unsupported-encoding"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, srv)
			// Each case binds its own resource: a shared one would make the
			// parallel cases replace one another with <conflict/>.
			c.login(srv, "alice", "pw", fmt.Sprintf("case%d", i))
			c.send(tc.send)
			c.expectStreamError(tc.want)
		})
	}
}

// TestRawStanzaErrors checks stanza-level answers in a bound session: a
// character reference is data, not restricted XML; an invalid 'to' gets
// jid-malformed (RFC 6120 §8.3.3.8); a get with two payloads gets
// bad-request (§8.2.3); an iq to an unknown local user gets
// service-unavailable (RFC 6121 §8.5.1); and a whitespace keepalive
// between stanzas is accepted.
func TestRawStanzaErrors(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})
	c := dialRaw(t, srv)
	_, full := c.login(srv, "alice", "pw", "r")

	iqError := func(what, id string) string {
		t.Helper()
		e := c.mustElement(what)
		if !e.is(nsClient, "iq") || e.attr("id") != id {
			t.Fatalf("%s answered with %s", what, e)
		}
		if e.attr("type") != "error" {
			t.Errorf("%s answered with %s, want an error", what, e)
			return ""
		}
		if errEl := e.child(nsClient, "error"); errEl != nil {
			for _, ch := range errEl.Children {
				if ch.XMLName.Space == "urn:ietf:params:xml:ns:xmpp-stanzas" && ch.XMLName.Local != "text" {
					return ch.XMLName.Local
				}
			}
		}
		t.Errorf("%s: error %s has no RFC 6120 condition", what, e)
		return ""
	}

	t.Run("character reference", func(t *testing.T) {
		c.send(" \n\t ") // a whitespace keepalive
		c.send(fmt.Sprintf(`<message to='%s' id='cr'><body>&#x41;&#66;&lt;&amp;&gt;&quot;&apos;</body></message>`, full))
		m := c.mustElement("the message to self")
		if b := m.child(nsClient, "body"); b == nil || b.Text != `AB<&>"'` {
			t.Errorf("body came back as %s, want AB<&>\"'", m)
		}
	})

	t.Run("malformed to", func(t *testing.T) {
		c.send(`<iq type='get' id='jm' to='a@b@c'><ping xmlns='urn:xmpp:ping'/></iq>`)
		if got := iqError("an iq to a@b@c", "jm"); got != "jid-malformed" {
			t.Errorf("iq to a@b@c: condition %q, want jid-malformed", got)
		}
	})

	t.Run("two payloads", func(t *testing.T) {
		c.send(`<iq type='get' id='two' to='localhost'><ping xmlns='urn:xmpp:ping'/><query xmlns='jabber:iq:version'/></iq>`)
		if got := iqError("an iq get with two payloads", "two"); got != "bad-request" {
			t.Errorf("iq get with two payloads: condition %q, want bad-request", got)
		}
	})

	t.Run("unknown user", func(t *testing.T) {
		c.send(`<iq type='get' id='nu' to='nobody@localhost/x'><ping xmlns='urn:xmpp:ping'/></iq>`)
		if got := iqError("an iq to a user that does not exist", "nu"); got != "service-unavailable" {
			t.Errorf("iq to nobody@localhost/x: condition %q, want service-unavailable", got)
		}
	})

	c.send(`</stream:stream>`)
	c.expectClose()
}
