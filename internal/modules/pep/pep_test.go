package pep_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"mellium.im/xmpp/jid"

	"impetus/internal/modules/pep"
	"impetus/internal/modules/roster"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

// fakeCaps is a caps cache the test fills by hand.
type fakeCaps struct {
	mu    sync.Mutex
	f     map[string][]string
	known []func(context.Context, jid.JID, []string)
}

func (c *fakeCaps) Features(full jid.JID) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f[full.String()]
}

func (c *fakeCaps) OnKnown(fn func(context.Context, jid.JID, []string)) {
	c.known = append(c.known, fn)
}

// set records features and reports them as newly known, as the caps module does once a
// disco#info answer arrives.
func (c *fakeCaps) set(full string, features ...string) {
	c.mu.Lock()
	c.f[full] = features
	c.mu.Unlock()
	j := jid.MustParse(full)
	for _, fn := range c.known {
		fn(context.Background(), j, features)
	}
}

type env struct {
	*rostertest.Server
	caps *fakeCaps
	pep  *pep.Pep
}

func newEnv(t *testing.T, b storage.Backend) *env {
	t.Helper()
	s := rostertest.New(t, b, rostertest.Config{}, "example.com")
	c := &fakeCaps{f: map[string][]string{}}
	p := pep.New()
	p.Caps = c
	p.Limits.MaxItems = 10
	if err := p.Provision(s.Hosts["example.com"]); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return &env{Server: s, caps: c, pep: p}
}

func memEnv(t *testing.T) *env { return newEnv(t, memory.New()) }

// befriend gives a and b a mutual presence subscription.
func (e *env) befriend(t *testing.T, a, b string) {
	t.Helper()
	st := e.Rosters["example.com"].Store()
	ctx := context.Background()
	if err := st.Import(ctx, a, []roster.Item{{JID: b, Subscription: roster.Both}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Import(ctx, b, []roster.Item{{JID: a, Subscription: roster.Both}}); err != nil {
		t.Fatal(err)
	}
}

func joined(s []string) string { return strings.Join(s, "\n") }

func has(t *testing.T, got []string, want ...string) {
	t.Helper()
	all := joined(got)
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("missing %s in:\n%s", w, all)
		}
	}
}

func hasNot(t *testing.T, got []string, bad ...string) {
	t.Helper()
	all := joined(got)
	for _, w := range bad {
		if strings.Contains(all, w) {
			t.Errorf("unexpected %s in:\n%s", w, all)
		}
	}
}

const tune = "http://jabber.org/protocol/tune"

func publishTune(id, title string) string {
	return `<iq type="set" id="pub"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="` + tune +
		`"><item id="` + id + `"><tune xmlns="` + tune + `"><title>` + title + `</title></tune></item></publish></pubsub></iq>`
}

func TestPublishNotifiesOwnerAndContacts(t *testing.T) {
	e := memEnv(t)
	e.befriend(t, "juliet@example.com", "romeo@example.com")
	e.caps.set("juliet@example.com/balcony", tune+"+notify")
	e.caps.set("romeo@example.com/orchard", tune+"+notify")
	jb := e.Connect("juliet@example.com/balcony")
	jc := e.Connect("juliet@example.com/chamber") // no caps: no interest
	ro := e.Connect("romeo@example.com/orchard")
	ro.Input(`<presence/>`)
	jb.Input(`<presence/>`)
	jc.Input(`<presence/>`)
	jb.Take()
	jc.Take()
	ro.Take()

	jb.Input(publishTune("t1", "Suite"))
	got := jb.Take()
	has(t, got, `<iq type="result" id="pub" to="juliet@example.com/balcony" from="juliet@example.com"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="`+tune+`"><item id="t1"/></publish></pubsub></iq>`,
		`<event xmlns="http://jabber.org/protocol/pubsub#event"><items node="`+tune+`"><item id="t1" publisher="juliet@example.com"><tune xmlns="`+tune+`"><title>Suite</title></tune></item></items></event>`)
	hasNot(t, jc.Take(), "pubsub#event")
	rg := ro.Take()
	has(t, rg, `from="juliet@example.com" to="romeo@example.com/orchard" type="headline"`, `<title>Suite</title>`)
}

func TestLastItemOnPresence(t *testing.T) {
	e := memEnv(t)
	e.befriend(t, "juliet@example.com", "romeo@example.com")
	jb := e.Connect("juliet@example.com/balcony")
	jb.Input(`<presence/>`)
	jb.Input(publishTune("t1", "Old"))
	jb.Input(publishTune("t2", "New"))
	jb.Take()

	// Caps already known when the presence arrives.
	e.caps.set("romeo@example.com/orchard", tune+"+notify")
	ro := e.Connect("romeo@example.com/orchard")
	ro.Input(`<presence/>`)
	got := ro.Take()
	has(t, got, `<item id="t2" publisher="juliet@example.com"><tune xmlns="`+tune+`"><title>New</title>`)
	hasNot(t, got, `<title>Old</title>`)

	// Caps learnt after the presence: the last item follows them, once.
	ro2 := e.Connect("romeo@example.com/garden")
	ro2.Input(`<presence/>`)
	hasNot(t, ro2.Take(), "pubsub#event")
	e.caps.set("romeo@example.com/garden", tune+"+notify")
	has(t, ro2.Take(), `<title>New</title>`)
	e.caps.set("romeo@example.com/garden", tune+"+notify")
	hasNot(t, ro2.Take(), "pubsub#event")

	// The owner's own new resource gets it too.
	e.caps.set("juliet@example.com/chamber", tune+"+notify")
	jc := e.Connect("juliet@example.com/chamber")
	jc.Input(`<presence/>`)
	has(t, jc.Take(), `<title>New</title>`)
}

func TestAccessModels(t *testing.T) {
	e := memEnv(t)
	e.befriend(t, "juliet@example.com", "romeo@example.com")
	jb := e.Connect("juliet@example.com/balcony")
	ro := e.Connect("romeo@example.com/orchard")
	st := e.Connect("stranger@example.com/x")
	jb.Input(publishTune("t1", "Suite"))
	jb.Take()
	get := `<iq type="get" id="g" to="juliet@example.com"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="` + tune + `"/></pubsub></iq>`
	ro.Input(get)
	has(t, ro.Take(), `type="result"`, `<title>Suite</title>`)
	st.Input(get)
	has(t, st.Take(), `<not-authorized xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>`, `<presence-subscription-required xmlns="http://jabber.org/protocol/pubsub#errors"/>`)

	set := func(model string) {
		jb.Input(`<iq type="set" id="c"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><configure node="` + tune + `"><x xmlns="jabber:x:data" type="submit"><field var="FORM_TYPE" type="hidden"><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var="pubsub#access_model"><value>` + model + `</value></field></x></configure></pubsub></iq>`)
		has(t, jb.Take(), `type="result" id="c"`)
	}
	set("open")
	st.Input(get)
	has(t, st.Take(), `<title>Suite</title>`)
	set("whitelist")
	ro.Input(get)
	has(t, ro.Take(), `<closed-node xmlns="http://jabber.org/protocol/pubsub#errors"/>`)
	jb.Input(get)
	has(t, jb.Take(), `<title>Suite</title>`)

	// Only the owner publishes.
	ro.Input(`<iq type="set" id="p" to="juliet@example.com"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="x"><item><x xmlns="x"/></item></publish></pubsub></iq>`)
	has(t, ro.Take(), `<forbidden xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>`)
}

func publishWith(node, id, payload string, opts ...[2]string) string {
	var o strings.Builder
	if len(opts) > 0 {
		o.WriteString(`<publish-options><x xmlns="jabber:x:data" type="submit"><field var="FORM_TYPE" type="hidden"><value>http://jabber.org/protocol/pubsub#publish-options</value></field>`)
		for _, kv := range opts {
			o.WriteString(`<field var="` + kv[0] + `"><value>` + kv[1] + `</value></field>`)
		}
		o.WriteString(`</x></publish-options>`)
	}
	return `<iq type="set" id="pub"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="` + node + `"><item id="` + id + `">` + payload + `</item></publish>` + o.String() + `</pubsub></iq>`
}

func TestPublishOptionsAndItems(t *testing.T) {
	e := memEnv(t)
	jb := e.Connect("juliet@example.com/balcony")
	const node = "urn:xmpp:bookmarks:1"
	opts := [][2]string{{"pubsub#persist_items", "true"}, {"pubsub#max_items", "max"}, {"pubsub#access_model", "whitelist"}, {"pubsub#send_last_published_item", "never"}}
	for _, id := range []string{"a@muc", "b@muc", "c@muc"} {
		jb.Input(publishWith(node, id, `<conference xmlns="urn:xmpp:bookmarks:1" name="`+id+`"/>`, opts...))
		has(t, jb.Take(), `type="result"`, `<item id="`+id+`"/>`)
	}
	// A precondition the node does not meet (XEP-0060 §7.1.5).
	jb.Input(publishWith(node, "d@muc", `<conference xmlns="urn:xmpp:bookmarks:1"/>`, [2]string{"pubsub#access_model", "open"}))
	has(t, jb.Take(), `<conflict xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>`, `<precondition-not-met xmlns="http://jabber.org/protocol/pubsub#errors"/>`)
	jb.Input(publishWith(node, "d@muc", `<conference xmlns="urn:xmpp:bookmarks:1"/>`, [2]string{"pubsub#max_items", "11"}))
	has(t, jb.Take(), `<precondition-not-met`)

	items := func(attrs, inner string) []string {
		jb.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="` + node + `"` + attrs + `>` + inner + `</items></pubsub></iq>`)
		return jb.Take()
	}
	got := joined(items("", ""))
	if strings.Index(got, `"a@muc"`) > strings.Index(got, `"c@muc"`) || !strings.Contains(got, `"b@muc"`) {
		t.Errorf("all items: %s", got)
	}
	got = joined(items(` max_items="1"`, ""))
	if !strings.Contains(got, `id="c@muc"`) || strings.Contains(got, `id="b@muc"`) {
		t.Errorf("max_items=1: %s", got)
	}
	got = joined(items("", `<item id="b@muc"/>`))
	if !strings.Contains(got, `id="b@muc"`) || strings.Contains(got, `id="a@muc"`) {
		t.Errorf("by id: %s", got)
	}

	// Republishing an id replaces the item and makes it the newest.
	jb.Input(publishWith(node, "a@muc", `<conference xmlns="urn:xmpp:bookmarks:1" name="renamed"/>`))
	jb.Take()
	got = joined(items(` max_items="1"`, ""))
	if !strings.Contains(got, `name="renamed"`) {
		t.Errorf("republished item is not the newest: %s", got)
	}

	// Retract with notification to the owner's interested resource.
	e.caps.set("juliet@example.com/balcony", node+"+notify")
	jb.Input(`<presence/>`)
	jb.Take()
	jb.Input(`<iq type="set" id="r"><pubsub xmlns="http://jabber.org/protocol/pubsub"><retract node="` + node + `" notify="true"><item id="b@muc"/></retract></pubsub></iq>`)
	has(t, jb.Take(), `type="result" id="r"`, `<items node="urn:xmpp:bookmarks:1"><retract id="b@muc"/></items>`)
	jb.Input(`<iq type="set" id="r2"><pubsub xmlns="http://jabber.org/protocol/pubsub"><retract node="` + node + `"><item id="nope"/></retract></pubsub></iq>`)
	has(t, jb.Take(), `<item-not-found`)

	// Configuration form, then delete with notification.
	jb.Input(`<iq type="get" id="cf"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><configure node="` + node + `"/></pubsub></iq>`)
	has(t, jb.Take(), `<field var="pubsub#access_model" type="list-single"`, `<value>whitelist</value>`, `<field var="pubsub#max_items" type="text-single"`, `<value>10</value>`)
	jb.Input(`<iq type="set" id="d"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><delete node="` + node + `"/></pubsub></iq>`)
	has(t, jb.Take(), `type="result" id="d"`, `<event xmlns="http://jabber.org/protocol/pubsub#event"><delete node="urn:xmpp:bookmarks:1"/></event>`)
	has(t, items("", ""), `<item-not-found`)
}

func TestMaxItemsTrim(t *testing.T) {
	e := memEnv(t)
	jb := e.Connect("juliet@example.com/balcony")
	for _, id := range []string{"1", "2", "3"} {
		jb.Input(publishWith("n", id, `<p xmlns="p"/>`, [2]string{"pubsub#max_items", "2"}))
	}
	jb.Take()
	jb.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="n"/></pubsub></iq>`)
	got := joined(jb.Take())
	if strings.Contains(got, `id="1"`) || !strings.Contains(got, `id="2"`) || !strings.Contains(got, `id="3"`) {
		t.Errorf("max_items 2 keeps the two newest: %s", got)
	}
	// A transient node keeps nothing.
	jb.Input(publishWith("t", "1", `<p xmlns="p"/>`, [2]string{"pubsub#persist_items", "false"}))
	jb.Input(`<iq type="get" id="i"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="t"/></pubsub></iq>`)
	got = joined(jb.Take())
	if strings.Contains(got, `<p xmlns="p"/>`) {
		t.Errorf("transient node kept an item: %s", got)
	}
	// Payload rules.
	jb.Input(`<iq type="set" id="e"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="n"><item id="x"/></publish></pubsub></iq>`)
	has(t, jb.Take(), `<invalid-payload`)
	jb.Input(`<iq type="set" id="e"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="n"/></pubsub></iq>`)
	has(t, jb.Take(), `<item-required`)
}

func TestOMEMODeviceListOpenAccess(t *testing.T) {
	e := memEnv(t)
	const devices = "eu.siacs.conversations.axolotl.devicelist"
	jb := e.Connect("juliet@example.com/balcony")
	jb.Input(publishWith(devices, "current", `<list xmlns="eu.siacs.conversations.axolotl"><device id="12345"/></list>`, [2]string{"pubsub#access_model", "open"}))
	jb.Input(publishWith("eu.siacs.conversations.axolotl.bundles:12345", "current", `<bundle xmlns="eu.siacs.conversations.axolotl"><signedPreKeyPublic signedPreKeyId="1">AAAA</signedPreKeyPublic></bundle>`,
		[2]string{"pubsub#access_model", "open"}, [2]string{"pubsub#max_items", "max"}))
	has(t, jb.Take(), `<item id="current"/>`)
	// A stranger without any subscription fetches both (open access).
	st := e.Connect("stranger@example.com/x")
	st.Input(`<iq type="get" id="d" to="juliet@example.com"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="` + devices + `"/></pubsub></iq>`)
	has(t, st.Take(), `<device id="12345"/>`)
	st.Input(`<iq type="get" id="b" to="juliet@example.com"><pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="eu.siacs.conversations.axolotl.bundles:12345" max_items="1"/></pubsub></iq>`)
	has(t, st.Take(), `<signedPreKeyPublic signedPreKeyId="1">AAAA</signedPreKeyPublic>`)
}

func TestNodesSurviveOnSQLite(t *testing.T) {
	dir := t.TempDir()
	b, err := sqlite.Open(context.Background(), filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, b)
	jb := e.Connect("juliet@example.com/balcony")
	jb.Input(publishTune("t1", "Persisted"))
	jb.Take()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := sqlite.Open(context.Background(), filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	e2 := newEnv(t, b2)
	items, cfg, ok, err := e2.pep.Items(context.Background(), jid.MustParse("juliet@example.com"), tune)
	if err != nil || !ok || len(items) != 1 || cfg.AccessModel != pep.AccessPresence {
		t.Fatalf("after reopening: %v %v %+v %v", items, ok, cfg, err)
	}
	if got := string(items[0].Payload.AppendXML(nil, "")); got != `<tune xmlns="`+tune+`"><title>Persisted</title></tune>` {
		t.Errorf("payload %s", got)
	}
}
