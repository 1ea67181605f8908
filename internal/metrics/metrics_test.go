package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"impetus/internal/stanza"
)

func TestExposition(t *testing.T) {
	r := New()
	r.ConnectionOpened()
	r.ConnectionOpened()
	r.ConnectionClosed()
	r.StanzaReceived("", stanza.NewElement(stanza.NSClient, "message"))
	r.StanzaReceived("", stanza.NewElement(stanza.NSClient, "iq"))
	r.StanzaDelivered("", stanza.NewElement(stanza.NSClient, "presence"))
	r.StanzaDelivered("", stanza.NewElement(stanza.NSStream, "error"))
	r.Auth("PLAIN", true)
	r.Auth("X-UNKNOWN", false)
	r.S2SLinkUp(Outbound)
	r.S2SLinkUp(Inbound)
	r.S2SLinkDown(Inbound)
	r.Reload(false)
	r.ObserveRoute(20 * time.Microsecond)
	r.ObserveRoute(2 * time.Second)
	r.GaugeFunc("impetus_sessions", "Sessions.", func() float64 { return 3 })
	r.CounterFunc("impetus_xmpp_logger_dropped_total", "Drops.", "logger", func() map[string]uint64 { return map[string]uint64{"b": 2, "a": 1} })

	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); ct != ContentType {
		t.Errorf("content type %q", ct)
	}
	out := rec.Body.String()
	for _, want := range []string{
		"# TYPE impetus_connections_accepted_total counter\nimpetus_connections_accepted_total 2\n",
		"impetus_connections_open 1\n",
		`impetus_stanzas_received_total{kind="message"} 1` + "\n",
		`impetus_stanzas_received_total{kind="iq"} 1` + "\n",
		`impetus_stanzas_received_total{kind="presence"} 0` + "\n",
		`impetus_stanzas_delivered_total{kind="presence"} 1` + "\n",
		`impetus_stanzas_delivered_total{kind="other"} 1` + "\n",
		`impetus_auth_attempts_total{mechanism="PLAIN",outcome="success"} 1` + "\n",
		`impetus_auth_attempts_total{mechanism="other",outcome="failure"} 1` + "\n",
		`impetus_s2s_links{direction="inbound"} 0` + "\n",
		`impetus_s2s_links{direction="outbound"} 1` + "\n",
		`impetus_config_reloads_total{result="rejected"} 1` + "\n",
		"# TYPE impetus_route_duration_seconds histogram\n",
		`impetus_route_duration_seconds_bucket{le="1e-05"} 0` + "\n",
		`impetus_route_duration_seconds_bucket{le="2.5e-05"} 1` + "\n",
		`impetus_route_duration_seconds_bucket{le="1"} 1` + "\n",
		`impetus_route_duration_seconds_bucket{le="+Inf"} 2` + "\n",
		"impetus_route_duration_seconds_sum 2.00002\n",
		"impetus_route_duration_seconds_count 2\n",
		"impetus_sessions 3\n",
		`impetus_xmpp_logger_dropped_total{logger="a"} 1` + "\n" + `impetus_xmpp_logger_dropped_total{logger="b"} 2` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
	// Every sample line belongs to a family announced before it.
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			seen[strings.Fields(line)[2]] = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		name := strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !seen[name] && !seen[base] {
			t.Errorf("sample %q before its # TYPE line", line)
		}
	}
}

func TestSnapshot(t *testing.T) {
	r := New()
	r.StanzaReceived("", stanza.NewElement(stanza.NSClient, "message"))
	r.Auth("SCRAM-SHA-1", true)
	r.Auth("PLAIN", false)
	s := r.Snapshot()
	if s.StanzasIn["message"] != 1 || s.AuthSuccess != 1 || s.AuthFailure != 1 {
		t.Errorf("snapshot %+v", s)
	}
}

func BenchmarkStanzaReceived(b *testing.B) {
	r := New()
	el := stanza.NewElement(stanza.NSClient, "message")
	b.ReportAllocs()
	for b.Loop() {
		r.StanzaReceived("", el)
	}
}
