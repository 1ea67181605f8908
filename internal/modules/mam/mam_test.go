package mam_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"impetus/internal/config"
	"impetus/internal/mamquery"
	"impetus/internal/module"
	"impetus/internal/modules/blocking"
	"impetus/internal/modules/carbons"
	"impetus/internal/modules/mam"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/stanza"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
)

// clock hands out one second per call, so every archived message has its own time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

var epoch = time.Date(2025, 1, 2, 3, 4, 0, 0, time.UTC)

type env struct {
	srv  *rostertest.Server
	mams map[string]*mam.MAM
	clk  *clock
}

func newEnv(t *testing.T, b storage.Backend, domains ...string) *env {
	srv := rostertest.New(t, b, rostertest.Config{}, domains...)
	e := &env{srv: srv, mams: map[string]*mam.MAM{}, clk: &clock{t: epoch}}
	for _, d := range domains {
		m := &mam.MAM{Now: e.clk.Now, Limits: mamquery.Limits{DefaultMax: 10, MaxMax: 50}}
		if err := m.Provision(srv.Hosts[d]); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Stop() })
		e.mams[d] = m
	}
	return e
}

// available connects a session and sends initial presence, then forgets what it received.
func available(srv *rostertest.Server, full string) *rostertest.Session {
	s := srv.Connect(full)
	s.Input(`<presence/>`)
	s.Elements()
	return s
}

// result is what one archive query returned.
type result struct {
	ids, bodies []string
	fin         *stanza.Element
	err         *stanza.Element
}

func (r result) complete() bool { return r.fin != nil && r.fin.Attr("complete") == "true" }

func (r result) rsm(name string) string {
	if r.fin == nil {
		return ""
	}
	if set := r.fin.Child(mamquery.NSRSM, "set"); set != nil {
		if c := set.Child(mamquery.NSRSM, name); c != nil {
			return c.Text()
		}
	}
	return ""
}

func query(t *testing.T, s *rostertest.Session, inner string) result {
	t.Helper()
	s.Input(`<iq type="set" id="q"><query xmlns="urn:xmpp:mam:2" queryid="qid">` + inner + `</query></iq>`)
	var r result
	for _, el := range s.Elements() {
		switch {
		case el.Local == "message":
			res := el.Child(mamquery.NS, "result")
			if res == nil {
				t.Fatalf("unexpected message %s", el)
			}
			if res.Attr("queryid") != "qid" || el.Attr("from") != s.JID().Bare().String() {
				t.Fatalf("result %s lacks queryid or archive address", el)
			}
			fwd := res.Child(mamquery.NSForward, "forwarded")
			if fwd.Child(stanza.NSDelay, "delay") == nil {
				t.Fatalf("result without delay: %s", el)
			}
			msg := fwd.Child(stanza.NSClient, "message")
			r.ids = append(r.ids, res.Attr("id"))
			body := ""
			if b := msg.Child(stanza.NSClient, "body"); b != nil {
				body = b.Text()
			}
			r.bodies = append(r.bodies, body)
		case el.Local == "iq" && el.Attr("type") == "result":
			r.fin = el.Child(mamquery.NS, "fin")
			if r.fin == nil {
				t.Fatalf("iq result without fin: %s", el)
			}
		case el.Local == "iq":
			r.err = el.Child(stanza.NSClient, "error")
		default:
			t.Fatalf("unexpected %s", el)
		}
	}
	return r
}

func form(fields ...string) string {
	var b strings.Builder
	b.WriteString(`<x xmlns="jabber:x:data" type="submit"><field var="FORM_TYPE" type="hidden"><value>urn:xmpp:mam:2</value></field>`)
	for i := 0; i+1 < len(fields); i += 2 {
		fmt.Fprintf(&b, `<field var="%s">`, fields[i])
		for _, v := range strings.Split(fields[i+1], " ") {
			fmt.Fprintf(&b, `<value>%s</value>`, v)
		}
		b.WriteString(`</field>`)
	}
	b.WriteString(`</x>`)
	return b.String()
}

func rsm(parts ...string) string {
	return `<set xmlns="http://jabber.org/protocol/rsm">` + strings.Join(parts, "") + `</set>`
}

func errorCondition(r result) string {
	if r.err == nil {
		return ""
	}
	for c := range r.err.Elements() {
		if c.Space == stanza.NSStanzaErr && c.Local != "text" {
			return c.Local
		}
	}
	return "?"
}

func TestArchiveBothSidesWithStanzaID(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		e := newEnv(t, b, "example.com")
		romeo := available(e.srv, "romeo@example.com/orchard")
		juliet := available(e.srv, "juliet@example.com/balcony")

		// A forged stanza-id naming Juliet's archive is stripped; one by someone else stays.
		romeo.Input(`<message to="juliet@example.com" type="chat" id="m1"><body>Hello</body>` +
			`<stanza-id xmlns="urn:xmpp:sid:0" by="juliet@example.com" id="forged"/>` +
			`<stanza-id xmlns="urn:xmpp:sid:0" by="other.example" id="kept"/>` +
			`<origin-id xmlns="urn:xmpp:sid:0" id="origin-1"/></message>`)
		got := juliet.Elements()
		if len(got) != 1 {
			t.Fatalf("juliet got %d stanzas", len(got))
		}
		var ids []string
		for c := range got[0].Elements() {
			if c.Space == mamquery.NSSID && c.Local == "stanza-id" {
				ids = append(ids, c.Attr("by")+"="+c.Attr("id"))
			}
		}
		if len(ids) != 2 || ids[0] != "other.example=kept" || !strings.HasPrefix(ids[1], "juliet@example.com=") || ids[1] == "juliet@example.com=forged" {
			t.Fatalf("delivered stanza ids = %v", ids)
		}
		sid := strings.TrimPrefix(ids[1], "juliet@example.com=")

		r := query(t, juliet, "")
		if !slices.Equal(r.ids, []string{sid}) || !slices.Equal(r.bodies, []string{"Hello"}) || !r.complete() {
			t.Fatalf("juliet's archive: %+v", r)
		}
		r = query(t, romeo, "")
		if len(r.ids) != 1 || r.bodies[0] != "Hello" || !r.complete() {
			t.Fatalf("romeo's archive: %+v", r)
		}
		// The archived copy keeps the sender's origin-id, which clients match their own copy by.
		items, _, err := b.Archive(mam.StoreName).Query(t.Context(), "romeo@example.com", storage.Query{})
		if err != nil || len(items) != 1 || !strings.Contains(string(items[0].Data), "origin-1") || items[0].With != "juliet@example.com" {
			t.Fatalf("romeo's stored item: %+v %v", items, err)
		}
	})
}

func TestArchivingRules(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		e := newEnv(t, b, "example.com")
		romeo := available(e.srv, "romeo@example.com/orchard")
		juliet := available(e.srv, "juliet@example.com/balcony")
		for _, m := range []string{
			`<message to="juliet@example.com" type="chat"><body>chat</body></message>`,
			`<message to="juliet@example.com"><body>normal</body></message>`,
			`<message to="juliet@example.com" type="headline"><body>headline</body></message>`,
			`<message to="juliet@example.com" type="groupchat"><body>groupchat</body></message>`,
			`<message to="juliet@example.com" type="chat"><active xmlns="http://jabber.org/protocol/chatstates"/></message>`,
			`<message to="juliet@example.com" type="chat"><body>hinted</body><no-store xmlns="urn:xmpp:hints"/></message>`,
			`<message to="juliet@example.com" type="chat"><body>hinted2</body><no-permanent-store xmlns="urn:xmpp:hints"/></message>`,
			`<message to="juliet@example.com" type="chat"><received xmlns="urn:xmpp:carbons:2"/><body>carbon</body></message>`,
			`<message to="juliet@example.com" type="chat"><store xmlns="urn:xmpp:hints"/><received xmlns="urn:xmpp:receipts" id="x"/></message>`,
		} {
			romeo.Input(m)
		}
		juliet.Elements()
		r := query(t, juliet, "")
		want := []string{"chat", "normal", ""}
		if !slices.Equal(r.bodies, want) {
			t.Fatalf("archived bodies = %q, want %q", r.bodies, want)
		}
		// An error reply is never archived.
		juliet.Input(`<message to="romeo@example.com" type="error"><body>x</body><error type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></message>`)
		romeo.Elements()
		if r := query(t, romeo, ""); len(r.ids) != 3 {
			t.Fatalf("romeo's archive has %d items, want 3", len(r.ids))
		}
	})
}

// fill has romeo send n numbered chat messages to juliet, and carol one in between every third.
func fill(e *env, n int) {
	romeo := e.srv.Connect("romeo@example.com/orchard")
	carol := e.srv.Connect("carol@example.com/home")
	for i := range n {
		from := romeo
		if i%3 == 2 {
			from = carol
		}
		from.Input(fmt.Sprintf(`<message to="juliet@example.com" type="chat"><body>%d</body></message>`, i))
	}
}

func seq(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

func TestPaging(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		e := newEnv(t, b, "example.com")
		fill(e, 25)
		juliet := e.srv.Connect("juliet@example.com/balcony")
		juliet.Elements()

		// Forward paging with the default page size (10 here).
		var got []string
		var after string
		for pages := 0; ; pages++ {
			if pages > 5 {
				t.Fatal("paging does not end")
			}
			q := ""
			if after != "" {
				q = rsm("<after>" + after + "</after>")
			}
			r := query(t, juliet, q)
			got = append(got, r.bodies...)
			if r.rsm("first") != r.ids[0] || r.rsm("last") != r.ids[len(r.ids)-1] {
				t.Fatalf("first/last %q/%q do not match %v", r.rsm("first"), r.rsm("last"), r.ids)
			}
			if r.complete() != (len(got) == 25) {
				t.Fatalf("complete=%v after %d items", r.complete(), len(got))
			}
			if r.complete() {
				break
			}
			after = r.rsm("last")
		}
		if !slices.Equal(got, seq(0, 25)) {
			t.Fatalf("forward paging = %v", got)
		}

		// Last page with an empty <before/>, then backwards.
		r := query(t, juliet, rsm("<max>10</max><before/>"))
		if !slices.Equal(r.bodies, seq(15, 25)) || r.complete() {
			t.Fatalf("last page = %v complete=%v", r.bodies, r.complete())
		}
		r2 := query(t, juliet, rsm("<max>10</max><before>"+r.rsm("first")+"</before>"))
		if !slices.Equal(r2.bodies, seq(5, 15)) || r2.complete() {
			t.Fatalf("page before = %v complete=%v", r2.bodies, r2.complete())
		}
		r3 := query(t, juliet, rsm("<max>10</max><before>"+r2.rsm("first")+"</before>"))
		if !slices.Equal(r3.bodies, seq(0, 5)) || !r3.complete() {
			t.Fatalf("first page backwards = %v complete=%v", r3.bodies, r3.complete())
		}

		// flip-page: same page, newest first; first/last still name the chronological ends.
		f := query(t, juliet, rsm("<max>3</max><before/>")+`<flip-page/>`)
		if !slices.Equal(f.bodies, []string{"24", "23", "22"}) || f.rsm("first") != f.ids[2] || f.rsm("last") != f.ids[0] {
			t.Fatalf("flip-page = %v first %q last %q ids %v", f.bodies, f.rsm("first"), f.rsm("last"), f.ids)
		}

		// A page size above the limit is cut to it; max 0 only describes the range.
		if r := query(t, juliet, rsm("<max>1000</max>")); len(r.ids) != 25 {
			t.Fatalf("max 1000 gave %d items", len(r.ids))
		}
		if r := query(t, juliet, rsm("<max>0</max>")); len(r.ids) != 0 || r.complete() || r.fin == nil {
			t.Fatalf("max 0 = %+v", r)
		}

		// Unknown cursors and ids are item-not-found; index paging is not offered.
		for _, q := range []string{rsm("<after>nope</after>"), rsm("<before>nope</before>"), form("after-id", "nope"), form("ids", "nope")} {
			if c := errorCondition(query(t, juliet, q)); c != "item-not-found" {
				t.Errorf("%s: error %q, want item-not-found", q, c)
			}
		}
		if c := errorCondition(query(t, juliet, rsm("<index>3</index>"))); c != "feature-not-implemented" {
			t.Errorf("index: %q", c)
		}
		if c := errorCondition(query(t, juliet, rsm("<max>-1</max>"))); c != "bad-request" {
			t.Errorf("negative max: %q", c)
		}
	})
}

func TestFilters(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		e := newEnv(t, b, "example.com")
		fill(e, 12)
		juliet := e.srv.Connect("juliet@example.com/balcony")
		all := query(t, juliet, rsm("<max>50</max>"))
		if len(all.ids) != 12 {
			t.Fatalf("archive has %d items", len(all.ids))
		}

		// with: a bare JID matches every resource, a full JID only that one.
		r := query(t, juliet, form("with", "carol@example.com"))
		if !slices.Equal(r.bodies, []string{"2", "5", "8", "11"}) || !r.complete() {
			t.Fatalf("with carol = %v", r.bodies)
		}
		r = query(t, juliet, form("with", "carol@example.com/home")+rsm("<max>3</max>"))
		if !slices.Equal(r.bodies, []string{"2", "5", "8"}) || r.complete() {
			t.Fatalf("with carol/home = %v complete=%v", r.bodies, r.complete())
		}
		r = query(t, juliet, form("with", "carol@example.com/home")+rsm("<max>3</max><after>"+r.rsm("last")+"</after>"))
		if !slices.Equal(r.bodies, []string{"11"}) || !r.complete() {
			t.Fatalf("with carol/home, second page = %v complete=%v", r.bodies, r.complete())
		}
		r = query(t, juliet, form("with", "carol@example.com/elsewhere"))
		if len(r.ids) != 0 || !r.complete() {
			t.Fatalf("with carol/elsewhere = %v", r.bodies)
		}
		r = query(t, juliet, form("with", "carol@example.com/home")+rsm("<max>2</max><before/>"))
		if !slices.Equal(r.bodies, []string{"8", "11"}) || r.complete() {
			t.Fatalf("with carol/home, last page = %v complete=%v", r.bodies, r.complete())
		}

		// start and end are inclusive; the clock gives every archived copy its own second.
		items, _, err := b.Archive(mam.StoreName).Query(t.Context(), "juliet@example.com", storage.Query{})
		if err != nil {
			t.Fatal(err)
		}
		ts := func(i int) string { return items[i].Time.Format(time.RFC3339Nano) }
		r = query(t, juliet, form("start", ts(3), "end", ts(6)))
		if !slices.Equal(r.bodies, seq(3, 7)) || !r.complete() {
			t.Fatalf("start..end = %v", r.bodies)
		}
		r = query(t, juliet, form("start", ts(10)))
		if !slices.Equal(r.bodies, seq(10, 12)) {
			t.Fatalf("start = %v", r.bodies)
		}
		if c := errorCondition(query(t, juliet, form("start", "yesterday"))); c != "bad-request" {
			t.Fatalf("bad start: %q", c)
		}

		// after-id and before-id bound the range; forward paging stays forward.
		r = query(t, juliet, form("after-id", all.ids[2], "before-id", all.ids[9])+rsm("<max>4</max>"))
		if !slices.Equal(r.bodies, seq(3, 7)) || r.complete() {
			t.Fatalf("after-id..before-id = %v complete=%v", r.bodies, r.complete())
		}
		r = query(t, juliet, form("after-id", all.ids[2], "before-id", all.ids[9])+rsm("<max>4</max><after>"+r.rsm("last")+"</after>"))
		if !slices.Equal(r.bodies, seq(7, 9)) || !r.complete() {
			t.Fatalf("after-id..before-id, page 2 = %v complete=%v", r.bodies, r.complete())
		}
		r = query(t, juliet, form("before-id", all.ids[9])+rsm("<max>2</max><before/>"))
		if !slices.Equal(r.bodies, seq(7, 9)) || r.complete() {
			t.Fatalf("before-id, last page = %v", r.bodies)
		}

		// ids returns exactly those items, chronologically.
		r = query(t, juliet, form("ids", all.ids[7]+" "+all.ids[1]))
		if !slices.Equal(r.bodies, []string{"1", "7"}) || !r.complete() {
			t.Fatalf("ids = %v", r.bodies)
		}
	})
}

func TestFormMetadataAndAccess(t *testing.T) {
	e := newEnv(t, memory.New(), "example.com")
	juliet := e.srv.Connect("juliet@example.com/balcony")
	juliet.Input(`<iq type="get" id="f"><query xmlns="urn:xmpp:mam:2"/></iq>`)
	got := juliet.Take()
	if len(got) != 1 || !strings.Contains(got[0], `<value>urn:xmpp:mam:2</value>`) || !strings.Contains(got[0], `var="with"`) ||
		!strings.Contains(got[0], `var="before-id"`) || !strings.Contains(got[0], `var="ids"`) {
		t.Fatalf("form = %v", got)
	}
	juliet.Input(`<iq type="get" id="md"><metadata xmlns="urn:xmpp:mam:2"/></iq>`)
	if got := juliet.Take(); len(got) != 1 || !strings.Contains(got[0], `<metadata xmlns="urn:xmpp:mam:2"/>`) {
		t.Fatalf("empty metadata = %v", got)
	}
	fill(e, 3)
	juliet.Elements()
	juliet.Input(`<iq type="get" id="md"><metadata xmlns="urn:xmpp:mam:2"/></iq>`)
	if got := juliet.Take(); len(got) != 1 || !strings.Contains(got[0], `<start id=`) || !strings.Contains(got[0], `<end id=`) {
		t.Fatalf("metadata = %v", got)
	}
	// Another account's archive is not for Romeo.
	romeo := e.srv.Connect("romeo@example.com/orchard")
	romeo.Input(`<iq type="set" id="x" to="juliet@example.com"><query xmlns="urn:xmpp:mam:2"/></iq>`)
	if got := romeo.Take(); len(got) != 1 || !strings.Contains(got[0], "forbidden") {
		t.Fatalf("foreign query = %v", got)
	}
	h := e.srv.Hosts["example.com"]
	if f := h.AccountFeatures(); !slices.Contains(f, "urn:xmpp:mam:2") || !slices.Contains(f, "urn:xmpp:mam:2#extended") || !slices.Contains(f, "urn:xmpp:sid:0") {
		t.Fatalf("account features = %v", f)
	}
}

func TestPreferences(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		e := newEnv(t, b, "example.com")
		juliet := available(e.srv, "juliet@example.com/balcony")
		romeo := available(e.srv, "romeo@example.com/orchard")
		nurse := available(e.srv, "nurse@example.com/kitchen")

		juliet.Input(`<iq type="get" id="p"><prefs xmlns="urn:xmpp:mam:2"/></iq>`)
		if got := juliet.Take(); len(got) != 1 || !strings.Contains(got[0], `default="always"`) {
			t.Fatalf("default prefs = %v", got)
		}
		// Roster default: Romeo is on the roster, the nurse is not but is always archived,
		// Tybalt is never archived.
		juliet.Input(`<iq type="set" id="r"><query xmlns="jabber:iq:roster"><item jid="romeo@example.com"/></query></iq>`)
		juliet.Input(`<iq type="set" id="p"><prefs xmlns="urn:xmpp:mam:2" default="roster"><always><jid>nurse@example.com</jid></always><never><jid>tybalt@example.com</jid><jid>romeo@example.com/masked</jid></never></prefs></iq>`)
		got := juliet.Take()
		if !strings.Contains(got[len(got)-1], `<prefs xmlns="urn:xmpp:mam:2" default="roster"><always><jid>nurse@example.com</jid></always><never><jid>tybalt@example.com</jid><jid>romeo@example.com/masked</jid></never></prefs>`) {
			t.Fatalf("prefs set = %v", got)
		}
		tybalt := available(e.srv, "tybalt@example.com/street")
		peter := available(e.srv, "peter@example.com/street")
		for _, s := range []*rostertest.Session{romeo, nurse, tybalt, peter} {
			s.Input(`<message to="juliet@example.com" type="chat"><body>from ` + s.JID().Localpart() + `</body></message>`)
		}
		masked := e.srv.Connect("romeo@example.com/masked")
		masked.Input(`<message to="juliet@example.com" type="chat"><body>masked</body></message>`)
		juliet.Elements()
		r := query(t, juliet, "")
		if !slices.Equal(r.bodies, []string{"from romeo", "from nurse"}) {
			t.Fatalf("archived with prefs = %v", r.bodies)
		}
		if c := errorCondition(func() result {
			juliet.Input(`<iq type="set" id="p"><prefs xmlns="urn:xmpp:mam:2" default="sometimes"/></iq>`)
			var r result
			for _, el := range juliet.Elements() {
				r.err = el.Child(stanza.NSClient, "error")
			}
			return r
		}()); c != "bad-request" {
			t.Fatalf("bad default: %q", c)
		}
		// Never: nothing more is archived.
		juliet.Input(`<iq type="set" id="p"><prefs xmlns="urn:xmpp:mam:2" default="never"/></iq>`)
		juliet.Elements()
		nurse.Input(`<message to="juliet@example.com" type="chat"><body>later</body></message>`)
		juliet.Elements()
		if r := query(t, juliet, ""); len(r.ids) != 2 {
			t.Fatalf("never archived %v", r.bodies)
		}
	})
}

func TestOfflineArchivedOnce(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		e := newEnv(t, b, "example.com")
		romeo := available(e.srv, "romeo@example.com/orchard")
		romeo.Input(`<message to="juliet@example.com" type="chat"><body>while you slept</body></message>`)
		juliet := e.srv.Connect("juliet@example.com/balcony")
		juliet.Input(`<presence/>`)
		var delivered *stanza.Element
		for _, el := range juliet.Elements() {
			if el.Local == "message" {
				delivered = el
			}
		}
		if delivered == nil || delivered.Child(stanza.NSDelay, "delay") == nil {
			t.Fatalf("offline message not delivered: %v", delivered)
		}
		sid := delivered.Child(mamquery.NSSID, "stanza-id")
		if sid == nil || sid.Attr("by") != "juliet@example.com" {
			t.Fatalf("offline delivery lacks the stanza-id: %s", delivered)
		}
		r := query(t, juliet, "")
		if !slices.Equal(r.ids, []string{sid.Attr("id")}) {
			t.Fatalf("archive = %v, want the one id %s", r.ids, sid.Attr("id"))
		}
	})
}

func TestRemotePeers(t *testing.T) {
	e := newEnv(t, memory.New(), "example.com")
	juliet := available(e.srv, "juliet@example.com/balcony")
	juliet.Input(`<message to="mercutio@remote.example/x" type="chat"><body>out</body></message>`)
	if got := e.srv.Remote(); len(got) != 1 {
		t.Fatalf("remote got %v", got)
	}
	in := stanza.NewElement(stanza.NSClient, "message", stanza.Attr{Name: "from", Value: "mercutio@remote.example/x"},
		stanza.Attr{Name: "to", Value: "juliet@example.com"}, stanza.Attr{Name: "type", Value: "chat"})
	in.AddChild(stanza.NewElement(stanza.NSClient, "body").AddText("in"))
	if err := e.srv.Core.Route(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	juliet.Elements()
	r := query(t, juliet, form("with", "mercutio@remote.example"))
	if !slices.Equal(r.bodies, []string{"out", "in"}) {
		t.Fatalf("remote conversation = %v", r.bodies)
	}
}

func TestRetentionPurge(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		e := newEnv(t, b, "example.com")
		fill(e, 4)
		m := e.mams["example.com"]
		m.Retention = time.Hour
		if n := m.Purge(t.Context()); n != 0 {
			t.Fatalf("purged %d recent messages", n)
		}
		e.clk.mu.Lock()
		e.clk.t = e.clk.t.Add(2 * time.Hour)
		e.clk.mu.Unlock()
		// Both copies of each message (sender's and recipient's archive) expire.
		if n := m.Purge(t.Context()); n != 8 {
			t.Fatalf("purged %d, want 8", n)
		}
	})
}

var _ module.Module = (*mam.MAM)(nil)

// TestBlockingAndCarbons checks the hook order with the modules around archiving: a message
// stopped by a block list is archived on neither side, and a received carbon copy carries the
// recipient archive's stanza-id.
func TestBlockingAndCarbons(t *testing.T) {
	e := newEnv(t, memory.New(), "example.com")
	h := e.srv.Hosts["example.com"]
	for _, m := range []module.Module{&blocking.Blocking{Config: blocking.Config{MaxItems: 100, MaxCached: 100}}, new(carbons.Carbons)} {
		if err := m.Provision(h); err != nil {
			t.Fatal(err)
		}
	}
	juliet := available(e.srv, "juliet@example.com/balcony")
	phone := available(e.srv, "juliet@example.com/phone")
	romeo := available(e.srv, "romeo@example.com/orchard")
	tybalt := available(e.srv, "tybalt@example.com/street")
	phone.Input(`<iq type="set" id="c"><enable xmlns="urn:xmpp:carbons:2"/></iq>`)
	juliet.Input(`<iq type="set" id="b"><block xmlns="urn:xmpp:blocking"><item jid="tybalt@example.com"/></block></iq>`)
	juliet.Elements()
	phone.Elements()

	tybalt.Input(`<message to="juliet@example.com/balcony" type="chat"><body>blocked in</body></message>`)
	juliet.Input(`<message to="tybalt@example.com" type="chat"><body>blocked out</body></message>`)
	romeo.Input(`<message to="juliet@example.com/balcony" type="chat"><body>hi</body></message>`)
	tybalt.Elements()
	juliet.Elements()
	var carbon *stanza.Element
	for _, el := range phone.Elements() {
		if r := el.Child(carbons.NS, "received"); r != nil {
			carbon = r.Child(mamquery.NSForward, "forwarded").Child(stanza.NSClient, "message")
		}
	}
	r := query(t, juliet, "")
	if !slices.Equal(r.bodies, []string{"hi"}) {
		t.Fatalf("juliet's archive = %v", r.bodies)
	}
	if r := query(t, tybalt, ""); len(r.ids) != 1 || r.bodies[0] != "blocked in" {
		// Tybalt's own sent message is in his archive: his server did send it.
		t.Fatalf("tybalt's archive = %v", r.bodies)
	}
	if carbon == nil {
		t.Fatal("no received carbon")
	}
	sid := carbon.Child(mamquery.NSSID, "stanza-id")
	if sid == nil || sid.Attr("by") != "juliet@example.com" || sid.Attr("id") != r.ids[0] {
		t.Fatalf("carbon %s lacks stanza-id %s", carbon, r.ids[0])
	}

	// Hooks between the archiving priorities, where carbons copy sent messages, see the
	// sender's archive id; the recipient sees only its own.
	var seen []string
	h.Hook(module.Outbound, -100, func(_ context.Context, st *module.Stanza) (module.Verdict, error) {
		if st.El.Local == "message" {
			seen = append(seen, st.El.String())
		}
		return module.Continue, nil
	})
	juliet.Input(`<message to="romeo@example.com" type="chat"><body>bye</body></message>`)
	phone.Elements()
	got := romeo.Elements()
	r = query(t, juliet, "")
	if !slices.Equal(r.bodies, []string{"hi", "bye"}) {
		t.Fatalf("juliet's archive = %v", r.bodies)
	}
	if len(seen) != 1 || !strings.Contains(seen[0], `<stanza-id xmlns="urn:xmpp:sid:0" by="juliet@example.com" id="`+r.ids[1]+`"/>`) {
		t.Fatalf("outbound hooks saw %v, want the sender's stanza-id %s", seen, r.ids[1])
	}
	if len(got) != 1 {
		t.Fatalf("romeo got %d stanzas", len(got))
	}
	var bys []string
	for c := range got[0].Elements() {
		if c.Space == mamquery.NSSID && c.Local == "stanza-id" {
			bys = append(bys, c.Attr("by"))
		}
	}
	if !slices.Equal(bys, []string{"romeo@example.com"}) {
		t.Fatalf("romeo's copy has stanza-ids by %v: %s", bys, got[0])
	}
}

// TestStopWritesQueuedCopies checks the shutdown half of the durability contract: archive
// copies queued when the module stops are in storage itself afterwards, with the ids the
// delivered message carried.
func TestStopWritesQueuedCopies(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		e := newEnv(t, b, "example.com")
		romeo := available(e.srv, "romeo@example.com/orchard")
		juliet := available(e.srv, "juliet@example.com/balcony")
		const n = 50
		for i := range n {
			romeo.Input(fmt.Sprintf(`<message to="juliet@example.com" type="chat" id="m%d"><body>%d</body></message>`, i, i))
		}
		got := juliet.Elements()
		if len(got) != n {
			t.Fatalf("juliet got %d messages, want %d", len(got), n)
		}
		if err := e.mams["example.com"].Stop(); err != nil {
			t.Fatal(err)
		}
		for _, user := range []string{"romeo@example.com", "juliet@example.com"} {
			items, _, err := b.Archive(mam.StoreName).Query(t.Context(), user, storage.Query{})
			if err != nil {
				t.Fatal(err)
			}
			if len(items) != n {
				t.Fatalf("%s's archive in storage has %d items after Stop, want %d", user, len(items), n)
			}
		}
		last := got[n-1].Child(mamquery.NSSID, "stanza-id")
		if last == nil {
			t.Fatal("delivered message without stanza-id")
		}
		if _, err := b.Archive(mam.StoreName).Get(t.Context(), "juliet@example.com", last.Attr("id")); err != nil {
			t.Fatalf("the delivered stanza-id is not in storage: %v", err)
		}
	})
}

// TestWriterOptions checks the mam scope: the registered module starts from its defaults, and
// a configured scope overrides them.
func TestWriterOptions(t *testing.T) {
	mod, err := module.New("mam")
	if err != nil {
		t.Fatal(err)
	}
	want := mam.WriterConfig{
		WriteBatch:        mam.DefaultWriteBatch,
		WriteDelayMS:      int(mam.DefaultWriteDelay / time.Millisecond),
		WriteQueue:        mam.DefaultWriteQueue,
		WriteQueueWait:    mam.DefaultWriteQueueWait,
		WriteFlushTimeout: mam.DefaultWriteFlushTimeout,
	}
	if got := mod.(*mam.MAM).Writer; got != want {
		t.Fatalf("registered module's writer options = %+v, want %+v", got, want)
	}

	cfg, _, err := config.Parse("test.conf", []byte(`
mam {
  write_batch = 7
  write_delay_ms = 0
  write_queue = 100
  write_queue_wait = 2
  write_flush_timeout = 5
}
`))
	if err != nil {
		t.Fatal(err)
	}
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	h := srv.Hosts["example.com"]
	h.Config = cfg
	m := mod.(*mam.MAM)
	if err := m.Provision(h); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	want = mam.WriterConfig{WriteBatch: 7, WriteDelayMS: 0, WriteQueue: 100, WriteQueueWait: 2 * time.Second, WriteFlushTimeout: 5 * time.Second}
	if m.Writer != want {
		t.Fatalf("configured writer options = %+v, want %+v", m.Writer, want)
	}
	if mam.ForHost(h) != m {
		t.Fatal("ForHost does not return the provisioned module")
	}
	if err := mam.ForHost(h).Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if mam.ForHost(h) != nil {
		t.Fatal("ForHost still returns the module after Stop")
	}
}
