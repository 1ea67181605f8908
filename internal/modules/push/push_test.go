package push

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

func newServer(t *testing.T, backend storage.Backend, cfg Config) *rostertest.Server {
	t.Helper()
	srv := rostertest.New(t, backend, rostertest.Config{}, "example.org")
	p := &Push{}
	p.SetConfig(cfg)
	if err := p.Provision(srv.Hosts["example.org"]); err != nil {
		t.Fatal(err)
	}
	return srv
}

const enableXML = `<iq type='set' id='x42'><enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'>` +
	`<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>` +
	`<field var='secret'><value>eruio234vzxc2kla-91</value></field></x></enable></iq>`

func TestEnableNotifyDisable(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IncludeBody = true
	srv := newServer(t, memory.New(), cfg)
	romeo := srv.Connect("romeo@example.org/orchard")
	romeo.Input(enableXML)
	if got := strings.Join(romeo.Take(), ""); !strings.Contains(got, `type="result"`) {
		t.Fatalf("enable: %s", got)
	}
	romeo.Close()
	juliet := srv.Connect("juliet@example.org/balcony")
	juliet.Input(`<message to='romeo@example.org' type='chat'><body>Wherefore art thou, Romeo?</body></message>`)
	juliet.Input(`<message to='romeo@example.org' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`)
	juliet.Input(`<message to='romeo@example.org' type='chat'><body>Deny thy father</body></message>`)
	remote := srv.Remote()
	if len(remote) != 2 {
		t.Fatalf("want two notifications, got %q", remote)
	}
	got := remote[1]
	for _, want := range []string{
		`to="push-5.client.example"`, `from="romeo@example.org"`, `type="set"`,
		`<publish node="yxs32uqsflafdk3iuqo"><item><notification xmlns="urn:xmpp:push:0"><x xmlns="jabber:x:data" type="submit">`,
		`<field var="FORM_TYPE"><value>urn:xmpp:push:summary</value></field>`,
		`<field var="message-count"><value>2</value></field>`,
		`<field var="last-message-sender"><value>juliet@example.org/balcony</value></field>`,
		`<field var="last-message-body"><value>Deny thy father</value></field>`,
		`<publish-options><x xmlns="jabber:x:data" type="submit"><field var="FORM_TYPE"><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var="secret"><value>eruio234vzxc2kla-91</value></field></x></publish-options>`,
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("notification lacks %s:\n%s", want, got)
		}
	}
	// Coming back online resets the count.
	romeo = srv.Connect("romeo@example.org/orchard")
	romeo.Input(`<iq type='set' id='x43'><disable xmlns='urn:xmpp:push:0' jid='push-5.client.example'/></iq>`)
	if got := strings.Join(romeo.Take(), ""); !strings.Contains(got, `type="result"`) {
		t.Fatalf("disable: %s", got)
	}
	romeo.Close()
	juliet.Input(`<message to='romeo@example.org' type='chat'><body>hello?</body></message>`)
	if got := srv.Remote(); len(got) != 0 {
		t.Fatalf("after disable: %q", got)
	}
}

func TestBodyLeftOutByDefault(t *testing.T) {
	srv := newServer(t, memory.New(), DefaultConfig())
	romeo := srv.Connect("romeo@example.org/orchard")
	romeo.Input(enableXML)
	romeo.Close()
	juliet := srv.Connect("juliet@example.org/balcony")
	juliet.Input(`<message to='romeo@example.org' type='chat'><body>secret words</body></message>`)
	got := strings.Join(srv.Remote(), "")
	if strings.Contains(got, "secret words") || !strings.Contains(got, "message-count") {
		t.Fatalf("notification: %s", got)
	}
}

func TestEnableChecks(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxRegistrations = 1
	srv := newServer(t, memory.New(), cfg)
	romeo := srv.Connect("romeo@example.org/orchard")
	romeo.Input(`<iq type='set' id='a'><enable xmlns='urn:xmpp:push:0' jid='push.example'/></iq>`)
	if got := strings.Join(romeo.Take(), ""); !strings.Contains(got, "bad-request") {
		t.Fatalf("no node: %s", got)
	}
	romeo.Input(`<iq type='set' id='b'><enable xmlns='urn:xmpp:push:0' jid='push.example' node='n1'/></iq>`)
	romeo.Input(`<iq type='set' id='c'><enable xmlns='urn:xmpp:push:0' jid='push.example' node='n2'/></iq>`)
	if got := strings.Join(romeo.Take(), ""); !strings.Contains(got, "resource-constraint") {
		t.Fatalf("limit: %s", got)
	}
	romeo.Input(`<iq type='set' id='d' to='juliet@example.org'><enable xmlns='urn:xmpp:push:0' jid='push.example' node='n1'/></iq>`)
	if got := strings.Join(romeo.Take(), ""); !strings.Contains(got, "forbidden") {
		t.Fatalf("other account: %s", got)
	}
	romeo.Input(`<iq type='get' id='e' to='romeo@example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	_ = romeo.Take()
}

// TestRegistrationsSurviveRestart stores a registration in SQLite, reopens the database as a
// restarted server would, and still notifies.
func TestRegistrationsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "impetus.db")
	b1, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, b1, DefaultConfig())
	romeo := srv.Connect("romeo@example.org/orchard")
	romeo.Input(enableXML)
	romeo.Close()
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.Close() })
	srv = newServer(t, b2, DefaultConfig())
	juliet := srv.Connect("juliet@example.org/balcony")
	juliet.Input(`<message to='romeo@example.org' type='chat'><body>still there?</body></message>`)
	if got := strings.Join(srv.Remote(), ""); !strings.Contains(got, "eruio234vzxc2kla-91") || !strings.Contains(got, `node="yxs32uqsflafdk3iuqo"`) {
		t.Fatalf("after restart: %s", got)
	}
}
