package httpd

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"impetus/internal/c2s"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// boshClient follows the examples of XEP-0206.
type boshClient struct {
	t   *testing.T
	url string
	sid string
	rid int64
	hc  *http.Client
}

func newBOSHClient(t *testing.T, w *testWeb) *boshClient {
	return &boshClient{t: t, url: w.base + DefaultBOSHPath, rid: 1000, hc: &http.Client{Timeout: 70 * time.Second}}
}

// post sends a raw body and returns the parsed response body.
func (c *boshClient) post(body string) *stanza.Element {
	c.t.Helper()
	resp, err := c.hc.Post(c.url, "text/xml; charset=utf-8", strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	el, _, err := parseFramed(b, xmlstream.Limits{MaxStanzaSize: 1 << 20})
	if err != nil || el.Space != NSHTTPBind || el.Local != "body" {
		c.t.Fatalf("response %s: %v", b, err)
	}
	return el
}

// send posts the next request of the session with attrs and payload.
func (c *boshClient) send(attrs, payload string) *stanza.Element {
	c.t.Helper()
	return c.post(c.next(attrs, payload))
}

func (c *boshClient) next(attrs, payload string) string {
	c.rid++
	return fmt.Sprintf(`<body xmlns="%s" xmlns:xmpp="%s" rid="%d" sid="%s" %s>%s</body>`, NSHTTPBind, NSXBOSH, c.rid, c.sid, attrs, payload)
}

// create starts the session and returns the creation response.
func (c *boshClient) create(extra string) *stanza.Element {
	c.t.Helper()
	resp := c.post(fmt.Sprintf(`<body xmlns="%s" xmlns:xmpp="%s" content="text/xml; charset=utf-8" hold="1" rid="%d" to="localhost" ver="1.6" wait="60" xml:lang="en" xmpp:version="1.0" %s/>`, NSHTTPBind, NSXBOSH, c.rid, extra))
	c.sid = resp.Attr("sid")
	if c.sid == "" {
		c.t.Fatalf("no sid in %s", resp)
	}
	return resp
}

// login creates a session, authenticates with PLAIN, restarts and binds.
func (c *boshClient) login(user, res string) {
	c.t.Helper()
	resp := c.create("")
	if resp.Child(stanza.NSStream, "features") == nil {
		c.t.Fatalf("creation response without features: %s", resp)
	}
	resp = c.send("", plainAuth(user))
	if resp.Child(stanza.NSSASL, "success") == nil {
		c.t.Fatalf("auth: %s", resp)
	}
	resp = c.send(`xmpp:restart="true"`, "")
	if f := resp.Child(stanza.NSStream, "features"); f == nil || f.Child(stanza.NSBind, "bind") == nil {
		c.t.Fatalf("restart: %s", resp)
	}
	resp = c.send("", `<iq xmlns="jabber:client" type="set" id="b1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>`+res+`</resource></bind></iq>`)
	if !strings.Contains(resp.String(), user+"@localhost/"+res) {
		c.t.Fatalf("bind: %s", resp)
	}
}

func TestBOSHSession(t *testing.T) {
	w := newTestWeb(t, nil)
	a := newBOSHClient(t, w)
	resp := a.create("")
	for name, want := range map[string]string{
		"wait": "60", "hold": "1", "requests": "2", "ver": boshVersion, "from": "localhost",
		"inactivity": "60", "polling": "2", "maxpause": "120", "secure": "false",
		"{urn:xmpp:xbosh}version": "1.0", "{urn:xmpp:xbosh}restartlogic": "true",
	} {
		if got := resp.Attr(name); got != want {
			t.Errorf("creation response %s=%q, want %q", name, got, want)
		}
	}
	if resp.Attr("authid") == "" {
		t.Error("creation response without authid")
	}
	a.sid = ""
	a.login("alice", "bosh")

	b := newBOSHClient(t, w)
	b.login("bob", "bosh")
	// Bob's available presence goes in the request that then waits for his messages; Alice's
	// message is sent in a request of its own, held in turn because she has nothing to read.
	var wg sync.WaitGroup
	var got *stanza.Element
	held := b.next("", `<presence xmlns="jabber:client"/>`)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			got = b.post(held)
			if got.Child(stanza.NSClient, "message") != nil {
				return
			}
			held = b.next("", "")
		}
	}()
	msg := a.next("", `<message xmlns="jabber:client" to="bob@localhost/bosh" type="chat" id="m1"><body>hello over bosh</body></message>`)
	var aliceHeld sync.WaitGroup
	aliceHeld.Add(1)
	go func() {
		defer aliceHeld.Done()
		a.post(msg)
	}()
	wg.Wait()
	m := got.Child(stanza.NSClient, "message")
	if m.Attr("from") != "alice@localhost/bosh" || !strings.Contains(m.String(), "hello over bosh") {
		t.Fatalf("message: %s", got)
	}
	// A retransmitted request gets the same answer (XEP-0124 §14.3).
	if again := b.post(held); again.String() != got.String() {
		t.Fatalf("retransmission answered %s, first answer %s", again, got)
	}

	// Terminate (XEP-0206 §6): the answer says so, the held request returns, and the session
	// is gone.
	resp = a.send(`type="terminate"`, `<presence xmlns="jabber:client" type="unavailable"/>`)
	if resp.Attr("type") != "terminate" {
		t.Fatalf("terminate answered %s", resp)
	}
	aliceHeld.Wait()
	resp = a.send("", "")
	if resp.Attr("type") != "terminate" || resp.Attr("condition") != "item-not-found" {
		t.Fatalf("request after terminate answered %s", resp)
	}
}

func TestBOSHErrors(t *testing.T) {
	w := newTestWeb(t, nil)
	c := newBOSHClient(t, w)
	cond := func(resp *stanza.Element) string {
		if resp.Attr("type") != "terminate" {
			t.Fatalf("not a terminate body: %s", resp)
		}
		return resp.Attr("condition")
	}
	if got := cond(c.post(`<body xmlns="` + NSHTTPBind + `" rid="1" to="example.org" wait="5" hold="1"/>`)); got != "host-unknown" {
		t.Errorf("unknown host: %s", got)
	}
	if got := cond(c.post(`<body xmlns="` + NSHTTPBind + `" rid="1" sid="nosuch"/>`)); got != "item-not-found" {
		t.Errorf("unknown sid: %s", got)
	}
	if got := cond(c.post(`<body xmlns="` + NSHTTPBind + `"/>`)); got != "bad-request" {
		t.Errorf("no rid: %s", got)
	}
	if got := cond(c.post(`not xml`)); got != "bad-request" {
		t.Errorf("not xml: %s", got)
	}
	// A rid beyond the window ends the session (XEP-0124 §14.2).
	c.create("")
	c.rid += 5
	if got := cond(c.send("", "")); got != "item-not-found" {
		t.Errorf("rid out of window: %s", got)
	}
	// A restart before authentication is refused.
	c = newBOSHClient(t, w)
	c.create("")
	if got := cond(c.send(`xmpp:restart="true"`, "")); got != "bad-request" {
		t.Errorf("early restart: %s", got)
	}
	// A pause longer than maxpause is a policy violation (XEP-0124 §10).
	c = newBOSHClient(t, w)
	c.create("")
	if got := cond(c.send(`pause="9999"`, "")); got != "policy-violation" {
		t.Errorf("long pause: %s", got)
	}
	// A stream error of the client stream comes back as remote-stream-error (XEP-0206 §7).
	c = newBOSHClient(t, w)
	c.create("")
	resp := c.send("", `<message xmlns="jabber:client" to="x@localhost"><body>before auth</body></message>`)
	if got := cond(resp); got != "remote-stream-error" || resp.Child(stanza.NSStream, "error") == nil {
		t.Errorf("stream error: %s", resp)
	}
	// A body over the size limit.
	c = newBOSHClient(t, w)
	c.create("")
	if got := cond(c.send("", strings.Repeat(" ", DefaultBOSHMaxBody))); got != "policy-violation" {
		t.Errorf("large body: %s", got)
	}
}

func TestBOSHPauseAndKeys(t *testing.T) {
	w := newTestWeb(t, nil)
	// Key sequencing (XEP-0124 §15): K(n) = hex(SHA1(K(n+1))).
	keys := make([]string, 5)
	keys[4] = "seed"
	for i := 3; i >= 0; i-- {
		s := sha1.Sum([]byte(keys[i+1]))
		keys[i] = hex.EncodeToString(s[:])
	}
	c := newBOSHClient(t, w)
	c.create(`newkey="` + keys[0] + `"`)
	// The first request waits for data; the pause that follows answers it and itself at once.
	first := c.next(`key="`+keys[1]+`"`, "")
	done := make(chan *stanza.Element, 1)
	go func() { done <- c.post(first) }()
	if resp := c.send(`key="`+keys[2]+`" pause="5"`, ""); resp.Attr("type") == "terminate" {
		t.Fatalf("pause: %s", resp)
	}
	if resp := <-done; resp.Attr("type") == "terminate" {
		t.Fatalf("request before the pause: %s", resp)
	}
	// A wrong key ends the session.
	resp := c.send(`key="wrong"`, "")
	if resp.Attr("type") != "terminate" || resp.Attr("condition") != "item-not-found" {
		t.Fatalf("wrong key answered %s", resp)
	}
}

func TestBOSHInactivity(t *testing.T) {
	w := newTestWeb(t, func(s *Settings, _ *c2s.Config) { s.BOSHInactivity = time.Second })
	c := newBOSHClient(t, w)
	c.create("")
	if w.srv.bosh.count() != 1 {
		t.Fatal("no session")
	}
	// The session ends once it has had no request for its inactivity period; the loop is
	// bounded so that a session that never ends fails the test.
	deadline := time.Now().Add(20 * time.Second)
	for w.srv.bosh.count() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("inactive session not ended")
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp := c.send("", "")
	if resp.Attr("condition") != "item-not-found" {
		t.Fatalf("after inactivity: %s", resp)
	}
}

func TestBOSHCORS(t *testing.T) {
	w := newTestWeb(t, nil)
	req, _ := http.NewRequest(http.MethodOptions, w.base+DefaultBOSHPath, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	resp, err = http.Post(w.base+DefaultBOSHPath, "text/xml", bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestBOSHSecured checks what the transport's encryption changes: behind a TLS proxy
// (tls_offloaded) PLAIN is offered but no -PLUS mechanism, since a BOSH session spans several
// connections; over plain HTTP neither STARTTLS nor PLAIN is.
func TestBOSHSecured(t *testing.T) {
	for _, offloaded := range []bool{true, false} {
		w := newTestWeb(t, func(s *Settings, c *c2s.Config) {
			s.TLSOffloaded = offloaded
			c.AllowPlainWithoutTLS = false
		})
		c := newBOSHClient(t, w)
		resp := c.create("")
		f := resp.String()
		if got := strings.Contains(f, "<mechanism>PLAIN</mechanism>"); got != offloaded {
			t.Errorf("offloaded=%v: PLAIN offered %v: %s", offloaded, got, f)
		}
		if strings.Contains(f, "-PLUS") || strings.Contains(f, "starttls") {
			t.Errorf("offloaded=%v: %s", offloaded, f)
		}
		if resp.Attr("secure") != strconv.FormatBool(offloaded) {
			t.Errorf("secure=%q", resp.Attr("secure"))
		}
		if offloaded {
			c.sid = ""
			c.login("alice", "tls")
		}
	}
}

// TestBOSHPolling checks a polling session (hold="0", XEP-0124 §12): requests are answered at
// once, and empty requests faster than the advertised polling interval end the session.
func TestBOSHPolling(t *testing.T) {
	w := newTestWeb(t, func(s *Settings, _ *c2s.Config) { s.BOSHPolling = time.Hour })
	c := newBOSHClient(t, w)
	resp := c.post(fmt.Sprintf(`<body xmlns="%s" rid="%d" to="localhost" hold="0" wait="60"/>`, NSHTTPBind, c.rid))
	c.sid = resp.Attr("sid")
	if resp.Attr("hold") != "0" || resp.Attr("requests") != "1" || resp.Attr("polling") != "3600" {
		t.Fatalf("creation: %s", resp)
	}
	if resp := c.send("", ""); resp.Attr("type") == "terminate" {
		t.Fatalf("first poll: %s", resp)
	}
	if resp := c.send("", ""); resp.Attr("condition") != "policy-violation" {
		t.Fatalf("second poll within the interval: %s", resp)
	}
}
