package vcard_test

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"impetus/internal/modules/pep"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/modules/vcard"
	"impetus/internal/storage"
)

func server(t *testing.T, b storage.Backend, withPEP bool) *rostertest.Server {
	t.Helper()
	srv := rostertest.New(t, b, rostertest.Config{}, "example.com")
	h := srv.Hosts["example.com"]
	if withPEP {
		p := pep.New()
		if err := p.Provision(h); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Stop() })
	}
	v := vcard.New()
	v.MaxSize = 2000
	if err := v.Provision(h); err != nil {
		t.Fatal(err)
	}
	if err := h.Provision(nil); err != nil {
		t.Fatal(err)
	}
	srv.AddAccount("alice@example.com")
	srv.AddAccount("bob@example.com")
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

var png = []byte("\x89PNG not really an image")

func pngHash() string {
	s := sha1.Sum(png)
	return hex.EncodeToString(s[:])
}

func TestVCardGetSet(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		srv := server(t, b, false)
		alice := srv.Connect("alice@example.com/a")
		bob := srv.Connect("bob@example.com/b")
		alice.Input(`<iq type='get' id='g1'><vCard xmlns='vcard-temp'/></iq>`)
		has(t, alice.Take(), `<vCard xmlns="vcard-temp"/>`)
		bob.Input(`<iq type='get' id='g2' to='alice@example.com'><vCard xmlns='vcard-temp'/></iq>`)
		has(t, bob.Take(), `item-not-found`)
		alice.Input(`<iq type='set' id='s1'><vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>` + base64.StdEncoding.EncodeToString(png) + `</BINVAL></PHOTO></vCard></iq>`)
		has(t, alice.Take(), `type="result" id="s1"`)
		bob.Input(`<iq type='get' id='g3' to='alice@example.com'><vCard xmlns='vcard-temp'/></iq>`)
		has(t, bob.Take(), `<FN>Alice</FN>`, `<TYPE>image/png</TYPE>`)
		bob.Input(`<iq type='set' id='s2' to='alice@example.com'><vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>`)
		has(t, bob.Take(), `forbidden`)
		bob.Input(`<iq type='get' id='g4' to='nobody@example.com'><vCard xmlns='vcard-temp'/></iq>`)
		has(t, bob.Take(), `service-unavailable`)
		alice.Input(`<iq type='set' id='s3'><vCard xmlns='vcard-temp'><DESC>` + strings.Repeat("x", 3000) + `</DESC></vCard></iq>`)
		has(t, alice.Take(), `not-acceptable`)
		// The photo hash is stamped into presence without one; a client's own photo is kept.
		alice.Input(`<presence/>`)
		has(t, alice.Take(), `<x xmlns="vcard-temp:x:update"><photo>`+pngHash()+`</photo></x>`)
		alice.Input(`<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>`)
		has(t, alice.Take(), `<x xmlns="vcard-temp:x:update"><photo/></x>`)
		alice.Input(`<presence><x xmlns='vcard-temp:x:update'/></presence>`)
		has(t, alice.Take(), `<x xmlns="vcard-temp:x:update"><photo>`+pngHash()+`</photo></x>`)
		bob.Input(`<presence/>`)
		has(t, bob.Take(), `<x xmlns="vcard-temp:x:update"><photo/></x>`)
	})
}

func TestPEPConversion(t *testing.T) {
	rostertest.ForEachBackend(t, func(t *testing.T, b storage.Backend) {
		srv := server(t, b, true)
		alice := srv.Connect("alice@example.com/a")
		alice.Input(`<iq type='get' id='d1' to='alice@example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
		alice.Take()
		data := base64.StdEncoding.EncodeToString(png)
		// XEP-0084 publication lands in the vCard.
		alice.Input(`<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:data'><item id='` + pngHash() + `'><data xmlns='urn:xmpp:avatar:data'>` + data + `</data></item></publish></pubsub></iq>`)
		alice.Input(`<iq type='set' id='p2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:metadata'><item id='` + pngHash() + `'><metadata xmlns='urn:xmpp:avatar:metadata'><info id='` + pngHash() + `' bytes='24' type='image/png'/></metadata></item></publish></pubsub></iq>`)
		alice.Take()
		alice.Input(`<iq type='get' id='g1'><vCard xmlns='vcard-temp'/></iq>`)
		has(t, alice.Take(), `<PHOTO><TYPE>image/png</TYPE><BINVAL>`+data+`</BINVAL></PHOTO>`)
		alice.Input(`<presence/>`)
		has(t, alice.Take(), `<photo>`+pngHash()+`</photo>`)

		// A vCard photo is published to PEP.
		other := []byte("GIF89a other image")
		s := sha1.Sum(other)
		oh := hex.EncodeToString(s[:])
		alice.Input(`<iq type='set' id='s1'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/gif</TYPE><BINVAL>` + base64.StdEncoding.EncodeToString(other) + `</BINVAL></PHOTO></vCard></iq>`)
		alice.Take()
		alice.Input(`<iq type='get' id='i1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:metadata'/></pubsub></iq>`)
		has(t, alice.Take(), `<info id="`+oh+`" bytes="18" type="image/gif"/>`)
		alice.Input(`<iq type='get' id='i2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:data'/></pubsub></iq>`)
		has(t, alice.Take(), `<item id="`+oh+`"`, `<data xmlns="urn:xmpp:avatar:data">`+base64.StdEncoding.EncodeToString(other)+`</data>`)
	})
}
