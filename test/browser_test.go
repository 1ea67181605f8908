package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// browserTimeout bounds the whole browser run: chromium's start, the login and the exchange.
const browserTimeout = 150 * time.Second

// browserState is the page's window.state as run.mjs prints it.
type browserState struct {
	Online   string `json:"online"`
	Received []struct {
		From string `json:"from"`
		Body string `json:"body"`
	} `json:"received"`
	Errors []string `json:"errors"`
}

// TestBrowserWebSocket logs in from a real browser: a page using the npm package @xmpp/client
// in Debian's headless chromium, driven by playwright-core (test/browser/run.mjs), connects
// over wss:// to the http_listener and exchanges messages with a mellium client on the TCP
// listener. The page and @xmpp/client's browser bundle are served by the test itself.
// scripts/browser-deps.sh installs chromium and the npm packages (make test-deps runs it).
func TestBrowserWebSocket(t *testing.T) {
	runBrowser(t, "index.html", filepath.Join("@xmpp", "client", "dist", "xmpp.min.js"), "/xmpp.min.js",
		func(w *webServer) string { return "wss://" + w.HTTPAddr + "/xmpp-websocket" })
}

// TestBrowserBOSH does the same over BOSH with strophe.js, a BOSH client independent of the
// server (XEP-0124, XEP-0206).
func TestBrowserBOSH(t *testing.T) {
	runBrowser(t, "bosh.html", filepath.Join("strophe.js", "dist", "strophe.umd.min.js"), "/strophe.umd.min.js",
		func(w *webServer) string { return "https://" + w.HTTPAddr + "/http-bind" })
}

// runBrowser serves page and a client bundle (a path under node_modules, served at
// bundlePath), logs alice in from chromium with the service URL service returns, and
// exchanges a message each way with bob on TCP.
func runBrowser(t *testing.T, page, bundleFile, bundlePath string, service func(*webServer) string) {
	dir := filepath.Join(filepath.Dir(slixScript(t)), "..", "browser")
	bundle := filepath.Join(dir, "node_modules", bundleFile)
	for _, need := range []string{"/usr/bin/chromium", bundle, filepath.Join(dir, "node_modules", "playwright-core")} {
		if _, err := os.Stat(need); err != nil {
			t.Fatalf("%s is missing (run scripts/browser-deps.sh): %v", need, err)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is missing (install Node.js; see scripts/browser-deps.sh): %v", err)
	}
	w := startWebServer(t, webOptions{Users: map[string]string{"alice": "secret", "bob": "secret"}, HTTPS: true})
	bob := connectMellium(t, w.Server, family{name: "IPv4", ip: "127.0.0.1"}, "bob", "secret", "tcp", sasl.ScramSha256)

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) { http.ServeFile(rw, r, filepath.Join(dir, page)) })
	mux.HandleFunc(bundlePath, func(rw http.ResponseWriter, r *http.Request) { http.ServeFile(rw, r, bundle) })
	static := httptest.NewServer(mux)
	defer static.Close()
	q := url.Values{
		"service": {service(w)}, "domain": {testDomain},
		"username": {"alice"}, "password": {"secret"},
	}

	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "run.mjs"), static.URL+"/?"+q.Encode(), "bob@localhost/tcp", "hello from chromium")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("browser driver log:\n%s", stderr.String())
		}
	}()
	lines := bufio.NewScanner(stdout)
	var first struct {
		Online string        `json:"online"`
		OK     *bool         `json:"ok"`
		Error  string        `json:"error"`
		State  *browserState `json:"state"`
	}
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &first) != nil || first.Online == "" {
		_ = cmd.Wait()
		t.Fatalf("the page did not come online: %s", lines.Text())
	}
	if first.Online != "alice@localhost/browser" {
		t.Errorf("page bound %s, want alice@localhost/browser", first.Online)
	}
	sendCtx, sendCancel := context.WithTimeout(ctx, requestTimeout)
	defer sendCancel()
	msg := stanza.Message{To: jid.MustParse(first.Online), Type: stanza.ChatMessage}
	if err := bob.Send(sendCtx, msg.Wrap(xmlBody("hello from tcp"))); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-bob.msgs:
		if m.From.String() != "alice@localhost/browser" || m.Body != "hello from chromium" {
			t.Fatalf("bob received %q from %s", m.Body, m.From)
		}
	case <-ctx.Done():
		t.Fatalf("no answer from the page within %v", browserTimeout)
	}
	var last struct {
		OK    bool          `json:"ok"`
		Error string        `json:"error"`
		State *browserState `json:"state"`
	}
	for lines.Scan() {
		_ = json.Unmarshal(lines.Bytes(), &last)
	}
	if err := cmd.Wait(); err != nil || !last.OK || last.State == nil {
		t.Fatalf("browser driver: %v %+v", err, last)
	}
	if r := last.State.Received; len(r) != 1 || r[0].From != "bob@localhost/tcp" || r[0].Body != "hello from tcp" {
		t.Fatalf("page received %+v", r)
	}
	if len(last.State.Errors) != 0 {
		t.Fatalf("page errors: %v", last.State.Errors)
	}
}
