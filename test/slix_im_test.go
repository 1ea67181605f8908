package test

import (
	"slices"
	"testing"
	"time"
)

// slixRosterItem is a roster item as im.py reports it.
type slixRosterItem struct {
	JID          string   `json:"jid"`
	Name         string   `json:"name"`
	Groups       []string `json:"groups"`
	Subscription string   `json:"subscription"`
	Ask          string   `json:"ask"`
	Ver          string   `json:"ver"`
}

// slixIMResult is the JSON line im.py prints; the fields used depend on the
// scenario.
type slixIMResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`

	RosterVerFeature bool                      `json:"rosterver_feature"`
	Ver0             *string                   `json:"ver0"`
	Items0           map[string]slixRosterItem `json:"items0"`
	SameVerEmpty     bool                      `json:"same_ver_empty"`
	SetPush          []slixRosterItem          `json:"set_push"`
	UpdatePush       []slixRosterItem          `json:"update_push"`
	Ver1             *string                   `json:"ver1"`
	Items1           map[string]slixRosterItem `json:"items1"`
	RemovePush       []slixRosterItem          `json:"remove_push"`
	Items2           map[string]slixRosterItem `json:"items2"`
	BadSet           string                    `json:"bad_set"`

	ASeesB       string          `json:"a_sees_b"`
	BSeesA       string          `json:"b_sees_a"`
	AItem        *slixRosterItem `json:"a_item"`
	BItem        *slixRosterItem `json:"b_item"`
	AAfterRemove *slixRosterItem `json:"a_after_remove"`
	BAfterRemove *slixRosterItem `json:"b_after_remove"`
	Message      struct {
		From       string `json:"from"`
		Body       string `json:"body"`
		Type       string `json:"type"`
		DelayStamp string `json:"delay_stamp"`
		DelayFrom  string `json:"delay_from"`
		HasDelay   bool   `json:"has_delay"`
	} `json:"message"`
	SenderJID    string   `json:"sender_jid"`
	SenderErrors []string `json:"sender_errors"`
}

// runSlixIM runs one im.py scenario against srv and returns its result; the
// script's log is attached to the test log when the test fails.
func runSlixIM(t *testing.T, srv *Server, scenario string, args ...string) slixIMResult {
	t.Helper()
	return runSlixOK[slixIMResult](t, srv, "im.py", slixTimeout, scenario, args...)
}

// TestSlixmppIM runs RFC 6121 scenarios with Debian's slixmpp on both
// storage backends: roster management with pushes to two resources and
// versioning, slixmpp's automatic subscription handling up to 'both' and
// back to 'none', and offline delivery with a delay stamp.
func TestSlixmppIM(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startIMServer(t, b, imOptions{Users: users("rosa", "sam", "tom", "ann", "ben")})

		t.Run("roster", func(t *testing.T) {
			t.Parallel()
			res := runSlixIM(t, srv.Server, "roster", "--jid", "rosa@localhost", "--password", "pw-rosa",
				"--peer-jid", "peer@localhost")
			if !res.RosterVerFeature {
				t.Errorf("slixmpp did not see the rosterver stream feature")
			}
			if res.Ver0 == nil || *res.Ver0 == "" {
				t.Errorf("roster get with ver='' on a new roster: ver %v, want a version", res.Ver0)
			}
			if len(res.Items0) != 0 {
				t.Errorf("new roster has items %v", res.Items0)
			}
			if !res.SameVerEmpty {
				t.Errorf("roster get with the current version did not get an empty result (§2.6.3)")
			}
			for i, p := range res.SetPush {
				if p.Name != "Peer Name" || !slices.Equal(p.Groups, []string{"Friends", "Work"}) || p.Subscription != "none" || p.Ver == "" {
					t.Errorf("resource %d: set pushed as %+v", i+1, p)
				}
			}
			for i, p := range res.UpdatePush {
				if p.Name != "Renamed" || !slices.Equal(p.Groups, []string{"Family"}) {
					t.Errorf("resource %d: update pushed as %+v", i+1, p)
				}
			}
			if res.Ver1 == nil || res.Ver0 == nil || *res.Ver1 == *res.Ver0 {
				t.Errorf("version after changes %v, before %v: it must change", res.Ver1, res.Ver0)
			}
			if it, ok := res.Items1["peer@localhost"]; !ok || it.Name != "Renamed" {
				t.Errorf("roster after the update: %v", res.Items1)
			}
			for i, p := range res.RemovePush {
				if p.Subscription != "remove" {
					t.Errorf("resource %d: removal pushed as %+v", i+1, p)
				}
			}
			if len(res.Items2) != 0 {
				t.Errorf("roster after the removal: %v", res.Items2)
			}
			if res.BadSet != "bad-request" {
				t.Errorf("a set with two items: %q, want bad-request", res.BadSet)
			}
		})

		t.Run("subscribe", func(t *testing.T) {
			t.Parallel()
			res := runSlixIM(t, srv.Server, "subscribe", "--jid", "sam@localhost", "--password", "pw-sam",
				"--peer-jid", "tom@localhost", "--peer-password", "pw-tom")
			if res.AItem == nil || res.AItem.Subscription != "both" || res.AItem.Ask != "" {
				t.Errorf("sam's item for tom: %+v, want both", res.AItem)
			}
			if res.BItem == nil || res.BItem.Subscription != "both" || res.BItem.Ask != "" {
				t.Errorf("tom's item for sam: %+v, want both", res.BItem)
			}
			if res.ASeesB != "tom@localhost/sb" || res.BSeesA != "sam@localhost/sa" {
				t.Errorf("presence seen: sam saw %q, tom saw %q", res.ASeesB, res.BSeesA)
			}
			if res.Message.Body != "hello over a subscription" || res.Message.From != "sam@localhost/sa" {
				t.Errorf("message: %+v", res.Message)
			}
			if res.AAfterRemove != nil {
				t.Errorf("sam's roster still lists tom after the removal: %+v", res.AAfterRemove)
			}
			if res.BAfterRemove != nil && (res.BAfterRemove.Subscription != "none" || res.BAfterRemove.Ask != "") {
				t.Errorf("tom's item for sam after sam removed him: %+v, want none", res.BAfterRemove)
			}
		})

		t.Run("offline", func(t *testing.T) {
			t.Parallel()
			start := time.Now().UTC().Add(-time.Minute)
			res := runSlixIM(t, srv.Server, "offline", "--jid", "ann@localhost", "--password", "pw-ann",
				"--peer-jid", "ben@localhost", "--peer-password", "pw-ben")
			if len(res.SenderErrors) != 0 {
				t.Errorf("the sender got errors %v for a message to an offline user", res.SenderErrors)
			}
			m := res.Message
			if m.Body != "while you were away" || m.From != res.SenderJID || m.Type != "chat" {
				t.Errorf("offline message arrived as %+v, want body from %s type chat", m, res.SenderJID)
			}
			if !m.HasDelay || m.DelayFrom != testDomain {
				t.Errorf("offline message delay: present %v from %q, want <delay xmlns='%s' from='%s'/>", m.HasDelay, m.DelayFrom, nsDelay, testDomain)
			}
			if st, err := time.Parse(time.RFC3339, m.DelayStamp); err != nil || st.Before(start.Truncate(time.Second)) {
				t.Errorf("delay stamp %q: %v", m.DelayStamp, err)
			}
		})
	})
}
