package httpd

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"impetus/internal/config"
	"impetus/internal/xmlstream"
)

func TestSplitterChunks(t *testing.T) {
	var sp splitter
	in := `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='localhost' version='1.0' xml:lang='en'>` +
		`<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>PLAIN</mechanism></mechanisms></stream:features>` +
		`<message to="a@b" id="x&apos;>"><body>1 &lt; 2</body></message><presence/>` + `</stream:stream>`
	// Fed in two arbitrary pieces, as a writer that splits its output might.
	cut := 200
	c1, err := sp.split([]byte(in[:cut]))
	if err != nil {
		t.Fatal(err)
	}
	c2, err := sp.split([]byte(in[cut:]))
	if err != nil {
		t.Fatal(err)
	}
	chunks := append(c1, c2...)
	if len(chunks) != 5 {
		t.Fatalf("got %d chunks, want 5", len(chunks))
	}
	if chunks[0].kind != chunkHeader || chunks[0].header.ID != "abc" || chunks[0].header.From != "localhost" {
		t.Fatalf("header chunk: %+v", chunks[0])
	}
	if got := string(openElement(chunks[0].header)); got != `<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" from="localhost" id="abc" version="1.0" xml:lang="en"/>` {
		t.Fatalf("open: %s", got)
	}
	if got := string(chunks[1].data); !strings.HasPrefix(got, `<stream:features xmlns:stream="http://etherx.jabber.org/streams">`) {
		t.Fatalf("features: %s", got)
	}
	if got := string(chunks[2].data); got != `<message xmlns="jabber:client" to="a@b" id="x&apos;>"><body>1 &lt; 2</body></message>` {
		t.Fatalf("message: %s", got)
	}
	if got := string(chunks[3].data); got != `<presence xmlns="jabber:client"/>` {
		t.Fatalf("presence: %s", got)
	}
	if chunks[4].kind != chunkClose {
		t.Fatalf("last chunk: %+v", chunks[4])
	}
	// Every element chunk parses on its own, as RFC 7395 requires of a message.
	for _, c := range chunks[1:4] {
		if _, _, err := parseFramed(c.data, xmlstream.Limits{}); err != nil {
			t.Errorf("%s: %v", c.data, err)
		}
	}
}

func TestParseFramed(t *testing.T) {
	good := []string{
		`<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>`,
		"<?xml version='1.0'?>\n<message xmlns='jabber:client'><body><![CDATA[<x>]]></body></message>\n",
		`<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>`,
	}
	for _, g := range good {
		if _, _, err := parseFramed([]byte(g), xmlstream.Limits{}); err != nil {
			t.Errorf("%q: %v", g, err)
		}
	}
	bad := []string{
		``, `text`, `<a/><b/>`, `<message xmlns='jabber:client'>`, `<a></b>`, `<a/>trailing`,
		`<message xmlns='jabber:client'><body>`,
	}
	for _, b := range bad {
		if _, _, err := parseFramed([]byte(b), xmlstream.Limits{}); err == nil {
			t.Errorf("%q: accepted", b)
		}
	}
	// The stream limits apply to a message.
	big := `<message xmlns='jabber:client'><body>` + strings.Repeat("x", 2000) + `</body></message>`
	if _, _, err := parseFramed([]byte(big), xmlstream.Limits{MaxStanzaSize: 1000}); err == nil {
		t.Error("oversized message accepted")
	}
}

func TestOpenToHeader(t *testing.T) {
	el, _, err := parseFramed([]byte(`<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="local&amp;host" version="1.0" xml:lang="de"/>`), xmlstream.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got := string(openToHeader(el))
	want := `<stream:stream xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams" to="local&amp;host" version="1.0" xml:lang="de">`
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

func FuzzSplitter(f *testing.F) {
	f.Add([]byte(`<stream:stream id='1'><a x="'>"><b/>t</a></stream:stream>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sp := splitter{max: 1 << 16}
		_, _ = sp.split(b)
		_, _, _ = parseFramed(b, xmlstream.Limits{})
	})
}

func TestDecodeSettings(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "impetus.conf")
	conf := `http_listener {
  public_url = "https://xmpp.example.com/"
  bosh_max_wait = 30
  concurrency = 4
  Listen "127.0.0.1:5280" { }
  Listen "[::1]:5281" { tls_certificate = "/etc/web.pem" }
  Peer "10.0.0.0/8" { }
}
`
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, warnings, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 2 {
		t.Errorf("warnings %v, want two for Momentum's concurrency and Peer", warnings)
	}
	set, err := Decode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if set.PublicURL != "https://xmpp.example.com" || set.BOSHMaxWait != 30*time.Second || len(set.Listens) != 2 ||
		set.Listens[0].TLS() || !set.Listens[1].TLS() || set.WebSocketPath != DefaultWebSocketPath {
		t.Fatalf("settings %+v", set)
	}
	if got := set.BaseURL("example.com"); got != "https://xmpp.example.com" {
		t.Errorf("BaseURL %s", got)
	}
	set.PublicURL = ""
	if got := set.BaseURL("example.com"); got != "http://example.com:5280" {
		t.Errorf("BaseURL without public_url %s", got)
	}
}

func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(inner, 0, 1)
	defer l.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	c1, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	s1 := <-accepted
	// A second connection from the same address is closed at once.
	c2, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("second connection was served")
	}
	c2.Close()
	// Once the first one closes, the address may connect again.
	s1.Close()
	c3, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	select {
	case s3 := <-accepted:
		s3.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("connection after release not accepted")
	}
}
