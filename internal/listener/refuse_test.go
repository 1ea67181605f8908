package listener

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestRefuseAnswersInStreamNamespace checks that a stream whose content namespace has no
// handler is refused with a header of its own kind: a server stream gets jabber:server, so
// that a peer server reads the error as a server stream error.
func TestRefuseAnswersInStreamNamespace(t *testing.T) {
	l := start(t, Spec{}, func(context.Context, *Conn) {})
	for _, tc := range []struct{ ns, want string }{
		{"jabber:server", "xmlns='jabber:server'"},
		{"urn:example:other", "xmlns='jabber:client'"},
	} {
		c, err := net.DialTimeout("tcp", l.Addr().String(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		hdr := strings.Replace(header, "xmlns='jabber:client'", "xmlns='"+tc.ns+"'", 1)
		if _, err := c.Write([]byte(hdr)); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		got := string(b)
		if !strings.Contains(got, tc.want) || !strings.Contains(got, "invalid-namespace") {
			t.Errorf("%s stream refused with %q", tc.ns, got)
		}
	}
}
