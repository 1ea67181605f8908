package mamquery_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"impetus/internal/mamquery"
	"impetus/internal/stanza"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
)

func parse(t *testing.T, xml string) *stanza.Element {
	t.Helper()
	el, err := stanza.Parse([]byte(xml))
	if err != nil {
		t.Fatal(err)
	}
	return el
}

func condition(err error) string {
	var serr *stanza.Error
	if errors.As(err, &serr) {
		return serr.Condition
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

func TestParse(t *testing.T) {
	lim := mamquery.Limits{DefaultMax: 20, MaxMax: 100}
	req, err := mamquery.Parse(parse(t, `<query xmlns='urn:xmpp:mam:2' queryid='q1'>
		<x xmlns='jabber:x:data' type='submit'>
			<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>
			<field var='with'><value>juliet@capulet.lit/balcony</value></field>
			<field var='start'><value>2010-06-07T00:00:00Z</value></field>
			<field var='end'><value>2010-07-07T13:23:54.5+02:00</value></field>
			<field var='after-id'><value>a</value></field>
			<field var='before-id'><value>b</value></field>
			<field var='muc#custom'><value>x</value></field>
		</x>
		<set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set>
		<flip-page/>
	</query>`), lim, "muc#custom")
	if err != nil {
		t.Fatal(err)
	}
	if req.QueryID != "q1" || req.With.String() != "juliet@capulet.lit/balcony" || req.AfterID != "a" || req.BeforeID != "b" ||
		req.Max != 100 || !req.Last || req.Before != "" || !req.FlipPage || !slices.Equal(req.Fields["muc#custom"], []string{"x"}) {
		t.Fatalf("request = %+v", req)
	}
	if !req.Start.Equal(time.Date(2010, 6, 7, 0, 0, 0, 0, time.UTC)) || !req.End.Equal(time.Date(2010, 7, 7, 11, 23, 54, 5e8, time.UTC)) {
		t.Fatalf("times %v %v", req.Start, req.End)
	}
	if req, err := mamquery.Parse(parse(t, `<query xmlns='urn:xmpp:mam:2'/>`), lim); err != nil || req.Max != 20 || req.Last {
		t.Fatalf("empty query: %+v %v", req, err)
	}
	for xml, want := range map[string]string{
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='include-groupchat'><value>true</value></field></x></query>`:                                                                 "feature-not-implemented",
		`<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>x</max></set></query>`:                                                                                                        "bad-request",
		`<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after/></set></query>`:                                                                                                            "bad-request",
		`<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><index>4</index></set></query>`:                                                                                                    "feature-not-implemented",
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>`:                                                               "bad-request",
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='with'><value>@@</value></field></x></query>`:                                                                                "bad-request",
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='start'><value>2020-01-02</value></field></x></query>`:                                                                       "bad-request",
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='ids'><value>a</value></field><field var='after-id'><value>b</value></field></x></query>`:                                    "bad-request",
		`<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='start'><value>2020-01-02T00:00:00Z</value></field><field var='end'><value>2020-01-01T00:00:00Z</value></field></x></query>`: "bad-request",
	} {
		if _, err := mamquery.Parse(parse(t, xml), lim); condition(err) != want {
			t.Errorf("%s: %q, want %s", xml, condition(err), want)
		}
	}
}

func TestServeAndFin(t *testing.T) {
	ar := memory.New().Archive("a")
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, body := range []string{"one", "two", "three"} {
		data := `<message xmlns='jabber:client' from='b@x/r' to='a@x' type='chat'><body>` + body + `</body></message>`
		if _, err := ar.Append(t.Context(), "a@x", storage.Item{ID: body, With: "b@x", Time: base.Add(time.Duration(i) * time.Second), Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	a := &mamquery.Archive{Store: ar}
	req, err := mamquery.Parse(parse(t, `<query xmlns='urn:xmpp:mam:2' queryid='f'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></query>`), mamquery.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var sent []string
	fin, err := a.Serve(t.Context(), "a@x", "a@x", "a@x/r", req, func(el *stanza.Element) { sent = append(sent, el.String()) })
	if err != nil {
		t.Fatal(err)
	}
	want := `<message xmlns="jabber:client" to="a@x/r" from="a@x"><result xmlns="urn:xmpp:mam:2" id="one" queryid="f"><forwarded xmlns="urn:xmpp:forward:0"><delay xmlns="urn:xmpp:delay" stamp="2024-01-01T00:00:00Z"/><message xmlns="jabber:client" from="b@x/r" to="a@x" type="chat"><body>one</body></message></forwarded></result></message>`
	if len(sent) != 2 || sent[0] != want {
		t.Fatalf("sent %d:\n%s\nwant first\n%s", len(sent), strings.Join(sent, "\n"), want)
	}
	if got := fin.String(); got != `<fin xmlns="urn:xmpp:mam:2"><set xmlns="http://jabber.org/protocol/rsm"><first>one</first><last>two</last></set></fin>` {
		t.Fatalf("fin = %s", got)
	}
	if got := mamquery.Fin(&mamquery.Page{Complete: true}).String(); got != `<fin xmlns="urn:xmpp:mam:2" complete="true"><set xmlns="http://jabber.org/protocol/rsm"/></fin>` {
		t.Fatalf("empty fin = %s", got)
	}
}

func TestStripStanzaIDs(t *testing.T) {
	m := parse(t, `<message xmlns='jabber:client'><stanza-id xmlns='urn:xmpp:sid:0' by='A@x' id='1'/><stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.x' id='2'/><origin-id xmlns='urn:xmpp:sid:0' id='3'/></message>`)
	mamquery.StripStanzaIDs(m, "a@x")
	m.AddChild(mamquery.StanzaID("a@x", "4"))
	want := `<message xmlns="jabber:client"><stanza-id xmlns="urn:xmpp:sid:0" by="room@muc.x" id="2"/><origin-id xmlns="urn:xmpp:sid:0" id="3"/><stanza-id xmlns="urn:xmpp:sid:0" by="a@x" id="4"/></message>`
	if got := m.String(); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}
