package roster_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"impetus/internal/modules/roster"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
)

func expect(t *testing.T, who string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s received:\n  %s\nwant:\n  %s", who, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestRosterSetGetRemove(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		srv := rostertest.New(t, b, rostertest.Config{}, "example.com")
		balcony := srv.Connect("juliet@example.com/balcony")
		chamber := srv.Connect("juliet@example.com/chamber")
		quiet := srv.Connect("juliet@example.com/quiet") // never asks for the roster

		// A never-touched roster has a version, and the matching version gets an empty result.
		balcony.Input(`<iq type="get" id="g1"><query xmlns="jabber:iq:roster" ver=""/></iq>`)
		expect(t, "balcony", balcony.Take(), `<iq type="result" id="g1" to="juliet@example.com/balcony" from="juliet@example.com"><query xmlns="jabber:iq:roster" ver="0"/></iq>`)
		balcony.Input(`<iq type="get" id="g2"><query xmlns="jabber:iq:roster" ver="0"/></iq>`)
		expect(t, "balcony", balcony.Take(), `<iq type="result" id="g2" to="juliet@example.com/balcony" from="juliet@example.com"/>`)
		chamber.Input(`<iq type="get" id="c1"><query xmlns="jabber:iq:roster"/></iq>`)
		expect(t, "chamber", chamber.Take(), `<iq type="result" id="c1" to="juliet@example.com/chamber" from="juliet@example.com"><query xmlns="jabber:iq:roster"/></iq>`)

		balcony.Input(`<iq type="set" id="s1"><query xmlns="jabber:iq:roster"><item jid="nurse@example.com" name="Nurse" subscription="both" ask="subscribe"><group>Servants</group></item></query></iq>`)
		push := `<iq type="set" id="push" to="juliet@example.com/%s"><query xmlns="jabber:iq:roster" ver="v1"><item jid="nurse@example.com" name="Nurse" subscription="none"><group>Servants</group></item></query></iq>`
		expect(t, "balcony", balcony.Take(),
			strings.Replace(push, "%s", "balcony", 1),
			`<iq type="result" id="s1" to="juliet@example.com/balcony" from="juliet@example.com"/>`)
		expect(t, "chamber", chamber.Take(), strings.Replace(push, "%s", "chamber", 1))
		expect(t, "quiet", quiet.Take())

		// Updating: new name, groups replaced.
		balcony.Input(`<iq type="set" id="s2"><query xmlns="jabber:iq:roster"><item jid="nurse@example.com" name="Nanny"><group>A</group><group>B</group></item></query></iq>`)
		expect(t, "chamber", chamber.Take(), `<iq type="set" id="push" to="juliet@example.com/chamber"><query xmlns="jabber:iq:roster" ver="v2"><item jid="nurse@example.com" name="Nanny" subscription="none"><group>A</group><group>B</group></item></query></iq>`)
		balcony.Take()

		// An unchanged set does not move the version.
		balcony.Input(`<iq type="set" id="s3"><query xmlns="jabber:iq:roster"><item jid="nurse@example.com" name="Nanny"><group>A</group><group>B</group></item></query></iq>`)
		expect(t, "balcony", balcony.Take(), `<iq type="result" id="s3" to="juliet@example.com/balcony" from="juliet@example.com"/>`)

		// Get with an old version: full roster with the current one.
		balcony.Input(`<iq type="get" id="g3"><query xmlns="jabber:iq:roster" ver="0"/></iq>`)
		expect(t, "balcony", balcony.Take(), `<iq type="result" id="g3" to="juliet@example.com/balcony" from="juliet@example.com"><query xmlns="jabber:iq:roster" ver="v2"><item jid="nurse@example.com" name="Nanny" subscription="none"><group>A</group><group>B</group></item></query></iq>`)

		balcony.Input(`<iq type="set" id="r1"><query xmlns="jabber:iq:roster"><item jid="nurse@example.com" subscription="remove"/></query></iq>`)
		expect(t, "chamber", chamber.Take(), `<iq type="set" id="push" to="juliet@example.com/chamber"><query xmlns="jabber:iq:roster" ver="v3"><item jid="nurse@example.com" subscription="remove"/></query></iq>`)
		expect(t, "balcony", balcony.Take(),
			`<iq type="set" id="push" to="juliet@example.com/balcony"><query xmlns="jabber:iq:roster" ver="v3"><item jid="nurse@example.com" subscription="remove"/></query></iq>`,
			`<iq type="result" id="r1" to="juliet@example.com/balcony" from="juliet@example.com"/>`)

		// Removing a missing item (§2.5.3).
		balcony.Input(`<iq type="set" id="r2"><query xmlns="jabber:iq:roster"><item jid="nurse@example.com" subscription="remove"/></query></iq>`)
		expect(t, "balcony", balcony.Take(), `<iq id="r2" to="juliet@example.com/balcony" from="juliet@example.com" type="error"><query xmlns="jabber:iq:roster"><item jid="nurse@example.com" subscription="remove"/></query><error type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`)

		// A closed session is no longer interested.
		chamber.Close()
		balcony.Input(`<iq type="set" id="s4"><query xmlns="jabber:iq:roster"><item jid="romeo@example.net"/></query></iq>`)
		expect(t, "chamber", chamber.Take())
	})
}

func TestRosterSetErrors(t *testing.T) {
	long := strings.Repeat("x", 11)
	tests := []struct {
		name, query, cond string
	}{
		{"two items", `<item jid="a@example.com"/><item jid="b@example.com"/>`, "bad-request"},
		{"no item", ``, "bad-request"},
		{"no jid", `<item name="x"/>`, "bad-request"},
		{"malformed jid", `<item jid="@@"/>`, "jid-malformed"},
		{"own jid", `<item jid="juliet@example.com"/>`, "not-allowed"},
		{"duplicate groups", `<item jid="a@example.com"><group>G</group><group>G</group></item>`, "bad-request"},
		{"empty group", `<item jid="a@example.com"><group></group></item>`, "not-acceptable"},
		{"long group", `<item jid="a@example.com"><group>` + long + `</group></item>`, "not-acceptable"},
		{"long name", `<item jid="a@example.com" name="` + long + `"/>`, "not-acceptable"},
	}
	srv := rostertest.New(t, memory.New(), rostertest.Config{MaxText: 10}, "example.com")
	s := srv.Connect("juliet@example.com/balcony")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.Input(`<iq type="set" id="e"><query xmlns="jabber:iq:roster">` + tc.query + `</query></iq>`)
			got := s.Take()
			if len(got) != 1 || !strings.Contains(got[0], `type="error"`) || !strings.Contains(got[0], "<"+tc.cond+" ") {
				t.Errorf("got %v, want a %s error", got, tc.cond)
			}
		})
	}
	// Another account's roster.
	s.Input(`<iq type="set" id="f" to="romeo@example.com"><query xmlns="jabber:iq:roster"><item jid="a@example.com"/></query></iq>`)
	if got := s.Take(); len(got) != 1 || !strings.Contains(got[0], "<forbidden ") {
		t.Errorf("set on another roster: %v", got)
	}
	s.Input(`<iq type="get" id="f" to="romeo@example.com"><query xmlns="jabber:iq:roster"/></iq>`)
	if got := s.Take(); len(got) != 1 || !strings.Contains(got[0], "<service-unavailable ") {
		t.Errorf("get of another roster: %v", got)
	}
}

func TestRosterLimit(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		srv := rostertest.New(t, b, rostertest.Config{MaxItems: 2}, "example.com")
		s := srv.Connect("juliet@example.com/balcony")
		for i, c := range []string{"a", "b", "c"} {
			s.Input(`<iq type="set" id="` + c + `"><query xmlns="jabber:iq:roster"><item jid="` + c + `@example.com"/></query></iq>`)
			got := s.Take()
			isErr := len(got) == 1 && strings.Contains(got[0], "<not-allowed ")
			if (i == 2) != isErr {
				t.Errorf("item %d: %v", i, got)
			}
		}
		// Updating an existing item is still possible at the limit.
		s.Input(`<iq type="set" id="u"><query xmlns="jabber:iq:roster"><item jid="a@example.com" name="A"/></query></iq>`)
		if got := s.Take(); len(got) != 1 || !strings.Contains(got[0], `type="result"`) {
			t.Errorf("update at the limit: %v", got)
		}
	})
}

func TestVersionChangesOnEveryChange(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		st := roster.NewStore(b)
		ctx := context.Background()
		seen := map[string]bool{}
		v, err := st.Version(ctx, "juliet@example.com")
		if err != nil || v != "0" {
			t.Fatalf("fresh version %q, %v", v, err)
		}
		seen[v] = true
		for i, name := range []string{"a", "b", "c"} {
			ch, err := st.Update(ctx, "juliet@example.com", "nurse@example.com", func(it *roster.Item, _ bool) error {
				it.Hidden = false
				it.Name = name
				return nil
			})
			if err != nil || !ch.Pushed || seen[ch.Version] {
				t.Fatalf("change %d: %+v %v", i, ch, err)
			}
			seen[ch.Version] = true
		}
		// Hidden entries (a pending inbound request) do not move the version.
		ch, err := st.Update(ctx, "juliet@example.com", "romeo@example.net", func(it *roster.Item, _ bool) error {
			it.PendingIn = true
			return nil
		})
		if err != nil || ch.Pushed {
			t.Fatalf("pending-in: %+v %v", ch, err)
		}
		items, _, err := st.All(ctx, "juliet@example.com")
		if err != nil || len(items) != 2 || !items[1].Hidden || !items[1].PendingIn {
			t.Fatalf("stored %+v %v", items, err)
		}
	})
}

func TestEncodingRoundTrip(t *testing.T) {
	in := roster.Item{JID: "nurse@example.com", Name: "N", Groups: []string{"a", "b"}, Subscription: roster.From, Ask: true, Approved: true, PendingIn: true, Hidden: true}
	data, err := roster.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != `{"name":"N","groups":["a","b"],"sub":"from","ask":true,"approved":true,"in":true,"hidden":true}` {
		t.Errorf("encoding %s", data)
	}
	out, err := roster.Decode("nurse@example.com", data)
	if err != nil || out.JID != in.JID || out.Name != in.Name || !slices.Equal(out.Groups, in.Groups) || out.Subscription != in.Subscription || !out.Ask || !out.Approved || !out.PendingIn || !out.Hidden {
		t.Errorf("decoded %+v, %v", out, err)
	}
	if _, err := roster.Decode("x@y", []byte(`{"sub":"sideways"}`)); err == nil {
		t.Error("bad subscription decoded")
	}
	if _, err := roster.Decode("x@y", []byte(`not json`)); err == nil {
		t.Error("garbage decoded")
	}
}
