package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/c2s"
	"impetus/internal/stanza"
)

func TestHolderOf(t *testing.T) {
	for id, want := range map[string]string{
		"0a1b2c.xmpp1":      "xmpp1",
		"0a1b2c.n-2_x":      "n-2_x",
		"0a1b2c":            "",
		"0a1b2c.":           "",
		"0a1b2c.bad/name":   "",
		"a.b.c.node3":       "node3",
		"0a1b2c.with space": "",
	} {
		if got := holderOf(id); got != want {
			t.Errorf("holderOf(%q) = %q, want %q", id, got, want)
		}
	}
	h := &handover{n: &Node{cfg: Config{NodeName: "xmpp7"}}}
	id := h.NewID()
	if holderOf(id) != "xmpp7" || len(id) != 24+1+5 || id == h.NewID() {
		t.Fatalf("NewID: %q", id)
	}
}

func TestHandoverStateRoundTrip(t *testing.T) {
	msg := stanza.NewElement(stanza.NSClient, "message", stanza.Attr{Name: "to", Value: "alice@example.org/desk"},
		stanza.Attr{Name: "from", Value: "bob@example.org/phone"}, stanza.Attr{Name: "type", Value: "chat"})
	msg.AddChild(stanza.NewElement(stanza.NSClient, "body").AddText("a < b & 'c'"))
	pres := stanza.NewElement(stanza.NSClient, "presence")
	pres.AddChild(stanza.NewElement(stanza.NSClient, "show").AddText("away"))
	in := &c2s.HandoverState{ID: "00.n1", JID: jid.MustParse("alice@example.org/desk"), InH: 7, OutH: 4294967295, Acked: 4294967290,
		Queue: []*stanza.Element{msg}, Held: []*stanza.Element{pres}, Timeout: 300 * time.Second,
		Available: true, Priority: -5, Presence: pres, Interests: []string{"jabber:iq:roster"}, Inactive: true}
	out, err := fromWire(toWire(in), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if out.Holder != "n1" || out.ID != in.ID || !out.JID.Equal(in.JID) || out.InH != 7 || out.OutH != in.OutH || out.Acked != in.Acked ||
		out.Timeout != in.Timeout || !out.Available || out.Priority != -5 || !out.Inactive || len(out.Interests) != 1 {
		t.Fatalf("state: %+v", out)
	}
	if len(out.Queue) != 1 || !strings.Contains(out.Queue[0].String(), "a &lt; b &amp;") || out.Queue[0].Attr("from") != "bob@example.org/phone" {
		t.Fatalf("queue: %v", out.Queue)
	}
	if out.Presence == nil || out.Presence.Child(stanza.NSClient, "show") == nil || len(out.Held) != 1 {
		t.Fatalf("presence: %v, held: %v", out.Presence, out.Held)
	}
	if _, err := fromWire(&wireState{JID: "alice@example.org/desk", Queue: []string{"<message"}}, "n1"); err == nil {
		t.Fatal("a truncated stanza was accepted")
	}
}

// TestFetchFillsAMissedEntry is the last line of defence against a watch that missed writes:
// a registry read for a recipient the replica lacks finds it and puts it into the replica.
func TestFetchFillsAMissedEntry(t *testing.T) {
	url := testNATS(t)
	ctx := context.Background()
	c := testConfig(url, "a")
	nc, err := connect(&c, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r, err := OpenRegistry(ctx, nc, &c)
	if err != nil {
		t.Fatal(err)
	}
	// No watch: every write is missed, and none counts as skipped (the watch saw nothing).
	rev, err := r.Claim(ctx, "u@example.org", "phone", Entry{Node: "b", Inc: 1, Avail: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Claim(ctx, "u@example.org", "desk", Entry{Node: "b", Inc: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if skipped, err := r.Fetch(ctx, "u@example.org", "phone"); err != nil || skipped {
		t.Fatalf("fetching a full JID: skipped %v, err %v", skipped, err)
	}
	if rec, ok := r.Lookup("u@example.org", "phone"); !ok || rec.Rev != rev || rec.Node != "b" || !rec.Avail {
		t.Fatalf("replica after the fetch: %+v %v", rec, ok)
	}
	if _, err := r.Fetch(ctx, "u@example.org", ""); err != nil || len(r.Resources("u@example.org")) != 2 {
		t.Fatalf("fetching a bare JID: err %v, %d resources", err, len(r.Resources("u@example.org")))
	}
	if _, err := r.Fetch(ctx, "nobody@example.org", ""); err != nil || len(r.Resources("nobody@example.org")) != 0 {
		t.Fatalf("fetching an unknown account: %v", err)
	}
	// Once the watch delivered later revisions, an entry the replica lacks was skipped.
	r.forget("u@example.org", "phone", rev)
	r.noteSeen(rev + 10)
	if skipped, err := r.Fetch(ctx, "u@example.org", "phone"); err != nil || !skipped {
		t.Fatalf("fetching an entry the watch passed over: skipped %v, err %v", skipped, err)
	}
}
