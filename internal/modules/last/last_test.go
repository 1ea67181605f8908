package last_test

import (
	"strings"
	"testing"
	"time"

	"impetus/internal/modules/last"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

func has(t *testing.T, got []string, want ...string) {
	t.Helper()
	all := strings.Join(got, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Fatalf("missing %s in:\n%s", w, all)
		}
	}
}

func TestLastActivity(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) storage.Backend{
		"memory": func(*testing.T) storage.Backend { return memory.New() },
		"sqlite": func(t *testing.T) storage.Backend {
			b, err := sqlite.Open(t.Context(), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
			srv := rostertest.New(t, open(t), rostertest.Config{}, "example.com")
			l := &last.Last{Now: func() time.Time { return now }}
			if err := l.Provision(srv.Hosts["example.com"]); err != nil {
				t.Fatal(err)
			}
			srv.AddAccount("alice@example.com")
			srv.AddAccount("bob@example.com")
			srv.AddAccount("carol@example.com")
			now = now.Add(90 * time.Second)
			bob := srv.Connect("bob@example.com/b")
			bob.Input(`<iq type='get' id='u' to='example.com'><query xmlns='jabber:iq:last'/></iq>`)
			has(t, bob.Take(), `<query xmlns="jabber:iq:last" seconds="90"/>`)

			alice := srv.Connect("alice@example.com/a")
			bob.Input(`<presence type='subscribe' to='alice@example.com'/>`)
			alice.Input(`<presence type='subscribed' to='bob@example.com'/>`)
			alice.Input(`<presence/>`)
			bob.Take()
			bob.Input(`<iq type='get' id='1' to='alice@example.com'><query xmlns='jabber:iq:last'/></iq>`)
			has(t, bob.Take(), `seconds="0"`)
			bob.Input(`<iq type='get' id='2' to='carol@example.com'><query xmlns='jabber:iq:last'/></iq>`)
			has(t, bob.Take(), `forbidden`)
			bob.Input(`<iq type='get' id='3' to='nobody@example.com'><query xmlns='jabber:iq:last'/></iq>`)
			has(t, bob.Take(), `service-unavailable`)

			alice.Input(`<presence type='unavailable'><status>Heading Home</status></presence>`)
			alice.Close()
			now = now.Add(903 * time.Second)
			bob.Input(`<iq type='get' id='4' to='alice@example.com'><query xmlns='jabber:iq:last'/></iq>`)
			has(t, bob.Take(), `<query xmlns="jabber:iq:last" seconds="903">Heading Home</query>`)
			carol := srv.Connect("carol@example.com/c")
			carol.Input(`<iq type='get' id='5' to='alice@example.com'><query xmlns='jabber:iq:last'/></iq>`)
			has(t, carol.Take(), `forbidden`)
			carol.Input(`<iq type='get' id='6'><query xmlns='jabber:iq:last'/></iq>`)
			has(t, carol.Take(), `item-not-found`)
		})
	}
}
