package cluster

import (
	"bufio"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// enableSM turns on resumable stream management (XEP-0198) and returns the resumption id.
// The reader goroutine is running, so the answer is awaited among the received elements.
func (c *client) enableSM() string {
	c.t.Helper()
	c.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	e := c.expect("<enabled/>", func(e *element) bool { return e.XMLName.Local == "enabled" || e.XMLName.Local == "failed" })
	if e.XMLName.Local != "enabled" || e.attr("id") == "" || e.attr("resume") != "true" {
		c.t.Fatalf("%s: enabling stream management: %v", c.full, e)
	}
	return e.attr("id")
}

// drop ends the client's TCP connection without closing the stream, as a network failure
// would: the server hibernates the session.
func (c *client) drop() {
	_ = c.conn.Close()
	<-c.done
}

// tryResume authenticates on n and resumes previd with the acknowledgement count h instead of
// binding. It returns the client, reading, when the answer is <resumed/>, and the answer.
func tryResume(t *testing.T, n *node, user, pass, previd string, h int) (*client, *element) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", n.addr(), wait)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(wait))
	c := &client{t: t, conn: conn, dec: xml.NewDecoder(bufio.NewReader(conn)), in: make(chan *element, 10000), done: make(chan struct{})}
	open := func() {
		fmt.Fprintf(conn, `<?xml version='1.0'?><stream:stream to='%s' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`, domain)
		if _, err := c.next(); err != nil {
			t.Fatalf("stream features: %v", err)
		}
	}
	open()
	auth := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	fmt.Fprintf(conn, `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>`, auth)
	if e, err := c.next(); err != nil || e.XMLName.Local != "success" {
		t.Fatalf("authentication: %v %v", e, err)
	}
	open()
	fmt.Fprintf(conn, `<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>`, xmlEscape(previd), h)
	e, err := c.next()
	if err != nil {
		t.Fatalf("resume on %s: %v", n.name, err)
	}
	_ = conn.SetDeadline(time.Time{})
	if e.XMLName.Local != "resumed" {
		conn.Close()
		return nil, e
	}
	go c.read()
	t.Cleanup(c.close)
	return c, e
}

// resumeOn resumes previd on n and fails the test unless the session is resumed.
func resumeOn(t *testing.T, n *node, user, pass, previd string, h int) (*client, *element) {
	t.Helper()
	c, e := tryResume(t, n, user, pass, previd, h)
	if c == nil {
		t.Fatalf("resuming %s on %s: %v", previd, n.name, e)
	}
	return c, e
}

func countMessages(els []*element, body string) int {
	n := 0
	for _, e := range els {
		if b := e.child("body"); e.XMLName.Local == "message" && b != nil && b.Text == body {
			n++
		}
	}
	return n
}

// TestResumeOnAnotherNode resumes a stream-management session on a node other than the one
// holding it (XEP-0198 §5 across the cluster): hibernated, still attached, and after a move.
func TestResumeOnAnotherNode(t *testing.T) {
	pg := pgSchemaURL(t)
	users := map[string]string{"alice": "pw", "bob": "pw", "mallory": "pw"}
	nodes := startCluster(t, pg, users)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	bob := login(t, n3, "bob", "pw", "phone")
	bob.iq(`<iq type='get'><query xmlns='jabber:iq:roster'/></iq>`)
	bob.send(`<presence/>`)
	bob.sync()

	alice := login(t, n1, "alice", "pw", "desk")
	id := alice.enableSM()
	if !strings.HasSuffix(id, "."+n1.name) {
		t.Fatalf("resumption id %q does not name its node", id)
	}
	alice.iq(`<iq type='get'><query xmlns='jabber:iq:roster'/></iq>`)
	alice.send(`<presence/>`)
	alice.sync()
	subscribe(t, bob, alice)
	alice.sync()
	full := alice.full
	// The server's count of the stanzas it handled from alice (roster pushes are answered
	// by the reader, so it is asked rather than counted).
	alice.send(`<r xmlns='urn:xmpp:sm:3'/>`)
	handled := alice.expect("<a/>", func(e *element) bool { return e.XMLName.Local == "a" }).attr("h")

	// hibernated session resumed on another node
	{
		t.Log("hibernated session resumed on another node")
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>m1</body></message>`, full))
		alice.expect("m1", isMessage(bob.full, "m1"))
		alice.drop()
		// The message reaches the hibernated session on n1 (or, once the loss is noticed,
		// waits in its queue); either way it must come back with the resumption.
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>m2</body></message>`, full))
		bob.sync()

		// Another account cannot take the session over with its id (XEP-0198 §5).
		if c, e := tryResume(t, n2, "mallory", "pw", id, 0); c != nil || e.XMLName.Local != "failed" || e.child("item-not-found") == nil {
			t.Fatalf("resumption of alice's session by mallory: %v", e)
		}

		var e *element
		alice, e = resumeOn(t, n2, "alice", "pw", id, 0)
		if e.attr("previd") != id || e.attr("h") != handled {
			t.Fatalf("<resumed/> %v: want previd %s and h %s", e, id, handled)
		}
		alice.full = full
		// Every stanza not acknowledged is sent again: with h=0, m1 too.
		alice.expect("m1 again", isMessage(bob.full, "m1"))
		alice.expect("m2 from the hibernated session", isMessage(bob.full, "m2"))
		// The session is now on n2: bare and full JID messages from n3 reach it, the registry
		// names n2, and bob never saw alice go.
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>m3</body></message>`, full))
		alice.expect("m3 after the move", isMessage(bob.full, "m3"))
		bob.send(`<message type='chat' to='alice@localhost'><body>m4</body></message>`)
		alice.expect("m4 to the bare JID", isMessage(bob.full, "m4"))
		alice.send(fmt.Sprintf(`<message type='chat' to='%s'><body>r1</body></message>`, bob.full))
		bob.expect("alice's message from the new node", isMessage(full, "r1"))
		for _, e := range bob.drain() {
			if isPresence(full, "unavailable")(e) {
				t.Fatalf("bob saw alice unavailable during the hand-over")
			}
		}
		nodesOf := registryNodes(t, n3.clientURL)
		if len(nodesOf) == 0 {
			t.Fatal("empty registry")
		}
		for k, node := range nodesOf {
			if strings.Contains(k, "ZGVzaw") && node != n2.name { // base64url of "desk"
				t.Fatalf("registry entry %s names %s, not n2", k, node)
			}
		}
	}

	// attached session resumed on a third node
	{
		t.Log("attached session resumed on a third node")
		// The connection on n2 is still up (the client thinks it is dead). The id names n1,
		// which no longer holds the session: the registry leads to n2.
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>m5</body></message>`, full))
		alice.expect("m5", isMessage(bob.full, "m5"))
		old := alice
		var e *element
		alice, e = resumeOn(t, n3, "alice", "pw", id, 0)
		if e.attr("previd") != id {
			t.Fatalf("<resumed/> %v", e)
		}
		alice.full = full
		old.expect("the old connection closed with conflict", isStreamError("conflict"))
		alice.expect("m5 again", isMessage(bob.full, "m5"))
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>m6</body></message>`, full))
		alice.expect("m6 on n3", isMessage(bob.full, "m6"))
		got := alice.drain()
		if n := countMessages(got, "m6"); n != 0 {
			t.Fatalf("m6 delivered %d more times", n)
		}
	}

	// impossible acknowledgement
	{
		t.Log("impossible acknowledgement")
		// Too high an h ends the stream (XEP-0198 §4); the holder, asked through NATS,
		// keeps the session, which is then resumed on n1.
		alice.drop()
		if c, e := tryResume(t, n1, "alice", "pw", id, 1<<30); c != nil || e.XMLName.Local != "error" || e.find("handled-count-too-high") == nil {
			t.Fatalf("resumption with an impossible h: %v", e)
		}
		var e *element
		alice, e = resumeOn(t, n1, "alice", "pw", id, 0)
		alice.full = full
		if e.attr("previd") != id {
			t.Fatalf("<resumed/> %v", e)
		}
		bob.send(fmt.Sprintf(`<message type='chat' to='%s'><body>m7</body></message>`, full))
		alice.expect("m7 back on n1", isMessage(bob.full, "m7"))
	}

	// holder lost
	{
		t.Log("holder lost")
		// The node holding the session crashes: the resumption fails with item-not-found and
		// the client binds anew (XEP-0198 §5).
		n1.kill9()
		alice.drop()
		if c, e := tryResume(t, n2, "alice", "pw", id, 0); c != nil || e.XMLName.Local != "failed" || e.child("item-not-found") == nil {
			t.Fatalf("resumption of a session of a lost node: %v", e)
		}
		alice = login(t, n2, "alice", "pw", "desk")
		alice.send(`<presence/>`)
		alice.sync()
		// The registry's leader may have been on n1: the new session is registered once
		// JetStream elected another, and messages sent before that wait in offline storage.
		chatEventually(t, bob, alice, full, "m8", 60*time.Second)
	}
}

// chatEventually sends numbered messages from one client to another until one arrives, at most
// within bound: after a node's crash, the cluster needs a leader election before it routes to
// sessions bound meanwhile.
func chatEventually(t *testing.T, from, to *client, addr, body string, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for i := 0; ; i++ {
		b := fmt.Sprintf("%s-%d", body, i)
		from.send(fmt.Sprintf(`<message type='chat' to='%s'><body>%s</body></message>`, addr, b))
		timer := time.NewTimer(time.Second)
	wait:
		for {
			select {
			case e := <-to.in:
				if isMessage(from.full, b)(e) {
					timer.Stop()
					return
				}
				to.pending = append(to.pending, e)
			case <-to.done:
				t.Fatalf("%s: stream ended while waiting for %s", to.full, body)
			case <-timer.C:
				break wait
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within %v", to.full, body, bound)
		}
	}
}

// TestSlixmppResumeOnAnotherNode has a third-party client, slixmpp's XEP-0198 plugin,
// resume its session on another node than the one that issued its resumption id.
func TestSlixmppResumeOnAnotherNode(t *testing.T) {
	pg := pgSchemaURL(t)
	nodes := startCluster(t, pg, map[string]string{"alice": "pw", "bob": "pw"})
	n1, n2 := nodes[0], nodes[1]
	var res struct {
		ID      string `json:"id"`
		Before  string `json:"before"`
		After   string `json:"after"`
		BobGot  string `json:"bob_got"`
		Resumed any    `json:"resumed_h"`
	}
	runSlix(t, "cluster_sm.py", "resume_elsewhere", n1, n2, &res)
	if !strings.HasSuffix(res.ID, "."+n1.name) || res.Before != "before" || res.After != "while away" || res.BobGot != "back" {
		t.Fatalf("slixmpp resumption on another node: %+v", res)
	}
}
