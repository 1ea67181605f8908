package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// startScriptletServer starts impetus with the keyword filter of docs/examples/lua configured
// in a scriptlet scope, its script_path relative to the configuration file as an operator
// would write it.
func startScriptletServer(t *testing.T, users map[string]string) *Server {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "docs", "examples", "lua", "keywords.lua"))
	if err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "lua", "policy"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "lua", "policy", "keywords.lua"), src, 0o600); err != nil {
			t.Fatal(err)
		}
		srv := &Server{
			Dir:        filepath.Join(dir, "data"),
			ConfigPath: filepath.Join(dir, "impetus.conf"),
			PasswdPath: filepath.Join(dir, "passwd"),
			Port4:      freePort(t, "tcp4", "127.0.0.1:0"),
			stderr:     &syncBuffer{},
			exited:     make(chan struct{}),
		}
		if err := writePasswdFile(srv.PasswdPath, users); err != nil {
			t.Fatal(err)
		}
		config := fmt.Sprintf(`xmpp { debug_level = "DEBUG" }
domain "#xmpp#%s" { XMPP_Role = "server" }
xmpp_listener {
  AuthPlainParameters = [ uri = %q ]
  Listen %q {}
}
scriptlet "scriptlet" {
  script_path = ( "lua" )
  script "keywords" { source = "policy.keywords" }
  script "xmpp-presence" { source = "msys.xmpp.presence" }
}
`, testDomain, "file://"+srv.PasswdPath, net.JoinHostPort("127.0.0.1", fmt.Sprint(srv.Port4)))
		if err := os.WriteFile(srv.ConfigPath, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		srv.cmd = exec.Command(serverBin, "serve", "--config", srv.ConfigPath, "--data", srv.Dir)
		srv.cmd.Stdout, srv.cmd.Stderr = srv.stderr, srv.stderr
		if err := srv.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			srv.err = srv.cmd.Wait()
			close(srv.exited)
		}()
		if err := srv.waitReady(); err != nil {
			srv.kill()
			out := srv.Stderr()
			lastErr = fmt.Errorf("%w\nconfig:\n%s\nserver output:\n%s", err, config, out)
			if strings.Contains(out, "address already in use") {
				continue
			}
			break
		}
		if err := srv.loadCert(); err != nil {
			srv.kill()
			t.Fatalf("%v\nserver output:\n%s", err, srv.Stderr())
		}
		t.Cleanup(func() { srv.stop(t) })
		return srv
	}
	t.Fatalf("starting impetus: %v", lastErr)
	return nil
}

// TestScriptletKeywordFilter runs the documented keyword filter in the real server with two
// raw clients: a message with a blocked word comes back to its sender as an error and never
// reaches the recipient, a masked word arrives as asterisks, and a clean message arrives as
// sent. Bob's next stanza after the blocked one being the clean one proves the blocked one was
// dropped, without any timing.
func TestScriptletKeywordFilter(t *testing.T) {
	srv := startScriptletServer(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})
	if !strings.Contains(srv.Stderr(), "rosters and presence are built into Impetus") {
		t.Errorf("no warning for msys.xmpp.presence in the server output:\n%s", srv.Stderr())
	}

	alice := dialRaw(t, srv)
	_, aliceJID := alice.login(srv, "alice", "alice-pw", "phone")
	bob := dialRaw(t, srv)
	_, bobJID := bob.login(srv, "bob", "bob-pw", "desk")

	alice.send(fmt.Sprintf(`<message to='%s' type='chat' id='blocked'><body>Free money for you</body></message>`, bobJID))
	e := alice.mustElement("the refusal")
	if !e.is(nsClient, "message") || e.attr("type") != "error" || e.attr("id") != "blocked" || e.attr("to") != aliceJID {
		t.Fatalf("alice got %s, want the message back as an error", e)
	}
	if errEl := e.child(nsClient, "error"); errEl == nil || errEl.child(nsStanzas, "not-acceptable") == nil {
		t.Fatalf("refusal without not-acceptable: %s", e)
	}

	alice.send(fmt.Sprintf(`<message to='%s' type='chat' id='masked'><body>darn it</body></message>`, bobJID))
	e = bob.mustElement("the masked message")
	if e.attr("id") != "masked" || e.child(nsClient, "body") == nil || e.child(nsClient, "body").Text != "**** it" {
		t.Fatalf("bob got %s, want the masked message (the blocked one must not arrive)", e)
	}

	alice.send(fmt.Sprintf(`<message to='%s' type='chat' id='clean'><body>lunch?</body></message>`, bobJID))
	e = bob.mustElement("the clean message")
	if e.attr("id") != "clean" || e.attr("from") != aliceJID || e.child(nsClient, "body").Text != "lunch?" {
		t.Fatalf("bob got %s, want the clean message", e)
	}
}
