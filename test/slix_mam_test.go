package test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// slixMAMPage is one page of an archive query as mam.py reports it.
type slixMAMPage struct {
	Bodies   []string `json:"bodies"`
	IDs      []string `json:"ids"`
	Stamps   []string `json:"stamps"`
	Complete bool     `json:"complete"`
	First    string   `json:"first"`
	Last     string   `json:"last"`
}

// slixMAMResult is the JSON line mam.py prints.
type slixMAMResult struct {
	OK         bool     `json:"ok"`
	Error      string   `json:"error"`
	Features   []string `json:"features"`
	FormFields []string `json:"form_fields"`
	FormType   string   `json:"form_type"`
	Live       []struct {
		Body  string `json:"body"`
		SidBy string `json:"sid_by"`
		Sid   string `json:"sid"`
	} `json:"live"`
	Forward    []slixMAMPage `json:"forward"`
	Backward   []slixMAMPage `json:"backward"`
	WithCarol  []slixMAMPage `json:"with_carol"`
	Range      []slixMAMPage `json:"range"`
	RangeStart string        `json:"range_start"`
	RangeEnd   string        `json:"range_end"`
	Metadata   struct {
		StartID string `json:"start_id"`
		EndID   string `json:"end_id"`
	} `json:"metadata"`
	UnknownAfter string `json:"unknown_after"`
	BobCount     int    `json:"bob_count"`
}

// runSlixMAM runs one mam.py scenario against srv; the script's log is
// attached to the test log when the test fails.
func runSlixMAM(t *testing.T, srv *Server, scenario string, args ...string) slixMAMResult {
	t.Helper()
	return runSlixOK[slixMAMResult](t, srv, "mam.py", 2*slixTimeout, scenario, args...)
}

func pageBodies(pages []slixMAMPage) []string {
	var out []string
	for _, p := range pages {
		out = append(out, p.Bodies...)
	}
	return out
}

// TestSlixmppMAM pages through a 125-message archive with slixmpp's
// XEP-0313 plugin on both storage backends: RSM forward and backward
// iteration with the fin completeness flags, the with filter, a time range,
// the query form, metadata, disco features, XEP-0359 stanza ids on live
// delivery and the sender's own archive.
func TestSlixmppMAM(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startIMServer(t, b, imOptions{Users: users("mia", "max", "meg")})
		const count = 120
		res := runSlixMAM(t, srv.Server, "archive", "--jid", "mia@localhost", "--password", "pw-mia",
			"--peer-jid", "max@localhost", "--peer-password", "pw-max",
			"--third-jid", "meg@localhost", "--third-password", "pw-meg", "--count", strconv.Itoa(count))

		for _, f := range []string{"urn:xmpp:mam:2", "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0"} {
			if !slices.Contains(res.Features, f) {
				t.Errorf("account disco features %v lack %s", res.Features, f)
			}
		}
		if res.FormType != "urn:xmpp:mam:2" {
			t.Errorf("form FORM_TYPE = %q", res.FormType)
		}
		for _, f := range []string{"with", "start", "end", "before-id", "after-id", "ids"} {
			if !slices.Contains(res.FormFields, f) {
				t.Errorf("query form fields %v lack %s", res.FormFields, f)
			}
		}

		// What was sent, in order.
		var want, carol []string
		for i := range count {
			want = append(want, fmt.Sprintf("bob %d", i))
			if i%25 == 12 {
				carol = append(carol, fmt.Sprintf("carol %d", i))
			}
		}
		got := pageBodies(res.Forward)
		var maxGot, megGot []string
		for _, s := range got {
			if strings.HasPrefix(s, "bob ") {
				maxGot = append(maxGot, s)
			} else {
				megGot = append(megGot, s)
			}
		}
		if len(got) != count+len(carol) || !slices.Equal(maxGot, want) || !slices.Equal(megGot, carol) {
			t.Fatalf("forward paging returned %d messages (%d from max, in order %v; meg %v)", len(got), len(maxGot), slices.Equal(maxGot, want), megGot)
		}
		// Pages of 50: 125 items make three full-or-partial pages, and slixmpp asks once more
		// and stops at the empty page. Only the page reaching the end is complete.
		if len(res.Forward) != 3 || res.Forward[0].Complete || res.Forward[1].Complete || !res.Forward[2].Complete {
			t.Errorf("forward pages: %d, complete flags %v %v", len(res.Forward), len(res.Forward) > 0 && res.Forward[0].Complete, len(res.Forward) > 2 && res.Forward[2].Complete)
		}
		for i, p := range res.Forward {
			if len(p.IDs) > 0 && (p.First != p.IDs[0] || p.Last != p.IDs[len(p.IDs)-1]) {
				t.Errorf("page %d: first/last %q/%q do not match its ids", i, p.First, p.Last)
			}
		}
		// Backward: the last 50 first, each page chronological.
		if len(res.Backward) != 3 || !slices.Equal(res.Backward[0].Bodies, got[len(got)-50:]) ||
			!slices.Equal(res.Backward[2].Bodies, got[:len(got)-100]) || res.Backward[0].Complete || !res.Backward[2].Complete {
			t.Errorf("backward pages: %d; first page %v", len(res.Backward), res.Backward)
		}
		if w := pageBodies(res.WithCarol); !slices.Equal(w, carol) || len(res.WithCarol) != 1 || !res.WithCarol[0].Complete {
			t.Errorf("with meg: %v in %d pages, want %v", w, len(res.WithCarol), carol)
		}
		if r := pageBodies(res.Range); !slices.Equal(r, got[20:60]) {
			t.Errorf("time range %s..%s: %d messages, want the 40 from the 21st to the 60th", res.RangeStart, res.RangeEnd, len(r))
		}
		ids := res.Forward[0].IDs
		lastIDs := res.Forward[2].IDs
		if res.Metadata.StartID != ids[0] || res.Metadata.EndID != lastIDs[len(lastIDs)-1] {
			t.Errorf("metadata %+v, want %s..%s", res.Metadata, ids[0], lastIDs[len(lastIDs)-1])
		}
		if res.UnknownAfter != "item-not-found" {
			t.Errorf("unknown RSM after: %q, want item-not-found", res.UnknownAfter)
		}
		// Live copies carry the same ids the archive pages by.
		if len(res.Live) != len(got) {
			t.Fatalf("mia received %d live messages, want %d", len(res.Live), len(got))
		}
		// Messages from two senders are archived and delivered concurrently, so the live order
		// may differ from the archive's; the ids must name the same messages.
		archived := map[string]string{}
		for _, p := range res.Forward {
			for i, id := range p.IDs {
				archived[id] = p.Bodies[i]
			}
		}
		for i, m := range res.Live {
			if m.SidBy != "mia@localhost" || archived[m.Sid] != m.Body {
				t.Fatalf("live message %d: %+v; the archive has %q under that id", i, m, archived[m.Sid])
			}
		}
		if res.BobCount != count {
			t.Errorf("max's own archive with mia holds %d messages, want %d", res.BobCount, count)
		}
	})
}
