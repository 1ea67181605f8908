package private_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"impetus/internal/modules/private"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

func newServer(t *testing.T, b storage.Backend) *rostertest.Server {
	t.Helper()
	s := rostertest.New(t, b, rostertest.Config{}, "example.com")
	p := &private.Private{MaxEntries: 3}
	if err := p.Provision(s.Hosts["example.com"]); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return s
}

func has(t *testing.T, got []string, want ...string) {
	t.Helper()
	all := strings.Join(got, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("missing %s in:\n%s", w, all)
		}
	}
}

func TestPrivateStorage(t *testing.T) {
	s := newServer(t, memory.New())
	a := s.Connect("alice@example.com/a")
	a.Input(`<iq type="get" id="g1"><query xmlns="jabber:iq:private"><prefs xmlns="x:prefs"/></query></iq>`)
	has(t, a.Take(), `<iq type="result" id="g1" to="alice@example.com/a" from="alice@example.com"><query xmlns="jabber:iq:private"><prefs xmlns="x:prefs"/></query></iq>`)
	a.Input(`<iq type="set" id="s1"><query xmlns="jabber:iq:private"><prefs xmlns="x:prefs"><color>blue</color></prefs></query></iq>`)
	has(t, a.Take(), `type="result" id="s1"`)
	a.Input(`<iq type="get" id="g2"><query xmlns="jabber:iq:private"><prefs xmlns="x:prefs"/></query></iq>`)
	has(t, a.Take(), `<prefs xmlns="x:prefs"><color>blue</color></prefs>`)

	// Another account's data is off limits; jabber: namespaces cannot be stored.
	b := s.Connect("bob@example.com/b")
	b.Input(`<iq type="get" id="x" to="alice@example.com"><query xmlns="jabber:iq:private"><prefs xmlns="x:prefs"/></query></iq>`)
	has(t, b.Take(), `<forbidden xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>`)
	a.Input(`<iq type="set" id="j"><query xmlns="jabber:iq:private"><query xmlns="jabber:iq:roster"/></query></iq>`)
	has(t, a.Take(), `<not-acceptable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>`)
	a.Input(`<iq type="set" id="e"><query xmlns="jabber:iq:private"/></iq>`)
	has(t, a.Take(), `<not-acceptable`)

	// The entry bound (3 here) is a resource constraint.
	a.Input(`<iq type="set" id="m"><query xmlns="jabber:iq:private"><a xmlns="x:a"/><b xmlns="x:b"/><c xmlns="x:c"/></query></iq>`)
	has(t, a.Take(), `<resource-constraint`)
}

func TestPrivateStorageSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.sqlite")
	b, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, b)
	a := s.Connect("alice@example.com/a")
	a.Input(`<iq type="set" id="s"><query xmlns="jabber:iq:private"><prefs xmlns="x:prefs" xml:lang="en"><color>blue &amp; green</color></prefs></query></iq>`)
	has(t, a.Take(), `type="result" id="s"`)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	s2 := newServer(t, b2)
	a2 := s2.Connect("alice@example.com/a")
	a2.Input(`<iq type="get" id="g"><query xmlns="jabber:iq:private"><prefs xmlns="x:prefs"/></query></iq>`)
	has(t, a2.Take(), `<prefs xmlns="x:prefs" xml:lang="en"><color>blue &amp; green</color></prefs>`)
}
