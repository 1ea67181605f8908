package presence_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"impetus/internal/modules/roster"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage/memory"
)

func expect(t *testing.T, who string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s received:\n  %s\nwant:\n  %s", who, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func item(t *testing.T, srv *rostertest.Server, owner, contact string) roster.Item {
	t.Helper()
	it, _, err := srv.Rosters["example.com"].Store().Get(context.Background(), owner, contact)
	if err != nil {
		t.Fatal(err)
	}
	return it
}

func online(srv *rostertest.Server, full string) *rostertest.Session {
	s := srv.Connect(full)
	s.Input(`<iq type="get" id="r"><query xmlns="jabber:iq:roster"/></iq>`)
	s.Input(`<presence/>`)
	s.Take()
	return s
}

// TestSubscriptionFlow runs the subscription handshake of RFC 6121 §3.1 between two local
// accounts, the contact being offline when the request arrives.
func TestSubscriptionFlow(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	romeo := online(srv, "romeo@example.com/orchard")

	romeo.Input(`<presence to="juliet@example.com/balcony" type="subscribe" id="sub1"><status>hi</status></presence>`)
	expect(t, "romeo", romeo.Take(), `<iq type="set" id="push" to="romeo@example.com/orchard"><query xmlns="jabber:iq:roster" ver="v1"><item jid="juliet@example.com" subscription="none" ask="subscribe"/></query></iq>`)
	if it := item(t, srv, "juliet@example.com", "romeo@example.com"); !it.PendingIn || !it.Hidden {
		t.Fatalf("juliet's entry %+v", it)
	}

	// The stored request reaches Juliet at login; it is not on her roster.
	juliet := srv.Connect("juliet@example.com/balcony")
	juliet.Input(`<iq type="get" id="r"><query xmlns="jabber:iq:roster"/></iq>`)
	expect(t, "juliet", juliet.Take(), `<iq type="result" id="r" to="juliet@example.com/balcony" from="juliet@example.com"><query xmlns="jabber:iq:roster"/></iq>`)
	juliet.Input(`<presence/>`)
	expect(t, "juliet", juliet.Take(),
		`<presence from="juliet@example.com/balcony" to="juliet@example.com"/>`,
		`<presence type="subscribe" from="romeo@example.com" to="juliet@example.com"/>`)
	expect(t, "romeo", romeo.Take())

	// Juliet approves: both rosters are pushed, Romeo gets the approval and her presence.
	juliet.Input(`<presence to="romeo@example.com" type="subscribed"/>`)
	expect(t, "juliet", juliet.Take(), `<iq type="set" id="push" to="juliet@example.com/balcony"><query xmlns="jabber:iq:roster" ver="v1"><item jid="romeo@example.com" subscription="from"/></query></iq>`)
	expect(t, "romeo", romeo.Take(),
		`<iq type="set" id="push" to="romeo@example.com/orchard"><query xmlns="jabber:iq:roster" ver="v2"><item jid="juliet@example.com" subscription="to"/></query></iq>`,
		`<presence type="subscribed" from="juliet@example.com" to="romeo@example.com"/>`,
		`<presence from="juliet@example.com/balcony" to="romeo@example.com"/>`)

	// Juliet's presence changes reach Romeo; Romeo's do not reach Juliet (no subscription).
	juliet.Input(`<presence><show>away</show></presence>`)
	expect(t, "romeo", romeo.Take(), `<presence from="juliet@example.com/balcony" to="romeo@example.com"><show>away</show></presence>`)
	juliet.Take()
	romeo.Input(`<presence><show>chat</show></presence>`)
	expect(t, "juliet", juliet.Take())
	romeo.Take()

	// A repeated request is answered by Juliet's server, not by Juliet (§3.1.3); Romeo's server
	// ignores the 'subscribed' it has no pending request for (§3.1.6) but the current presence
	// that comes with it goes through.
	romeo.Input(`<presence to="juliet@example.com" type="subscribe"/>`)
	expect(t, "juliet", juliet.Take())
	expect(t, "romeo", romeo.Take(), `<presence from="juliet@example.com/balcony" to="romeo@example.com"><show>away</show></presence>`)
	// Had Romeo's server lost the subscription, the auto-reply restores it.
	if _, err := srv.Rosters["example.com"].Update(context.Background(), romeo.JID().Bare(), "juliet@example.com", func(it *roster.Item, _ bool) error {
		it.Subscription = roster.None
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	romeo.Take()
	romeo.Input(`<presence to="juliet@example.com" type="subscribe"/>`)
	got := romeo.Take()
	if !slices.Contains(got, `<presence type="subscribed" from="juliet@example.com" to="romeo@example.com"/>`) {
		t.Errorf("no auto-reply: %v", got)
	}
	if it := item(t, srv, "romeo@example.com", "juliet@example.com"); it.Subscription != roster.To || it.Ask {
		t.Errorf("romeo's item after the auto-reply %+v", it)
	}

	// Romeo removes Juliet: she loses 'from', Romeo gets a removal push.
	romeo.Input(`<iq type="set" id="rm"><query xmlns="jabber:iq:roster"><item jid="juliet@example.com" subscription="remove"/></query></iq>`)
	if it := item(t, srv, "juliet@example.com", "romeo@example.com"); it.Subscription != roster.None || it.Hidden {
		t.Errorf("juliet's item after removal: %+v", it)
	}
	expect(t, "juliet", juliet.Take(),
		`<iq type="set" id="push" to="juliet@example.com/balcony"><query xmlns="jabber:iq:roster" ver="v2"><item jid="romeo@example.com" subscription="none"/></query></iq>`,
		`<presence type="unsubscribe" from="romeo@example.com" to="juliet@example.com"/>`)
	juliet.Input(`<presence><show>dnd</show></presence>`)
	expect(t, "romeo", romeo.Take(),
		`<iq type="set" id="push" to="romeo@example.com/orchard"><query xmlns="jabber:iq:roster" ver="v6"><item jid="juliet@example.com" subscription="remove"/></query></iq>`,
		`<presence type="unavailable" from="juliet@example.com/balcony" to="romeo@example.com"/>`,
		`<iq type="result" id="rm" to="romeo@example.com/orchard" from="romeo@example.com"/>`)
}

// TestMutualAndUnsubscribed builds a 'both' subscription and cancels it from one side.
func TestMutualAndUnsubscribed(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	romeo := online(srv, "romeo@example.com/orchard")
	juliet := online(srv, "juliet@example.com/balcony")
	romeo.Input(`<presence to="juliet@example.com" type="subscribe"/>`)
	juliet.Input(`<presence to="romeo@example.com" type="subscribed"/>`)
	juliet.Input(`<presence to="romeo@example.com" type="subscribe"/>`)
	romeo.Input(`<presence to="juliet@example.com" type="subscribed"/>`)
	if a, b := item(t, srv, "romeo@example.com", "juliet@example.com"), item(t, srv, "juliet@example.com", "romeo@example.com"); a.Subscription != roster.Both || b.Subscription != roster.Both || a.Ask || b.Ask || a.PendingIn || b.PendingIn {
		t.Fatalf("not both: %+v %+v", a, b)
	}
	romeo.Take()
	juliet.Take()

	// Juliet cancels Romeo's subscription: Romeo sees her go unavailable, then the cancellation.
	juliet.Input(`<presence to="romeo@example.com" type="unsubscribed"/>`)
	expect(t, "romeo", romeo.Take(),
		`<presence type="unavailable" from="juliet@example.com/balcony" to="romeo@example.com"/>`,
		`<iq type="set" id="push" to="romeo@example.com/orchard"><query xmlns="jabber:iq:roster" ver="v4"><item jid="juliet@example.com" subscription="from"/></query></iq>`,
		`<presence type="unsubscribed" from="juliet@example.com" to="romeo@example.com"/>`)
	if it := item(t, srv, "juliet@example.com", "romeo@example.com"); it.Subscription != roster.To {
		t.Errorf("juliet's item %+v", it)
	}
}

// TestPreApproval covers §3.4: the approval is stored, pushed, and honoured without asking.
func TestPreApproval(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	juliet := online(srv, "juliet@example.com/balcony")
	romeo := online(srv, "romeo@example.com/orchard")
	juliet.Input(`<presence to="romeo@example.com" type="subscribed"/>`)
	expect(t, "juliet", juliet.Take(), `<iq type="set" id="push" to="juliet@example.com/balcony"><query xmlns="jabber:iq:roster" ver="v1"><item jid="romeo@example.com" subscription="none" approved="true"/></query></iq>`)
	expect(t, "romeo", romeo.Take())
	romeo.Input(`<presence to="juliet@example.com" type="subscribe"/>`)
	expect(t, "juliet", juliet.Take(), `<iq type="set" id="push" to="juliet@example.com/balcony"><query xmlns="jabber:iq:roster" ver="v2"><item jid="romeo@example.com" subscription="from"/></query></iq>`)
	expect(t, "romeo", romeo.Take(),
		`<iq type="set" id="push" to="romeo@example.com/orchard"><query xmlns="jabber:iq:roster" ver="v1"><item jid="juliet@example.com" subscription="none" ask="subscribe"/></query></iq>`,
		`<iq type="set" id="push" to="romeo@example.com/orchard"><query xmlns="jabber:iq:roster" ver="v2"><item jid="juliet@example.com" subscription="to"/></query></iq>`,
		`<presence type="subscribed" from="juliet@example.com" to="romeo@example.com"/>`,
		`<presence from="juliet@example.com/balcony" to="romeo@example.com"/>`)
}

// TestRemoteContact checks the stanzas a remote contact's server gets and the handling of its
// answers, which arrive through the same delivery path.
func TestRemoteContact(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	juliet := online(srv, "juliet@example.com/balcony")
	juliet.Input(`<presence to="romeo@example.net/orchard" type="subscribe" id="x"/>`)
	expect(t, "remote", srv.Remote(), `<presence type="subscribe" id="x" from="juliet@example.com" to="romeo@example.net"/>`)
	juliet.Take()
	deliver := func(xml string) {
		el, err := rostertest.Parse(xml)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Core.Route(context.Background(), el); err != nil {
			t.Fatal(err)
		}
	}
	// Presence from a contact the user is not subscribed to yet is not delivered.
	deliver(`<presence from="romeo@example.net/orchard" to="juliet@example.com"/>`)
	expect(t, "juliet", juliet.Take())
	deliver(`<presence from="romeo@example.net" to="juliet@example.com" type="subscribed"/>`)
	expect(t, "juliet", juliet.Take(),
		`<iq type="set" id="push" to="juliet@example.com/balcony"><query xmlns="jabber:iq:roster" ver="v2"><item jid="romeo@example.net" subscription="to"/></query></iq>`,
		`<presence type="subscribed" from="romeo@example.net" to="juliet@example.com"/>`)
	deliver(`<presence from="romeo@example.net/orchard" to="juliet@example.com"/>`)
	expect(t, "juliet", juliet.Take(), `<presence from="romeo@example.net/orchard" to="juliet@example.com"/>`)

	// Inbound request from the remote contact while Juliet is online; she approves.
	deliver(`<presence from="romeo@example.net/orchard" to="juliet@example.com" type="subscribe"/>`)
	expect(t, "juliet", juliet.Take(), `<presence type="subscribe" from="romeo@example.net" to="juliet@example.com"/>`)
	juliet.Input(`<presence to="romeo@example.net" type="subscribed"/>`)
	expect(t, "remote", srv.Remote(),
		`<presence type="subscribed" from="juliet@example.com" to="romeo@example.net"/>`,
		`<presence from="juliet@example.com/balcony" to="romeo@example.net"/>`)
	juliet.Take()

	// A probe from the remote contact is answered from the last presence.
	deliver(`<presence from="romeo@example.net/orchard" to="juliet@example.com" type="probe"/>`)
	expect(t, "remote", srv.Remote(), `<presence from="juliet@example.com/balcony" to="romeo@example.net/orchard"/>`)
	// A probe from a stranger gets 'unsubscribed' and no presence (§4.3.2).
	deliver(`<presence from="mercutio@example.net/x" to="juliet@example.com" type="probe"/>`)
	expect(t, "remote", srv.Remote(), `<presence type="unsubscribed" from="juliet@example.com" to="mercutio@example.net"/>`)
	// A request for a missing account is answered 'unsubscribed'.
	srv.AddAccount("juliet@example.com")
	deliver(`<presence from="mercutio@example.net" to="nobody@example.com" type="subscribe"/>`)
	expect(t, "remote", srv.Remote(), `<presence type="unsubscribed" from="nobody@example.com" to="mercutio@example.net"/>`)
	expect(t, "juliet", juliet.Take())
}

// TestBroadcastProbesDirected covers initial presence with probes, other resources, directed
// presence and the unavailable presence when a session drops.
func TestBroadcastProbesDirected(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	ctx := context.Background()
	st := srv.Rosters["example.com"].Store()
	both := func(a, b string) {
		for _, p := range [][2]string{{a, b}, {b, a}} {
			if _, err := st.Update(ctx, p[0], p[1], func(it *roster.Item, _ bool) error {
				it.Hidden, it.Subscription = false, roster.Both
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	both("juliet@example.com", "romeo@example.com")
	romeo := online(srv, "romeo@example.com/orchard")
	stranger := online(srv, "tybalt@example.com/street")

	balcony := srv.Connect("juliet@example.com/balcony")
	balcony.Input(`<presence><priority>5</priority></presence>`)
	expect(t, "balcony", balcony.Take(),
		`<presence from="juliet@example.com/balcony" to="juliet@example.com"><priority>5</priority></presence>`,
		`<presence from="romeo@example.com/orchard" to="juliet@example.com/balcony"/>`)
	expect(t, "romeo", romeo.Take(), `<presence from="juliet@example.com/balcony" to="romeo@example.com"><priority>5</priority></presence>`)
	expect(t, "stranger", stranger.Take())

	// A second resource: everyone subscribed and the first resource see it; it sees the first.
	chamber := srv.Connect("juliet@example.com/chamber")
	chamber.Input(`<presence/>`)
	expect(t, "chamber", chamber.Take(),
		`<presence from="juliet@example.com/chamber" to="juliet@example.com"/>`,
		`<presence from="romeo@example.com/orchard" to="juliet@example.com/chamber"/>`,
		`<presence from="juliet@example.com/balcony" to="juliet@example.com/chamber"><priority>5</priority></presence>`)
	expect(t, "balcony", balcony.Take(), `<presence from="juliet@example.com/chamber" to="juliet@example.com"/>`)
	romeo.Take()

	// Directed presence to a stranger, then the session drops: the stranger learns it.
	chamber.Input(`<presence to="tybalt@example.com"><show>xa</show></presence>`)
	expect(t, "stranger", stranger.Take(), `<presence to="tybalt@example.com" from="juliet@example.com/chamber"><show>xa</show></presence>`)
	// Broadcast presence does not reach the directed-presence recipient.
	chamber.Input(`<presence><show>away</show></presence>`)
	expect(t, "stranger", stranger.Take())
	romeo.Take()
	balcony.Take()
	chamber.Close()
	expect(t, "stranger", stranger.Take(), `<presence type="unavailable" from="juliet@example.com/chamber" to="tybalt@example.com"/>`)
	expect(t, "romeo", romeo.Take(), `<presence type="unavailable" from="juliet@example.com/chamber" to="romeo@example.com"/>`)
	expect(t, "balcony", balcony.Take(), `<presence type="unavailable" from="juliet@example.com/chamber" to="juliet@example.com"/>`)

	// The stranger cannot push presence to Juliet, nor probe her.
	stranger.Input(`<presence><show>chat</show></presence>`)
	stranger.Input(`<presence to="juliet@example.com" type="probe"/>`)
	expect(t, "balcony", balcony.Take())
	expect(t, "stranger", stranger.Take(), `<presence from="tybalt@example.com/street" to="tybalt@example.com"><show>chat</show></presence>`)

	// Explicit unavailable presence goes to contacts and the user's resources, the sender included.
	balcony.Input(`<presence type="unavailable"/>`)
	expect(t, "romeo", romeo.Take(), `<presence type="unavailable" from="juliet@example.com/balcony" to="romeo@example.com"/>`)
	expect(t, "balcony", balcony.Take(), `<presence type="unavailable" from="juliet@example.com/balcony" to="juliet@example.com"/>`)

	// A probe now finds no available resource: unavailable (§4.3.2).
	romeo.Close()
	romeo2 := srv.Connect("romeo@example.com/hall")
	romeo2.Input(`<presence/>`)
	expect(t, "romeo2", romeo2.Take(),
		`<presence from="romeo@example.com/hall" to="romeo@example.com"/>`,
		`<presence type="unavailable" from="juliet@example.com" to="romeo@example.com/hall"/>`)
}
