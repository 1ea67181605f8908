package blocking_test

import (
	"slices"
	"strings"
	"testing"

	"impetus/internal/modules/blocking"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
)

func server(t *testing.T, b storage.Backend) *rostertest.Server {
	srv := rostertest.New(t, b, rostertest.Config{}, "example.com")
	m := &blocking.Blocking{Config: blocking.Config{MaxItems: 3, MaxCached: 2}}
	if err := m.Provision(srv.Hosts["example.com"]); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	return srv
}

func has(t *testing.T, got []string, want ...string) {
	t.Helper()
	all := strings.Join(got, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Fatalf("missing %s in:\n%s", w, all)
		}
	}
}

func TestBlockUnblockPushes(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		srv := server(t, b)
		a1 := srv.Connect("alice@example.com/one")
		a2 := srv.Connect("alice@example.com/two")
		a3 := srv.Connect("alice@example.com/three")
		a1.Input(`<iq type='get' id='l1'><blocklist xmlns='urn:xmpp:blocking'/></iq>`)
		has(t, a1.Take(), `<blocklist xmlns="urn:xmpp:blocking"/>`)
		a2.Input(`<iq type='get' id='l2'><blocklist xmlns='urn:xmpp:blocking'/></iq>`)
		a2.Take()
		a1.Input(`<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/><item jid='Evil.example'/></block></iq>`)
		has(t, a1.Take(), `type="result" id="b1"`, `<block xmlns="urn:xmpp:blocking"><item jid="romeo@montague.net"/><item jid="evil.example"/></block>`)
		has(t, a2.Take(), `<block xmlns="urn:xmpp:blocking"><item jid="romeo@montague.net"/><item jid="evil.example"/></block>`)
		if got := a3.Take(); len(got) != 0 {
			t.Fatalf("push to uninterested resource: %v", got)
		}
		a3.Input(`<iq type='get' id='l3'><blocklist xmlns='urn:xmpp:blocking'/></iq>`)
		has(t, a3.Take(), `<item jid="romeo@montague.net"/>`, `<item jid="evil.example"/>`)
		// Errors: no item, bad JID, full list.
		a1.Input(`<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'/></iq>`)
		has(t, a1.Take(), `bad-request`)
		a1.Input(`<iq type='set' id='b3'><block xmlns='urn:xmpp:blocking'><item jid='@@'/></block></iq>`)
		has(t, a1.Take(), `jid-malformed`)
		a1.Input(`<iq type='set' id='b4'><block xmlns='urn:xmpp:blocking'><item jid='a@x'/><item jid='b@x'/></block></iq>`)
		has(t, a1.Take(), `resource-constraint`)
		// Unblock one, then all.
		a1.Input(`<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></unblock></iq>`)
		has(t, a1.Take(), `type="result" id="u1"`, `<unblock xmlns="urn:xmpp:blocking"><item jid="romeo@montague.net"/></unblock>`)
		a2.Take()
		a1.Input(`<iq type='set' id='u2'><unblock xmlns='urn:xmpp:blocking'/></iq>`)
		has(t, a1.Take(), `type="result" id="u2"`, `<unblock xmlns="urn:xmpp:blocking"/>`)
		a2.Input(`<iq type='get' id='l4'><blocklist xmlns='urn:xmpp:blocking'/></iq>`)
		has(t, a2.Take(), `<unblock xmlns="urn:xmpp:blocking"/>`, `<blocklist xmlns="urn:xmpp:blocking"/>`)
		// Nobody else reads or changes alice's list.
		bob := srv.Connect("bob@example.com/b")
		bob.Input(`<iq type='get' id='x' to='alice@example.com'><blocklist xmlns='urn:xmpp:blocking'/></iq>`)
		has(t, bob.Take(), `forbidden`)
	})
}

func TestBlockingEffects(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		srv := server(t, b)
		alice := srv.Connect("alice@example.com/a")
		bob := srv.Connect("bob@example.com/b")
		// Mutual subscription, both available.
		bob.Input(`<presence type='subscribe' to='alice@example.com'/>`)
		alice.Input(`<presence type='subscribed' to='bob@example.com'/>`)
		alice.Input(`<presence type='subscribe' to='bob@example.com'/>`)
		bob.Input(`<presence type='subscribed' to='alice@example.com'/>`)
		alice.Input(`<presence/>`)
		bob.Input(`<presence/>`)
		alice.Take()
		bob.Take()

		alice.Input(`<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/></block></iq>`)
		alice.Take()
		// Bob sees alice go offline.
		has(t, bob.Take(), `<presence type="unavailable" from="alice@example.com/a" to="bob@example.com"/>`)
		// Bob's message gets service-unavailable; his presence and iq results vanish.
		bob.Input(`<message to='alice@example.com' type='chat' id='m1'><body>hi</body></message>`)
		has(t, bob.Take(), `type="error"`, `service-unavailable`)
		bob.Input(`<iq to='alice@example.com/a' type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>`)
		has(t, bob.Take(), `service-unavailable`)
		bob.Input(`<iq to='alice@example.com' type='get' id='q2'><query xmlns='jabber:iq:roster'/></iq>`)
		has(t, bob.Take(), `service-unavailable`)
		bob.Input(`<presence><status>away</status></presence>`)
		bob.Take()
		if got := alice.Take(); len(got) != 0 {
			t.Fatalf("alice got stanzas from a blocked contact: %v", got)
		}
		// Alice's stanzas to bob are refused with the blocked condition; her presence stays away.
		alice.Input(`<message to='bob@example.com' type='chat' id='m2'><body>hi</body></message>`)
		has(t, alice.Take(), `<not-acceptable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><blocked xmlns="urn:xmpp:blocking:errors"/>`)
		alice.Input(`<iq to='bob@example.com/b' type='get' id='q3'><ping xmlns='urn:xmpp:ping'/></iq>`)
		has(t, alice.Take(), `<blocked xmlns="urn:xmpp:blocking:errors"/>`)
		// What a module sends for alice (a PEP notification) is dropped without an error.
		note, _ := rostertest.Parse(`<message from='alice@example.com' to='bob@example.com/b' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'/></message>`)
		if err := srv.Hosts["example.com"].Send(t.Context(), note); err != nil {
			t.Fatal(err)
		}
		if got := alice.Take(); len(got) != 0 {
			t.Fatalf("alice got an error for a module's stanza: %v", got)
		}
		alice.Input(`<presence><show>dnd</show></presence>`)
		alice.Take()
		if got := bob.Take(); len(got) != 0 {
			t.Fatalf("bob got stanzas from alice while blocked: %v", got)
		}
		// Unblocking sends bob alice's current presence, and messages flow again.
		alice.Input(`<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/></unblock></iq>`)
		alice.Take()
		has(t, bob.Take(), `<presence from="alice@example.com/a" to="bob@example.com"><show>dnd</show></presence>`)
		bob.Input(`<message to='alice@example.com' type='chat' id='m3'><body>back</body></message>`)
		has(t, alice.Take(), `<body>back</body>`)
	})
}

func TestDomainAndResourceMatching(t *testing.T) {
	srv := server(t, memory.New())
	alice := srv.Connect("alice@example.com/a")
	alice.Input(`<presence/>`)
	alice.Input(`<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='example.com/spam'/></block></iq>`)
	alice.Take()
	spam := srv.Connect("mallory@example.com/spam")
	spam.Input(`<message to='alice@example.com' type='chat'><body>x</body></message>`)
	has(t, spam.Take(), `service-unavailable`)
	ok := srv.Connect("mallory@example.com/other")
	ok.Input(`<message to='alice@example.com' type='chat'><body>y</body></message>`)
	has(t, alice.Take(), `<body>y</body>`)
}

// clusterSession stands for a session on another node of a cluster, which retrieved the list
// there: the router's proxy reports the interest the registry records.
type clusterSession struct {
	*rostertest.Session
	interests []string
}

func (c *clusterSession) Interested(ns string) bool { return slices.Contains(c.interests, ns) }

func TestPushToSessionOnAnotherNode(t *testing.T) {
	srv := server(t, memory.New())
	a1 := srv.Connect("alice@example.com/one")
	remote := srv.Connect("alice@example.com/elsewhere")
	srv.Router.Unbind(remote)
	srv.Router.Bind(&clusterSession{Session: remote, interests: []string{blocking.NS}})
	other := srv.Connect("alice@example.com/quiet")
	srv.Router.Unbind(other)
	srv.Router.Bind(&clusterSession{Session: other})
	a1.Input(`<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></block></iq>`)
	has(t, a1.Take(), `type="result" id="b1"`)
	has(t, remote.Take(), `<block xmlns="urn:xmpp:blocking"><item jid="romeo@montague.net"/></block>`)
	if got := other.Take(); len(got) != 0 {
		t.Fatalf("push to a remote session that never asked: %v", got)
	}
}
