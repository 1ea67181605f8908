package s2s

import (
	"errors"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// Pair names the stream a stanza would use, and refuses what Send refuses, without opening
// anything: a cluster uses it to find the node holding the pair.
func TestPair(t *testing.T) {
	n := newNetwork()
	a := n.add(t, func(c *Config) { c.RemoteAllowed = func(d string) bool { return d != "closed.test" } }, "a.test", "a2.test")
	for _, c := range []struct {
		from, to      string
		local, remote string
		cond          string
	}{
		{"alice@a.test/r", "bob@b.test", "a.test", "b.test", ""},
		{"a2.test", "b.test", "a2.test", "b.test", ""},
		{"mallory@x.test", "bob@b.test", "", "", "remote-server-not-found"},
		{"alice@a.test", "bob@a2.test", "", "", "remote-server-not-found"},
		{"alice@a.test", "bob@closed.test", "", "", "remote-server-not-found"},
	} {
		local, remote, err := a.m.Pair(message(c.from, c.to, "x"), jid.MustParse(c.to))
		var serr *stanza.Error
		switch {
		case c.cond == "" && (err != nil || local != c.local || remote != c.remote):
			t.Errorf("%s → %s: %q %q %v", c.from, c.to, local, remote, err)
		case c.cond != "" && (!errors.As(err, &serr) || serr.Condition != c.cond):
			t.Errorf("%s → %s: %v, want %s", c.from, c.to, err, c.cond)
		}
	}
	a.m.mu.Lock()
	opened := len(a.m.out)
	a.m.mu.Unlock()
	if opened != 0 {
		t.Fatalf("Pair opened %d streams", opened)
	}
}

// CloseOutbound ends the pair's stream after what was queued left; the next stanza opens a
// new stream.
func TestCloseOutbound(t *testing.T) {
	n := newNetwork()
	a := n.add(t, nil, "a.test")
	b := n.add(t, nil, "b.test")
	if err := send(t, a, message("alice@a.test/r", "bob@b.test", "1")); err != nil {
		t.Fatal(err)
	}
	receive(t, b)
	a.m.mu.Lock()
	s := a.m.out[pair{"a.test", "b.test"}]
	a.m.mu.Unlock()
	if s == nil {
		t.Fatal("no stream")
	}
	if err := send(t, a, message("alice@a.test/r", "bob@b.test", "2")); err != nil {
		t.Fatal(err)
	}
	a.m.CloseOutbound("a.test", "b.test")
	if got := receive(t, b); got.Child(stanza.NSClient, "body").Text() != "2" {
		t.Fatalf("routed %s", got)
	}
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end")
	}
	a.m.CloseOutbound("a.test", "nowhere.test") // no stream: nothing happens
	if err := send(t, a, message("alice@a.test/r", "bob@b.test", "3")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, b); got.Child(stanza.NSClient, "body").Text() != "3" {
		t.Fatalf("routed %s", got)
	}
	a.m.mu.Lock()
	s2 := a.m.out[pair{"a.test", "b.test"}]
	a.m.mu.Unlock()
	if s2 == nil || s2 == s {
		t.Fatal("the stanza after the close did not open a new stream")
	}
}
