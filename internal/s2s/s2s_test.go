package s2s

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// node is one in-process server for the tests: a manager, the domains it hosts and what was
// routed to it. Nodes reach each other over net.Pipe through a shared directory.
type node struct {
	m       *Manager
	domains []string
	tls     *tls.Config
	routed  chan *stanza.Element
	addr    string // where the node accepts server streams
}

type network struct {
	mu    sync.Mutex
	nodes map[string]*node // by domain
	down  map[string]bool  // domains whose server cannot be reached
}

func newNetwork() *network {
	return &network{nodes: make(map[string]*node), down: make(map[string]bool)}
}

func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("S2S_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (n *network) add(t testing.TB, mod func(*Config), domains ...string) *node {
	nd := &node{domains: domains, routed: make(chan *stanza.Element, 16)}
	cfg := Config{
		Hosted:                   func(d string) bool { return slices.Contains(domains, d) },
		Route:                    func(_ context.Context, el *stanza.Element) error { nd.routed <- el; return nil },
		DialbackWithoutValidCert: true,
		ConnectTimeout:           3 * time.Second,
		Connect:                  n.connect,
		Log:                      testLog(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	nd.m = New(cfg)
	// Each node listens on a loopback port, so streams run over real sockets as in production
	// (net.Pipe's unbuffered writes would make both ends wait for each other on close).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nd.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveConn(nd, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); nd.m.Close(2 * time.Second) })
	n.mu.Lock()
	for _, d := range domains {
		n.nodes[d] = nd
	}
	n.mu.Unlock()
	return nd
}

// connect is every node's Connect: a connection to the target node's listener.
func (n *network) connect(ctx context.Context, domain string) (net.Conn, error) {
	n.mu.Lock()
	nd, down := n.nodes[domain], n.down[domain]
	n.mu.Unlock()
	if nd == nil || down {
		return nil, errors.New("no route to " + domain)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", nd.addr)
}

func serveConn(nd *node, c net.Conn) {
	dec := xmlstream.NewDecoder(c, xmlstream.Limits{})
	hdr, err := dec.ReadHeader()
	if err != nil {
		c.Close()
		return
	}
	nd.m.Serve(context.Background(), c, dec, hdr, nd.tls)
}

func message(from, to, body string) *stanza.Element {
	return stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: from}, stanza.Attr{Name: "to", Value: to}, stanza.Attr{Name: "type", Value: "chat"}).
		AddChild(stanza.NewElement(stanza.NSClient, "body").AddText(body))
}

func send(t *testing.T, nd *node, el *stanza.Element) error {
	t.Helper()
	to, err := jid.Parse(el.Attr("to"))
	if err != nil {
		t.Fatal(err)
	}
	return nd.m.Send(context.Background(), el, to)
}

func receive(t *testing.T, nd *node) *stanza.Element {
	t.Helper()
	select {
	case el := <-nd.routed:
		return el
	case <-time.After(5 * time.Second):
		t.Fatal("nothing routed")
		return nil
	}
}

func TestDialbackBothDirections(t *testing.T) {
	n := newNetwork()
	a := n.add(t, nil, "a.test")
	b := n.add(t, nil, "b.test")
	if err := send(t, a, message("alice@a.test/r", "bob@b.test", "hi bob")); err != nil {
		t.Fatal(err)
	}
	got := receive(t, b)
	if got.Space != stanza.NSClient || got.Attr("from") != "alice@a.test/r" || got.Child(stanza.NSClient, "body").Text() != "hi bob" {
		t.Fatalf("routed %s", got)
	}
	if err := send(t, b, message("bob@b.test", "alice@a.test", "hi alice")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, a); got.Child(stanza.NSClient, "body").Text() != "hi alice" {
		t.Fatalf("routed %s", got)
	}
	// The established stream carries the next stanza without a new dialback.
	if err := send(t, a, message("alice@a.test", "bob@b.test", "again")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, b); got.Child(stanza.NSClient, "body").Text() != "again" {
		t.Fatalf("routed %s", got)
	}
}

func TestBounceWhenUnreachable(t *testing.T) {
	n := newNetwork()
	a := n.add(t, nil, "a.test")
	if err := send(t, a, message("alice@a.test", "bob@nowhere.test", "lost?")); err != nil {
		t.Fatal(err)
	}
	got := receive(t, a)
	if got.Attr("type") != "error" || got.Attr("to") != "alice@a.test" || stanza.ParseError(got).Condition != "remote-server-not-found" {
		t.Fatalf("bounce %s", got)
	}
	// Within the backoff the next stanza is refused straight away.
	err := send(t, a, message("alice@a.test", "bob@nowhere.test", "again"))
	var serr *stanza.Error
	if !errors.As(err, &serr) || serr.Condition != "remote-server-not-found" {
		t.Fatalf("err = %v", err)
	}
}

func TestListedPolicyRefusesOutbound(t *testing.T) {
	n := newNetwork()
	a := n.add(t, func(c *Config) { c.RemoteAllowed = func(d string) bool { return d == "b.test" } }, "a.test")
	n.add(t, nil, "b.test")
	err := send(t, a, message("alice@a.test", "x@c.test", "no"))
	var serr *stanza.Error
	if !errors.As(err, &serr) || serr.Condition != "remote-server-not-found" {
		t.Fatalf("err = %v", err)
	}
}

func TestIdleStreamClosed(t *testing.T) {
	n := newNetwork()
	a := n.add(t, func(c *Config) { c.IdleTime = 100 * time.Millisecond }, "a.test")
	b := n.add(t, nil, "b.test")
	if err := send(t, a, message("alice@a.test", "bob@b.test", "1")); err != nil {
		t.Fatal(err)
	}
	receive(t, b)
	deadline := time.Now().Add(3 * time.Second)
	for {
		a.m.mu.Lock()
		open := len(a.m.out)
		a.m.mu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle stream not closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A new stanza opens a new stream.
	if err := send(t, a, message("alice@a.test", "bob@b.test", "2")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, b); got.Child(stanza.NSClient, "body").Text() != "2" {
		t.Fatalf("routed %s", got)
	}
}

// rawPeer is a hand-driven server stream to a node, for the receiving side's reactions.
type rawPeer struct {
	t   *testing.T
	c   net.Conn
	dec *xmlstream.Decoder
	id  string
}

func dialRaw(t *testing.T, nd *node, from, to string) *rawPeer {
	t.Helper()
	a, b := net.Pipe()
	go serveConn(nd, b)
	t.Cleanup(func() { a.Close() })
	p := &rawPeer{t: t, c: a, dec: xmlstream.NewDecoder(a, xmlstream.Limits{})}
	_ = a.SetDeadline(time.Now().Add(10 * time.Second))
	p.write(string(appendHeader(nil, from, to, "")))
	hdr, err := p.dec.ReadHeader()
	if err != nil {
		t.Fatal(err)
	}
	p.id = hdr.ID
	f := p.read()
	if f.Local != "features" || f.Child(NSDialbackFeature, "dialback") == nil {
		t.Fatalf("features %s", f)
	}
	return p
}

func (p *rawPeer) write(s string) {
	p.t.Helper()
	if _, err := io.WriteString(p.c, s); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) read() *stanza.Element {
	p.t.Helper()
	el, err := p.dec.ReadElement()
	if err != nil {
		p.t.Fatal(err)
	}
	return el
}

func (p *rawPeer) result(from, to, key string) *stanza.Element {
	p.t.Helper()
	p.write("<db:result from='" + from + "' to='" + to + "'>" + key + "</db:result>")
	for {
		el := p.read()
		if el.Space == stanza.NSDialback && el.Local == "result" && el.Attr("to") == from {
			return el
		}
	}
}

func TestReceivingAndPiggyback(t *testing.T) {
	n := newNetwork()
	a := n.add(t, func(c *Config) {
		c.Secret = func(d string) []byte { return []byte("secret of " + d) }
	}, "a.test", "a2.test")
	b := n.add(t, nil, "b.test", "b2.test")
	p := dialRaw(t, b, "a.test", "b.test")
	keyFor := func(local, remote string) string { return Key([]byte("secret of "+local), remote, local, p.id) }
	if r := p.result("a.test", "b.test", keyFor("a.test", "b.test")); r.Attr("type") != "valid" {
		t.Fatalf("result %s", r)
	}
	// Two more pairs on the same stream (XEP-0220 §4.4): another originating domain, and
	// another receiving domain.
	if r := p.result("a2.test", "b.test", keyFor("a2.test", "b.test")); r.Attr("type") != "valid" {
		t.Fatalf("piggybacked result %s", r)
	}
	if r := p.result("a.test", "b2.test", keyFor("a.test", "b2.test")); r.Attr("type") != "valid" {
		t.Fatalf("piggybacked result %s", r)
	}
	p.write("<message from='x@a2.test' to='y@b.test'><body>one</body></message>")
	p.write("<message from='x@a.test' to='y@b2.test'><body>two</body></message>")
	for _, want := range []string{"one", "two"} {
		if got := receive(t, b); got.Child(stanza.NSClient, "body").Text() != want {
			t.Fatalf("routed %s", got)
		}
	}
	// a2.test was verified for b.test only.
	p.write("<message from='x@a2.test' to='y@b2.test'><body>three</body></message>")
	if el := p.read(); el.Local != "error" || el.Child(stanza.NSStreamErr, "invalid-from") == nil {
		t.Fatalf("got %s", el)
	}
	_ = a
}

func TestWrongKeyRefused(t *testing.T) {
	n := newNetwork()
	n.add(t, nil, "a.test")
	b := n.add(t, nil, "b.test")
	p := dialRaw(t, b, "a.test", "b.test")
	if r := p.result("a.test", "b.test", strings.Repeat("0", 64)); r.Attr("type") != "invalid" {
		t.Fatalf("result %s", r)
	}
	p.write("<message from='mallory@a.test' to='bob@b.test'><body>forged</body></message>")
	if el := p.read(); el.Local != "error" || el.Child(stanza.NSStreamErr, "not-authorized") == nil {
		t.Fatalf("got %s", el)
	}
	select {
	case el := <-b.routed:
		t.Fatalf("forged stanza routed: %s", el)
	default:
	}
}

func TestDialbackErrors(t *testing.T) {
	n := newNetwork()
	b := n.add(t, func(c *Config) { c.RemoteAllowed = func(d string) bool { return d != "banned.test" } }, "b.test")
	p := dialRaw(t, b, "a.test", "b.test")
	cases := []struct{ from, to, cond string }{
		{"a.test", "other.test", "item-not-found"},
		{"banned.test", "b.test", "policy-violation"},
		{"a.test", "b.test", "remote-server-not-found"}, // a.test has no server in this network
	}
	for _, c := range cases {
		r := p.result(c.from, c.to, "k")
		if r.Attr("type") != "error" || stanza.ParseError(r) == nil || stanza.ParseError(r).Condition != c.cond {
			t.Fatalf("%s→%s: %s", c.from, c.to, r)
		}
	}
	p.write("<message from='x@a.test' to='y@b.test'/>")
	if el := p.read(); el.Child(stanza.NSStreamErr, "not-authorized") == nil {
		t.Fatalf("got %s", el)
	}
}

func TestAuthoritative(t *testing.T) {
	n := newNetwork()
	a := n.add(t, func(c *Config) { c.Secret = func(string) []byte { return []byte("s") } }, "a.test")
	p := dialRaw(t, a, "b.test", "a.test")
	good := Key([]byte("s"), "b.test", "a.test", "abc")
	for _, c := range []struct{ to, key, typ string }{
		{"a.test", good, "valid"},
		{"a.test", strings.Repeat("0", 64), "invalid"},
		{"z.test", good, "error"},
	} {
		p.write("<db:verify from='b.test' to='" + c.to + "' id='abc'>" + c.key + "</db:verify>")
		el := p.read()
		if el.Local != "verify" || el.Attr("type") != c.typ || el.Attr("id") != "abc" || el.Attr("to") != "b.test" {
			t.Fatalf("%+v: %s", c, el)
		}
	}
}

func TestStreamHeaderChecks(t *testing.T) {
	n := newNetwork()
	b := n.add(t, nil, "b.test")
	for _, c := range []struct{ hdr, cond string }{
		{string(appendHeader(nil, "a.test", "", "")), "improper-addressing"},
		{string(appendHeader(nil, "a.test", "c.test", "")), "host-unknown"},
		{string(appendHeader(nil, "a@a.test", "b.test", "")), "invalid-from"},
	} {
		a, bb := net.Pipe()
		go serveConn(b, bb)
		_ = a.SetDeadline(time.Now().Add(5 * time.Second))
		go io.WriteString(a, c.hdr)
		dec := xmlstream.NewDecoder(a, xmlstream.Limits{})
		if _, err := dec.ReadHeader(); err != nil {
			t.Fatal(err)
		}
		el, err := dec.ReadElement()
		if err != nil || el.Child(stanza.NSStreamErr, c.cond) == nil {
			t.Fatalf("%s: %v %v", c.cond, el, err)
		}
		a.Close()
	}
}
