package httpd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"impetus/internal/auth"
	"impetus/internal/c2s"
	"impetus/internal/core"
	"impetus/internal/module"
	_ "impetus/internal/modules/disco"
	_ "impetus/internal/modules/ping"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// testWeb is an HTTP listener on loopback in front of a real core with the users alice and
// bob (password "secret"), PLAIN allowed without TLS.
type testWeb struct {
	srv  *Server
	base string // http://127.0.0.1:port
}

func newTestWeb(t *testing.T, mod func(*Settings, *c2s.Config)) *testWeb {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if err := os.WriteFile(pw, []byte("alice:secret\nbob:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	store, err := auth.Open("file://"+pw, auth.Options{Domains: []string{"localhost"}, Logger: log, PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	r := router.NewLocal(nil)
	c := core.New(r, log)
	h := module.NewHost("localhost", r, c, nil, nil, log)
	if err := h.Provision([]string{"disco", "ping"}); err != nil {
		t.Fatal(err)
	}
	c.AddHost(h)
	cfg := &c2s.Config{
		Core: c, Hosted: func(d string) bool { return d == "localhost" }, DefaultDomain: "localhost",
		Auth: store, AllowPlainWithoutTLS: true, Limits: xmlstream.Limits{MaxStanzaSize: 65536},
		MaxQueue: 1 << 20, HandshakeTimeout: 30 * time.Second, Log: log, Streams: &c2s.Streams{},
	}
	set := DefaultSettings()
	set.Listens = []Listen{{Address: "127.0.0.1:0", Enable: true}}
	if mod != nil {
		mod(&set, cfg)
	}
	srv := New(Options{Settings: &set, Client: cfg, Domains: []string{"localhost"}, Log: log})
	addrs, err := srv.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cfg.Streams.CloseAll(stanza.NewStreamError("system-shutdown", ""))
		srv.Close()
		store.Close()
	})
	return &testWeb{srv: srv, base: "http://" + addrs[0]}
}

// wsClient is a minimal RFC 7395 client on the library's client side.
type wsClient struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialWS(t *testing.T, w *testWeb) *wsClient {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"xmpp"}, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(w.base, "http")+DefaultWebSocketPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Sec-WebSocket-Protocol") != "xmpp" {
		t.Fatalf("subprotocol %q", resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	t.Cleanup(func() { ws.Close() })
	return &wsClient{t: t, ws: ws}
}

func (c *wsClient) send(s string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one message; the deadline only bounds a hung server.
func (c *wsClient) recv() string {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatal(err)
	}
	// Every message must be one self-contained element.
	if _, _, err := parseFramed(b, xmlstream.Limits{}); err != nil {
		c.t.Fatalf("message %s is not one well-formed element: %v", b, err)
	}
	return string(b)
}

func (c *wsClient) expect(substr string) string {
	c.t.Helper()
	m := c.recv()
	if !strings.Contains(m, substr) {
		c.t.Fatalf("got %s, want one containing %s", m, substr)
	}
	return m
}

const openMsg = `<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>`

func plainAuth(user string) string {
	return `<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">` +
		base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00secret")) + `</auth>`
}

// login opens, authenticates with PLAIN, restarts and binds resource res.
func (c *wsClient) login(user, res string) {
	c.t.Helper()
	c.send(openMsg)
	c.expect(`<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" from="localhost"`)
	c.expect(`<mechanism>PLAIN</mechanism>`)
	c.send(plainAuth(user))
	c.expect(`<success`)
	c.send(openMsg)
	c.expect(`<open `)
	c.expect(`urn:ietf:params:xml:ns:xmpp-bind`)
	c.send(`<iq xmlns="jabber:client" type="set" id="b1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>` + res + `</resource></bind></iq>`)
	c.expect(`<jid>` + user + `@localhost/` + res + `</jid>`)
}

func TestWebSocketSession(t *testing.T) {
	w := newTestWeb(t, nil)
	a := dialWS(t, w)
	a.login("alice", "web")
	b := dialWS(t, w)
	b.login("bob", "web")
	b.send(`<presence xmlns="jabber:client"/>`)
	a.send(`<message xmlns="jabber:client" to="bob@localhost/web" type="chat" id="m1"><body>hello over websocket</body></message>`)
	for {
		m := b.recv()
		if strings.HasPrefix(m, "<message") {
			if !strings.Contains(m, `from="alice@localhost/web"`) || !strings.Contains(m, "hello over websocket") {
				t.Fatalf("message: %s", m)
			}
			break
		}
	}
	a.send(`<iq xmlns="jabber:client" type="get" id="p1" to="localhost"><ping xmlns="urn:xmpp:ping"/></iq>`)
	a.expect(`id="p1"`)
	// RFC 7395 §3.6: <close/> is answered with <close/> and the connection ends.
	a.send(`<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>`)
	a.expect(`<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>`)
	_ = a.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := a.ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after close: %v", err)
	}
}

func TestWebSocketErrors(t *testing.T) {
	w := newTestWeb(t, nil)
	// Two elements in one message: not-well-formed, then <close/>.
	c := dialWS(t, w)
	c.send(openMsg)
	c.expect(`<open `)
	c.expect(`<stream:features`)
	c.send(`<presence xmlns="jabber:client"/><presence xmlns="jabber:client"/>`)
	c.expect(`<not-well-formed`)
	c.expect(`<close `)

	// A stream that does not start with <open/>.
	c = dialWS(t, w)
	c.send(`<presence xmlns="jabber:client"/>`)
	c.expect(`<open `)
	c.expect(`<bad-format`)
	c.expect(`<close `)

	// Without the xmpp subprotocol the upgrade is refused.
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	_, resp, err := d.Dial("ws"+strings.TrimPrefix(w.base, "http")+DefaultWebSocketPath, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("dial without subprotocol: %v %v", err, resp)
	}
}

func TestWebSocketShutdown(t *testing.T) {
	w := newTestWeb(t, nil)
	c := dialWS(t, w)
	c.login("alice", "r")
	// What the server does at shutdown: every stream gets system-shutdown and <close/>.
	w.srv.opts.Client.Streams.CloseAll(stanza.NewStreamError("system-shutdown", ""))
	c.expect(`<system-shutdown`)
	c.expect(`<close `)
}

func TestHostMeta(t *testing.T) {
	w := newTestWeb(t, nil)
	resp, err := http.Get(w.base + "/.well-known/host-meta")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	host := strings.TrimPrefix(w.base, "http://")
	for _, want := range []string{
		`<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>`,
		`<Link rel='urn:xmpp:alt-connections:xbosh' href='http://` + host + `/http-bind'/>`,
		`<Link rel='urn:xmpp:alt-connections:websocket' href='ws://` + host + `/xmpp-websocket'/>`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("host-meta lacks %s:\n%s", want, body)
		}
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Error("host-meta without CORS header")
	}
	resp, err = http.Get(w.base + "/.well-known/host-meta.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Links []struct{ Rel, Href string }
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(doc.Links)
	if got != fmt.Sprintf("[{%s http://%s/http-bind} {%s ws://%s/xmpp-websocket}]", RelBOSH, host, RelWebSocket, host) {
		t.Fatalf("host-meta.json links: %s", got)
	}
	// public_url replaces the request's origin.
	w2 := newTestWeb(t, func(s *Settings, _ *c2s.Config) { s.PublicURL = "https://xmpp.example.com"; s.BOSH = false })
	resp, err = http.Get(w2.base + "/.well-known/host-meta.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `{"links":[{"rel":"urn:xmpp:alt-connections:websocket","href":"wss://xmpp.example.com/xmpp-websocket"}]}`; strings.TrimSpace(string(b)) != want {
		t.Fatalf("got %s want %s", b, want)
	}
}

// TestWebSocketPing checks that WebSocket pings are answered and count as activity for the
// stream's idle timeout.
func TestWebSocketPing(t *testing.T) {
	w := newTestWeb(t, nil)
	c := dialWS(t, w)
	c.login("alice", "ping")
	pong := make(chan string, 1)
	c.ws.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := c.ws.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The pong arrives while the client reads; a ping iq answer follows it.
	c.send(`<iq xmlns="jabber:client" type="get" id="p2" to="localhost"><ping xmlns="urn:xmpp:ping"/></iq>`)
	c.expect(`id="p2"`)
	select {
	case s := <-pong:
		if s != "p1" {
			t.Fatalf("pong %q", s)
		}
	default:
		t.Fatal("no pong before the iq answer")
	}
}
