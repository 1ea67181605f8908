package scriptlet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/stanza"
	"impetus/internal/storage/memory"
)

// logBuffer collects log output for assertions; hooks log from many goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is a core hosting example.com with the roster, presence, offline and scriptlet
// modules, and two connected, available users.
type testServer struct {
	*rostertest.Server
	mod          *Module
	log          *logBuffer
	alice, bob   *rostertest.Session
	dir          string
	scriptConfig *Config
}

// testConfig returns limits that only the deterministic bounds (instructions, memory) can
// trip: the time bound is far above anything a test script needs, even under the race detector.
func testConfig(dir string) *Config {
	c := DefaultConfig()
	c.ScriptPath = []string{dir}
	c.MaxCallMillis = 60_000
	c.MaxMemory = 8 << 20
	c.MaxInstructions = 200_000
	c.PoolSize = 2
	return &c
}

// start writes scripts (name → Lua source) to a directory, configures them in order and starts
// the server. tweak may adjust the configuration first.
func start(t *testing.T, scripts [][2]string, tweak func(*Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(dir)
	for _, s := range scripts {
		if err := os.WriteFile(filepath.Join(dir, s[0]+".lua"), []byte(s[1]), 0o600); err != nil {
			t.Fatal(err)
		}
		sc := Script{Name: s[0], Source: s[0]}
		if err := cfg.resolve(&sc); err != nil {
			t.Fatal(err)
		}
		cfg.Scripts = append(cfg.Scripts, sc)
	}
	if tweak != nil {
		tweak(cfg)
	}
	return startWith(t, cfg)
}

func startWith(t *testing.T, cfg *Config) *testServer {
	t.Helper()
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	lb := &logBuffer{}
	h := srv.Hosts["example.com"]
	h.Log = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := &Module{Config: cfg}
	if err := m.Provision(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	ts := &testServer{Server: srv, mod: m, log: lb, scriptConfig: cfg}
	ts.alice = ts.online("alice@example.com/phone")
	ts.bob = ts.online("bob@example.com/desk")
	return ts
}

func (ts *testServer) online(full string) *rostertest.Session {
	s := ts.Connect(full)
	s.Input(`<presence/>`)
	s.Take()
	return s
}

func expect(t *testing.T, who string, got []string, want ...string) {
	t.Helper()
	if len(want) == 0 {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s received:\n  %s\nwant:\n  %s", who, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// handler wraps Lua statements as the body of a handler method of a registered table.
func handler(hook, body string) string {
	return fmt.Sprintf(`local xmpp = require("msys.xmpp")
local mod = {}
function mod:%s(sess, stanza)
%s
end
xmpp.registerModule("test", mod)
`, hook, body)
}

const (
	hello      = `<message to="bob@example.com/desk" type="chat" id="m1"><body>hello</body></message>`
	helloToBob = `<message to="bob@example.com/desk" type="chat" id="m1" from="alice@example.com/phone"><body>hello</body></message>`
)

// TestHandlers drives each kind of handler decision through the real core and router.
func TestHandlers(t *testing.T) {
	cases := []struct {
		name   string
		hook   string
		body   string
		input  string // sent by alice
		alice  []string
		bob    []string
		logHas string
	}{
		{
			name: "pass", hook: ClientMessageRecv, body: `return xmpp.CONT`,
			input: hello, bob: []string{helloToBob},
		},
		{
			name: "nil result passes", hook: ClientMessageRecv, body: `local x = 1`,
			input: hello, bob: []string{helloToBob},
		},
		{
			name: "drop", hook: ClientMessageRecv, body: `return xmpp.DONE`,
			input: hello,
		},
		{
			name: "rewrite", hook: ClientMessageRecv,
			body: `stanza:child("body"):contents("HELLO")
stanza:attr("id", "rewritten")
stanza:addchild("x", "urn:example"):attr("n", "1")
return xmpp.CONT`,
			input: hello,
			bob:   []string{`<message to="bob@example.com/desk" type="chat" id="rewritten" from="alice@example.com/phone"><body>HELLO</body><x xmlns="urn:example" n="1"/></message>`},
		},
		{
			name: "rewrite removes a child and an attribute", hook: ClientMessageRecv,
			body: `stanza:removechild(stanza:child("body"))
stanza:attr("id", nil)
stanza:addchild("subject"):contents("s")
return xmpp.CONT`,
			input: hello,
			bob:   []string{`<message to="bob@example.com/desk" type="chat" from="alice@example.com/phone"><subject>s</subject></message>`},
		},
		{
			name: "retarget in a receive hook", hook: ClientMessageRecv,
			body:  `stanza:attr("to", "alice@example.com/phone") return xmpp.CONT`,
			input: hello,
			alice: []string{`<message to="alice@example.com/phone" type="chat" id="m1" from="alice@example.com/phone"><body>hello</body></message>`},
		},
		{
			name: "answer with a string and drop", hook: ClientMessageRecv,
			body: `local ok = xmpp:send("<message to='" .. stanza:attr("from") .. "' from='bot@example.com' type='chat'><body>no</body></message>")
assert(ok == true)
return xmpp.DONE`,
			input: hello,
			alice: []string{`<message to="alice@example.com/phone" from="bot@example.com" type="chat"><body>no</body></message>`},
		},
		{
			name: "answer with a node and continue", hook: ClientMessageRecv,
			body: `local r = xml.newnode("message")
r:attr("to", stanza:attr("from"))
r:addchild("body"):contents("copy: " .. stanza:child("body"):contents())
assert(xmpp.routeStanza(r))
return xmpp.CONT`,
			input: hello,
			alice: []string{`<message to="alice@example.com/phone" from="example.com"><body>copy: hello</body></message>`},
			bob:   []string{helloToBob},
		},
		{
			name: "unparsable stanza is refused", hook: ClientMessageRecv,
			body: `assert(xmpp:send("<message to='x@example.com'>") == false)
assert(xmpp:send("<message><body/></message>") == false)
assert(xmpp:send("<foo to='alice@example.com'/>") == false)
return xmpp.DONE`,
			input: hello,
		},
		{
			name: "delivery hook rewrites but keeps the address", hook: MessageDeliver,
			body: `stanza:attr("to", "alice@example.com/phone")
stanza:child("body"):contents("delivered")
return xmpp.CONT`,
			input: hello,
			bob:   []string{`<message to="bob@example.com/desk" type="chat" id="m1" from="alice@example.com/phone"><body>delivered</body></message>`},
		},
		{
			name: "delivery hook drops", hook: MessageDeliver, body: `return xmpp.DONE`,
			input: hello,
		},
		{
			name: "iq answered", hook: ClientIQRecv,
			body: `local p = stanza:children()[1]
if p and p:namespace() == "urn:example:time" then
  local r = xml.newnode("iq")
  r:attr("type", "result")
  r:attr("id", stanza:attr("id"))
  r:attr("to", stanza:attr("from"))
  r:attr("from", "example.com")
  r:addchild("time", "urn:example:time"):contents("noon")
  xmpp.routeStanza(r)
  return xmpp.DONE
end
return xmpp.CONT`,
			input: `<iq type="get" id="t1" to="example.com"><time xmlns="urn:example:time"/></iq>`,
			alice: []string{`<iq type="result" id="t1" to="alice@example.com/phone" from="example.com"><time xmlns="urn:example:time">noon</time></iq>`},
		},
		{
			name: "iq passed on", hook: ClientIQRecv, body: `return xmpp.CONT`,
			input: `<iq type="get" id="t1" to="example.com"><time xmlns="urn:example:time"/></iq>`,
			alice: []string{`<iq id="t1" to="alice@example.com/phone" from="example.com" type="error"><time xmlns="urn:example:time"/><error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`},
		},
		{
			name: "directed presence dropped", hook: ClientPresenceRecv,
			body:  `if stanza:attr("to") then return xmpp.DONE end return xmpp.CONT`,
			input: `<presence to="bob@example.com/desk"/>`,
		},
		{
			name: "presence delivery rewritten", hook: PresenceDeliver,
			body: `assert(sess:jid():get() == "alice@example.com/phone")
stanza:addchild("status"):contents("seen by a script")
return xmpp.CONT`,
			input: `<presence to="bob@example.com/desk"/>`,
			bob:   []string{`<presence to="bob@example.com/desk" from="alice@example.com/phone"><status>seen by a script</status></presence>`},
		},
		{
			name: "session and jid objects", hook: ClientMessageRecv,
			body: `local j = sess:jid()
assert(j:user() == "alice" and j:domain() == "example.com" and j:resource() == "phone")
assert(j:bare() == "alice@example.com" and j:get() == "alice@example.com/phone")
assert(tostring(j) == "alice@example.com/phone")
assert(sess:available() == true and sess:priority() == 0)
assert(xmpp.jid("not a@@jid") == nil)
assert(xmpp.valid_domain("example.com") and not xmpp.valid_domain("elsewhere.net"))
assert(stanza:name() == "message" and stanza:namespace() == "jabber:client")
assert(stanza:attr("missing") == nil)
assert(#stanza:children() == 1)
assert(stanza:tostring() == tostring(stanza))
return xmpp.DONE`,
			input: hello,
		},
		{
			name: "connected and online", hook: ClientMessageRecv,
			body: `assert(xmpp.connected("bob@example.com") == true)
assert(xmpp.connected("bob@example.com/desk") == true)
assert(xmpp.connected("bob@example.com/gone") == false)
assert(xmpp.connected("carol@example.com") == false)
assert(xmpp.connected(xmpp.jid("bob@example.com")) == true)
local o = xmpp.online("bob@example.com")
assert(o.availability == true and o.show == "away" and o.status == "lunch", tostring(o.show))
assert(xmpp.online("carol@example.com").availability == false)
return xmpp.DONE`,
			input: hello,
		},
		{
			name: "error in script", hook: ClientMessageRecv,
			body:  `error("boom")`,
			input: hello, bob: []string{helloToBob},
			logHas: `test.lua:4: boom"`,
		},
		{
			name: "runtime error in script", hook: ClientMessageRecv,
			body:  `local t = nil; return t.x`,
			input: hello, bob: []string{helloToBob},
			logHas: "script=test module=test hook=client_message_recv",
		},
		{
			name: "infinite loop", hook: ClientMessageRecv,
			body:  `while true do end`,
			input: hello, bob: []string{helloToBob},
			logHas: "instruction budget exhausted",
		},
		{
			name: "infinite loop behind pcall", hook: ClientMessageRecv,
			body:  `while true do pcall(function() while true do end end) end`,
			input: hello, bob: []string{helloToBob},
			logHas: "instruction budget exhausted",
		},
		{
			name: "memory blow-up by doubling", hook: ClientMessageRecv,
			body:  `local s = "x" while true do s = s .. s end`,
			input: hello, bob: []string{helloToBob},
			logHas: "memory budget exhausted",
		},
		{
			name: "memory blow-up with string.rep", hook: ClientMessageRecv,
			body:  `local s = string.rep("x", 1e12) return xmpp.DONE`,
			input: hello, bob: []string{helloToBob},
			logHas: "string.rep: result larger than the memory budget",
		},
		{
			name: "memory blow-up with table.concat", hook: ClientMessageRecv,
			body: `local s = string.rep("x", 1000000)
local t = {}
for i = 1, 100 do t[i] = s end
local big = table.concat(t)
return xmpp.DONE`,
			input: hello, bob: []string{helloToBob},
			logHas: "table.concat: result larger than the memory budget",
		},
		{
			name: "memory blow-up by nodes", hook: ClientMessageRecv,
			body:  `while true do stanza:addchild("x"):contents(string.rep("y", 4096)) end`,
			input: hello, bob: []string{helloToBob},
			logHas: "budget exhausted",
		},
		{
			name: "deep recursion", hook: ClientMessageRecv,
			body:  `local function f(n) return f(n + 1) + 1 end f(1)`,
			input: hello, bob: []string{helloToBob},
			logHas: "stack overflow",
		},
		{
			name: "invalid names refused", hook: ClientMessageRecv,
			body:  `stanza:attr('a"><evil', "x") return xmpp.DONE`,
			input: hello, bob: []string{helloToBob},
			logHas: "invalid attribute name",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := start(t, [][2]string{{"test", handler(c.hook, c.body)}}, nil)
			ts.bob.Input(`<presence><show>away</show><status>lunch</status></presence>`)
			ts.bob.Take()
			ts.alice.Take()
			ts.alice.Input(c.input)
			expect(t, "bob", ts.bob.Take(), c.bob...)
			expect(t, "alice", ts.alice.Take(), c.alice...)
			if c.logHas != "" && !strings.Contains(ts.log.String(), c.logHas) {
				t.Errorf("log lacks %q:\n%s", c.logHas, ts.log.String())
			}
			if c.logHas == "" && strings.Contains(ts.log.String(), "handler failed") {
				t.Errorf("unexpected failure:\n%s", ts.log.String())
			}
		})
	}
}

// TestServerStanzas covers stanzas that arrive from another server: the server_*_recv
// handlers see them before the delivery handlers, and local stanzas never reach them.
func TestServerStanzas(t *testing.T) {
	script := `local xmpp = require("msys.xmpp")
local mod = {}
function mod:server_message_recv(sess, stanza)
  assert(sess == nil)
  if stanza:child("body"):contents() == "spam" then return xmpp.DONE end
  stanza:child("body"):contents("[remote] " .. stanza:child("body"):contents())
  return xmpp.CONT
end
function mod:message_deliver(sess, stanza)
  stanza:attr("seen", "yes")
  return xmpp.CONT
end
function mod:server_presence_recv(sess, stanza)
  if stanza:attr("type") == "subscribe" then return xmpp.DONE end
  return xmpp.CONT
end
xmpp.registerModule("remote", mod)
`
	ts := start(t, [][2]string{{"remote", script}}, nil)
	route := func(xml string) {
		t.Helper()
		el, err := rostertest.Parse(xml)
		if err != nil {
			t.Fatal(err)
		}
		if err := ts.Core.Route(context.Background(), el); err != nil {
			t.Fatal(err)
		}
	}
	route(`<message from="eve@remote.example/x" to="bob@example.com/desk" type="chat"><body>spam</body></message>`)
	expect(t, "bob", ts.bob.Take())
	route(`<message from="eve@remote.example/x" to="bob@example.com/desk" type="chat"><body>hi</body></message>`)
	expect(t, "bob", ts.bob.Take(), `<message from="eve@remote.example/x" to="bob@example.com/desk" type="chat" seen="yes"><body>[remote] hi</body></message>`)
	ts.alice.Input(hello)
	expect(t, "bob", ts.bob.Take(), `<message to="bob@example.com/desk" type="chat" id="m1" from="alice@example.com/phone" seen="yes"><body>hello</body></message>`)
	route(`<presence from="eve@remote.example" to="bob@example.com" type="subscribe"/>`)
	expect(t, "bob", ts.bob.Take())
}

// TestOrderAndMultipleScripts checks that tables run in configuration order and that the
// first DONE stops the chain.
func TestOrderAndMultipleScripts(t *testing.T) {
	first := handler(ClientMessageRecv, `stanza:child("body"):contents(stanza:child("body"):contents() .. " one") return xmpp.CONT`)
	second := handler(ClientMessageRecv, `if stanza:child("body"):contents() == "stop one" then return xmpp.DONE end
stanza:child("body"):contents(stanza:child("body"):contents() .. " two") return xmpp.CONT`)
	ts := start(t, [][2]string{{"first", first}, {"second", second}}, nil)
	ts.alice.Input(hello)
	expect(t, "bob", ts.bob.Take(), `<message to="bob@example.com/desk" type="chat" id="m1" from="alice@example.com/phone"><body>hello one two</body></message>`)
	ts.alice.Input(`<message to="bob@example.com/desk"><body>stop</body></message>`)
	expect(t, "bob", ts.bob.Take())
}

// TestSandbox checks that nothing outside the sandbox is reachable: each snippet must fail, so
// the handler never returns DONE and the message is delivered.
func TestSandbox(t *testing.T) {
	snippets := []string{
		`os.execute("true")`,
		`io.open("/etc/passwd")`,
		`debug.getinfo(1)`,
		`require("os")`,
		`require("io")`,
		`require("debug")`,
		`load("return 1")()`,
		`loadstring("return 1")()`,
		`dofile("/etc/passwd")`,
		`loadfile("/etc/passwd")()`,
		`collectgarbage("collect")`,
		`package.loaded.os.exit(1)`,
		`coroutine.create(function() end)`,
		`channel.make()`,
		`module("x")`,
		`setfenv(1, {})`,
		`setmetatable(stanza, {})`,
		`assert(getmetatable(stanza) ~= "locked")`,
		`xmpp.registerModule("late", {})`,
	}
	for _, sn := range snippets {
		t.Run(sn, func(t *testing.T) {
			ts := start(t, [][2]string{{"test", handler(ClientMessageRecv, sn+"\nreturn xmpp.DONE")}}, nil)
			ts.alice.Input(hello)
			expect(t, "bob", ts.bob.Take(), helloToBob)
			if !strings.Contains(ts.log.String(), "handler failed") {
				t.Errorf("no failure logged:\n%s", ts.log.String())
			}
		})
	}
}

// TestStaleHandles checks that a node or session kept in a global cannot be used after its
// call: the stanza has moved on by then.
func TestStaleHandles(t *testing.T) {
	script := `local xmpp = require("msys.xmpp")
local kept
local mod = {}
function mod:client_message_recv(sess, stanza)
  if kept then
    kept:attr("id", "changed later")
  end
  kept = stanza
  return xmpp.CONT
end
xmpp.registerModule("stale", mod)
`
	ts := start(t, [][2]string{{"stale", script}}, func(c *Config) { c.PoolSize = 1 })
	ts.alice.Input(hello)
	first := ts.bob.Elements()
	ts.alice.Input(hello)
	ts.bob.Take()
	if len(first) != 1 || first[0].Attr("id") != "m1" {
		t.Fatalf("first message changed: %v", first)
	}
	if !strings.Contains(ts.log.String(), "used after the call") {
		t.Errorf("stale use not reported:\n%s", ts.log.String())
	}
}

// TestBrokenStateReplaced checks that a state stopped by its budget is replaced and the
// scripts keep working with fresh globals.
func TestBrokenStateReplaced(t *testing.T) {
	script := `local xmpp = require("msys.xmpp")
count = 0
local mod = {}
function mod:client_message_recv(sess, stanza)
  count = count + 1
  if stanza:child("body"):contents() == "loop" then while true do end end
  stanza:child("body"):contents("count " .. count)
  return xmpp.CONT
end
xmpp.registerModule("counter", mod)
`
	ts := start(t, [][2]string{{"counter", script}}, func(c *Config) { c.PoolSize = 1 })
	ts.alice.Input(hello)
	ts.alice.Input(`<message to="bob@example.com/desk"><body>loop</body></message>`)
	ts.alice.Input(hello)
	expect(t, "bob", ts.bob.Take(),
		`<message to="bob@example.com/desk" type="chat" id="m1" from="alice@example.com/phone"><body>count 1</body></message>`,
		`<message to="bob@example.com/desk" from="alice@example.com/phone"><body>loop</body></message>`,
		`<message to="bob@example.com/desk" type="chat" id="m1" from="alice@example.com/phone"><body>count 1</body></message>`)
}

// TestSendLoopBounded checks that handlers answering each other's stanzas stop.
func TestSendLoopBounded(t *testing.T) {
	script := handler(MessageDeliver, `xmpp:send("<message to='" .. stanza:attr("to") .. "' from='" .. stanza:attr("to") .. "'><body>again</body></message>")
return xmpp.CONT`)
	ts := start(t, [][2]string{{"loop", script}}, nil)
	ts.alice.Input(hello)
	got := ts.bob.Take()
	if len(got) != maxSendDepth+1 {
		t.Errorf("bob got %d stanzas, want %d:\n%s", len(got), maxSendDepth+1, strings.Join(got, "\n"))
	}
	if !strings.Contains(ts.log.String(), "too deep") {
		t.Errorf("loop not reported:\n%s", ts.log.String())
	}
}

// TestConcurrency runs many sessions through the hooks at once; with the race detector this
// checks that states are never shared and that every stanza gets its own rewrite.
func TestConcurrency(t *testing.T) {
	script := handler(ClientMessageRecv, `local b = stanza:child("body")
b:contents(string.upper(b:contents()) .. " by " .. sess:jid():resource())
return xmpp.CONT`)
	ts := start(t, [][2]string{{"upper", script}}, func(c *Config) { c.PoolSize = 3 })
	const senders, each = 8, 40
	var wg sync.WaitGroup
	for i := range senders {
		sess := ts.online(fmt.Sprintf("alice@example.com/r%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				sess.Input(fmt.Sprintf(`<message to="bob@example.com/desk" id="%d-%d"><body>msg %d</body></message>`, i, j, j))
			}
		}()
	}
	wg.Wait()
	got := ts.bob.Elements()
	if len(got) != senders*each {
		t.Fatalf("bob got %d messages, want %d", len(got), senders*each)
	}
	for _, el := range got {
		var i, j int
		if _, err := fmt.Sscanf(el.Attr("id"), "%d-%d", &i, &j); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("MSG %d by r%d", j, i)
		if b := el.Child(stanza.NSClient, "body").Text(); b != want {
			t.Errorf("message %s: body %q, want %q", el.Attr("id"), b, want)
		}
	}
	if strings.Contains(ts.log.String(), "handler failed") {
		t.Errorf("failures:\n%s", ts.log.String())
	}
}

// TestNoScope checks that a host without a scriptlet scope registers nothing.
func TestNoScope(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	m := new(Module)
	if err := m.Provision(srv.Hosts["example.com"]); err != nil {
		t.Fatal(err)
	}
	if m.e != nil {
		t.Fatal("engine started without a scriptlet scope")
	}
}

// TestLoadErrors checks that scripts that do not compile or fail at load stop the start with
// the script's name.
func TestLoadErrors(t *testing.T) {
	for _, c := range []struct{ name, src, want string }{
		{"syntax", `function (`, `script "syntax"`},
		{"loads forever", `while true do end`, "instruction budget exhausted"},
		{"fails", `error("no")`, "no"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "s.lua"), []byte(c.src), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(dir)
			cfg.Scripts = []Script{{Name: c.name, Source: "s", Path: filepath.Join(dir, "s.lua")}}
			srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
			h := srv.Hosts["example.com"]
			h.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			err := (&Module{Config: cfg}).Provision(h)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}
