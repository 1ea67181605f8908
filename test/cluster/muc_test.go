package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

const mucDomain = "conference." + domain

// startMUCCluster is startCluster with a MUC service on conference.localhost.
func startMUCCluster(t *testing.T, pg string, users map[string]string) []*node {
	t.Helper()
	return startClusterSpec(t, pg, users, clusterSpec{domains: fmt.Sprintf(`domain "#xmpp#%s" { XMPP_Role = "server" }
domain "#xmpp#%s" {
  XMPP_Role = "server"
  XMPP_Service = "muc"
  MUC_Room_Creation = "local"
}`, domain, mucDomain)})
}

// roomOwner reads the node owning a room from the rooms bucket, through a node's NATS.
func roomOwner(t *testing.T, natsURL, room string) string {
	t.Helper()
	var v struct {
		Node string `json:"n"`
	}
	inBucket(t, natsURL, "impetus_rooms", func(ctx context.Context, kv jetstream.KeyValue) {
		e, err := kv.Get(ctx, "r."+base64.RawURLEncoding.EncodeToString([]byte(room)))
		if err != nil {
			t.Fatalf("reading the owner of %s: %v", room, err)
		}
		_ = json.Unmarshal(e.Value(), &v)
	})
	return v.Node
}

// hasCode reports whether a MUC presence carries a muc#user status code.
func hasCode(e *element, code string) bool {
	for _, x := range e.Children {
		if x.XMLName.Local != "x" || x.XMLName.Space != "http://jabber.org/protocol/muc#user" {
			continue
		}
		for _, c := range x.Children {
			if c.XMLName.Local == "status" && c.attr("code") == code {
				return true
			}
		}
	}
	return false
}

// enter joins room as nick and waits for the self-presence (status 110) and the subject,
// which ends the join (XEP-0045 §7.2.16); it returns the self-presence.
func (c *client) enter(room, nick string) *element {
	c.t.Helper()
	c.send(fmt.Sprintf(`<presence to='%s/%s'><x xmlns='http://jabber.org/protocol/muc'/></presence>`, room, nick))
	self := c.expect("self-presence in "+room, func(e *element) bool {
		return e.XMLName.Local == "presence" && e.attr("from") == room+"/"+nick && e.attr("type") == "" && hasCode(e, "110")
	})
	c.expect("subject of "+room, func(e *element) bool {
		return e.XMLName.Local == "message" && strings.HasPrefix(e.attr("from"), room) && e.child("subject") != nil
	})
	return self
}

func TestMUCAcrossNodesAndFailover(t *testing.T) {
	pg := pgSchemaURL(t)
	users := map[string]string{"alice": "pw", "bob": "pw", "carol": "pw"}
	nodes := startMUCCluster(t, pg, users)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	room := "failover@" + mucDomain
	side := "side@" + mucDomain

	alice := login(t, n1, "alice", "pw", "desk")
	bob := login(t, n2, "bob", "pw", "phone")
	carol := login(t, n3, "carol", "pw", "laptop")

	// alice creates a persistent room through n1, which becomes its owner.
	alice.send(fmt.Sprintf(`<presence to='%s/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>`, room))
	alice.expect("room created", func(e *element) bool {
		return e.XMLName.Local == "presence" && e.attr("from") == room+"/alice" && hasCode(e, "201")
	})
	if r := alice.iq(fmt.Sprintf(`<iq type='set' to='%s'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>`+
		`<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>`+
		`<field var='muc#roomconfig_persistentroom'><value>1</value></field>`+
		`<field var='muc#roomconfig_roomname'><value>Failover room</value></field></x></query></iq>`, room)); r.attr("type") != "result" {
		t.Fatalf("configuring the room: %v", r)
	}
	alice.send(fmt.Sprintf(`<message to='%s' type='groupchat'><subject>it survives</subject></message>`, room))
	alice.expect("subject echo", func(e *element) bool { return e.XMLName.Local == "message" && e.child("subject") != nil })
	if owner := roomOwner(t, n2.clientURL, room); owner != "n1" {
		t.Fatalf("the room is owned by %q, want n1", owner)
	}

	t.Run("occupants on three nodes", func(t *testing.T) {
		bob.enter(room, "bob")
		alice.expect("bob enters", isPresence(room+"/bob", ""))
		carol.enter(room, "carol")
		bob.expect("carol enters", isPresence(room+"/carol", ""))
		alice.expect("carol enters", isPresence(room+"/carol", ""))
		bob.send(fmt.Sprintf(`<message to='%s' type='groupchat'><body>hello from n2</body></message>`, room))
		for _, c := range []*client{alice, bob, carol} {
			c.expect("bob's message", isMessage(room+"/bob", "hello from n2"))
		}
		// Order per sender across nodes: a burst from carol arrives in order at bob.
		for i := 0; i < 20; i++ {
			carol.send(fmt.Sprintf(`<message to='%s' type='groupchat'><body>c%d</body></message>`, room, i))
		}
		for i := 0; i < 20; i++ {
			e := bob.expect("carol's burst", func(e *element) bool {
				return e.XMLName.Local == "message" && e.attr("from") == room+"/carol"
			})
			if got := e.child("body").Text; got != fmt.Sprintf("c%d", i) {
				t.Fatalf("message %d arrived as %s", i, got)
			}
		}
	})

	// A second room owned by n2 with alice in it through n1: when n1 goes, n2 removes her.
	bob.send(fmt.Sprintf(`<presence to='%s/bob'/>`, side)) // no MUC payload: an instant room
	bob.expect("side room", isPresence(side+"/bob", ""))
	alice.send(fmt.Sprintf(`<presence to='%s/alice'/>`, side))
	bob.expect("alice enters the side room", isPresence(side+"/alice", ""))

	t.Run("owner node killed", func(t *testing.T) {
		n1.kill9()
		// Occupants on the surviving nodes are told the room went down (XEP-0045 status 332)
		// once n1's lease expired.
		for _, c := range []*client{bob, carol} {
			e := c.expectWithin(3*wait, "status 332 from the lost room", func(e *element) bool {
				return e.XMLName.Local == "presence" && strings.HasPrefix(e.attr("from"), room+"/") && e.attr("type") == "unavailable"
			})
			if !hasCode(e, "332") || !hasCode(e, "110") {
				t.Fatalf("%s: notice without 110 and 332: %v", c.full, e)
			}
		}
		// The side room's owner removed alice, who was connected through n1 (status 333).
		e := bob.expectWithin(3*wait, "alice removed from the side room", isPresence(side+"/alice", "unavailable"))
		if !hasCode(e, "333") {
			t.Fatalf("alice's removal without 333: %v", e)
		}
		// They enter again: a surviving node takes the room over and loads it from storage.
		bob.enter(room, "bob")
		// The history sent on entry was reloaded from the room's archive in PostgreSQL.
		bob.expect("history after the failover", func(e *element) bool {
			return isMessage(room+"/carol", "c19")(e) && e.child("delay") != nil
		})
		carol.enter(room, "carol")
		bob.expect("carol back", isPresence(room+"/carol", ""))
		owner := roomOwner(t, n2.clientURL, room)
		if owner != "n2" && owner != "n3" {
			t.Fatalf("after the failover the room is owned by %q", owner)
		}
		carol.send(fmt.Sprintf(`<message to='%s' type='groupchat'><body>after the failover</body></message>`, room))
		bob.expect("message after the failover", isMessage(room+"/carol", "after the failover"))
		// Configuration and subject came from PostgreSQL.
		info := bob.iq(fmt.Sprintf(`<iq type='get' to='%s'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, room))
		if info.attr("type") != "result" || !strings.Contains(info.String(), "Failover room") || !strings.Contains(info.String(), "muc_persistent") {
			t.Fatalf("room configuration after the failover: %v", info)
		}
		carol2 := login(t, n3, "carol", "pw", "second")
		carol2.send(fmt.Sprintf(`<presence to='%s/carol2'><x xmlns='http://jabber.org/protocol/muc'/></presence>`, room))
		carol2.expect("subject after the failover", func(e *element) bool {
			s := e.child("subject")
			return e.XMLName.Local == "message" && s != nil && s.Text == "it survives"
		})
	})
}

// TestSlixmppMUCAcrossNodes has a third-party client, slixmpp's XEP-0045 plugin, use one room
// from two nodes: the creator on one, another occupant on the next.
func TestSlixmppMUCAcrossNodes(t *testing.T) {
	pg := pgSchemaURL(t)
	nodes := startMUCCluster(t, pg, map[string]string{"alice": "pw", "bob": "pw"})
	n1, n2 := nodes[0], nodes[1]
	room := "slix@" + mucDomain
	var res struct {
		CreateCodes []int    `json:"create_codes"`
		BobCodes    []int    `json:"bob_codes"`
		BobSees     []string `json:"bob_sees"`
		AliceSees   string   `json:"alice_sees"`
		AliceGot    string   `json:"alice_got"`
		BobGot      string   `json:"bob_got"`
		BobSubject  string   `json:"bob_subject"`
		RoomName    string   `json:"room_name"`
	}
	runSlix(t, "cluster_muc.py", "across_nodes", n1, n2, &res, "--room", room)
	if !slices.Contains(res.CreateCodes, 201) || !slices.Contains(res.BobCodes, 110) || !slices.Contains(res.BobSees, "Alice") ||
		res.AliceSees != "Bob" || res.AliceGot != "from the second node" || res.BobGot != "from the first node" ||
		res.BobSubject != "across" || res.RoomName != "Cluster Room" {
		t.Fatalf("slixmpp MUC across nodes: %+v", res)
	}
	if owner := roomOwner(t, n2.clientURL, room); owner != "n1" {
		t.Fatalf("the room is owned by %q, want n1 (where it was created)", owner)
	}
}
