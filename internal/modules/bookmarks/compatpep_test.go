package bookmarks_test

import (
	"context"
	"path/filepath"
	"testing"

	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

const legacyNodeItems = `<iq type="get" id="lp"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="storage:bookmarks"/></pubsub></iq>`

// TestCompatPEP covers urn:xmpp:bookmarks:1#compat-pep: the XEP-0048 document in the PEP node
// storage:bookmarks follows the other two stores, and a client publishing it changes them.
func TestCompatPEP(t *testing.T) {
	s := newServer(t, memory.New())
	a := s.Connect("alice@example.com/a")

	// A private storage write appears in the PEP node as the item "current", whitelisted.
	a.Input(`<iq type="set" id="s"><query xmlns="jabber:iq:private">` + legacyDoc + `</query></iq>`)
	has(t, a.Take(), `type="result" id="s"`)
	a.Input(legacyNodeItems)
	has(t, a.Take(), `<item id="current" publisher="alice@example.com"><storage xmlns="storage:bookmarks"><conference jid="council@conference.example.com" name="Council" autojoin="true"><nick>Puck</nick></conference>`)
	a.Input(`<iq type="get" id="c"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><configure node="storage:bookmarks"/></pubsub></iq>`)
	has(t, a.Take(), `<value>whitelist</value>`)

	// A XEP-0402 publish rewrites it.
	a.Input(`<iq type="set" id="p"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="urn:xmpp:bookmarks:1"><item id="play@conference.example.com">` +
		`<conference xmlns="urn:xmpp:bookmarks:1" name="The Play"/></item></publish></pubsub></iq>`)
	has(t, a.Take(), `type="result" id="p"`)
	a.Input(legacyNodeItems)
	has(t, a.Take(), `<conference jid="play@conference.example.com" name="The Play" autojoin="false"/>`, `<url name="Site" url="https://example.com/"/>`)

	// A client publishing the legacy document to PEP changes the XEP-0402 node and private
	// storage: the Orchard and the Play are gone, the Heath is new.
	a.Input(`<iq type="set" id="lpub"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="storage:bookmarks"><item id="current"><storage xmlns="storage:bookmarks">` +
		`<conference jid="council@conference.example.com" name="Council" autojoin="true"><nick>Puck</nick></conference>` +
		`<conference jid="heath@conference.example.com" name="Heath"/></storage></item></publish></pubsub></iq>`)
	has(t, a.Take(), `type="result" id="lpub"`)
	a.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="urn:xmpp:bookmarks:1"/></pubsub></iq>`)
	got := a.Take()
	has(t, got, `<item id="heath@conference.example.com"`, `<item id="council@conference.example.com"`)
	hasNot(t, got, `orchard@`, `play@`)
	a.Input(`<iq type="get" id="g"><query xmlns="jabber:iq:private"><storage xmlns="storage:bookmarks"/></query></iq>`)
	got = a.Take()
	has(t, got, `<conference jid="heath@conference.example.com" name="Heath"/>`)
	hasNot(t, got, `play@`)

	// Deleting the legacy node leaves the bookmarks alone.
	a.Input(`<iq type="set" id="d"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><delete node="storage:bookmarks"/></pubsub></iq>`)
	has(t, a.Take(), `type="result" id="d"`)
	a.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="urn:xmpp:bookmarks:1"/></pubsub></iq>`)
	has(t, a.Take(), `<item id="heath@conference.example.com"`)
}

func TestCompatPEPOnSQLite(t *testing.T) {
	b, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	s := newServer(t, b)
	a := s.Connect("alice@example.com/a")
	a.Input(`<iq type="set" id="lpub"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="storage:bookmarks"><item id="current"><storage xmlns="storage:bookmarks">` +
		`<conference jid="heath@conference.example.com" name="Heath" autojoin="true"/></storage></item></publish></pubsub></iq>`)
	has(t, a.Take(), `type="result" id="lpub"`)
	a.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="urn:xmpp:bookmarks:1"/></pubsub></iq>`)
	has(t, a.Take(), `<item id="heath@conference.example.com" publisher="alice@example.com"><conference xmlns="urn:xmpp:bookmarks:1" name="Heath" autojoin="true"/></item>`)
	a.Input(`<iq type="get" id="g"><query xmlns="jabber:iq:private"><storage xmlns="storage:bookmarks"/></query></iq>`)
	has(t, a.Take(), `<conference jid="heath@conference.example.com" name="Heath" autojoin="true"/>`)
}
