package pep_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/storage"
	"impetus/internal/storage/sqlite"
)

const devices = "eu.siacs.conversations.axolotl.devicelist"

func devicePublish(id string) string {
	return publishWith(devices, "current", `<list xmlns="eu.siacs.conversations.axolotl"><device id="`+id+`"/></list>`, [2]string{"pubsub#access_model", "open"})
}

func subscribeXML(to, node, j string) string {
	return `<iq type="set" id="sub" to="` + to + `"><pubsub xmlns="http://jabber.org/protocol/pubsub"><subscribe node="` + node + `" jid="` + j + `"/></pubsub></iq>`
}

func unsubscribeXML(to, node, j string) string {
	return `<iq type="set" id="unsub" to="` + to + `"><pubsub xmlns="http://jabber.org/protocol/pubsub"><unsubscribe node="` + node + `" jid="` + j + `"/></pubsub></iq>`
}

func TestExplicitSubscriptionOpenNode(t *testing.T) {
	e := memEnv(t)
	jb := e.Connect("juliet@example.com/balcony")
	jb.Input(devicePublish("1"))
	jb.Take()
	// Benvolio shares no presence with Juliet (XEP-0163 §4 note): he subscribes explicitly.
	bv := e.Connect("benvolio@example.com/b")
	bv.Input(`<presence/>`)
	bv.Take()
	bv.Input(subscribeXML("juliet@example.com", devices, "romeo@example.com"))
	has(t, bv.Take(), `<invalid-jid xmlns="http://jabber.org/protocol/pubsub#errors"/>`)
	bv.Input(subscribeXML("juliet@example.com", devices, "benvolio@example.com"))
	got := bv.Take()
	has(t, got, `<subscription node="`+devices+`" jid="benvolio@example.com" subscription="subscribed"/>`,
		// The last item follows the subscription (XEP-0060 §6.1.7).
		`<device id="1"/>`)
	bv.Input(`<iq type="get" id="subs" to="juliet@example.com"><pubsub xmlns="http://jabber.org/protocol/pubsub"><subscriptions/></pubsub></iq>`)
	has(t, bv.Take(), `<subscriptions><subscription node="`+devices+`" jid="benvolio@example.com" subscription="subscribed"/></subscriptions>`)

	// A publish reaches him (no presence information: at the bare JID), without the replyto
	// address, which only entities with a presence subscription to Juliet may see.
	jb.Input(devicePublish("2"))
	jb.Take()
	got = bv.Take()
	has(t, got, `from="juliet@example.com" to="benvolio@example.com" type="headline"`, `<device id="2"/>`)
	hasNot(t, got, `replyto`)

	// The owner sees and manages the subscriptions.
	jb.Input(`<iq type="get" id="os"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><subscriptions node="` + devices + `"/></pubsub></iq>`)
	has(t, jb.Take(), `<subscriptions node="`+devices+`"><subscription jid="benvolio@example.com" subscription="subscribed"/></subscriptions>`)

	bv.Input(unsubscribeXML("juliet@example.com", devices, "benvolio@example.com"))
	has(t, bv.Take(), `type="result" id="unsub"`)
	bv.Input(unsubscribeXML("juliet@example.com", devices, "benvolio@example.com"))
	has(t, bv.Take(), `<not-subscribed xmlns="http://jabber.org/protocol/pubsub#errors"/>`)
	jb.Input(devicePublish("3"))
	jb.Take()
	hasNot(t, bv.Take(), `<device id="3"/>`)

	// The owner subscribes him again, and removes him; he is told both times (§8.8.4).
	jb.Input(`<iq type="set" id="ms"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><subscriptions node="` + devices + `"><subscription jid="benvolio@example.com/b" subscription="subscribed"/></subscriptions></pubsub></iq>`)
	has(t, jb.Take(), `type="result" id="ms"`)
	has(t, bv.Take(), `<subscription node="`+devices+`" jid="benvolio@example.com/b" subscription="subscribed"/>`)
	jb.Input(`<iq type="set" id="ms2"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><subscriptions node="` + devices + `"><subscription jid="benvolio@example.com/b" subscription="none"/></subscriptions></pubsub></iq>`)
	jb.Take()
	has(t, bv.Take(), `subscription="none"`)
	// Subscribing to a node that does not exist.
	bv.Input(subscribeXML("juliet@example.com", "nothing", "benvolio@example.com"))
	has(t, bv.Take(), `<item-not-found`)
}

func TestExplicitSubscriptionAccessAndReplyTo(t *testing.T) {
	e := memEnv(t)
	e.befriend(t, "juliet@example.com", "romeo@example.com")
	e.caps.set("romeo@example.com/orchard", tune+"+notify")
	jb := e.Connect("juliet@example.com/balcony")
	ro := e.Connect("romeo@example.com/orchard")
	ro2 := e.Connect("romeo@example.com/garden") // no +notify
	bv := e.Connect("benvolio@example.com/b")
	for _, s := range []interface {
		Input(string)
		Take() []string
	}{ro, ro2, bv, jb} {
		s.Input(`<presence/>`)
	}
	ro.Take()
	ro2.Take()
	bv.Take()
	jb.Take()
	jb.Input(publishTune("t1", "One"))
	jb.Take()
	ro.Take()

	// The presence access model refuses a stranger.
	bv.Input(subscribeXML("juliet@example.com", tune, "benvolio@example.com"))
	has(t, bv.Take(), `<not-authorized`, `<presence-subscription-required`)
	// Romeo subscribes his resource that did not ask for the node in its capabilities.
	ro2.Input(subscribeXML("juliet@example.com", tune, "romeo@example.com/garden"))
	has(t, ro2.Take(), `subscription="subscribed"`, `<title>One</title>`)

	jb.Input(publishTune("t2", "Two"))
	jb.Take()
	// Both of Romeo's resources get the notification once, with Juliet's publishing resource
	// as replyto (XEP-0163 §4.3.1): Romeo has a presence subscription to her.
	for _, s := range []interface{ Take() []string }{ro, ro2} {
		got := s.Take()
		has(t, got, `<title>Two</title>`,
			`<addresses xmlns="http://jabber.org/protocol/address"><address type="replyto" jid="juliet@example.com/balcony"/></addresses>`)
		if n := strings.Count(joined(got), `<title>Two</title>`); n != 1 {
			t.Errorf("%d notifications: %s", n, joined(got))
		}
	}
}

func TestAccessNarrowingRetracts(t *testing.T) {
	e := memEnv(t)
	e.befriend(t, "juliet@example.com", "romeo@example.com")
	e.caps.set("romeo@example.com/orchard", devices+"+notify")
	jb := e.Connect("juliet@example.com/balcony")
	ro := e.Connect("romeo@example.com/orchard")
	bv := e.Connect("benvolio@example.com/b")
	ro.Input(`<presence/>`)
	bv.Input(`<presence/>`)
	jb.Input(`<presence/>`)
	jb.Input(devicePublish("1"))
	jb.Take()
	ro.Take()
	bv.Take()
	bv.Input(subscribeXML("juliet@example.com", devices, "benvolio@example.com"))
	bv.Take()

	// From open to presence: Benvolio may not read the node any more. He loses his
	// subscription and is sent the retraction of its item; Romeo, still admitted, is not.
	jb.Input(`<iq type="set" id="cf"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><configure node="` + devices + `"><x xmlns="jabber:x:data" type="submit"><field var="FORM_TYPE" type="hidden"><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var="pubsub#access_model"><value>presence</value></field></x></configure></pubsub></iq>`)
	has(t, jb.Take(), `type="result" id="cf"`)
	got := bv.Take()
	has(t, got, `<retract id="current"/>`, `subscription="none"`)
	hasNot(t, ro.Take(), `<retract`)
	jb.Input(`<iq type="get" id="os"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><subscriptions node="` + devices + `"/></pubsub></iq>`)
	hasNot(t, jb.Take(), `benvolio`)

	// From presence to whitelist: Romeo is sent the retraction too.
	jb.Input(`<iq type="set" id="cf2"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><configure node="` + devices + `"><x xmlns="jabber:x:data" type="submit"><field var="pubsub#access_model"><value>whitelist</value></field></x></configure></pubsub></iq>`)
	jb.Take()
	has(t, ro.Take(), `<retract id="current"/>`)
}

// clock is a settable time source for item expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestItemExpire(t *testing.T) {
	for _, backend := range []struct {
		name string
		open func(t *testing.T) storage.Backend
	}{
		{"memory", nil},
		{"sqlite", func(t *testing.T) storage.Backend {
			b, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b
		}},
	} {
		t.Run(backend.name, func(t *testing.T) {
			e := memEnv(t)
			if backend.open != nil {
				e = newEnv(t, backend.open(t))
			}
			c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
			e.pep.Now = c.now
			jb := e.Connect("juliet@example.com/balcony")
			jb.Input(publishWith("geo", "old", `<geoloc xmlns="http://jabber.org/protocol/geoloc"/>`, [2]string{"pubsub#item_expire", "60"}, [2]string{"pubsub#max_items", "5"}))
			has(t, jb.Take(), `type="result"`)
			jb.Input(publishWith("bad", "x", `<p xmlns="p"/>`, [2]string{"pubsub#item_expire", "soon"}))
			has(t, jb.Take(), `<precondition-not-met`)
			c.advance(30 * time.Second)
			jb.Input(publishWith("geo", "new", `<geoloc xmlns="http://jabber.org/protocol/geoloc"/>`))
			jb.Take()
			c.advance(31 * time.Second)
			items, _, _, err := e.pep.Items(context.Background(), jid.MustParse("juliet@example.com"), "geo")
			if err != nil || len(items) != 1 || items[0].ID != "new" {
				t.Fatalf("after 61s: %+v %v", items, err)
			}
			jb.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="geo"/></pubsub></iq>`)
			got := jb.Take()
			has(t, got, `id="new"`)
			hasNot(t, got, `id="old"`)
			c.advance(time.Minute)
			jb.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="geo"/></pubsub></iq>`)
			hasNot(t, jb.Take(), `id="new"`)
		})
	}
}

func TestSubscriptionsSurviveOnSQLite(t *testing.T) {
	dir := t.TempDir()
	b, err := sqlite.Open(context.Background(), filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, b)
	jb := e.Connect("juliet@example.com/balcony")
	jb.Input(devicePublish("1"))
	jb.Take()
	bv := e.Connect("benvolio@example.com/b")
	bv.Input(subscribeXML("juliet@example.com", devices, "benvolio@example.com/b"))
	has(t, bv.Take(), `subscription="subscribed"`)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := sqlite.Open(context.Background(), filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	e2 := newEnv(t, b2)
	bv2 := e2.Connect("benvolio@example.com/b")
	bv2.Input(`<presence/>`)
	bv2.Take()
	jb2 := e2.Connect("juliet@example.com/balcony")
	jb2.Input(devicePublish("2"))
	jb2.Take()
	has(t, bv2.Take(), `to="benvolio@example.com/b"`, `<device id="2"/>`)
}
