package jidutil

import (
	"strings"
	"testing"
	"unicode/utf8"

	"mellium.im/xmpp/jid"
)

// FuzzJID checks the server's use of mellium.im/xmpp/jid on arbitrary addresses: parsing never
// panics, a JID accepted by Parse prints as a string that parses to the same JID and prints the
// same (so that stamping 'from', routing and storage by string agree), and the parts obey RFC
// 7622's length limits. The seed "ℶⅣ" is the input that showed jid.Parse alone is not stable.
func FuzzJID(f *testing.F) {
	for _, s := range []string{
		"", "localhost", "alice@localhost", "alice@localhost/res", "a@b@c", "@localhost",
		"alice@", "alice@localhost/", "alice@localhost/a/b", "ALICE@LocalHost/Res",
		"[::1]", "alice@[::1]/r", "alice@127.0.0.1", "ﬀ@example.com", "a\u0000b@c", "a b@c",
		"alice@localhost.", "é@xn--caf-dma.example", "\u212bngstr\u00f6m@example.com/\u2163",
		strings.Repeat("a", 1024) + "@localhost", "alice@" + strings.Repeat("d", 1024),
		"alice@localhost/" + strings.Repeat("r", 1024), "\"quoted\"@localhost", "a&b@c", "a'b@c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		j0, err0 := jid.Parse(s)
		j, err := Parse(s)
		if err != nil {
			if err0 == nil && err != ErrUnstable {
				t.Fatalf("Parse(%q) failed with %v where jid.Parse gave %q", s, err, j0.String())
			}
			return
		}
		out := j.String()
		if !utf8.ValidString(out) {
			t.Fatalf("Parse(%q).String() = %q is not UTF-8", s, out)
		}
		if len(j.Localpart()) > 1023 || len(j.Domainpart()) > 1023 || len(j.Resourcepart()) > 1023 {
			t.Fatalf("Parse(%q) accepted an overlong part: %q", s, out)
		}
		if j.Domainpart() == "" {
			t.Fatalf("Parse(%q) accepted an empty domain", s)
		}
		j2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not parse again: %v", s, out, err)
		}
		if !j2.Equal(j) || j2.String() != out {
			t.Fatalf("Parse(%q) = %q, parsed again %q", s, out, j2.String())
		}
		// The parts rebuild the same JID, which is how the server makes full JIDs at bind.
		j3, err := jid.New(j.Localpart(), j.Domainpart(), j.Resourcepart())
		if err != nil || !j3.Equal(j) {
			t.Fatalf("New(parts of %q) = %q, %v", out, j3.String(), err)
		}
		if b := j.Bare(); b.Resourcepart() != "" || !strings.HasPrefix(out, b.String()) {
			t.Fatalf("Bare of %q is %q", out, b.String())
		}
	})
}
