package bookmarks_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"impetus/internal/module"
	"impetus/internal/modules/bookmarks"
	"impetus/internal/modules/pep"
	"impetus/internal/modules/private"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

func newServer(t *testing.T, b storage.Backend) *rostertest.Server {
	t.Helper()
	s := rostertest.New(t, b, rostertest.Config{}, "example.com")
	h := s.Hosts["example.com"]
	p := pep.New()
	priv := &private.Private{MaxEntries: 3}
	for _, m := range []module.Module{p, priv, new(bookmarks.Bookmarks)} {
		if err := m.Provision(h); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = p.Stop(); _ = priv.Stop() })
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

func hasNot(t *testing.T, got []string, bad ...string) {
	t.Helper()
	all := strings.Join(got, "\n")
	for _, w := range bad {
		if strings.Contains(all, w) {
			t.Errorf("unexpected %s in:\n%s", w, all)
		}
	}
}

const legacyDoc = `<storage xmlns="storage:bookmarks">` +
	`<conference jid="council@conference.example.com" name="Council" autojoin="true"><nick>Puck</nick></conference>` +
	`<conference jid="orchard@conference.example.com" name="Orchard"/>` +
	`<url name="Site" url="https://example.com/"/>` +
	`</storage>`

func TestLegacyToPEP(t *testing.T) {
	s := newServer(t, memory.New())
	a := s.Connect("alice@example.com/a")
	a.Input(`<iq type="set" id="s"><query xmlns="jabber:iq:private">` + legacyDoc + `</query></iq>`)
	has(t, a.Take(), `type="result" id="s"`)
	a.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="urn:xmpp:bookmarks:1"/></pubsub></iq>`)
	has(t, a.Take(),
		`<item id="council@conference.example.com" publisher="alice@example.com"><conference xmlns="urn:xmpp:bookmarks:1" name="Council" autojoin="true"><nick>Puck</nick></conference></item>`,
		`<item id="orchard@conference.example.com" publisher="alice@example.com"><conference xmlns="urn:xmpp:bookmarks:1" name="Orchard"/></item>`)
	// The node was created with XEP-0402's settings.
	a.Input(`<iq type="get" id="c"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><configure node="urn:xmpp:bookmarks:1"/></pubsub></iq>`)
	has(t, a.Take(), `<field var="pubsub#access_model" type="list-single" label="Who may retrieve items"><option><value>open</value></option><option><value>presence</value></option><option><value>roster</value></option><option><value>whitelist</value></option><value>whitelist</value>`,
		`<value>never</value>`)

	// Dropping a room retracts only it.
	a.Input(`<iq type="set" id="s2"><query xmlns="jabber:iq:private"><storage xmlns="storage:bookmarks"><conference jid="council@conference.example.com" name="Council" autojoin="true"><nick>Puck</nick></conference></storage></query></iq>`)
	a.Take()
	a.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="urn:xmpp:bookmarks:1"/></pubsub></iq>`)
	got := a.Take()
	has(t, got, `council@conference.example.com`)
	hasNot(t, got, `orchard@conference.example.com`)
}

func TestPEPToLegacy(t *testing.T) {
	dir := t.TempDir()
	b, err := sqlite.Open(context.Background(), filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	s := newServer(t, b)
	a := s.Connect("alice@example.com/a")
	a.Input(`<iq type="set" id="s"><query xmlns="jabber:iq:private">` + legacyDoc + `</query></iq>`)
	a.Take()
	a.Input(`<iq type="set" id="p"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="urn:xmpp:bookmarks:1"><item id="play@conference.example.com">` +
		`<conference xmlns="urn:xmpp:bookmarks:1" name="The Play" autojoin="1"><nick>JC</nick><extensions><state xmlns="x:state"/></extensions></conference></item></publish></pubsub></iq>`)
	has(t, a.Take(), `type="result" id="p"`)
	a.Input(`<iq type="set" id="r"><pubsub xmlns="http://jabber.org/protocol/pubsub"><retract node="urn:xmpp:bookmarks:1"><item id="orchard@conference.example.com"/></retract></pubsub></iq>`)
	has(t, a.Take(), `type="result" id="r"`)
	a.Input(`<iq type="get" id="g"><query xmlns="jabber:iq:private"><storage xmlns="storage:bookmarks"/></query></iq>`)
	got := a.Take()
	has(t, got,
		`<url name="Site" url="https://example.com/"/>`,
		`<conference jid="council@conference.example.com" name="Council" autojoin="true"><nick>Puck</nick></conference>`,
		`<conference jid="play@conference.example.com" name="The Play" autojoin="true"><nick>JC</nick><state xmlns="x:state"/></conference>`)
	hasNot(t, got, `orchard`)
}
