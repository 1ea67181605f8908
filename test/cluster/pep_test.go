package cluster

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// capsClient makes c announce features through XEP-0115 caps: it answers disco#info with
// them, and returns the presence carrying their verification string (§5.1).
func capsClient(c *client, features ...string) string {
	sort.Strings(features)
	var info, s strings.Builder
	info.WriteString(`<identity category='client' type='pc' name='cluster-test'/>`)
	s.WriteString("client/pc//cluster-test<")
	for _, f := range features {
		fmt.Fprintf(&info, `<feature var='%s'/>`, f)
		s.WriteString(f + "<")
	}
	payload := info.String()
	c.discoInfo.Store(&payload)
	sum := sha1.Sum([]byte(s.String()))
	return fmt.Sprintf(`<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:impetus:cluster-test' ver='%s'/></presence>`,
		base64.StdEncoding.EncodeToString(sum[:]))
}

// TestPEPNotifyAcrossNodes publishes on one node and checks that +notify reaches the
// publisher's other resource and a contact's resource, each on another node: their caps are
// read from the presence their nodes registered.
func TestPEPNotifyAcrossNodes(t *testing.T) {
	pg := pgSchemaURL(t)
	nodes := startCluster(t, pg, map[string]string{"alice": "pw", "bob": "pw"})
	const pepNode = "urn:impetus:test:news"
	features := []string{"http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info", pepNode + "+notify"}

	desk := login(t, nodes[0], "alice", "pw", "desk")
	phone := login(t, nodes[1], "alice", "pw", "phone")
	bob := login(t, nodes[2], "bob", "pw", "pc")
	for _, c := range []*client{desk, phone, bob} {
		c.iq(`<iq type='get'><query xmlns='jabber:iq:roster'/></iq>`)
	}
	pres := capsClient(phone, features...)
	capsClient(bob, features...)
	desk.send(`<presence/>`)
	phone.send(pres)
	bob.send(pres)
	for _, c := range []*client{desk, phone, bob} {
		c.sync()
	}
	subscribe(t, bob, desk) // bob receives alice's presence: her PEP reaches him

	// The first publishes may find the caps not yet resolved on the publishing node (it asks the
	// other resources for them); a bounded number of publishes must reach both.
	got := map[*client]bool{}
	for i := 0; i < 20 && !(got[phone] && got[bob]); i++ {
		id := fmt.Sprintf("item%d", i)
		r := desk.iq(fmt.Sprintf(`<iq type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='%s'><item id='%s'><entry xmlns='urn:impetus:test'>%d</entry></item></publish></pubsub></iq>`, pepNode, id, i))
		if r.attr("type") != "result" {
			t.Fatalf("publish: %v", r)
		}
		for _, c := range []*client{phone, bob} {
			if got[c] {
				continue
			}
			for _, e := range c.drain() {
				if e.XMLName.Local == "message" && e.attr("from") == desk.bare() && e.find("items") != nil && e.find("items").attr("node") == pepNode {
					got[c] = true
				}
			}
		}
		if !(got[phone] && got[bob]) {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if !got[phone] {
		t.Error("alice's resource on another node got no notification")
	}
	if !got[bob] {
		t.Error("bob, on a third node, got no notification")
	}
}
