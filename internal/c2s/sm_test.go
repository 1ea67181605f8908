package c2s

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"impetus/internal/core"
	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// smServer is a test server with stream management on; offline receives what the
// MessageOffline hook is given and hibernated what MessageHibernated is given.
type smServer struct {
	*testServer
	cfg        *Config
	offline    chan *stanza.Element
	hibernated chan *stanza.Element
}

func newSMServer(tb testing.TB, sm SMConfig, users ...string) *smServer {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := testAuth(tb, log, users)
	r := router.NewLocal(nil)
	c := core.New(r, log)
	h := module.NewHost("localhost", r, c, nil, nil, log)
	if err := h.Provision([]string{"disco", "ping"}); err != nil {
		tb.Fatal(err)
	}
	srv := &smServer{offline: make(chan *stanza.Element, 100), hibernated: make(chan *stanza.Element, 100)}
	h.Hook(module.MessageOffline, 0, func(_ context.Context, st *module.Stanza) (module.Verdict, error) {
		srv.offline <- st.El
		return module.Handled, nil
	})
	h.Hook(module.MessageHibernated, 0, func(_ context.Context, st *module.Stanza) (module.Verdict, error) {
		srv.hibernated <- st.El
		return module.Continue, nil
	})
	c.AddHost(h)
	cfg := &Config{
		Core: c, Hosted: func(d string) bool { return d == "localhost" }, DefaultDomain: "localhost",
		Auth: store, AllowPlainWithoutTLS: true, Limits: xmlstream.Limits{MaxStanzaSize: 262144},
		MaxQueue: 1 << 24, Log: log, Streams: &Streams{}, SM: sm,
	}
	ln := listen(tb, servePlain(cfg))
	srv.testServer = &testServer{addr: ln.Addr().String(), ln: ln}
	srv.cfg = cfg
	return srv
}

// auth authenticates and reads the post-authentication features.
func (c *rawClient) auth(user string) string {
	c.tb.Helper()
	c.send(header)
	c.until("</stream:features>")
	c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00secret")) + `</auth>`)
	c.until("<success")
	c.send(header)
	return c.until("</stream:features>")
}

var enabledID = regexp.MustCompile(`<enabled xmlns="urn:xmpp:sm:3" id="([0-9a-f]+)"`)

func smTestConfig() SMConfig {
	c := DefaultSMConfig()
	c.RequestEvery = 0
	c.RequestInterval = 0
	return c
}

func TestSMFeatureAndAckCounting(t *testing.T) {
	srv := newSMServer(t, smTestConfig(), "alice", "bob")
	a := srv.dial(t)
	f := a.auth("alice")
	if !strings.Contains(f, `<sm xmlns="urn:xmpp:sm:3"`) || !strings.Contains(f, `<csi xmlns="urn:xmpp:csi:0"`) {
		t.Fatalf("features: %s", f)
	}
	a.send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	if got := a.until("<failed"); !strings.Contains(got, "unexpected-request") {
		t.Fatalf("enable before bind: %s", got)
	}
	a.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r1</resource></bind></iq>`)
	a.until("</iq>")
	a.send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	if got := a.until("<enabled"); strings.Contains(got, "resume=") {
		t.Fatalf("resumption was not asked for: %s", got)
	}
	a.send(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>`)
	if got := a.until(`<a xmlns="urn:xmpp:sm:3"`); !strings.Contains(got, `h="2"`) {
		t.Fatalf("inbound count: %s", got)
	}
	b := srv.dial(t)
	b.login("bob", "r1")
	b.send(`<message to='alice@localhost/r1' type='chat'><body>one</body></message>`)
	a.until("one</body>")
	// Two pings and a message went to alice: acknowledging four is too many.
	a.send(`<a xmlns='urn:xmpp:sm:3' h='3'/>`)
	a.send(`<a xmlns='urn:xmpp:sm:3' h='4'/>`)
	if got := a.until("</stream:stream>"); !strings.Contains(got, "handled-count-too-high") || !strings.Contains(got, `send-count="3"`) {
		t.Fatalf("too high: %s", got)
	}
}

func TestSMServerRequestsAcks(t *testing.T) {
	cfg := smTestConfig()
	cfg.RequestEvery = 2
	srv := newSMServer(t, cfg, "alice", "bob")
	a := srv.dial(t)
	a.login("alice", "r1")
	a.send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	a.until("<enabled")
	b := srv.dial(t)
	b.login("bob", "r1")
	b.send(`<message to='alice@localhost/r1' type='chat'><body>one</body></message><message to='alice@localhost/r1' type='chat'><body>two</body></message>`)
	if got := a.until(`<r xmlns="urn:xmpp:sm:3"`); !strings.Contains(got, "two</body>") {
		t.Fatalf("request: %s", got)
	}
}

func TestSMResumeResendsUnacked(t *testing.T) {
	srv := newSMServer(t, smTestConfig(), "alice", "bob")
	a := srv.dial(t)
	a.login("alice", "r1")
	a.send(`<presence/><enable xmlns='urn:xmpp:sm:3' resume='true' max='60'/>`)
	m := enabledID.FindStringSubmatch(a.until("<enabled"))
	if m == nil {
		t.Fatal("no resumption id")
	}
	b := srv.dial(t)
	b.login("bob", "r1")
	b.send(`<message to='alice@localhost/r1' type='chat'><body>m1</body></message><message to='alice@localhost/r1' type='chat'><body>m2</body></message>`)
	a.until("m2</body>")
	a.send(`<a xmlns='urn:xmpp:sm:3' h='1'/>`)
	a.conn.Close() // the connection is lost, not closed
	b.send(`<message to='alice@localhost' type='chat'><body>m3</body></message>`)
	// m2 was unacknowledged when the connection was found lost, m3 came after or before:
	// either way both are reported as arriving while the session hibernated.
	for seen := ""; !strings.Contains(seen, "m3"); {
		select {
		case el := <-srv.hibernated:
			seen += el.String()
		case <-time.After(5 * time.Second):
			t.Fatal("no hibernation notification")
		}
	}

	a2 := srv.dial(t)
	a2.auth("alice")
	a2.send(`<resume xmlns='urn:xmpp:sm:3' previd='` + m[1] + `' h='1'/>`)
	got := a2.until("m3</body>")
	if !strings.Contains(got, `<resumed xmlns="urn:xmpp:sm:3" previd="`+m[1]+`" h="0"`) {
		t.Fatalf("resumed: %s", got)
	}
	if strings.Contains(got, "m1</body>") || !strings.Contains(got, "m2</body>") {
		t.Fatalf("resent: %s", got)
	}
	// The count continues: m1, m2, m3 were sent; the client has them all.
	a2.send(`<a xmlns='urn:xmpp:sm:3' h='3'/><iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>`)
	if got := a2.until(`<a xmlns="urn:xmpp:sm:3"`); !strings.Contains(got, `id="p1"`) || !strings.Contains(got, `h="1"`) {
		t.Fatalf("after resumption: %s", got)
	}
	// A resumption id is good for one session only, and only for its own account.
	a3 := srv.dial(t)
	a3.auth("bob")
	a3.send(`<resume xmlns='urn:xmpp:sm:3' previd='` + m[1] + `' h='0'/>`)
	if got := a3.until("</failed>"); !strings.Contains(got, "item-not-found") {
		t.Fatalf("other account: %s", got)
	}
	a3.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>`)
	a3.until("</iq>")
}

func TestSMExpiredSessionSendsUnackedOffline(t *testing.T) {
	cfg := smTestConfig()
	cfg.MaxResumeTimeout = time.Millisecond
	srv := newSMServer(t, cfg, "alice", "bob")
	a := srv.dial(t)
	a.login("alice", "r1")
	a.send(`<presence/><enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	a.until("<enabled")
	b := srv.dial(t)
	b.login("bob", "r1")
	b.send(`<message to='alice@localhost/r1' type='chat'><body>lost?</body></message><iq type='get' id='q1' to='alice@localhost/r1'><query xmlns='urn:example'/></iq>`)
	a.until("urn:example")
	a.conn.Close()
	select {
	case el := <-srv.offline:
		if !strings.Contains(el.String(), "lost?") || el.Child(stanza.NSDelay, "delay") == nil {
			t.Fatalf("offline got %s", el)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the unacknowledged message was not stored")
	}
	if got := b.until(`id="q1"`); !strings.Contains(got, "service-unavailable") {
		t.Fatalf("iq: %s", got)
	}
}

func TestSMCleanCloseEndsSession(t *testing.T) {
	srv := newSMServer(t, smTestConfig(), "alice", "bob")
	a := srv.dial(t)
	a.login("alice", "r1")
	a.send(`<presence/><enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	m := enabledID.FindStringSubmatch(a.until("<enabled"))
	b := srv.dial(t)
	b.login("bob", "r1")
	b.send(`<message to='alice@localhost/r1' type='chat'><body>unread</body></message>`)
	a.until("unread")
	a.send(`</stream:stream>`)
	a.until("</stream:stream>")
	select {
	case <-srv.offline:
	case <-time.After(5 * time.Second):
		t.Fatal("the unacknowledged message was not stored")
	}
	a2 := srv.dial(t)
	a2.auth("alice")
	a2.send(`<resume xmlns='urn:xmpp:sm:3' previd='` + m[1] + `' h='0'/>`)
	if got := a2.until("</failed>"); !strings.Contains(got, "item-not-found") {
		t.Fatalf("resume after close: %s", got)
	}
}

func TestCSIHoldsBackUnimportantTraffic(t *testing.T) {
	srv := newSMServer(t, smTestConfig(), "alice", "bob")
	a := srv.dial(t)
	a.login("alice", "r1")
	a.send(`<inactive xmlns='urn:xmpp:csi:0'/><iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	a.until(`id="p1"`)
	b := srv.dial(t)
	b.login("bob", "r1")
	b.send(`<presence to='alice@localhost/r1'><status>first</status></presence>` +
		`<presence to='alice@localhost/r1'><status>second</status></presence>` +
		`<message to='alice@localhost/r1' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>` +
		`<message to='alice@localhost/r1' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'><item id='old'/></items></event></message>` +
		`<message to='alice@localhost/r1' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'><item id='new'/></items></event></message>` +
		`<message to='alice@localhost/r1' type='chat'><body>wake up</body></message>`)
	got := a.until("wake up")
	if strings.Contains(got, "first") || !strings.Contains(got, "second") || !strings.Contains(got, "composing") ||
		strings.Contains(got, `id="old"`) || !strings.Contains(got, `id="new"`) {
		t.Fatalf("flushed: %s", got)
	}
	if strings.Index(got, "second") > strings.Index(got, "wake up") {
		t.Fatalf("held presence after the message: %s", got)
	}
	b.send(`<presence to='alice@localhost/r1'><status>third</status></presence>`)
	a.send(`<active xmlns='urn:xmpp:csi:0'/>`)
	a.until("third")
}

func TestSMRequestAfterInterval(t *testing.T) {
	cfg := smTestConfig()
	cfg.RequestInterval = 10 * time.Millisecond
	srv := newSMServer(t, cfg, "alice", "bob")
	a := srv.dial(t)
	a.login("alice", "r1")
	a.send(`<enable xmlns='urn:xmpp:sm:3'/>`)
	a.until("<enabled")
	b := srv.dial(t)
	b.login("bob", "r1")
	b.send(`<message to='alice@localhost/r1' type='chat'><body>one</body></message>`)
	// One stanza is below request_every; the interval alone brings the request.
	if got := a.until(`<r xmlns="urn:xmpp:sm:3"/>`); !strings.Contains(got, "one</body>") {
		t.Fatalf("request: %s", got)
	}
	a.send(`<a xmlns='urn:xmpp:sm:3' h='1'/><iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	a.until(`id="p1"`)
}

func TestSMQueueBoundEndsSession(t *testing.T) {
	cfg := smTestConfig()
	cfg.MaxUnacked = 2
	srv := newSMServer(t, cfg, "alice", "bob")
	a := srv.dial(t)
	a.login("alice", "r1")
	a.send(`<presence/><enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	a.until("<enabled")
	b := srv.dial(t)
	b.login("bob", "r1")
	for i := range 3 {
		b.send(fmt.Sprintf(`<message to='alice@localhost/r1' type='chat'><body>m%d</body></message>`, i))
	}
	if got := a.until("</stream:stream>"); !strings.Contains(got, "policy-violation") {
		t.Fatalf("overflow: %s", got)
	}
	// None of the three is lost: the session ended, so they go to offline storage.
	for i := range 3 {
		select {
		case el := <-srv.offline:
			if !strings.Contains(el.String(), "<body>m") {
				t.Fatalf("offline got %s", el)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 3 messages stored", i)
		}
	}
}
