package test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestIdleConnectionsPark checks idle_release_time: bound TLS sessions that read nothing give
// up their goroutine (impetus_connections_parked), and a parked session still receives,
// wakes when it sends, ends when replaced, kicked or idle past idle_time, and does not hold up
// the server's shutdown.
func TestIdleConnectionsPark(t *testing.T) {
	mport := freePort(t, "tcp4", "127.0.0.1:0")
	o := startOps(t, map[string]string{"alice": "pw", "bob": "pw", "carol": "pw"}, func(o *opsServer, port int) string {
		return o.opsConfig(fmt.Sprintf(`metrics_listen = "127.0.0.1:%d"`, mport), "", `idle_release_time = 1
  Peer "127.0.0.7" { idle_time = 4 }`, port)
	})
	metric := func(name string) int {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("metrics lack %s:\n%s", name, body)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	waitMetric := func(name string, want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := metric(name)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is %d, want %d", name, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	alice := dialRaw(t, o.Server)
	_, aliceJID := alice.login(o.Server, "alice", "pw", "desk")
	bob := dialRaw(t, o.Server)
	_, bobJID := bob.login(o.Server, "bob", "pw", "desk")
	waitMetric("impetus_connections_parked", 2)

	// A parked session receives (writing needs no reader) and wakes when it sends.
	bob.send(fmt.Sprintf(`<message to='%s' type='chat' id='m1'><body>to a parked session</body></message>`, aliceJID))
	if m := alice.mustElement("bob's message"); m.attr("id") != "m1" {
		t.Fatalf("alice got %s, want message m1", m)
	}
	waitMetric("impetus_connections_parked", 2)
	alice.send(fmt.Sprintf(`<message to='%s' type='chat' id='m2'><body>from a parked session</body></message>`, bobJID))
	if m := bob.mustElement("alice's message"); m.attr("id") != "m2" {
		t.Fatalf("bob got %s, want message m2", m)
	}
	// An iq round trip after waking: the stream reads on from where it parked.
	waitMetric("impetus_connections_parked", 2)
	alice.send(`<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if r := alice.mustElement("the ping result"); r.attr("id") != "p1" || r.attr("type") != "result" {
		t.Fatalf("ping answered with %s", r)
	}

	// Replacing a parked session (same resource) ends the old stream and its connection.
	waitMetric("impetus_connections_parked", 2)
	alice2 := dialRaw(t, o.Server)
	alice2.login(o.Server, "alice", "pw", "desk")
	alice.expectStreamError("conflict")
	waitMetric("impetus_sessions", 2)
	waitMetric("impetus_connections_open", 2)

	// Kicking a parked session.
	waitMetric("impetus_connections_parked", 2)
	o.mustCtl("kick", bobJID)
	bob.expectStreamError("policy-violation|reset|not-authorized|system-shutdown|conflict")
	waitMetric("impetus_sessions", 1)
	waitMetric("impetus_connections_open", 1)

	// idle_time still ends a session that sends nothing while parked.
	carol := lstDial(t, "tcp", "127.0.0.7", o.Addr4())
	carol.login(o.Server, "carol", "pw", "idle")
	waitMetric("impetus_connections_parked", 2)
	carol.expectStreamError("connection-timeout")
	waitMetric("impetus_sessions", 1)

	// Shutdown with a parked session ends promptly and cleanly.
	waitMetric("impetus_connections_parked", 1)
	done := make(chan struct{})
	go func() { o.Stop(t); close(done) }()
	alice2.expectStreamError("system-shutdown")
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not stop with a parked session open")
	}
}
