package federation

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// TestFederation runs every interoperability case twice: once with TLS offered on every
// server stream (Impetus connects out with STARTTLS and the peers do the same towards it, each
// side accepting the other's self-signed certificate for dialback), and once with the peers
// offering and using no TLS at all, so dialback runs over plain TCP. Each round starts
// Impetus, Prosody and ejabberd afresh; a round takes about half a minute, ejabberd's start
// most of it.
func TestFederation(t *testing.T) {
	for _, round := range []struct {
		name string
		tls  bool
	}{{"starttls", true}, {"plain", false}} {
		t.Run(round.name, func(t *testing.T) { federationRound(t, round.tls) })
	}
}

func federationRound(t *testing.T, withTLS bool) {
	a := pickAddrs(t)
	imp := startImpetus(t, a)
	pro := startProsody(t, a, withTLS)
	ejb := startEjabberd(t, a, withTLS)
	t.Logf("impetus %s, prosody %s, ejabberd %s, TLS on server streams: %v", imp.addr, pro.addr, ejb.addr, withTLS)
	defer func() {
		// FEDERATION_LOGS=1 shows the logs of a passing run too.
		if t.Failed() || os.Getenv("FEDERATION_LOGS") != "" {
			t.Logf("impetus log:\n%s", tail(imp.log(), 15000))
			t.Logf("prosody log:\n%s", tail(pro.log(), 8000))
			t.Logf("ejabberd log:\n%s", tail(ejb.log(), 40000))
		}
	}()

	// Each pair of users subscribes both ways, sees the other's presence, swaps a message and
	// sees the initiator's unavailable presence when it logs out. Each direction uses its own
	// users so that every run starts from empty rosters; the four runs go in parallel.
	t.Run("subscription-presence-messages", func(t *testing.T) {
		for _, c := range []struct {
			peer              *server
			impUser, peerUser string
			impRole           string
		}{
			{pro, "alice", "bob", "initiator"},
			{pro, "dave", "bob2", "responder"},
			{ejb, "erin", "carol", "initiator"},
			{ejb, "frank", "carol2", "responder"},
		} {
			name := "impetus-" + c.impRole + "-with-" + c.peer.domain
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				exchange(t, imp, c.impUser, c.peer, c.impRole, c.peerUser+"@"+c.peer.domain, true)
			})
		}
	})
	// A user of Impetus's second domain writes to each peer while impetus.test's streams are
	// up. Where the peer advertises dialback errors, the second domain is proven on the
	// existing connection (sender multiplexing) instead of opening another.
	t.Run("second-domain-messages", func(t *testing.T) {
		for _, c := range []struct {
			peer     *server
			peerUser string
		}{{pro, "bob"}, {ejb, "carol"}} {
			exchange(t, imp, "gina@"+impetusDomain2, c.peer, "initiator", c.peerUser+"@"+c.peer.domain, false)
		}
		log := imp.log()
		for _, peer := range []*server{pro, ejb} {
			d := peer.domain
			// What Impetus saw: the peer's features on a server stream, after STARTTLS when used.
			db := dialS2S(t, peer.s2s(), impetusDomain2, d, withTLS).features.Child("urn:xmpp:features:dialback", "dialback")
			errorsOffered := db != nil && db.Child("urn:xmpp:features:dialback", "errors") != nil
			mux := logHas(log, `msg="outbound pair multiplexed"`, "local="+impetusDomain2+" remote="+d+" ")
			own := logHas(log, `msg="outbound stream established"`, "local="+impetusDomain2+" remote="+d+" ")
			t.Logf("%s → %s: dialback errors advertised %v, multiplexed %v, own connection %v", impetusDomain2, d, errorsOffered, mux, own)
			if mux != errorsOffered || own == errorsOffered {
				t.Errorf("%s → %s: dialback errors advertised %v, but multiplexed %v, own connection %v", impetusDomain2, d, errorsOffered, mux, own)
			}
		}
	})
	t.Run("dialback-both-directions-logged", func(t *testing.T) {
		log := imp.log()
		tlsAttr := fmt.Sprintf("tls=%v", withTLS)
		for _, d := range []string{prosodyDomain, ejabberdDomain} {
			// Our outbound stream to the peer, accepted after the peer asked us (authoritative),
			// with STARTTLS exactly when the peer offered it.
			if !logHas(log, `msg="outbound stream established"`, "remote="+d+" ", tlsAttr) {
				t.Errorf("no outbound stream to %s with %s in the log", d, tlsAttr)
			}
			// The peer's stream to us, verified by asking the peer (receiving role).
			if !logHas(log, `msg="peer verified with dialback"`, "pair_local="+impetusDomain+" pair_remote="+d, tlsAttr) {
				t.Errorf("no dialback verification of %s with %s in the log", d, tlsAttr)
			}
		}
	})
	t.Run("wrong-key-refused-by-impetus", func(t *testing.T) {
		for _, claimed := range []string{prosodyDomain, ejabberdDomain} {
			c := dialS2S(t, imp.s2s(), claimed, impetusDomain, withTLS)
			r := c.dialback(claimed, impetusDomain, strings.Repeat("0", 64))
			if r.Attr("type") != "invalid" {
				t.Fatalf("claiming %s with a wrong key: %s", claimed, r)
			}
			c.send("<message from='mallory@" + claimed + "' to='alice@" + impetusDomain + "' type='chat'><body>forged</body></message>")
			if el := c.read(); el.Local != "error" || el.Child(stanza.NSStreamErr, "not-authorized") == nil {
				t.Fatalf("forged stanza answered with %s", el)
			}
		}
	})
	t.Run("wrong-key-for-impetus-refused-by-peers", func(t *testing.T) {
		// The peer asks Impetus, the authoritative server for impetus.test, which says invalid.
		for _, peer := range []*server{pro, ejb} {
			c := dialS2S(t, peer.s2s(), impetusDomain, peer.domain, withTLS)
			r := c.dialback(impetusDomain, peer.domain, strings.Repeat("0", 64))
			if r.Attr("type") != "invalid" {
				t.Fatalf("%s accepted a wrong key for %s: %s", peer.domain, impetusDomain, r)
			}
		}
	})
	t.Run("direct-tls-server-stream", func(t *testing.T) {
		// XEP-0368 inbound: a server stream on the tls = "direct" Listen is TLS from the first
		// byte, offers no STARTTLS, and dialback on it is checked with the claimed domain's
		// server as on the other port.
		tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", imp.directTLS(), &tls.Config{ //nolint:gosec // throw-away test certificates
			InsecureSkipVerify: true, ServerName: impetusDomain, NextProtos: []string{"xmpp-server"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "xmpp-server" {
			t.Fatalf("ALPN %q", p)
		}
		c := streamOn(t, tc, prosodyDomain, impetusDomain, false)
		if c.features.Child(stanza.NSTLS, "starttls") != nil || c.features.Child("urn:xmpp:features:dialback", "dialback") == nil {
			t.Fatalf("features on direct TLS: %s", c.features)
		}
		if r := c.dialback(prosodyDomain, impetusDomain, strings.Repeat("0", 64)); r.Attr("type") != "invalid" {
			t.Fatalf("wrong key over direct TLS: %s", r)
		}
	})
	t.Run("unlisted-domain-refused", func(t *testing.T) {
		c := dialS2S(t, imp.s2s(), "unlisted.test", impetusDomain, withTLS)
		// XEP-0478: server streams advertise their limits like client streams.
		if l := c.features.Child(stanza.NSStreamLimits, "limits"); l == nil || l.Child(stanza.NSStreamLimits, "max-bytes") == nil {
			t.Errorf("no stream limits in the features: %s", c.features)
		}
		r := c.dialback("unlisted.test", impetusDomain, strings.Repeat("0", 64))
		if r.Attr("type") != "error" || stanza.ParseError(r) == nil || stanza.ParseError(r).Condition != "policy-violation" {
			t.Fatalf("unlisted domain: %s", r)
		}
	})
}

// exchange has the Impetus user and the peer's user swap a message: role is the Impetus
// user's part (the initiator sends first).
func exchange(t *testing.T, imp *server, impUser string, peer *server, role, peerJID string, subscribe bool) {
	t.Helper()
	impJID := impUser
	if !strings.Contains(impUser, "@") {
		impJID += "@" + impetusDomain
	}
	id := fmt.Sprintf("%d", time.Now().UnixNano())
	body, reply := "ping-"+id, "pong-"+id
	other := "responder"
	if role == "responder" {
		other = "initiator"
	}
	// The responder logs in first; the initiator starts once it is ready.
	var first, second *client
	if role == "responder" {
		first = startClient(t, imp, impJID, peerJID, "responder", body, reply, subscribe)
		first.waitReady(t)
		second = startClient(t, peer, peerJID, impJID, other, body, reply, subscribe)
	} else {
		first = startClient(t, peer, peerJID, impJID, other, body, reply, subscribe)
		first.waitReady(t)
		second = startClient(t, imp, impJID, peerJID, "initiator", body, reply, subscribe)
	}
	for _, c := range []*client{first, second} {
		if res := c.wait(t); res["ok"] != true {
			t.Fatalf("%s (%s): %v\nclient log:\n%s", c.jid, c.role, res, tail(c.stderr.String(), 6000))
		}
	}
}

type client struct {
	jid, role string
	cmd       *exec.Cmd
	stdout    *bufio.Reader
	stderr    *syncBuffer
	ready     chan struct{}
	result    chan map[string]any
}

func startClient(t *testing.T, srv *server, jid, peer, role, body, reply string, subscribe bool) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	args := []string{"client.py", "--jid", jid, "--password", password,
		"--host", srv.addr, "--port", "5222", "--role", role, "--peer", peer, "--body", body, "--reply", reply, "--timeout", "30"}
	if srv.domain == impetusDomain {
		// slixmpp's SCRAM picks tls-unique channel binding even on TLS 1.3, where it does not
		// exist; the client tests cover SCRAM, here any login will do.
		args = append(args, "--mech", "PLAIN")
	}
	if subscribe {
		args = append(args, "--subscribe")
	}
	cmd := exec.CommandContext(ctx, python, args...)
	c := &client{jid: jid, role: role, cmd: cmd, stderr: &syncBuffer{}, ready: make(chan struct{}), result: make(chan map[string]any, 1)}
	cmd.Stderr = c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		var last string
		readyOnce := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			if line == "READY" {
				readyOnce.Do(func() { close(c.ready) })
				continue
			}
			last = line
		}
		_ = cmd.Wait()
		res := map[string]any{}
		if err := json.Unmarshal([]byte(last), &res); err != nil {
			res = map[string]any{"ok": false, "error": "no result line: " + last}
		}
		c.result <- res
	}()
	return c
}

func (c *client) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-c.ready:
	case res := <-c.result:
		t.Fatalf("%s failed before logging in: %v\n%s", c.jid, res, tail(c.stderr.String(), 6000))
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not log in\n%s", c.jid, tail(c.stderr.String(), 6000))
	}
}

func (c *client) wait(t *testing.T) map[string]any {
	t.Helper()
	select {
	case res := <-c.result:
		return res
	case <-time.After(45 * time.Second):
		return map[string]any{"ok": false, "error": "client did not finish"}
	}
}

// s2sConn is a hand-driven server stream, for the cases no real server produces.
type s2sConn struct {
	t        *testing.T
	c        net.Conn
	dec      *xmlstream.Decoder
	features *stanza.Element
}

// dialS2S opens a server stream to addr claiming from, with STARTTLS when useTLS is set and the
// server offers it. The features of the stream as it is used are kept in c.features.
func dialS2S(t *testing.T, addr, from, to string, useTLS bool) *s2sConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return streamOn(t, nc, from, to, useTLS)
}

// streamOn opens a server stream on an established connection, as dialS2S does.
func streamOn(t *testing.T, nc net.Conn, from, to string, useTLS bool) *s2sConn {
	t.Helper()
	addr := nc.RemoteAddr().String()
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &s2sConn{t: t, c: nc, dec: xmlstream.NewDecoder(nc, xmlstream.Limits{})}
	header := fmt.Sprintf("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' version='1.0' from='%s' to='%s'>", from, to)
	for {
		c.send(header)
		if _, err := c.dec.ReadHeader(); err != nil {
			t.Fatalf("stream header from %s: %v", addr, err)
		}
		f := c.read()
		if f.Local != "features" {
			t.Fatalf("expected features, got %s", f)
		}
		c.features = f
		if _, isTLS := c.c.(*tls.Conn); !useTLS || isTLS || f.Child(stanza.NSTLS, "starttls") == nil {
			return c
		}
		c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
		if el := c.read(); el.Local != "proceed" {
			t.Fatalf("STARTTLS refused: %s", el)
		}
		tc := tls.Client(c.c, &tls.Config{InsecureSkipVerify: true, ServerName: to}) //nolint:gosec // throw-away test certificates
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS with %s: %v", addr, err)
		}
		c.c = tc
		c.dec.Reset(tc)
	}
}

func (c *s2sConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

func (c *s2sConn) read() *stanza.Element {
	c.t.Helper()
	el, err := c.dec.ReadElement()
	if err != nil {
		c.t.Fatalf("reading: %v", err)
	}
	return el
}

// dialback sends a <db:result/> and returns the answer for it.
func (c *s2sConn) dialback(from, to, key string) *stanza.Element {
	c.t.Helper()
	c.send("<db:result from='" + from + "' to='" + to + "'>" + key + "</db:result>")
	for {
		el := c.read()
		if el.Space == stanza.NSDialback && el.Local == "result" {
			return el
		}
		if el.Space == stanza.NSStream && el.Local == "error" {
			c.t.Fatalf("stream error instead of a dialback answer: %s", el)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// logHas reports whether one line of log contains every part.
func logHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line+" ", p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
