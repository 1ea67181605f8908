package test

import (
	"slices"
	"strings"
	"testing"
)

// runSlixPEP runs one pep.py scenario against srv and returns its JSON result;
// the script's log is attached to the test log when the test fails.
func runSlixPEP(t *testing.T, srv *Server, scenario string, args ...string) map[string]any {
	t.Helper()
	return runSlixOK[map[string]any](t, srv, "pep.py", slixTimeout, scenario, args...)
}

func str(res map[string]any, key string) string {
	s, _ := res[key].(string)
	return s
}

func strs(res map[string]any, key string) []string {
	var out []string
	l, _ := res[key].([]any)
	for _, v := range l {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out
}

// TestSlixmppPEP runs XEP-0163 with XEP-0084 avatars and OMEMO (XEP-0384)
// device lists and bundles, XEP-0402 bookmarks with XEP-0048/XEP-0049
// compatibility and XEP-0223, and XEP-0280 carbons with Debian's slixmpp on
// both storage backends.
func TestSlixmppPEP(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startIMServer(t, b, imOptions{Users: users("ava", "bea", "cid", "dot", "eve", "fay", "gus")})

		t.Run("pep", func(t *testing.T) {
			t.Parallel()
			res := runSlixPEP(t, srv.Server, "pep", "--jid", "ava@localhost", "--password", "pw-ava",
				"--peer-jid", "bea@localhost", "--peer-password", "pw-bea",
				"--third-jid", "cid@localhost", "--third-password", "pw-cid")
			feats := strs(res, "account_features")
			for _, f := range []string{"http://jabber.org/protocol/pubsub#publish", "http://jabber.org/protocol/pubsub#publish-options",
				"http://jabber.org/protocol/pubsub#auto-create", "http://jabber.org/protocol/pubsub#filtered-notifications"} {
				if !slices.Contains(feats, f) {
					t.Errorf("account features lack %s: %v", f, feats)
				}
			}
			if ids := strs(res, "account_identities"); !slices.Contains(ids, "pubsub/pep") {
				t.Errorf("account identities lack pubsub/pep: %v", ids)
			}
			// A contact discovers the nodes it may read (XEP-0163 §7).
			wantNodes := []string{"eu.siacs.conversations.axolotl.bundles:31415", "eu.siacs.conversations.axolotl.devicelist",
				"urn:xmpp:avatar:data", "urn:xmpp:avatar:metadata", "urn:xmpp:omemo:2:bundles", "urn:xmpp:omemo:2:devices"}
			if got := strs(res, "contact_disco_nodes"); !slices.Equal(got, wantNodes) {
				t.Errorf("nodes a contact discovers: %v, want %v", got, wantNodes)
			}
			ev, _ := res["avatar_event"].(map[string]any)
			if ev["from"] != "ava@localhost" || ev["id"] == "" {
				t.Errorf("avatar metadata notification: %v", ev)
			}
			if res["avatar_data_ok"] != true {
				t.Errorf("the contact could not fetch the avatar data")
			}
			if got := str(res, "stranger_avatar"); got != "not-authorized:presence-subscription-required" {
				t.Errorf("a stranger fetching the avatar: %s", got)
			}
			if got := str(res, "devicelist_event"); !strings.Contains(got, `device id="31415"`) {
				t.Errorf("device list notification: %s", got)
			}
			if got := str(res, "devices2_event"); !strings.Contains(got, `label="phone"`) {
				t.Errorf("OMEMO 2 device list notification: %s", got)
			}
			if got := str(res, "stranger_devicelist"); !strings.Contains(got, `id="31415"`) {
				t.Errorf("a stranger fetching the device list: %s", got)
			}
			if got := str(res, "stranger_bundle"); !strings.Contains(got, "signedPreKeyPublic") {
				t.Errorf("a stranger fetching the bundle: %s", got)
			}
			if got := str(res, "stranger_bundle2"); !strings.Contains(got, `pk id="1">DDDD`) {
				t.Errorf("a stranger fetching the OMEMO 2 bundle: %s", got)
			}
			if got := str(res, "precondition"); got != "conflict:precondition-not-met" {
				t.Errorf("publish with contradicting options: %s", got)
			}
			if got := strs(res, "last_items"); !slices.Equal(got, []string{"eu.siacs.conversations.axolotl.devicelist", "urn:xmpp:avatar:metadata"}) {
				t.Errorf("last items on presence: %v", got)
			}
			if str(res, "retract_event") == "" || str(res, "delete_event") != "eu.siacs.conversations.axolotl.devicelist" {
				t.Errorf("retract %q, delete %q", str(res, "retract_event"), str(res, "delete_event"))
			}
			if got := str(res, "after_delete"); got != "item-not-found" {
				t.Errorf("items of a deleted node: %s", got)
			}
		})

		t.Run("bookmarks", func(t *testing.T) {
			t.Parallel()
			res := runSlixPEP(t, srv.Server, "bookmarks", "--jid", "dot@localhost", "--password", "pw-dot",
				"--peer-jid", "eve@localhost", "--peer-password", "pw-eve")
			if feats := strs(res, "account_features"); !slices.Contains(feats, "urn:xmpp:bookmarks:1#compat") {
				t.Errorf("account features lack urn:xmpp:bookmarks:1#compat: %v", feats)
			}
			if got := str(res, "legacy_event"); !strings.Contains(got, "urn:xmpp:bookmarks:1") {
				t.Errorf("bookmarks2 notification: %s", got)
			}
			if got := strs(res, "items"); !slices.Equal(got, []string{"council@conference.localhost", "orchard@conference.localhost"}) {
				t.Errorf("bookmarks2 items after the legacy store: %v", got)
			}
			want := []string{"council@conference.localhost|Council|Puck|True", "play@conference.localhost|The Play|JC|True"}
			if got := strs(res, "legacy_conferences"); !slices.Equal(got, want) {
				t.Errorf("legacy bookmarks after the PEP changes: %v, want %v", got, want)
			}
			if got := strs(res, "legacy_urls"); !slices.Equal(got, []string{"https://example.com/"}) {
				t.Errorf("legacy URL bookmarks: %v", got)
			}
			if got := strs(res, "private_pep"); !slices.Equal(got, []string{"private@conference.localhost"}) {
				t.Errorf("XEP-0223 retrieve: %v", got)
			}
			if str(res, "private_pep_access") != "whitelist" || res["private_pep_persist"] != true {
				t.Errorf("XEP-0223 node configuration: access %v persist %v", res["private_pep_access"], res["private_pep_persist"])
			}
			if got := str(res, "peer_private"); got != "not-allowed:closed-node" {
				t.Errorf("another account reading private PEP data: %s", got)
			}
			if got := str(res, "peer_legacy"); got != "forbidden" {
				t.Errorf("another account reading private XML: %s", got)
			}
		})

		t.Run("carbons", func(t *testing.T) {
			t.Parallel()
			res := runSlixPEP(t, srv.Server, "carbons", "--jid", "fay@localhost", "--password", "pw-fay",
				"--peer-jid", "gus@localhost", "--peer-password", "pw-gus")
			if res["carbons_feature"] != true {
				t.Errorf("the server does not advertise urn:xmpp:carbons:2")
			}
			orig, _ := res["original"].(map[string]any)
			if orig["body"] != "to the bare JID" {
				t.Errorf("original: %v", orig)
			}
			rc, _ := res["received"].(map[string]any)
			if rc["kind"] != "received" || rc["body"] != "to the bare JID" || rc["wrapper_from"] != "fay@localhost" || rc["from"] != "gus@localhost/cb" {
				t.Errorf("received carbon: %v", rc)
			}
			sc, _ := res["sent"].(map[string]any)
			if sc["kind"] != "sent" || sc["body"] != "reply" || sc["to"] != "gus@localhost" || sc["from"] != "fay@localhost/c1" {
				t.Errorf("sent carbon: %v", sc)
			}
			r1, _ := res["received_by_c1"].(map[string]any)
			if r1["body"] != "to c2 only" {
				t.Errorf("carbon of a message to the other resource: %v", r1)
			}
			if got := str(res, "after_private"); got != "marker" {
				t.Errorf("a <private/> message was copied: the next copy was %q", got)
			}
		})
	})
}
