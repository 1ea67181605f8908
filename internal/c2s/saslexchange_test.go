package c2s

import (
	"strings"
	"testing"
)

// TestSASLExchangeInBothProfiles drives the shared exchange loop through a challenge in
// RFC 6120 SASL and in XEP-0388 SASL2: a response that is not base64, an abort, and a good
// response, each answered in the profile's own namespace.
func TestSASLExchangeInBothProfiles(t *testing.T) {
	t.Run("rfc6120", func(t *testing.T) {
		c := newTestServer(t, "alice").dial(t)
		c.send(header)
		c.until("</stream:features>")
		const auth = `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>`
		c.send(auth)
		c.until(`<challenge xmlns="urn:ietf:params:xml:ns:xmpp-sasl"`)
		c.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>not base64!</response>`)
		if got := c.until("</failure>"); !strings.Contains(got, `<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><incorrect-encoding`) {
			t.Fatalf("bad response: %s", got)
		}
		c.send(auth)
		c.until(`<challenge`)
		c.send(`<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`)
		if got := c.until("</failure>"); !strings.Contains(got, `<aborted`) {
			t.Fatalf("abort: %s", got)
		}
		c.send(auth)
		c.until(`<challenge`)
		c.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` + b64("\x00alice\x00secret") + `</response>`)
		c.until(`<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"`)
	})
	t.Run("xep0388", func(t *testing.T) {
		c, _ := newTLSServer(t, "alice").dial(t)
		c.send(headerFrom)
		c.until("</stream:features>")
		const auth = `<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'/>`
		c.send(auth)
		c.until(`<challenge xmlns="urn:xmpp:sasl:2"`)
		c.send(`<response xmlns='urn:xmpp:sasl:2'>not base64!</response>`)
		if got := c.until("</failure>"); !strings.Contains(got, `<failure xmlns="urn:xmpp:sasl:2"><incorrect-encoding xmlns="urn:ietf:params:xml:ns:xmpp-sasl"`) {
			t.Fatalf("bad response: %s", got)
		}
		c.send(auth)
		c.until(`<challenge`)
		c.send(`<abort xmlns='urn:xmpp:sasl:2'/>`)
		if got := c.until("</failure>"); !strings.Contains(got, `<aborted xmlns="urn:ietf:params:xml:ns:xmpp-sasl"`) {
			t.Fatalf("abort: %s", got)
		}
		c.send(auth)
		c.until(`<challenge`)
		c.send(`<response xmlns='urn:xmpp:sasl:2'>` + b64("\x00alice\x00secret") + `</response>`)
		c.until(`<authorization-identifier>alice@localhost</authorization-identifier>`)
	})
}
