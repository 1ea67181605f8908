package component_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"impetus/internal/component"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage/memory"
	"impetus/internal/xmlstream"
)

// peer is the component's end of a connection to the manager.
type peer struct {
	t  *testing.T
	c  net.Conn
	r  *bufio.Reader
	id string
}

func connect(t *testing.T, m *component.Manager, domain string) *peer {
	t.Helper()
	srvConn, cliConn := net.Pipe()
	t.Cleanup(func() { cliConn.Close() })
	go func() {
		dec := xmlstream.NewDecoder(srvConn, xmlstream.Limits{})
		hdr, err := dec.ReadHeader()
		if err != nil {
			srvConn.Close()
			return
		}
		m.Serve(context.Background(), srvConn, dec, hdr)
	}()
	p := &peer{t: t, c: cliConn, r: bufio.NewReader(cliConn)}
	_ = cliConn.SetDeadline(time.Now().Add(10 * time.Second))
	p.send("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='" + domain + "'>")
	hdr := p.until("'>")
	i := strings.Index(hdr, "id='")
	p.id = hdr[i+4 : i+4+strings.Index(hdr[i+4:], "'")]
	return p
}

func (p *peer) send(s string) {
	p.t.Helper()
	if _, err := io.WriteString(p.c, s); err != nil {
		p.t.Fatal(err)
	}
}

// until reads up to and including the first occurrence of end.
func (p *peer) until(end string) string {
	p.t.Helper()
	var b strings.Builder
	for !strings.HasSuffix(b.String(), end) {
		c, err := p.r.ReadByte()
		if err != nil {
			p.t.Fatalf("reading until %q: %v (got %q)", end, err, b.String())
		}
		b.WriteByte(c)
	}
	return b.String()
}

func setup(t *testing.T) (*rostertest.Server, *component.Manager) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	m := component.New(component.Config{
		Core:    srv.Core,
		Secrets: func() map[string]string { return map[string]string{"gw.example.com": "secret"} },
		Log:     slog.New(slog.DiscardHandler),
	})
	t.Cleanup(m.Close)
	return srv, m
}

func TestComponentRouting(t *testing.T) {
	srv, m := setup(t)
	p := connect(t, m, "gw.example.com")
	p.send("<handshake>" + component.Handshake(p.id, "secret") + "</handshake>")
	if got := p.until("/>"); got != "<handshake/>" {
		t.Fatalf("handshake answer %q", got)
	}
	// Listed in the account domain's disco items while connected.
	if items := srv.Hosts["example.com"].Items(); len(items) != 1 || items[0].JID != "gw.example.com" {
		t.Fatalf("items %v", items)
	}
	alice := srv.Connect("alice@example.com/a")
	alice.Input(`<message to='bot@gw.example.com' type='chat'><body>hi</body></message>`)
	got := p.until("</message>")
	if !strings.Contains(got, `<message to="bot@gw.example.com" type="chat" from="alice@example.com/a"><body>hi</body></message>`) {
		t.Fatalf("component got %q", got)
	}
	p.send("<message from='bot@gw.example.com' to='alice@example.com/a' type='chat'><body>hello</body></message>")
	// An iq to the server gets its answer on the component stream.
	p.send("<iq type='get' id='p1' from='gw.example.com' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
	got = p.until("</iq>")
	if !strings.Contains(got, `id="p1"`) {
		t.Fatalf("iq answer %q", got)
	}
	msgs := strings.Join(alice.Take(), "")
	if !strings.Contains(msgs, `from="bot@gw.example.com"`) || !strings.Contains(msgs, "<body>hello</body>") {
		t.Fatalf("alice got %q", msgs)
	}
	// A stanza from another domain ends the stream.
	p.send("<message from='mallory@example.com' to='alice@example.com'><body>x</body></message>")
	if got := p.until("</stream:stream>"); !strings.Contains(got, "invalid-from") {
		t.Fatalf("spoofed from answered %q", got)
	}
}

func TestComponentHandshakeFailures(t *testing.T) {
	_, m := setup(t)
	p := connect(t, m, "gw.example.com")
	p.send("<handshake>" + component.Handshake(p.id, "wrong") + "</handshake>")
	if got := p.until("</stream:stream>"); !strings.Contains(got, "not-authorized") {
		t.Fatalf("wrong secret answered %q", got)
	}
	p = connect(t, m, "nope.example.com")
	if got := p.until("</stream:stream>"); !strings.Contains(got, "host-unknown") {
		t.Fatalf("unknown domain answered %q", got)
	}
	// A second component for a connected domain is refused.
	first := connect(t, m, "gw.example.com")
	first.send("<handshake>" + component.Handshake(first.id, "secret") + "</handshake>")
	first.until("<handshake/>")
	second := connect(t, m, "gw.example.com")
	second.send("<handshake>" + component.Handshake(second.id, "secret") + "</handshake>")
	if got := second.until("</stream:stream>"); !strings.Contains(got, "conflict") {
		t.Fatalf("second component answered %q", got)
	}
}
