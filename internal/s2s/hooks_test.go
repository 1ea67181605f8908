package s2s

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"impetus/internal/c2s"
	"impetus/internal/metrics"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// A domain asserted in dialback is checked by connecting to it as our resolver finds it: one
// that does not resolve is refused, one found through SRV and A records of that resolver (and
// nowhere else) is verified.
func TestAssertedDomainMustResolve(t *testing.T) {
	n := newNetwork()
	peer := n.add(t, func(c *Config) { c.Secret = func(string) []byte { return []byte("peer secret") } }, "peer.test")
	_, portStr, _ := net.SplitHostPort(peer.addr)
	port, _ := strconv.Atoi(portStr)
	r := dnsZone(t, map[string][]dnsmessage.SRVResource{
		"_xmpp-server._tcp.peer.test.": {{Port: uint16(port), Target: dnsmessage.MustNewName("xmpp.peer.test.")}},
	}, map[string][4]byte{"xmpp.peer.test.": {127, 0, 0, 1}})
	b := n.add(t, func(c *Config) { c.Connect = nil; c.Resolver = r }, "b.test")

	p := dialRaw(t, b, "nowhere.test", "b.test")
	res := p.result("nowhere.test", "b.test", Key([]byte("any"), "b.test", "nowhere.test", p.id))
	if res.Attr("type") != "error" || stanza.ParseError(res) == nil || stanza.ParseError(res).Condition != "remote-server-not-found" {
		t.Fatalf("unresolvable domain: %s", res)
	}
	p.write("<message from='x@nowhere.test' to='y@b.test'/>")
	if el := p.read(); el.Child(stanza.NSStreamErr, "not-authorized") == nil {
		t.Fatalf("stanza from an unverified domain answered with %s", el)
	}

	p = dialRaw(t, b, "peer.test", "b.test")
	if res := p.result("peer.test", "b.test", "0000"); res.Attr("type") != "invalid" {
		t.Fatalf("wrong key for a resolvable domain: %s", res)
	}
	p = dialRaw(t, b, "peer.test", "b.test")
	if res := p.result("peer.test", "b.test", Key([]byte("peer secret"), "b.test", "peer.test", p.id)); res.Attr("type") != "valid" {
		t.Fatalf("right key for a resolvable domain: %s", res)
	}
}

// Stanzas that wait for a stream whose setup fails come back to their senders, each with
// remote-server-not-found when the peer cannot be reached.
func TestQueuedStanzasBounceNotFound(t *testing.T) {
	gate := make(chan struct{})
	n := newNetwork()
	a := n.add(t, func(c *Config) {
		c.Connect = func(ctx context.Context, _ string) (net.Conn, error) {
			<-gate
			return nil, errors.New("connection refused")
		}
	}, "a.test")
	for i := range 3 {
		if err := send(t, a, message("alice@a.test/r", "bob@far.test", strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	for i := range 3 {
		got := receive(t, a)
		if got.Attr("type") != "error" || got.Attr("to") != "alice@a.test/r" || stanza.ParseError(got).Condition != "remote-server-not-found" ||
			got.Child(stanza.NSClient, "body").Text() != strconv.Itoa(i) {
			t.Fatalf("bounce %d: %s", i, got)
		}
	}
}

// A peer that accepts the connection but never answers makes the waiting stanzas bounce with
// remote-server-timeout once s2s_connect_timeout passes.
func TestQueuedStanzasBounceTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held sync.WaitGroup
	held.Add(1)
	go func() {
		defer held.Done()
		c, err := ln.Accept()
		if err == nil {
			// Read and say nothing until the other side gives up.
			_, _ = c.Read(make([]byte, 4096))
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			c.Close()
		}
	}()
	n := newNetwork()
	a := n.add(t, func(c *Config) {
		c.ConnectTimeout = 300 * time.Millisecond
		c.Connect = func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		}
	}, "a.test")
	for i := range 2 {
		if err := send(t, a, message("alice@a.test", "bob@slow.test", strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		got := receive(t, a)
		if got.Attr("type") != "error" || stanza.ParseError(got).Condition != "remote-server-timeout" {
			t.Fatalf("bounce %d: %s", i, got)
		}
	}
	held.Wait()
}

// recorder is an Observer that keeps what it saw.
type recorder struct {
	mu        sync.Mutex
	received  []string
	delivered []string
}

func (r *recorder) StanzaReceived(_ string, el *stanza.Element) {
	r.mu.Lock()
	r.received = append(r.received, el.Local+":"+el.Attr("from"))
	r.mu.Unlock()
}

func (r *recorder) StanzaDelivered(_ string, el *stanza.Element) {
	r.mu.Lock()
	r.delivered = append(r.delivered, el.Local+":"+el.Attr("from"))
	r.mu.Unlock()
}

func (r *recorder) snapshot() (in, out []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.received...), append([]string(nil), r.delivered...)
}

// waitLinks waits, with a bound, until the s2s link gauges have the given values.
func waitLinks(t *testing.T, in, out int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := metrics.Default.Snapshot()
		if s.S2SInbound == in && s.S2SOutbound == out {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("links in %d out %d, want %d and %d", s.S2SInbound, s.S2SOutbound, in, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The observer sees stanzas where they are queued for a peer and where an authenticated
// stream reads them; the link gauges count each authenticated stream once, up and down.
func TestObserverAndLinkMetrics(t *testing.T) {
	base := metrics.Default.Snapshot()
	n := newNetwork()
	ra, rb := &recorder{}, &recorder{}
	a := n.add(t, func(c *Config) { c.Observer = ra; c.IdleTime = 200 * time.Millisecond }, "a.test")
	b := n.add(t, func(c *Config) { c.Observer = rb }, "b.test")
	for _, body := range []string{"1", "2"} {
		if err := send(t, a, message("alice@a.test", "bob@b.test", body)); err != nil {
			t.Fatal(err)
		}
		receive(t, b)
	}
	if _, out := ra.snapshot(); len(out) != 2 || out[0] != "message:alice@a.test" {
		t.Fatalf("a delivered %v", out)
	}
	if in, _ := rb.snapshot(); len(in) != 2 || in[0] != "message:alice@a.test" {
		t.Fatalf("b received %v", in)
	}
	waitLinks(t, base.S2SInbound+1, base.S2SOutbound+1)
	// The idle outbound stream closes, and b's inbound stream ends with it: both links go
	// down exactly once.
	waitLinks(t, base.S2SInbound, base.S2SOutbound)
	// A stanza reopens the stream on demand, and a link goes up again.
	if err := send(t, a, message("alice@a.test", "bob@b.test", "3")); err != nil {
		t.Fatal(err)
	}
	receive(t, b)
	a.m.Close(2 * time.Second)
	b.m.Close(2 * time.Second)
	waitLinks(t, base.S2SInbound, base.S2SOutbound)
}

// Server streams advertise their limits (XEP-0478) in every features element.
func TestServerStreamLimits(t *testing.T) {
	n := newNetwork()
	b := n.add(t, func(c *Config) {
		c.Limits = xmlstream.Limits{MaxStanzaSize: 12345}
		c.IdleTime = 90 * time.Second
	}, "b.test")
	pc, sc := net.Pipe()
	go serveConn(b, sc)
	defer pc.Close()
	_ = pc.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _, _ = pc.Write(appendHeader(nil, "a.test", "b.test", "")) }()
	dec := xmlstream.NewDecoder(pc, xmlstream.Limits{})
	if _, err := dec.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	f, err := dec.ReadElement()
	if err != nil {
		t.Fatal(err)
	}
	l := f.Child(stanza.NSStreamLimits, "limits")
	if l == nil || l.Child(stanza.NSStreamLimits, "max-bytes").Text() != "12345" || l.Child(stanza.NSStreamLimits, "idle-seconds").Text() != "90" {
		t.Fatalf("features %s", f)
	}
}

// A server stream on a connection that was TLS from its first byte (XEP-0368, a Listen with
// tls = "direct", whose configuration c2s.DirectTLSConfig makes) is used as after STARTTLS:
// no STARTTLS offered, the peer's certificate asked for so that SASL EXTERNAL is offered when
// it validates, and dialback works on it.
func TestDirectTLSInbound(t *testing.T) {
	ca := newTestCA(t)
	n := newNetwork()
	a := n.add(t, func(c *Config) { c.Secret = func(string) []byte { return []byte("a secret") } }, "a.test")
	b := n.add(t, func(c *Config) { c.Roots = ca.pool }, "b.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvConf := c2s.DirectTLSConfig(&tls.Config{Certificates: []tls.Certificate{*ca.issue(t, "b.test")}, MinVersion: tls.VersionTLS12})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		// As the listener does: the handshake first, then the header, then the s2s manager.
		tc := tls.Server(c, srvConf)
		if err := tc.Handshake(); err != nil {
			c.Close()
			return
		}
		dec := xmlstream.NewDecoder(tc, xmlstream.Limits{})
		hdr, err := dec.ReadHeader()
		if err != nil {
			tc.Close()
			return
		}
		b.m.Serve(context.Background(), tc, dec, hdr, srvConf)
	}()
	tc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ //nolint:gosec // test certificate
		InsecureSkipVerify: true, NextProtos: []string{"xmpp-server"}, Certificates: []tls.Certificate{*ca.issue(t, "a.test")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if tc.ConnectionState().NegotiatedProtocol != "xmpp-server" {
		t.Fatalf("ALPN %q", tc.ConnectionState().NegotiatedProtocol)
	}
	p := &rawPeer{t: t, c: tc, dec: xmlstream.NewDecoder(tc, xmlstream.Limits{})}
	p.write(string(appendHeader(nil, "a.test", "b.test", "")))
	hdr, err := p.dec.ReadHeader()
	if err != nil {
		t.Fatal(err)
	}
	p.id = hdr.ID
	f := p.read()
	if f.Child(stanza.NSTLS, "starttls") != nil || f.Child(NSDialbackFeature, "dialback") == nil || !offersExternal(f) {
		t.Fatalf("features on a direct TLS stream: %s", f)
	}
	if r := p.result("a.test", "b.test", Key([]byte("a secret"), "b.test", "a.test", p.id)); r.Attr("type") != "valid" {
		t.Fatalf("dialback over direct TLS: %s", r)
	}
	p.write("<message from='x@a.test' to='y@b.test'><body>direct</body></message>")
	if got := receive(t, b); got.Child(stanza.NSClient, "body").Text() != "direct" {
		t.Fatalf("routed %s", got)
	}
	_ = a
}

// inboundPairs lists, per inbound stream of nd, how many domain pairs are verified on it.
func inboundPairs(nd *node) []int {
	nd.m.mu.Lock()
	defer nd.m.mu.Unlock()
	var out []int
	for s := range nd.m.in {
		s.mu.Lock()
		out = append(out, len(s.verified))
		s.mu.Unlock()
	}
	return out
}

// A second local domain sending to the same peer joins the connection the first one opened
// (XEP-0220, "Multiplexing Sender Domains") when the peer handles dialback errors; a pair the
// peer refuses bounces its stanzas and leaves the connection to the others; when the shared
// connection ends, the next stanza opens a new one.
func TestOutboundMultiplexing(t *testing.T) {
	n := newNetwork()
	a := n.add(t, func(c *Config) { c.Secret = func(d string) []byte { return []byte("secret of " + d) } }, "a.test", "a2.test", "a3.test")
	b := n.add(t, func(c *Config) { c.RemoteAllowed = func(d string) bool { return d != "a3.test" } }, "b.test")
	if err := send(t, a, message("alice@a.test", "bob@b.test", "1")); err != nil {
		t.Fatal(err)
	}
	receive(t, b)
	// The connection is offered to other local domains right after its first stanzas left.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.m.mu.Lock()
		h := a.m.links["b.test"]
		a.m.mu.Unlock()
		if h != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection to b.test is not offered for multiplexing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := send(t, a, message("ann@a2.test", "bob@b.test", "2")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, b); got.Attr("from") != "ann@a2.test" {
		t.Fatalf("routed %s", got)
	}
	if pairs := inboundPairs(b); len(pairs) != 1 || pairs[0] != 2 {
		t.Fatalf("inbound streams at b with their verified pairs: %v, want one stream with two", pairs)
	}
	// b refuses a3.test: its stanza bounces, and the other pairs keep the connection.
	if err := send(t, a, message("amy@a3.test", "bob@b.test", "3")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, a); got.Attr("type") != "error" || got.Attr("to") != "amy@a3.test" || stanza.ParseError(got).Condition != "policy-violation" {
		t.Fatalf("bounce %s", got)
	}
	if err := send(t, a, message("ann@a2.test", "bob@b.test", "4")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, b); got.Child(stanza.NSClient, "body").Text() != "4" {
		t.Fatalf("routed %s", got)
	}
	if pairs := inboundPairs(b); len(pairs) != 1 {
		t.Fatalf("inbound streams at b: %v", pairs)
	}
	// The shared connection ends: both pairs are forgotten, and a2.test opens its own.
	a.m.mu.Lock()
	host := a.m.out[pair{"a.test", "b.test"}]
	a.m.mu.Unlock()
	host.close(nil, false)
	deadline = time.Now().Add(10 * time.Second)
	for {
		a.m.mu.Lock()
		open := len(a.m.out)
		a.m.mu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d outbound pairs left after their connection ended", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := send(t, a, message("ann@a2.test", "bob@b.test", "5")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, b); got.Child(stanza.NSClient, "body").Text() != "5" {
		t.Fatalf("routed %s", got)
	}
}
