package disco_test

import (
	"context"
	"strings"
	"testing"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/modules/disco"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/stanza"
	"impetus/internal/storage/memory"
)

func server(t *testing.T) (*rostertest.Server, *disco.Disco) {
	t.Helper()
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	h := srv.Hosts["example.com"]
	d := new(disco.Disco)
	if err := d.Provision(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	srv.AddAccount("alice@example.com")
	srv.AddAccount("bob@example.com")
	srv.AddAccount("carol@example.com")
	return srv, d
}

func one(t *testing.T, s *rostertest.Session) string {
	t.Helper()
	got := s.Take()
	if len(got) != 1 {
		t.Fatalf("got %d stanzas: %v", len(got), got)
	}
	return got[0]
}

func TestServerItems(t *testing.T) {
	srv, _ := server(t)
	h := srv.Hosts["example.com"]
	h.AddItem(module.Item{JID: "conference.example.com", Name: "Chat rooms"})
	h.AddItem(module.Item{JID: "upload.example.com"})
	a := srv.Connect("alice@example.com/a")
	a.Input(`<iq type='get' id='1' to='example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	got := one(t, a)
	for _, want := range []string{`<item jid="conference.example.com" name="Chat rooms"/>`, `<item jid="upload.example.com"/>`} {
		if !strings.Contains(got, want) {
			t.Errorf("%s lacks %s", got, want)
		}
	}
	h.RemoveItem(module.Item{JID: "upload.example.com"})
	a.Input(`<iq type='get' id='2' to='example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if got := one(t, a); strings.Contains(got, "upload") {
		t.Errorf("removed item listed: %s", got)
	}
	a.Input(`<iq type='get' id='3' to='example.com'><query xmlns='http://jabber.org/protocol/disco#items' node='nope'/></iq>`)
	if got := one(t, a); !strings.Contains(got, "item-not-found") {
		t.Errorf("unknown node: %s", got)
	}
}

func TestAccountInfoVisibility(t *testing.T) {
	srv, d := server(t)
	h := srv.Hosts["example.com"]
	h.AddAccountItems(func(_ context.Context, owner, requester jid.JID) []module.Item {
		return []module.Item{{JID: owner.String(), Node: "urn:xmpp:avatar:metadata"}}
	})
	d.AccountNodes(func(_ context.Context, owner, _ jid.JID, node string) (*stanza.Element, error) {
		if node != "urn:xmpp:avatar:metadata" {
			return nil, nil
		}
		q := stanza.NewElement(disco.NSInfo, "query")
		q.AddChild(stanza.NewElement(disco.NSInfo, "identity", stanza.Attr{Name: "category", Value: "pubsub"}, stanza.Attr{Name: "type", Value: "leaf"}))
		return q, nil
	}, nil)
	alice := srv.Connect("alice@example.com/a")
	bob := srv.Connect("bob@example.com/b")
	carol := srv.Connect("carol@example.com/c")
	// The owner, with and without 'to'.
	alice.Input(`<iq type='get' id='1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if got := one(t, alice); !strings.Contains(got, `category="account" type="registered"`) {
		t.Fatalf("owner: %s", got)
	}
	// bob subscribes to alice and alice approves: bob may discover alice's account.
	bob.Input(`<presence type='subscribe' to='alice@example.com'/>`)
	alice.Input(`<presence type='subscribed' to='bob@example.com'/>`)
	bob.Take()
	alice.Take()
	bob.Input(`<iq type='get' id='2' to='alice@example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if got := one(t, bob); !strings.Contains(got, `type="result"`) || !strings.Contains(got, `category="account"`) {
		t.Fatalf("contact: %s", got)
	}
	bob.Input(`<iq type='get' id='3' to='alice@example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if got := one(t, bob); !strings.Contains(got, `node="urn:xmpp:avatar:metadata"`) {
		t.Fatalf("contact items: %s", got)
	}
	bob.Input(`<iq type='get' id='4' to='alice@example.com'><query xmlns='http://jabber.org/protocol/disco#info' node='urn:xmpp:avatar:metadata'/></iq>`)
	if got := one(t, bob); !strings.Contains(got, `category="pubsub"`) || !strings.Contains(got, `node="urn:xmpp:avatar:metadata"`) {
		t.Fatalf("contact node: %s", got)
	}
	bob.Input(`<iq type='get' id='5' to='alice@example.com'><query xmlns='http://jabber.org/protocol/disco#info' node='other'/></iq>`)
	if got := one(t, bob); !strings.Contains(got, `item-not-found`) {
		t.Fatalf("unknown node: %s", got)
	}
	// carol has no subscription; nobody learns about an account that does not exist.
	carol.Input(`<iq type='get' id='6' to='alice@example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if got := one(t, carol); !strings.Contains(got, `service-unavailable`) {
		t.Fatalf("stranger: %s", got)
	}
	carol.Input(`<iq type='get' id='7' to='nobody@example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if got := one(t, carol); !strings.Contains(got, `service-unavailable`) {
		t.Fatalf("missing account: %s", got)
	}
}
