package c2s

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"

	"mellium.im/xmpp/jid"
)

// pairHandover connects two test servers as two nodes of a cluster, in process.
type pairHandover struct {
	name string
	peer **smServer
}

func (p pairHandover) NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "." + p.name
}

func (p pairHandover) Fetch(ctx context.Context, id string, bare jid.JID, h uint32) (*HandoverState, error) {
	if !strings.HasSuffix(id, ".other") && !strings.HasSuffix(id, ".A") && !strings.HasSuffix(id, ".B") {
		return nil, ErrNotHeld
	}
	handed, err := (*p.peer).cfg.Streams.HandOver(ctx, id, bare, h, nil)
	if err != nil {
		return nil, err
	}
	return handed.State, nil
}

func (p pairHandover) Taken(*HandoverState) {}

var clusterID = regexp.MustCompile(`<enabled xmlns="urn:xmpp:sm:3" id="([0-9a-f]+\.[A-Z])"`)

func TestResumeOnAnotherNode(t *testing.T) {
	var a, b *smServer
	a = newSMServer(t, smTestConfig(), "alice", "bob", "mallory")
	b = newSMServer(t, smTestConfig(), "alice", "bob", "mallory")
	a.cfg.Streams.SetHandover(pairHandover{name: "A", peer: &b})
	b.cfg.Streams.SetHandover(pairHandover{name: "B", peer: &a})

	alice := a.dial(t)
	alice.login("alice", "r1")
	alice.send(`<presence/><enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	m := clusterID.FindStringSubmatch(alice.until("<enabled"))
	if m == nil {
		t.Fatal("no resumption id naming the node")
	}
	bob := a.dial(t)
	bob.login("bob", "r1")
	bob.send(`<message to='alice@localhost/r1' type='chat'><body>m1</body></message><message to='alice@localhost/r1' type='chat'><body>m2</body></message>`)
	alice.until("m2</body>")
	alice.send(`<a xmlns='urn:xmpp:sm:3' h='1'/>`)
	alice.conn.Close()

	// Another account's resumption with the id fails and leaves the session alone.
	mal := b.dial(t)
	mal.auth("mallory")
	mal.send(`<resume xmlns='urn:xmpp:sm:3' previd='` + m[1] + `' h='0'/>`)
	if got := mal.until("</failed>"); !strings.Contains(got, "item-not-found") {
		t.Fatalf("resumption by another account: %s", got)
	}
	// An impossible count ends the stream; the session stays on A.
	bad := b.dial(t)
	bad.auth("alice")
	bad.send(`<resume xmlns='urn:xmpp:sm:3' previd='` + m[1] + `' h='9'/>`)
	if got := bad.until("</stream:stream>"); !strings.Contains(got, "handled-count-too-high") || !strings.Contains(got, `send-count="2"`) {
		t.Fatalf("impossible count: %s", got)
	}

	a2 := b.dial(t)
	a2.auth("alice")
	a2.send(`<resume xmlns='urn:xmpp:sm:3' previd='` + m[1] + `' h='1'/>`)
	got := a2.until("m2</body>")
	if !strings.Contains(got, `<resumed xmlns="urn:xmpp:sm:3" previd="`+m[1]+`" h="0"`) || strings.Contains(got, "m1</body>") {
		t.Fatalf("resumption on the other node: %s", got)
	}
	// The session is bound on B now, and gone from A without going to offline storage.
	if s := b.cfg.Core.Router.Session(jid.MustParse("alice@localhost/r1")); s == nil {
		t.Fatal("the session is not bound on the new node")
	}
	if s := a.cfg.Core.Router.Session(jid.MustParse("alice@localhost/r1")); s != nil {
		t.Fatal("the session is still bound on the old node")
	}
	select {
	case el := <-a.offline:
		t.Fatalf("a handed-over stanza went offline: %s", el)
	default:
	}
	// The counters carried over: what the client sends is counted on from there.
	a2.send(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>`)
	if got := a2.until(`<a xmlns="urn:xmpp:sm:3"`); !strings.Contains(got, `h="1"`) {
		t.Fatalf("count after the move: %s", got)
	}
	// A second resumption goes back to A through the id's fallback (the fake asks the peer).
	a2.conn.Close()
	a3 := a.dial(t)
	a3.auth("alice")
	a3.send(`<resume xmlns='urn:xmpp:sm:3' previd='` + m[1] + `' h='2'/>`)
	if got := a3.until("<resumed"); !strings.Contains(got, `previd="`+m[1]+`"`) {
		t.Fatalf("resumption back on the first node: %s", got)
	}
}
