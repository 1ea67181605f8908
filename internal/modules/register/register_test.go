package register_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"impetus/internal/auth"
	"impetus/internal/modules/register"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/stanza"
	"impetus/internal/storage/memory"
)

func setup(t *testing.T, allow bool) (*rostertest.Server, auth.Store, *register.Register) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte("alice:alicepass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := auth.Open("file://"+path, auth.Options{Domains: []string{"example.com"}, PollInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	srv.AddAccount("alice@example.com")
	h := srv.Hosts["example.com"]
	h.Auth = func() auth.Store { return st }
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	r := register.New()
	r.Allow = allow
	r.PerIP = 2
	r.Now = func() time.Time { return now }
	if err := r.Provision(h); err != nil {
		t.Fatal(err)
	}
	return srv, st, r
}

func iq(t *testing.T, xml string) *stanza.Element {
	t.Helper()
	el, err := rostertest.Parse(xml)
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
		return err.Error()
	}
	return ""
}

func TestRegistrationOffByDefault(t *testing.T) {
	srv, _, _ := setup(t, false)
	h := srv.Hosts["example.com"]
	if h.PreAuthIQ(register.NS, "query") != nil || len(h.PreAuthFeatures()) != 0 {
		t.Fatal("registration offered while off")
	}
}

func TestPreAuthRegistration(t *testing.T) {
	srv, st, _ := setup(t, true)
	h := srv.Hosts["example.com"]
	fn := h.PreAuthIQ(register.NS, "query")
	if fn == nil || len(h.PreAuthFeatures()) != 1 {
		t.Fatal("registration not offered")
	}
	ctx := context.Background()
	res, err := fn(ctx, "192.0.2.1:1234", iq(t, `<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>`))
	if err != nil || res.Child(register.NS, "username") == nil || res.Child(register.NS, "password") == nil {
		t.Fatalf("form: %v %v", res, err)
	}
	// Taken name, short password, then success; the third attempt from the address is refused.
	_, err = fn(ctx, "192.0.2.1:1234", iq(t, `<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>alice</username><password>longenough</password></query></iq>`))
	if condition(err) != "conflict" {
		t.Fatalf("taken name: %v", err)
	}
	_, err = fn(ctx, "192.0.2.1:1234", iq(t, `<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>Bob</username><password>longenough</password></query></iq>`))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := st.Lookup(ctx, "bob", "example.com"); err != nil || !c.CheckPassword("longenough") {
		t.Fatalf("bob not stored: %v", err)
	}
	_, err = fn(ctx, "192.0.2.1:999", iq(t, `<iq type='set' id='r4'><query xmlns='jabber:iq:register'><username>carol</username><password>longenough</password></query></iq>`))
	if condition(err) != "not-acceptable" {
		t.Fatalf("rate limit: %v", err)
	}
	_, err = fn(ctx, "192.0.2.2:1", iq(t, `<iq type='set' id='r5'><query xmlns='jabber:iq:register'><username>carol</username><password>short</password></query></iq>`))
	if condition(err) != "not-acceptable" {
		t.Fatalf("short password: %v", err)
	}
	_, err = fn(ctx, "192.0.2.2:1", iq(t, `<iq type='set' id='r6'><query xmlns='jabber:iq:register'><username>a b@</username><password>longenough</password></query></iq>`))
	if condition(err) != "not-acceptable" {
		t.Fatalf("bad username: %v", err)
	}
}

func TestPasswordChangeAndRemoval(t *testing.T) {
	srv, st, _ := setup(t, false)
	ctx := context.Background()
	alice := srv.Connect("alice@example.com/a")
	alice.Input(`<iq type='get' id='g' to='example.com'><query xmlns='jabber:iq:register'/></iq>`)
	if got := strings.Join(alice.Take(), ""); !strings.Contains(got, `<registered/><username>alice</username>`) {
		t.Fatal(got)
	}
	alice.Input(`<iq type='set' id='c1' to='example.com'><query xmlns='jabber:iq:register'><username>bob</username><password>newpassword</password></query></iq>`)
	if got := strings.Join(alice.Take(), ""); !strings.Contains(got, `bad-request`) {
		t.Fatal(got)
	}
	alice.Input(`<iq type='set' id='c2' to='example.com'><query xmlns='jabber:iq:register'><username>alice</username><password/></query></iq>`)
	if got := strings.Join(alice.Take(), ""); !strings.Contains(got, `bad-request`) {
		t.Fatal(got)
	}
	alice.Input(`<iq type='set' id='c3' to='example.com'><query xmlns='jabber:iq:register'><username>alice</username><password>newpassword</password></query></iq>`)
	if got := strings.Join(alice.Take(), ""); !strings.Contains(got, `type="result" id="c3"`) {
		t.Fatal(got)
	}
	if c, err := st.Lookup(ctx, "alice", "example.com"); err != nil || !c.CheckPassword("newpassword") {
		t.Fatalf("password not changed: %v", err)
	}
	// Removal: subscriptions are cancelled and the data goes.
	srv.AddAccount("bob@example.com")
	bob := srv.Connect("bob@example.com/b")
	bob.Input(`<presence type='subscribe' to='alice@example.com'/>`)
	alice.Input(`<presence type='subscribed' to='bob@example.com'/>`)
	alice.Input(`<iq type='set' id='v' to='alice@example.com'><query xmlns='jabber:iq:roster'><item jid='carol@example.com'/></query></iq>`)
	alice.Take()
	bob.Take()
	alice.Input(`<iq type='set' id='x1'><query xmlns='jabber:iq:register'><remove/><username>alice</username></query></iq>`)
	if got := strings.Join(alice.Take(), ""); !strings.Contains(got, `bad-request`) {
		t.Fatal(got)
	}
	alice.Input(`<iq type='set' id='x2' to='example.com'><query xmlns='jabber:iq:register'><remove/></query></iq>`)
	if got := strings.Join(alice.Take(), ""); !strings.Contains(got, `type="result" id="x2"`) {
		t.Fatal(got)
	}
	if _, err := st.Lookup(ctx, "alice", "example.com"); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("account still there: %v", err)
	}
	if it, ok, err := srv.Rosters["example.com"].Store().Get(ctx, "bob@example.com", "alice@example.com"); err != nil || !ok || it.HasTo() {
		t.Fatalf("bob's subscription not cancelled: %+v %v %v", it, ok, err)
	}
	items, _, err := srv.Rosters["example.com"].Store().All(ctx, "alice@example.com")
	if err != nil || len(items) != 0 {
		t.Fatalf("roster left: %v %v", items, err)
	}
}
