package caps_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/modules/caps"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/stanza"
	"impetus/internal/storage/memory"
)

func parse(t *testing.T, xml string) *stanza.Element {
	t.Helper()
	el, err := rostertest.Parse(xml)
	if err != nil {
		t.Fatal(err)
	}
	return el
}

// The examples of XEP-0115 §5.2 and §5.3.
const simple = `<query xmlns='http://jabber.org/protocol/disco#info'>
<identity category='client' name='Exodus 0.9.1' type='pc'/>
<feature var='http://jabber.org/protocol/caps'/>
<feature var='http://jabber.org/protocol/disco#info'/>
<feature var='http://jabber.org/protocol/disco#items'/>
<feature var='http://jabber.org/protocol/muc'/>
</query>`

const complex = `<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
<identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
<feature var='http://jabber.org/protocol/caps'/>
<feature var='http://jabber.org/protocol/disco#info'/>
<feature var='http://jabber.org/protocol/disco#items'/>
<feature var='http://jabber.org/protocol/muc'/>
<x xmlns='jabber:x:data' type='result'>
<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
<field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>
<field var='os'><value>Mac</value></field>
<field var='os_version'><value>10.5.1</value></field>
<field var='software'><value>Psi</value></field>
<field var='software_version'><value>0.11</value></field>
</x>
</query>`

func TestVerExamples(t *testing.T) {
	for _, tc := range []struct{ xml, want string }{
		{simple, "QgayPKawpkPSDYmwT/WM94uAlu0="},
		{complex, "q07IKJEyjvHSyhy//CH0CxmKi8w="},
	} {
		info, err := caps.ParseInfo(parse(t, tc.xml))
		if err != nil {
			t.Fatal(err)
		}
		got, err := info.Ver("sha-1")
		if err != nil || got != tc.want {
			t.Errorf("ver = %q, %v; want %q", got, err, tc.want)
		}
	}
}

func TestParseInfoRefusesDuplicates(t *testing.T) {
	for _, xml := range []string{
		`<query xmlns='http://jabber.org/protocol/disco#info'><identity category='client' type='pc'/><identity category='client' type='pc'/></query>`,
		`<query xmlns='http://jabber.org/protocol/disco#info'><feature var='a'/><feature var='a'/></query>`,
		`<query xmlns='http://jabber.org/protocol/disco#info'><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>t</value></field></x><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>t</value></field></x></query>`,
	} {
		if _, err := caps.ParseInfo(parse(t, xml)); err == nil {
			t.Errorf("accepted %s", xml)
		}
	}
	// A form whose FORM_TYPE is not hidden is ignored, the result kept (§5.4).
	info, err := caps.ParseInfo(parse(t, `<query xmlns='http://jabber.org/protocol/disco#info'><feature var='a'/><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>t</value></field></x></query>`))
	if err != nil || len(info.Forms) != 0 || len(info.Features) != 1 {
		t.Fatalf("info = %+v, %v", info, err)
	}
}

// server returns a test server with the caps module provisioned on example.com.
func server(t *testing.T) (*rostertest.Server, *caps.Caps) {
	t.Helper()
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	h := srv.Hosts["example.com"]
	c := caps.New()
	if err := c.Provision(h); err != nil {
		t.Fatal(err)
	}
	if err := h.Provision(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return srv, c
}

func TestServerCapsInStreamFeatures(t *testing.T) {
	srv, c := server(t)
	h := srv.Hosts["example.com"]
	var el *stanza.Element
	for _, f := range h.StreamFeatures() {
		if f.Space == caps.NS {
			el = f
		}
	}
	if el == nil || el.Attr("ver") == "" || el.Attr("ver") != c.Ver() || el.Attr("hash") != "sha-1" {
		t.Fatalf("stream feature = %v", el)
	}
	info := &caps.Info{Features: h.Features()}
	for _, id := range h.Identities() {
		info.Identities = append(info.Identities, caps.Identity{Category: id.Category, Type: id.Type, Name: id.Name})
	}
	if want, _ := info.Ver("sha-1"); want != c.Ver() {
		t.Fatalf("ver %q, want %q", c.Ver(), want)
	}
	if caps.ForHost(h) != c {
		t.Fatal("ForHost does not find the module")
	}
}

func TestClientCapsResolvedAndVerified(t *testing.T) {
	srv, c := server(t)
	var known []string
	c.OnKnown(func(_ context.Context, full jid.JID, features []string) { known = append(known, full.String()) })
	phone := srv.Connect("alice@example.com/phone")
	tablet := srv.Connect("alice@example.com/tablet")
	pres := `<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://code.google.com/p/exodus' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>`
	phone.Input(pres)
	var query *stanza.Element
	for _, el := range phone.Elements() {
		if el.Local == "iq" {
			query = el
		}
	}
	if query == nil || query.Attr("from") != "example.com" {
		t.Fatalf("no disco#info query, got %v", query)
	}
	q := query.Child(caps.NSInfo, "query")
	if q.Attr("node") != "http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0=" {
		t.Fatalf("node %q", q.Attr("node"))
	}
	// The second resource announcing the same caps does not cause a second query.
	tablet.Input(pres)
	for _, el := range tablet.Elements() {
		if el.Local == "iq" {
			t.Fatalf("second query %v", el)
		}
	}
	full, _ := jid.Parse("alice@example.com/phone")
	if f := c.Features(full); f != nil {
		t.Fatalf("features before the answer: %v", f)
	}
	phone.Input(`<iq type='result' to='example.com' id='` + query.Attr("id") + `'>` + simple + `</iq>`)
	f := c.Features(full)
	if len(f) != 4 || !c.Has(full, "http://jabber.org/protocol/muc") {
		t.Fatalf("features = %v", f)
	}
	tab, _ := jid.Parse("alice@example.com/tablet")
	if !c.Has(tab, "http://jabber.org/protocol/muc") {
		t.Fatal("tablet features unknown")
	}
	if strings.Join(known, ",") != "alice@example.com/phone,alice@example.com/tablet" && strings.Join(known, ",") != "alice@example.com/tablet,alice@example.com/phone" {
		t.Fatalf("known = %v", known)
	}
	// Unavailable presence forgets the entity.
	tablet.Input(`<presence type='unavailable'/>`)
	if c.Features(tab) != nil {
		t.Fatal("features kept after unavailable")
	}
	// A third session with cached caps is known at once, without a query.
	laptop := srv.Connect("alice@example.com/laptop")
	laptop.Input(pres)
	for _, el := range laptop.Elements() {
		if el.Local == "iq" {
			t.Fatalf("query for cached caps %v", el)
		}
	}
	lap, _ := jid.Parse("alice@example.com/laptop")
	if !c.Has(lap, "http://jabber.org/protocol/caps") {
		t.Fatal("cached caps not applied")
	}
}

func TestClientCapsMismatchNotCached(t *testing.T) {
	srv, c := server(t)
	phone := srv.Connect("bob@example.com/phone")
	phone.Input(`<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='AAAAAAAAAAAAAAAAAAAAAAAAAAA='/></presence>`)
	var id string
	for _, el := range phone.Elements() {
		if el.Local == "iq" {
			id = el.Attr("id")
		}
	}
	phone.Input(`<iq type='result' to='example.com' id='` + id + `'>` + simple + `</iq>`)
	if _, ok := c.Lookup("sha-1", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="); ok {
		t.Fatal("unverified caps cached")
	}
	// An answer from someone else than the queried entity is not taken either.
	other := srv.Connect("eve@example.com/x")
	phone.Input(`<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>`)
	for _, el := range phone.Elements() {
		if el.Local == "iq" {
			id = el.Attr("id")
		}
	}
	other.Input(`<iq type='result' to='example.com' id='` + id + `'>` + simple + `</iq>`)
	if _, ok := c.Lookup("sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0="); ok {
		t.Fatal("answer from a third party cached")
	}
}

var _ module.Module = (*caps.Caps)(nil)

// remoteSession stands for a session on another node of a cluster: this node never saw its
// presence, only the copy its node registered.
type remoteSession struct {
	*rostertest.Session
	pres *stanza.Element
}

func (remoteSession) Node() string                    { return "n2" }
func (r remoteSession) LastPresence() *stanza.Element { return r.pres }

func TestFeaturesOfSessionOnAnotherNode(t *testing.T) {
	// Two nodes of a cluster share the storage: node 1 serves alice's phone, node 2 publishes.
	shared := memory.New()
	node := func() (*rostertest.Server, *caps.Caps) {
		srv := rostertest.New(t, shared, rostertest.Config{}, "example.com")
		h := srv.Hosts["example.com"]
		c := caps.New()
		if err := c.Provision(h); err != nil {
			t.Fatal(err)
		}
		if err := h.Provision(nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Stop() })
		return srv, c
	}
	srv1, _ := node()
	srv2, c2 := node()
	presXML := `<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://code.google.com/p/exodus' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>`
	phone := srv1.Connect("alice@example.com/phone")
	// On node 2 the phone is a proxy with the presence node 1 registered.
	far := srv2.Connect("alice@example.com/phone")
	srv2.Router.Unbind(far)
	remote := remoteSession{Session: far, pres: parse(t, presXML)}
	ctx := context.Background()
	if f := c2.FeaturesOf(ctx, remote); f != nil {
		t.Fatalf("features before any node verified them: %v", f)
	}
	// Node 1 verifies the phone's caps when its presence arrives.
	phone.Input(presXML)
	var query *stanza.Element
	for _, el := range phone.Elements() {
		if el.Local == "iq" {
			query = el
		}
	}
	if query == nil {
		t.Fatal("node 1 sent no disco#info query")
	}
	phone.Input(`<iq type='result' to='example.com' id='` + query.Attr("id") + `'>` + simple + `</iq>`)
	if f := c2.FeaturesOf(ctx, remote); len(f) != 4 || !slices.Contains(f, "http://jabber.org/protocol/muc") {
		t.Fatalf("features node 2 read for the phone = %v", f)
	}
	// A remote session without caps in its presence has none.
	if f := c2.FeaturesOf(ctx, remoteSession{Session: far, pres: parse(t, `<presence/>`)}); f != nil {
		t.Fatalf("features without caps = %v", f)
	}
}
