package carbons_test

import (
	"strings"
	"testing"

	"impetus/internal/modules/blocking"
	"impetus/internal/modules/carbons"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/stanza"
	"impetus/internal/storage/memory"
)

type env struct {
	*rostertest.Server
}

func newEnv(t *testing.T) env {
	t.Helper()
	s := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com", "other.example")
	for _, h := range s.Hosts {
		if err := new(carbons.Carbons).Provision(h); err != nil {
			t.Fatal(err)
		}
	}
	return env{s}
}

// online connects full, sends presence with priority prio and, when enable, enables carbons.
func (e env) online(t *testing.T, full, prio string, enable bool) *rostertest.Session {
	t.Helper()
	s := e.Connect(full)
	s.Input(`<presence><priority>` + prio + `</priority></presence>`)
	if enable {
		s.Input(`<iq type="set" id="en"><enable xmlns="urn:xmpp:carbons:2"/></iq>`)
		if got := strings.Join(s.Take(), ""); !strings.Contains(got, `type="result" id="en"`) {
			t.Fatalf("enable: %s", got)
		}
	}
	return s
}

func take(sessions ...*rostertest.Session) {
	for _, s := range sessions {
		s.Take()
	}
}

func one(t *testing.T, s *rostertest.Session, want string) {
	t.Helper()
	got := strings.Join(s.Take(), "\n")
	if got != want {
		t.Errorf("%s got:\n%s\nwant:\n%s", s.JID(), got, want)
	}
}

func TestReceivedAndSent(t *testing.T) {
	e := newEnv(t)
	r1 := e.online(t, "romeo@example.com/garden", "1", true)
	r2 := e.online(t, "romeo@example.com/home", "0", true)
	r3 := e.online(t, "romeo@example.com/off", "0", false)
	j := e.online(t, "juliet@example.com/balcony", "0", false)
	take(r1, r2, r3, j)

	// To the bare JID: the highest priority gets it, the other enabled resource a copy.
	j.Input(`<message to="romeo@example.com" type="chat" id="m1"><body>hi</body></message>`)
	one(t, r1, `<message to="romeo@example.com" type="chat" id="m1" from="juliet@example.com/balcony"><body>hi</body></message>`)
	one(t, r2, `<message from="romeo@example.com" to="romeo@example.com/home" type="chat"><received xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client" to="romeo@example.com" type="chat" id="m1" from="juliet@example.com/balcony"><body>hi</body></message></forwarded></received></message>`)
	one(t, r3, ``)

	// To a full JID: everyone enabled but the addressee gets a copy.
	j.Input(`<message to="romeo@example.com/home" id="m2"><body>normal with body</body></message>`)
	one(t, r2, `<message to="romeo@example.com/home" id="m2" from="juliet@example.com/balcony"><body>normal with body</body></message>`)
	one(t, r1, `<message from="romeo@example.com" to="romeo@example.com/garden"><received xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client" to="romeo@example.com/home" id="m2" from="juliet@example.com/balcony"><body>normal with body</body></message></forwarded></received></message>`)

	// Sent: the other enabled resources get a copy, the sender and disabled ones do not.
	r3.Input(`<message to="juliet@example.com/balcony" type="chat" id="m3"><body>yes</body></message>`)
	one(t, j, `<message to="juliet@example.com/balcony" type="chat" id="m3" from="romeo@example.com/off"><body>yes</body></message>`)
	one(t, r1, `<message from="romeo@example.com" to="romeo@example.com/garden" type="chat"><sent xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client" to="juliet@example.com/balcony" type="chat" id="m3" from="romeo@example.com/off"><body>yes</body></message></forwarded></sent></message>`)
	one(t, r2, `<message from="romeo@example.com" to="romeo@example.com/home" type="chat"><sent xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client" to="juliet@example.com/balcony" type="chat" id="m3" from="romeo@example.com/off"><body>yes</body></message></forwarded></sent></message>`)
	one(t, r3, ``)

	// Sent to a remote domain: copies too.
	r1.Input(`<message to="mercutio@remote.example" type="chat" id="m4"><body>far</body></message>`)
	one(t, r2, `<message from="romeo@example.com" to="romeo@example.com/home" type="chat"><sent xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client" to="mercutio@remote.example" type="chat" id="m4" from="romeo@example.com/garden"><body>far</body></message></forwarded></sent></message>`)
	if got := e.Remote(); len(got) != 1 {
		t.Errorf("remote: %v", got)
	}

	// Disabling stops the copies.
	r2.Input(`<iq type="set" id="dis"><disable xmlns="urn:xmpp:carbons:2"/></iq>`)
	take(r2)
	r1.Input(`<message to="juliet@example.com" type="chat" id="m5"><body>x</body></message>`)
	take(j)
	one(t, r2, ``)
}

func TestNotEligible(t *testing.T) {
	e := newEnv(t)
	r1 := e.online(t, "romeo@example.com/garden", "1", true)
	r2 := e.online(t, "romeo@example.com/home", "0", true)
	j := e.online(t, "juliet@example.com/balcony", "0", true)
	take(r1, r2, j)

	for _, m := range []string{
		`<message to="romeo@example.com" type="chat" id="p"><body>secret</body><private xmlns="urn:xmpp:carbons:2"/></message>`,
		`<message to="romeo@example.com" type="chat" id="nc"><body>x</body><no-copy xmlns="urn:xmpp:hints"/></message>`,
		`<message to="romeo@example.com" type="headline" id="h"><body>news</body></message>`,
		`<message to="romeo@example.com" id="nb"><subject>no body</subject></message>`,
	} {
		j.Input(m)
		got := strings.Join(r1.Take(), "")
		if strings.Contains(got, "carbons:2\"><forwarded") || strings.Contains(got, "<private") {
			t.Errorf("r1 got %s for %s", got, m)
		}
		if c := r2.Take(); len(c) != 0 && !strings.Contains(m, "headline") {
			t.Errorf("r2 got copies %v for %s", c, m)
		}
		if c := j.Take(); len(c) != 0 {
			t.Errorf("sender got %v for %s", c, m)
		}
	}
	// A private message from a room occupant is not copied.
	e.Core.Route(t.Context(), mustParse(t, `<message from="room@muc.other.example/nick" to="romeo@example.com/garden" type="chat" id="pm"><body>pm</body><x xmlns="http://jabber.org/protocol/muc#user"/></message>`))
	if got := r2.Take(); len(got) != 0 {
		t.Errorf("MUC PM copied: %v", got)
	}
	take(r1)
	// Messages between one account's resources get no received copy; the sent copy tells.
	r1.Input(`<message to="romeo@example.com/home" type="chat" id="self"><body>note</body></message>`)
	if got := strings.Join(r2.Take(), ""); strings.Count(got, "<message") != 1 || strings.Contains(got, "forwarded") {
		t.Errorf("to own resource: %s", got)
	}
	// Enabling someone else's carbons is not allowed.
	r1.Input(`<iq type="set" id="x" to="juliet@example.com"><enable xmlns="urn:xmpp:carbons:2"/></iq>`)
	if got := strings.Join(r1.Take(), ""); !strings.Contains(got, "<not-allowed") {
		t.Errorf("enable for another account: %s", got)
	}
	// A message that the router bounces yields no copies.
	j.Input(`<message to="romeo@example.com/gone" id="b"><body>x</body></message>`)
	if got := strings.Join(append(r1.Take(), r2.Take()...), ""); got != "" {
		t.Errorf("copies of a bounced message: %s", got)
	}
}

func mustParse(t *testing.T, xml string) *stanza.Element {
	t.Helper()
	el, err := rostertest.Parse(xml)
	if err != nil {
		t.Fatal(err)
	}
	return el
}

// TestBlockedNotCopied checks the hook order: a message the blocking module refuses is not
// copied to the sender's other resources, and one it drops is not copied to the recipient's.
func TestBlockedNotCopied(t *testing.T) {
	s := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	h := s.Hosts["example.com"]
	b := &blocking.Blocking{Config: blocking.Config{MaxItems: blocking.DefaultMaxItems, MaxCached: blocking.DefaultMaxCached}}
	if err := b.Provision(h); err != nil {
		t.Fatal(err)
	}
	if err := new(carbons.Carbons).Provision(h); err != nil {
		t.Fatal(err)
	}
	e := env{s}
	r1 := e.online(t, "romeo@example.com/garden", "1", true)
	r2 := e.online(t, "romeo@example.com/home", "0", true)
	j := e.online(t, "juliet@example.com/balcony", "0", false)
	r1.Input(`<iq type="set" id="b"><block xmlns="urn:xmpp:blocking"><item jid="juliet@example.com"/></block></iq>`)
	take(r1, r2, j)

	r1.Input(`<message to="juliet@example.com" type="chat" id="out"><body>x</body></message>`)
	if got := strings.Join(r1.Take(), ""); !strings.Contains(got, `type="error"`) {
		t.Errorf("the blocked message was not refused: %s", got)
	}
	one(t, r2, ``)
	one(t, j, ``)

	j.Input(`<message to="romeo@example.com" type="chat" id="in"><body>x</body></message>`)
	j.Take()
	one(t, r1, ``)
	one(t, r2, ``)
}
