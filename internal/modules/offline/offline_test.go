package offline_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"impetus/internal/modules/offline"
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

func TestStoreAndDeliver(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		srv := rostertest.New(t, b, rostertest.Config{OfflineLimit: 2}, "example.com")
		romeo := srv.Connect("romeo@example.com/orchard")
		romeo.Input(`<presence/>`)
		romeo.Take()

		romeo.Input(`<message to="juliet@example.com" type="chat" id="m1" xml:lang="en"><body>Art thou there?</body></message>`)
		romeo.Input(`<message to="juliet@example.com/gone" type="chat" id="m2"><body>&lt;hello&gt;</body><x xmlns="urn:example" a="1"/></message>`)
		// Not stored: headline (dropped by the router) and error.
		romeo.Input(`<message to="juliet@example.com" type="headline" id="h"><body>news</body></message>`)
		romeo.Input(`<message to="juliet@example.com" type="error" id="e"/>`)
		expect(t, "romeo", romeo.Take())
		// Past the limit: service-unavailable (XEP-0160 §3).
		romeo.Input(`<message to="juliet@example.com" type="chat" id="m3"><body>again</body></message>`)
		got := romeo.Take()
		if len(got) != 1 || !strings.Contains(got[0], `<service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>`) || !strings.Contains(got[0], `id="m3"`) {
			t.Errorf("over the limit: %v", got)
		}

		// A negative priority does not release the messages.
		juliet := srv.Connect("juliet@example.com/balcony")
		juliet.Input(`<presence><priority>-1</priority></presence>`)
		expect(t, "juliet", juliet.Take(), `<presence from="juliet@example.com/balcony" to="juliet@example.com"><priority>-1</priority></presence>`)
		juliet.Input(`<presence><priority>1</priority></presence>`)
		expect(t, "juliet", juliet.Take(),
			`<presence from="juliet@example.com/balcony" to="juliet@example.com"><priority>1</priority></presence>`,
			`<message to="juliet@example.com" type="chat" id="m1" xml:lang="en" from="romeo@example.com/orchard"><body>Art thou there?</body><delay xmlns="urn:xmpp:delay" from="example.com" stamp="2024-05-06T07:08:09Z"/></message>`,
			`<message to="juliet@example.com/gone" type="chat" id="m2" from="romeo@example.com/orchard"><body>&lt;hello&gt;</body><x xmlns="urn:example" a="1"/><delay xmlns="urn:xmpp:delay" from="example.com" stamp="2024-05-06T07:08:09Z"/></message>`)
		n, err := b.Archive(offline.StoreName).Count(context.Background(), "juliet@example.com")
		if err != nil || n != 0 {
			t.Errorf("%d messages left, %v", n, err)
		}
		// Subsequent presence delivers nothing more.
		juliet.Input(`<presence><show>away</show></presence>`)
		expect(t, "juliet", juliet.Take(), `<presence from="juliet@example.com/balcony" to="juliet@example.com"><show>away</show></presence>`)
	})
}

func TestNoSuchUser(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	srv.AddAccount("romeo@example.com")
	romeo := srv.Connect("romeo@example.com/orchard")
	romeo.Input(`<message to="nobody@example.com" type="chat" id="m"><body>hi</body></message>`)
	got := romeo.Take()
	if len(got) != 1 || !strings.Contains(got[0], "<service-unavailable ") {
		t.Errorf("got %v", got)
	}
	n, _ := srv.Storage.Archive(offline.StoreName).Count(context.Background(), "nobody@example.com")
	if n != 0 {
		t.Errorf("stored %d messages for a missing account", n)
	}
}

func TestBodylessAndHintedMessagesAreNotStored(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		srv := rostertest.New(t, b, rostertest.Config{OfflineLimit: 5}, "example.com")
		romeo := srv.Connect("romeo@example.com/orchard")
		romeo.Input(`<presence/>`)
		romeo.Take()
		romeo.Input(`<message to="juliet@example.com" type="chat" id="c1"><composing xmlns="http://jabber.org/protocol/chatstates"/></message>`)
		romeo.Input(`<message to="juliet@example.com" type="chat" id="c2"><body>x</body><no-store xmlns="urn:xmpp:hints"/></message>`)
		romeo.Input(`<message to="juliet@example.com" type="chat" id="c3"><x xmlns="urn:example"/><store xmlns="urn:xmpp:hints"/></message>`)
		expect(t, "romeo", romeo.Take())
		n, err := b.Archive(offline.StoreName).Count(context.Background(), "juliet@example.com")
		if err != nil || n != 1 {
			t.Errorf("stored %d messages (%v), want only the one with a store hint", n, err)
		}
	})
}
