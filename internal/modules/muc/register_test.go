package muc_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"impetus/internal/modules/muc"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

const regForm = `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field><field var='muc#register_roomnick'><value>%s</value></field></x>`

func registerXML(id, nick string) string {
	return `<iq type='set' id='` + id + `' to='` + room + `'><query xmlns='jabber:iq:register'>` + strings.Replace(regForm, "%s", nick, 1) + `</query></iq>`
}

// reserved returns the nickname the room reports for the client (x-roomuser-item).
func reserved(t *testing.T, c *client) string {
	t.Helper()
	r := c.iq(`<iq type='get' id='rn' to='` + room + `'><query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/></iq>`)
	q := r.Child(muc.NSDiscoInfo, "query")
	if r.Attr("type") != "result" || q == nil || q.Attr("node") != "x-roomuser-item" {
		t.Fatalf("x-roomuser-item: %s", r)
	}
	if id := q.Child(muc.NSDiscoInfo, "identity"); id != nil {
		if id.Attr("category") != "conference" || id.Attr("type") != "text" {
			t.Fatalf("reserved nick identity: %s", r)
		}
		return id.Attr("name")
	}
	return ""
}

func TestRegistrationAndReservedNicks(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")
	carol := ts.client(t, "carol@example.com/c")
	alice.create("Alice")

	// The room advertises registration; Bob gets the form with the required nickname field.
	if r := bob.iq(`<iq type='get' id='d' to='` + room + `'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`); !strings.Contains(r.String(), `var="jabber:iq:register"`) {
		t.Fatalf("disco lacks jabber:iq:register: %s", r)
	}
	r := bob.iq(`<iq type='get' id='g' to='` + room + `'><query xmlns='jabber:iq:register'/></iq>`)
	if r.Attr("type") != "result" || !strings.Contains(r.String(), "http://jabber.org/protocol/muc#register") || !strings.Contains(r.String(), "muc#register_roomnick") {
		t.Fatalf("registration form: %s", r)
	}
	if reserved(t, bob) != "" {
		t.Fatal("a nickname reported before registration")
	}
	if r := bob.iq(`<iq type='set' id='bad' to='` + room + `'><query xmlns='jabber:iq:register'/></iq>`); errCond(r) != "bad-request" {
		t.Fatalf("registration without a form: %s", r)
	}
	if r := bob.iq(registerXML("s", "Bobby")); r.Attr("type") != "result" {
		t.Fatalf("registration: %s", r)
	}
	if got := reserved(t, bob); got != "Bobby" {
		t.Fatalf("reserved nick = %q", got)
	}
	r = bob.iq(`<iq type='get' id='g2' to='` + room + `'><query xmlns='jabber:iq:register'/></iq>`)
	if q := r.Child(muc.NSRegister, "query"); q == nil || q.Child(muc.NSRegister, "registered") == nil || q.Child(muc.NSRegister, "username").Text() != "Bobby" {
		t.Fatalf("registered query: %s", r)
	}
	// Registration made Bob a member; the member list carries the reserved nick and no role.
	r = alice.iq(`<iq type='get' id='ml' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query></iq>`)
	it := r.Child(muc.NSAdmin, "query").Child(muc.NSAdmin, "item")
	if it == nil || it.Attr("jid") != "bob@example.com" || it.Attr("nick") != "Bobby" || it.HasAttr("role") {
		t.Fatalf("member list: %s", r)
	}

	// Someone else may neither reserve nor use the nickname, on entering or by a change.
	if r := carol.iq(registerXML("s2", "Bobby")); errCond(r) != "conflict" {
		t.Fatalf("second reservation of a nick: %s", r)
	}
	if e := find(carol.join("Bobby", ""), "presence", "error"); e == nil || errCond(e) != "conflict" {
		t.Fatal("join with a nick reserved by another user was not refused")
	}
	carol.join("Carol", "")
	alice.Elements()
	carol.Input(`<presence to='` + room + `/Bobby'/>`)
	if e := find(carol.Elements(), "presence", "error"); e == nil || errCond(e) != "conflict" {
		t.Fatal("nick change to a reserved nick was not refused")
	}
	// A nickname in use in the room cannot be reserved by someone else.
	if r := bob.iq(`<iq type='set' id='x' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='dave@example.com' nick='Carol'/></query></iq>`); errCond(r) != "forbidden" {
		t.Fatalf("a member changed affiliations: %s", r)
	}
	if r := alice.iq(`<iq type='set' id='x' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='dave@example.com' nick='Carol'/></query></iq>`); errCond(r) != "conflict" {
		t.Fatalf("reserving a nick in use: %s", r)
	}
	// Bob himself may use his nick, or another one.
	got := bob.join("Bobby", "")
	if p := findFrom(got, "presence", room+"/Bobby"); p == nil || item(p).Attr("affiliation") != "member" {
		t.Fatalf("Bob entering with his nick: %s", dump(got))
	}
	bob.Input(`<presence type='unavailable' to='` + room + `/Bobby'/>`)
	bob.Elements()
	carol.Elements()
	alice.Elements()

	// An admin grants membership with a reserved nick, and releases it with an empty one.
	dave := ts.client(t, "dave@example.com/d")
	if r := alice.iq(`<iq type='set' id='dv' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='dave@example.com' nick='Dave'/></query></iq>`); r.Attr("type") != "result" {
		t.Fatalf("membership with nick: %s", r)
	}
	// Dave is not in the room: he is told of his new affiliation (status 101).
	m := find(dave.Elements(), "message", "")
	if m == nil || m.Attr("from") != room || !hasStatus(m, "101") || item(m).Attr("affiliation") != "member" {
		t.Fatalf("out-of-room notice: %v", m)
	}
	if got := reserved(t, dave); got != "Dave" {
		t.Fatalf("nick reserved by an admin = %q", got)
	}
	alice.iq(`<iq type='set' id='dv2' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='dave@example.com' nick=''/></query></iq>`)
	if got := reserved(t, dave); got != "" {
		t.Fatalf("released nick still reserved: %q", got)
	}

	// Banning Bob, who is not in the room, tells him (status 101) and frees his nick.
	alice.iq(`<iq type='set' id='ban' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast' jid='bob@example.com'/></query></iq>`)
	m = find(bob.Elements(), "message", "")
	if m == nil || m.Attr("from") != room || !hasStatus(m, "101") || item(m).Attr("affiliation") != "outcast" {
		t.Fatalf("out-of-room affiliation notice: %v", m)
	}
	if e := find(carol.Elements(), "presence", ""); e != nil {
		t.Fatalf("occupants heard of a change to an absent user: %s", e)
	}
	if r := bob.iq(`<iq type='get' id='g3' to='` + room + `'><query xmlns='jabber:iq:register'/></iq>`); errCond(r) != "not-allowed" {
		t.Fatalf("an outcast may register: %s", r)
	}
	if r := carol.iq(registerXML("s3", "Bobby")); r.Attr("type") != "result" {
		t.Fatalf("a freed nick could not be reserved: %s", r)
	}
	// Carol, in the room, becomes a member: the occupants see her new affiliation.
	if p := findFrom(alice.Elements(), "presence", room+"/Carol"); p == nil || item(p).Attr("affiliation") != "member" {
		t.Fatal("occupants not told of a registration's membership")
	}
	// Cancelling the registration gives up the nick and the membership.
	if r := carol.iq(`<iq type='set' id='rm' to='` + room + `'><query xmlns='jabber:iq:register'><remove/></query></iq>`); r.Attr("type") != "result" {
		t.Fatalf("unregistration: %s", r)
	}
	if reserved(t, carol) != "" {
		t.Fatal("nick kept after unregistration")
	}
	if p := findFrom(alice.Elements(), "presence", room+"/Carol"); p == nil || item(p).Attr("affiliation") != "none" {
		t.Fatal("occupants not told of the lost membership")
	}
}

func TestRegistrationPolicy(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")
	alice.create("Alice")
	alice.iq(`<iq type='set' id='c' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>`)
	// Registering would make anyone a member of a members-only room: only members may.
	if r := bob.iq(`<iq type='get' id='g' to='` + room + `'><query xmlns='jabber:iq:register'/></iq>`); errCond(r) != "not-allowed" {
		t.Fatalf("non-member registration in a members-only room: %s", r)
	}
	// The owner may reserve a nick for herself; her affiliation stays.
	if r := alice.iq(registerXML("s", "Boss")); r.Attr("type") != "result" {
		t.Fatalf("owner registration: %s", r)
	}
	r := alice.iq(`<iq type='get' id='o' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='owner'/></query></iq>`)
	if it := r.Child(muc.NSAdmin, "query").Child(muc.NSAdmin, "item"); it == nil || it.Attr("nick") != "Boss" {
		t.Fatalf("owner list: %s", r)
	}
	// One request cannot reserve one nickname for two users.
	r = alice.iq(`<iq type='set' id='two' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' jid='x@example.com' nick='Twin'/><item affiliation='member' jid='y@example.com' nick='Twin'/></query></iq>`)
	if errCond(r) != "conflict" {
		t.Fatalf("one nick for two users: %s", r)
	}
	// Registration in a room that does not exist, and with a service that does not offer it.
	if r := bob.iq(`<iq type='get' id='n' to='nowhere@conference.example.com'><query xmlns='jabber:iq:register'/></iq>`); errCond(r) != "item-not-found" {
		t.Fatalf("registration with a missing room: %s", r)
	}
	ts2 := newServer(t, memory.New(), func(o *muc.Options) { o.Registration = false })
	carol := ts2.client(t, "carol@example.com/c")
	carol.create("Carol")
	if r := carol.iq(`<iq type='get' id='g' to='` + room + `'><query xmlns='jabber:iq:register'/></iq>`); errCond(r) != "service-unavailable" {
		t.Fatalf("registration with the service's registration off: %s", r)
	}
}

func TestReservedNickSurvivesRestart(t *testing.T) {
	for _, backend := range []struct {
		name string
		open func(t *testing.T) storage.Backend
	}{
		{"memory", func(*testing.T) storage.Backend { return memory.New() }},
		{"sqlite", func(t *testing.T) storage.Backend {
			b, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "muc.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b
		}},
	} {
		t.Run(backend.name, func(t *testing.T) {
			ts := newServer(t, backend.open(t), nil)
			alice := ts.client(t, "alice@example.com/a")
			alice.join("Alice", "")
			alice.iq(`<iq type='set' id='c' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'><value>1</value></field><field var='muc#roomconfig_presencebroadcast'><value>moderator</value></field></x></query></iq>`)
			bob := ts.client(t, "bob@example.com/b")
			if r := bob.iq(registerXML("s", "Bobby")); r.Attr("type") != "result" {
				t.Fatalf("registration: %s", r)
			}
			ts.addService(t, nil)
			if got := reserved(t, bob); got != "Bobby" {
				t.Fatalf("reserved nick after restart = %q", got)
			}
			carol := ts.client(t, "carol@example.com/c")
			if e := find(carol.join("Bobby", ""), "presence", "error"); e == nil || errCond(e) != "conflict" {
				t.Fatal("reservation not enforced after restart")
			}
			r := alice.iq(`<iq type='get' id='f' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>`)
			if !strings.Contains(r.String(), `<field var="muc#roomconfig_presencebroadcast" type="list-multi" label="Roles whose presence is broadcast"><value>moderator</value><option`) {
				t.Fatalf("presencebroadcast after restart: %s", r)
			}
		})
	}
}

func TestPresenceBroadcastByRole(t *testing.T) {
	ts := newServer(t, memory.New(), nil)
	alice := ts.client(t, "alice@example.com/a")
	bob := ts.client(t, "bob@example.com/b")
	carol := ts.client(t, "carol@example.com/c")
	alice.create("Alice")
	if r := alice.iq(`<iq type='set' id='c' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_presencebroadcast'><value>moderator</value></field></x></query></iq>`); r.Attr("type") != "result" {
		t.Fatalf("config: %s", r)
	}
	// Bob, a participant, sees Alice (a moderator) and himself; nobody sees Bob.
	got := bob.join("Bob", "")
	if findFrom(got, "presence", room+"/Alice") == nil || findFrom(got, "presence", room+"/Bob") == nil {
		t.Fatalf("Bob's join: %s", dump(got))
	}
	if p := findFrom(alice.Elements(), "presence", room+"/Bob"); p != nil {
		t.Fatalf("a participant's presence was broadcast: %s", p)
	}
	got = carol.join("Carol", "")
	if p := findFrom(got, "presence", room+"/Bob"); p != nil {
		t.Fatalf("a newcomer was sent a quiet occupant: %s", p)
	}
	bob.Elements()
	// Bob speaks: messages go to everyone whatever the presence setting.
	bob.Input(`<message type='groupchat' to='` + room + `'><body>hi</body></message>`)
	if find(carol.Elements(), "message", "groupchat") == nil {
		t.Fatal("a quiet occupant's message was not delivered")
	}
	alice.Elements()
	bob.Elements()
	// Made a moderator, Bob appears; made a participant again, he vanishes.
	alice.iq(`<iq type='set' id='m' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Bob' role='moderator'/></query></iq>`)
	if p := findFrom(carol.Elements(), "presence", room+"/Bob"); p == nil || p.Attr("type") != "" || item(p).Attr("role") != "moderator" {
		t.Fatalf("a new moderator did not appear: %v", p)
	}
	bob.Elements()
	alice.iq(`<iq type='set' id='p' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Bob' role='participant'/></query></iq>`)
	if p := findFrom(carol.Elements(), "presence", room+"/Bob"); p == nil || p.Attr("type") != "unavailable" {
		t.Fatalf("a participant again did not vanish: %v", p)
	}
	if p := findFrom(bob.Elements(), "presence", room+"/Bob"); p == nil || p.Attr("type") != "" || item(p).Attr("role") != "participant" {
		t.Fatalf("Bob's own view of his new role: %v", p)
	}
	// Bob leaving is heard by nobody else.
	bob.Input(`<presence type='unavailable' to='` + room + `/Bob'/>`)
	if p := findFrom(carol.Elements(), "presence", room+"/Bob"); p != nil {
		t.Fatalf("a quiet occupant's exit was broadcast: %s", p)
	}
	bob.Elements()
	// Switching broadcast back on makes the quiet occupants appear.
	alice.Elements()
	alice.Input(`<iq type='set' id='c2' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_presencebroadcast'><value>moderator</value><value>participant</value><value>visitor</value></field></x></query></iq>`)
	if p := findFrom(alice.Elements(), "presence", room+"/Carol"); p == nil || p.Attr("type") != "" {
		t.Fatalf("a quiet occupant did not appear when broadcast was switched on: %v", p)
	}
	if r := alice.iq(`<iq type='set' id='c3' to='` + room + `'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_presencebroadcast'><value>owner</value></field></x></query></iq>`); errCond(r) != "not-acceptable" {
		t.Fatalf("an unknown role was accepted: %s", r)
	}
}
