package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSlixmppPEPSubscriptions runs slixmpp's XEP-0060 plugin through explicit subscriptions
// to PEP nodes, checks the XEP-0163 replyto address, and its XEP-0048 plugin through
// bookmarks in PEP kept in step with XEP-0402 (urn:xmpp:bookmarks:1#compat-pep), on both
// storage backends.
func TestSlixmppPEPSubscriptions(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startIMServer(t, b, imOptions{Users: users("ava", "bea", "cid")})
		ctx, cancel := context.WithTimeout(context.Background(), slixTimeout)
		defer cancel()
		script := filepath.Join(filepath.Dir(slixScript(t)), "pep_subscribe.py")
		cmd := exec.CommandContext(ctx, python, script, "subscribe", "--host", "127.0.0.1",
			"--port", strconv.Itoa(srv.Server.Port4), "--cert", srv.Server.CertPath,
			"--jid", "ava@localhost", "--password", "pw-ava", "--peer-jid", "bea@localhost", "--peer-password", "pw-bea",
			"--third-jid", "cid@localhost", "--third-password", "pw-cid")
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("slixmpp log:\n%s", stderr.String())
			}
		})
		if ctx.Err() != nil {
			t.Fatalf("slixmpp did not finish within %v", slixTimeout)
		}
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			t.Fatalf("running slixmpp: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		var res map[string]any
		if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &res); jerr != nil {
			t.Fatalf("slixmpp printed no JSON result (exit %v): %v\nstdout:\n%s", err, jerr, stdout.String())
		}
		if ok, _ := res["ok"].(bool); !ok {
			t.Fatalf("slixmpp failed: %v", res["error"])
		}
		feats := strs(res, "account_features")
		for _, f := range []string{"http://jabber.org/protocol/pubsub#subscribe", "http://jabber.org/protocol/pubsub#retrieve-subscriptions", "urn:xmpp:bookmarks:1#compat-pep"} {
			if !slices.Contains(feats, f) {
				t.Errorf("account features lack %s: %v", f, feats)
			}
		}
		if str(res, "subscription") != "subscribed" || str(res, "subscription_jid") != "cid@localhost" {
			t.Errorf("subscription: %v %v", res["subscription"], res["subscription_jid"])
		}
		if got := strs(res, "subscriptions"); !slices.Equal(got, []string{"eu.siacs.conversations.axolotl.devicelist"}) {
			t.Errorf("subscriptions: %v", got)
		}
		if got := str(res, "stranger_replyto"); got != "" {
			t.Errorf("replyto sent to an entity without a presence subscription: %s", got)
		}
		if got := strs(res, "subscriptions_after"); len(got) != 0 {
			t.Errorf("subscriptions after unsubscribing: %v", got)
		}
		if got := str(res, "contact_replyto"); got != "ava@localhost/sa" {
			t.Errorf("replyto to a contact: %q", got)
		}
		if got := str(res, "stranger_tune"); got != "not-authorized:presence-subscription-required" {
			t.Errorf("a stranger subscribing to a presence-access node: %s", got)
		}
		if got := strs(res, "native_items"); !slices.Equal(got, []string{"heath@conference.localhost"}) {
			t.Errorf("XEP-0402 items after a XEP-0048 PEP store: %v", got)
		}
		if got := strs(res, "private_conferences"); !slices.Equal(got, []string{"heath@conference.localhost"}) {
			t.Errorf("private storage after a XEP-0048 PEP store: %v", got)
		}
		if got := strs(res, "pep_conferences"); !slices.Equal(got, []string{"heath@conference.localhost", "play@conference.localhost"}) {
			t.Errorf("storage:bookmarks after a XEP-0402 publish: %v", got)
		}
	})
}
