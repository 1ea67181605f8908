package stanza

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, in := range []string{
		`<message xmlns="jabber:client" to="a@b" xml:lang="en"><body>x &amp; y</body><x xmlns="urn:e" xmlns:ns1="urn:f" ns1:k="v"/></message>`,
	} {
		el, err := Parse([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if got := el.String(); got != `<message xmlns="jabber:client" to="a@b" xml:lang="en"><body>x &amp; y</body><x xmlns="urn:e" xmlns:ns0="urn:f" ns0:k="v"/></message>` {
			t.Errorf("round trip: %s", got)
		}
	}
	for _, bad := range []string{``, `<a>`, `<a/><b/>`, `text`, strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100)} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}
