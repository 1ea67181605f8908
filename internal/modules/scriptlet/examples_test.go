package scriptlet

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"impetus/internal/config"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage/memory"
)

// examplesDir holds the scripts the operator documentation ships.
var examplesDir = filepath.Join("..", "..", "..", "docs", "examples", "lua")

// startExample runs the server with one script of docs/examples/lua.
func startExample(t *testing.T, name string) *testServer {
	t.Helper()
	cfg := testConfig(examplesDir)
	sc := Script{Name: name, Source: name}
	if err := cfg.resolve(&sc); err != nil {
		t.Fatal(err)
	}
	cfg.Scripts = []Script{sc}
	return startWith(t, cfg)
}

type exchange struct {
	name  string
	input string // sent by alice, or routed from a server when remote is set
	// remote makes input arrive from another server instead of from alice.
	remote bool
	alice  []string
	bob    []string
}

func runExchanges(t *testing.T, ts *testServer, cases []exchange) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.remote {
				el, err := rostertest.Parse(c.input)
				if err != nil {
					t.Fatal(err)
				}
				if err := ts.Core.Route(context.Background(), el); err != nil {
					t.Fatal(err)
				}
			} else {
				ts.alice.Input(c.input)
			}
			expect(t, "bob", ts.bob.Take(), c.bob...)
			expect(t, "alice", ts.alice.Take(), c.alice...)
		})
	}
	if strings.Contains(ts.log.String(), "handler failed") {
		t.Errorf("script failed:\n%s", ts.log.String())
	}
}

func TestExampleChatStates(t *testing.T) {
	ts := startExample(t, "chatstates")
	runExchanges(t, ts, []exchange{
		{
			name:  "notification alone is dropped",
			input: `<message to="bob@example.com/desk" type="chat"><composing xmlns="http://jabber.org/protocol/chatstates"/></message>`,
		},
		{
			name:  "empty body does not count",
			input: `<message to="bob@example.com/desk" type="chat"><body/><paused xmlns="http://jabber.org/protocol/chatstates"/></message>`,
		},
		{
			name:  "active with text passes",
			input: `<message to="bob@example.com/desk" type="chat"><body>hi</body><active xmlns="http://jabber.org/protocol/chatstates"/></message>`,
			bob:   []string{`<message to="bob@example.com/desk" type="chat" from="alice@example.com/phone"><body>hi</body><active xmlns="http://jabber.org/protocol/chatstates"/></message>`},
		},
		{
			name:  "message without chat state passes",
			input: `<message to="bob@example.com/desk" type="normal"><subject>s</subject></message>`,
			bob:   []string{`<message to="bob@example.com/desk" type="normal" from="alice@example.com/phone"><subject>s</subject></message>`},
		},
		{
			name:   "notification from another server is dropped",
			remote: true,
			input:  `<message from="eve@remote.example/x" to="bob@example.com/desk" type="chat"><gone xmlns="http://jabber.org/protocol/chatstates"/></message>`,
		},
	})
}

func TestExampleKeywords(t *testing.T) {
	ts := startExample(t, "keywords")
	runExchanges(t, ts, []exchange{
		{
			name:  "clean message passes",
			input: `<message to="bob@example.com/desk" type="chat" id="k1"><body>lunch at noon?</body></message>`,
			bob:   []string{`<message to="bob@example.com/desk" type="chat" id="k1" from="alice@example.com/phone"><body>lunch at noon?</body></message>`},
		},
		{
			name:  "blocked word is refused",
			input: `<message to="bob@example.com/desk" type="chat" id="k2"><body>Get FREE MONEY now</body></message>`,
			alice: []string{`<message type="error" from="bob@example.com/desk" to="alice@example.com/phone" id="k2"><error type="modify"><not-acceptable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">message blocked by the server's content policy</text></error></message>`},
		},
		{
			name:  "masked words are rewritten",
			input: `<message to="bob@example.com/desk" type="chat" id="k3"><body>Darn it, heck and darn</body></message>`,
			bob:   []string{`<message to="bob@example.com/desk" type="chat" id="k3" from="alice@example.com/phone"><body>**** it, **** and ****</body></message>`},
		},
		{
			name:   "blocked word from another server",
			remote: true,
			input:  `<message from="eve@remote.example/x" to="bob@example.com/desk" type="chat" id="k4"><body>viagra</body></message>`,
		},
	})
}

func TestExampleAutoResponder(t *testing.T) {
	ts := startExample(t, "autoresponder")
	ts.bob.Input(`<presence><show>away</show><status>at lunch</status></presence>`)
	ts.bob.Take()
	ts.alice.Take()
	runExchanges(t, ts, []exchange{
		{
			name:  "away user answers",
			input: `<message to="bob@example.com" type="chat" id="a1"><body>ping</body></message>`,
			bob:   []string{`<message to="bob@example.com" type="chat" id="a1" from="alice@example.com/phone"><body>ping</body></message>`},
			alice: []string{`<message type="chat" from="bob@example.com" to="alice@example.com/phone"><body>bob is away: at lunch</body><autoreply xmlns="urn:xmpp:impetus:autoreply"/></message>`},
		},
		{
			name:  "offline user answers",
			input: `<message to="carol@example.com" id="a2"><body>hello</body></message>`,
			alice: []string{`<message type="normal" from="carol@example.com" to="alice@example.com/phone"><body>carol is offline; your message will be delivered later.</body><autoreply xmlns="urn:xmpp:impetus:autoreply"/></message>`},
		},
		{
			name:  "groupchat is not answered",
			input: `<message to="bob@example.com/desk" type="groupchat"><body>x</body></message>`,
			bob:   []string{`<message to="bob@example.com/desk" type="groupchat" from="alice@example.com/phone"><body>x</body></message>`},
		},
	})
	// Once Bob is back, nothing answers for him.
	ts.bob.Input(`<presence/>`)
	ts.bob.Take()
	ts.alice.Take()
	ts.alice.Input(`<message to="bob@example.com" type="chat" id="a3"><body>back?</body></message>`)
	expect(t, "bob", ts.bob.Take(), `<message to="bob@example.com" type="chat" id="a3" from="alice@example.com/phone"><body>back?</body></message>`)
	expect(t, "alice", ts.alice.Take())
}

// TestConfig loads scriptlet scopes written as an operator would.
func TestConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "lua", "policy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lua", "policy", "keywords.lua"), []byte("-- empty\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(t *testing.T, text string) (*Config, error) {
		t.Helper()
		p := filepath.Join(dir, "impetus.conf")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, _, err := config.Load(p)
		if err != nil {
			return nil, err
		}
		return Decode(cfg)
	}
	t.Run("dotted and slashed sources", func(t *testing.T) {
		c, err := load(t, `scriptlet "scriptlet" {
  max_memory = 4m
  script "a" { source = "policy.keywords" }
  script "b" { source = "policy/keywords" }
  script "xmpp-presence" { source = "msys.xmpp.presence" }
}`)
		if err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(dir, "lua", "policy", "keywords.lua")
		if c.Scripts[0].Path != want || c.Scripts[1].Path != want {
			t.Errorf("paths %q %q, want %q", c.Scripts[0].Path, c.Scripts[1].Path, want)
		}
		if c.Scripts[2].Builtin == "" || c.Scripts[2].Path != "" {
			t.Errorf("msys.xmpp.presence not taken as built in: %+v", c.Scripts[2])
		}
		if c.MaxMemory != 4<<20 || c.MaxInstructions != DefaultMaxInstructions || !c.Enabled {
			t.Errorf("limits %+v", c)
		}
	})
	t.Run("no scope", func(t *testing.T) {
		c, err := load(t, `xmpp { }`)
		if err != nil || c != nil {
			t.Fatalf("got %+v, %v", c, err)
		}
	})
	for _, bad := range []struct{ text, want string }{
		{`scriptlet { script "x" { source = "missing" } }`, "no missing.lua"},
		{`scriptlet { script "x" { source = "../etc/passwd" } }`, "not a module path"},
		{`scriptlet { script "x" { source = "policy..keywords" } }`, "empty path element"},
		{`scriptlet { script "x" { source = "/etc/passwd" } }`, "not a module path"},
		{`scriptlet { script "x" { } }`, "has no source"},
		{`scriptlet { script "x" { source = "a" sauce = "b" } }`, `unknown option "sauce"`},
		{`scriptlet { max_memory = lots }`, "max_memory"},
	} {
		t.Run(bad.text, func(t *testing.T) {
			_, err := load(t, bad.text)
			if err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Fatalf("error %v, want one containing %q", err, bad.want)
			}
		})
	}
	t.Run("builtin only starts nothing", func(t *testing.T) {
		c, err := load(t, `scriptlet "scriptlet" { script "xmpp-presence" { source = "msys.xmpp.presence" } }`)
		if err != nil {
			t.Fatal(err)
		}
		ts := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
		m := &Module{Config: c}
		h := ts.Hosts["example.com"]
		lb := &logBuffer{}
		h.Log = slog.New(slog.NewTextHandler(lb, nil))
		if err := m.Provision(h); err != nil {
			t.Fatal(err)
		}
		if m.e != nil {
			t.Error("engine started for a built-in script")
		}
		if !strings.Contains(lb.String(), "rosters and presence are built into Impetus") {
			t.Errorf("no warning:\n%s", lb.String())
		}
	})
}
