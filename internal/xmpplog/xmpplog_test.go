package xmpplog

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"impetus/internal/stanza"
)

var when = time.Unix(1330000000, 0)

func message() *stanza.Element {
	el := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: "alice@example.com/phone"},
		stanza.Attr{Name: "to", Value: "bob@example.com"},
		stanza.Attr{Name: "id", Value: "ab12"},
		stanza.Attr{Name: "type", Value: "chat"})
	el.AddChild(stanza.NewElement(stanza.NSClient, "subject").AddText("secret plans"))
	el.AddChild(stanza.NewElement(stanza.NSClient, "body").AddText("meet at\nnoon"))
	el.AddChild(stanza.NewElement("http://jabber.org/protocol/chatstates", "active"))
	return el
}

func expand(t *testing.T, format string, remote string, el *stanza.Element) string {
	t.Helper()
	f, err := ParseFormat(format, "")
	if err != nil {
		t.Fatalf("ParseFormat(%q): %v", format, err)
	}
	return string(f.Append(nil, when, remote, el))
}

func TestEachMacro(t *testing.T) {
	el := message()
	for _, c := range []struct{ format, want string }{
		{"%t", "1330000000"},
		{"%st", "message"},
		{"%af", "alice@example.com/phone"},
		{"%at", "bob@example.com"},
		{"%ai", "ab12"},
		{"%ay", "chat"},
		{"%H", "192.0.2.7:40312"},
		{"%sr", `<message xmlns="jabber:client" from="alice@example.com/phone" to="bob@example.com" id="ab12" type="chat"><subject>secret plans</subject><body>meet at&#10;noon</body><active xmlns="http://jabber.org/protocol/chatstates"/></message>`},
		{"%so", `<message xmlns="jabber:client" from="alice@example.com/phone" to="bob@example.com" id="ab12" type="chat"><subject>***</subject><body>***</body><active xmlns="http://jabber.org/protocol/chatstates"/></message>`},
		{"100%%", "100%"},
		{"%tR", "1330000000R"},
		{"%stx", "messagex"},
	} {
		if got := expand(t, c.format, "192.0.2.7:40312", el); got != c.want {
			t.Errorf("%s: got %q, want %q", c.format, got, c.want)
		}
	}
}

func TestDefaultFormats(t *testing.T) {
	el := message()
	if got, want := expand(t, "%t+R+%st+%at+%af+%ai+%ay+%H", "192.0.2.7:40312", el), "1330000000+R+message+bob@example.com+alice@example.com/phone+ab12+chat+192.0.2.7:40312"; got != want {
		t.Errorf("reception: got %q, want %q", got, want)
	}
	if got := expand(t, "%t+M", "", nil); got != "1330000000+M" {
		t.Errorf("heartbeat: got %q", got)
	}
}

func TestMissingAttributesExpandToNothing(t *testing.T) {
	el := stanza.NewElement(stanza.NSClient, "presence")
	if got, want := expand(t, "%t+R+%st+%at+%af+%ai+%ay+%H", "[2001:db8::1]:5222", el), "1330000000+R+presence+++++[2001:db8::1]:5222"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestStanzaTypes(t *testing.T) {
	for _, c := range []struct {
		el   *stanza.Element
		want string
	}{
		{stanza.NewElement(stanza.NSClient, "iq"), "iq"},
		{stanza.NewElement(stanza.NSServer, "presence"), "presence"},
		{stanza.NewElement(stanza.NSStream, "error"), "error"},
		{stanza.NewElement(stanza.NSStream, "features"), "stream"},
		{stanza.NewElement("jabber:server:dialback", "result"), "stream"},
	} {
		if got := StanzaType(c.el); got != c.want {
			t.Errorf("%s: got %q, want %q", c.el, got, c.want)
		}
	}
}

func TestObfuscationHidesAllText(t *testing.T) {
	el := stanza.NewElement(stanza.NSClient, "iq", stanza.Attr{Name: "type", Value: "set"})
	q := stanza.NewElement("jabber:iq:register", "query")
	q.AddChild(stanza.NewElement("jabber:iq:register", "password").AddText("hunter2"))
	q.AddText("  \n ")
	el.AddChild(q)
	got := expand(t, "%so", "", el)
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "<password>***</password>") {
		t.Errorf("got %q", got)
	}
	if strings.Contains(got, "\n") {
		t.Errorf("line break in %q", got)
	}
}

func TestControlCharactersInAttributes(t *testing.T) {
	el := stanza.NewElement(stanza.NSClient, "iq", stanza.Attr{Name: "id", Value: "a\nb"})
	if got := expand(t, "%ai", "", el); got != "a?b" {
		t.Errorf("got %q", got)
	}
}

func TestFormatErrors(t *testing.T) {
	for _, c := range []struct{ format, ns string }{
		{"%x", ""},
		{"%", ""},
		{"%t", "sieve"},
		{"%t", "xmpp_logger,bogus"},
	} {
		if _, err := ParseFormat(c.format, c.ns); err == nil {
			t.Errorf("ParseFormat(%q, %q) accepted", c.format, c.ns)
		} else if !strings.HasPrefix(err.Error(), "xmpplog: ") {
			t.Errorf("error without package prefix: %v", err)
		}
	}
	if _, err := ParseFormat("literal only", "sieve"); err != nil {
		t.Errorf("a format without macros needs no namespace: %v", err)
	}
}

type fakeTicker struct{ c chan time.Time }

func options(t *testing.T, path string) (Options, *fakeTicker) {
	ft := &fakeTicker{c: make(chan time.Time)}
	return Options{
		Name: "test", Path: path, Mode: 0o640, Heartbeat: time.Minute,
		LogReception: true, LogDelivery: true,
		ReceptionFormat: "%t+R+%st+%at+%af+%ai+%ay+%H",
		DeliveryFormat:  "%t+D+%st+%at+%af+%ai+%ay+%H",
		HeartbeatFormat: "%t+M",
		Now:             func() time.Time { return when },
		Ticker:          func(time.Duration) (<-chan time.Time, func()) { return ft.c, func() {} },
	}, ft
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLoggerWritesLinesAndHeartbeats(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xmpp.log")
	opts, ft := options(t, path)
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.StanzaReceived("127.0.0.1:1234", message())
	ft.c <- time.Unix(1330000060, 0) // taken by the writer before the send returns
	// The writer handles one thing at a time, so Sync returns after the heartbeat is out.
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.StanzaDelivered("127.0.0.1:1234", message())
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	want := "1330000000+R+message+bob@example.com+alice@example.com/phone+ab12+chat+127.0.0.1:1234\n" +
		"1330000060+M\n" +
		"1330000000+D+message+bob@example.com+alice@example.com/phone+ab12+chat+127.0.0.1:1234\n"
	if got := read(t, path); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
}

func TestLoggerSelectsEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xmpp.log")
	opts, _ := options(t, path)
	opts.LogReception = false
	opts.Heartbeat = 0
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.StanzaReceived("r", message())
	l.StanzaDelivered("d", message())
	l.Sync()
	if got := read(t, path); strings.Count(got, "\n") != 1 || !strings.Contains(got, "+D+") {
		t.Errorf("log %q, want one delivery line", got)
	}
}

func TestReopenFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "xmpp.log")
	opts, _ := options(t, path)
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.StanzaReceived("before", message())
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.StanzaReceived("after", message())
	l.Sync()
	if old := read(t, path+".1"); !strings.HasSuffix(old, "+before\n") || strings.Contains(old, "after") {
		t.Errorf("rotated file %q", old)
	}
	if cur := read(t, path); !strings.HasSuffix(cur, "+after\n") || strings.Contains(cur, "before") {
		t.Errorf("new file %q", cur)
	}
}

func TestFullQueueDropsAndCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xmpp.log")
	opts, _ := options(t, path)
	l := &Logger{opts: opts, queue: make(chan []byte, 2)}
	l.reception, _ = ParseFormat(opts.ReceptionFormat, "")
	l.opts.Now = opts.Now
	// No writer runs, so the third line finds the queue full.
	for range 3 {
		l.StanzaReceived("r", message())
	}
	if got := l.Dropped(); got != 1 {
		t.Errorf("dropped %d, want 1", got)
	}
}

func TestOpenFailureIsReported(t *testing.T) {
	opts, _ := options(t, filepath.Join(t.TempDir(), "missing", "xmpp.log"))
	if _, err := New(opts); err == nil || !strings.HasPrefix(err.Error(), "xmpplog: ") {
		t.Errorf("New = %v, want an xmpplog error", err)
	}
}

func TestCloseIgnoresLaterEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xmpp.log")
	opts, _ := options(t, path)
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	l.StanzaReceived("r", message())
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.StanzaReceived("r", message())
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, path); strings.Count(got, "\n") != 1 {
		t.Errorf("log %q, want the one line written before Close", got)
	}
}

func TestDropsAreReported(t *testing.T) {
	var buf strings.Builder
	l := &Logger{opts: Options{Name: "audit"}, log: slog.New(slog.NewTextHandler(&buf, nil))}
	l.dropped.Add(3)
	l.total.Add(3)
	l.reportDrops()
	l.reportDrops() // nothing new: no second line
	if got := buf.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "logger=audit dropped=3 dropped_total=3") {
		t.Errorf("report %q", got)
	}
}
