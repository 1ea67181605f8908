package s2s

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// panicWatch is a log handler that counts the receiving side's recovered panics, which would
// otherwise only show as a log line.
type panicWatch struct{ n *atomic.Int32 }

func (h panicWatch) Enabled(context.Context, slog.Level) bool { return true }
func (h panicWatch) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panicked") {
		h.n.Add(1)
	}
	return nil
}
func (h panicWatch) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panicWatch) WithGroup(string) slog.Handler      { return h }

// FuzzDialback feeds arbitrary top-level elements to the receiving side of a server stream,
// after a valid header: dialback requests and answers, SASL, STARTTLS and stanzas in any order
// and shape. The stream may end with any stream error but must never panic or hang.
func FuzzDialback(f *testing.F) {
	for _, seed := range []string{
		"<db:result from='a.test' to='b.test'>0000</db:result>",
		"<db:result from='a.test' to='b.test'>k</db:result><db:result from='a.test' to='b.test'>k</db:result>",
		"<db:verify from='a.test' to='b.test' id='x'>k</db:verify>",
		"<db:verify from='' to='b.test'/>",
		"<db:result type='valid' from='b.test' to='a.test'/>",
		"<db:result from='a@a.test/r' to='b.test'>k</db:result>",
		"<db:result from='a2.test' to='c.test'>k</db:result><message from='x@a2.test' to='y@b.test'/>",
		"<message from='x@a.test' to='y@b.test'><body>hi</body></message>",
		"<message to='y@b.test'/>",
		"<iq from='a.test' to='b.test' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>YS50ZXN0</auth>",
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>!!</auth>",
		"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
		"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
		"<foo xmlns='bar'/>",
		"<db:result",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		var panics atomic.Int32
		n := newNetwork()
		log := slog.New(panicWatch{&panics})
		cfg := func(c *Config) {
			c.Log = log
			c.ConnectTimeout = 500 * time.Millisecond
			c.Secret = func(string) []byte { return []byte("s") }
		}
		n.add(t, cfg, "a.test", "a2.test")
		b := n.add(t, cfg, "b.test")
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() { serveConn(b, server); close(done) }()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_ = client.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.WriteString(client, string(appendHeader(nil, "a.test", "b.test", ""))+input+"</stream:stream>")
		time.Sleep(time.Millisecond)
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the receiving side did not end after the connection closed")
		}
		b.m.Close(2 * time.Second)
		if panics.Load() > 0 {
			t.Fatalf("the receiving side panicked on %q", input)
		}
	})
}
