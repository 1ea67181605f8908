package metrics

import (
	"bufio"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// ContentType is the Prometheus text exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Handler serves the registry in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", ContentType)
		_ = r.Write(w)
	})
}

// Write writes every metric in the Prometheus text format.
func (r *Registry) Write(out io.Writer) error {
	w := bufio.NewWriter(out)
	e := expo{w: w}
	e.family("impetus_connections_accepted_total", "counter", "Stream connections accepted.")
	e.sample("impetus_connections_accepted_total", "", "", float64(r.connsAccepted.Load()))
	e.family("impetus_connections_open", "gauge", "Stream connections open now.")
	e.sample("impetus_connections_open", "", "", float64(r.connsOpen.Load()))
	e.family("impetus_stanzas_received_total", "counter", "Elements read from streams, by kind.")
	for k := range numKinds {
		e.sample("impetus_stanzas_received_total", "kind", kindNames[k], float64(r.stanzasIn[k].Load()))
	}
	e.family("impetus_stanzas_delivered_total", "counter", "Stanzas queued for writing to streams, by kind.")
	for k := range numKinds {
		e.sample("impetus_stanzas_delivered_total", "kind", kindNames[k], float64(r.stanzasOut[k].Load()))
	}
	e.family("impetus_auth_attempts_total", "counter", "SASL authentication attempts, by mechanism and outcome.")
	for i, m := range mechanisms {
		for j, outcome := range [2]string{"failure", "success"} {
			e.sample2("impetus_auth_attempts_total", "mechanism", m, "outcome", outcome, float64(r.auth[i][j].Load()))
		}
	}
	e.family("impetus_s2s_links", "gauge", "Server-to-server streams up, by direction.")
	for d, n := range directionNames {
		e.sample("impetus_s2s_links", "direction", n, float64(r.s2sLinks[d].Load()))
	}
	e.family("impetus_config_reloads_total", "counter", "Configuration reloads, by result.")
	e.sample("impetus_config_reloads_total", "result", "rejected", float64(r.reloads[0].Load()))
	e.sample("impetus_config_reloads_total", "result", "applied", float64(r.reloads[1].Load()))
	r.writeHistogram(&e, "impetus_route_duration_seconds", "Time to route one stanza to its local recipients.", &r.route)

	r.mu.Lock()
	gauges := slices.Clone(r.gauges)
	counters := slices.Clone(r.counter)
	r.mu.Unlock()
	for _, g := range gauges {
		e.family(g.name, "gauge", g.help)
		e.sample(g.name, "", "", g.fn())
	}
	for _, c := range counters {
		e.family(c.name, "counter", c.help)
		vals := c.fn()
		keys := make([]string, 0, len(vals))
		for k := range vals {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			e.sample(c.name, c.label, k, float64(vals[k]))
		}
	}
	e.family("impetus_goroutines", "gauge", "Goroutines running.")
	e.sample("impetus_goroutines", "", "", float64(runtime.NumGoroutine()))
	e.family("impetus_uptime_seconds", "gauge", "Seconds since the server started.")
	e.sample("impetus_uptime_seconds", "", "", r.Snapshot().Uptime.Seconds())
	return w.Flush()
}

func (r *Registry) writeHistogram(e *expo, name, help string, h *Histogram) {
	e.family(name, "histogram", help)
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		e.sample(name+"_bucket", "le", strconv.FormatFloat(b.Seconds(), 'g', -1, 64), float64(cum))
	}
	cum += h.counts[len(h.bounds)].Load()
	e.sample(name+"_bucket", "le", "+Inf", float64(cum))
	e.sample(name+"_sum", "", "", float64(h.sum.Load())/1e9)
	// The count is the +Inf bucket, so that the two agree even while observations land.
	e.sample(name+"_count", "", "", float64(cum))
}

// expo writes the text format.
type expo struct{ w *bufio.Writer }

func (e *expo) family(name, typ, help string) {
	e.w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}

func (e *expo) sample(name, label, value string, v float64) {
	e.w.WriteString(name)
	if label != "" {
		e.w.WriteString("{" + label + "=\"" + escapeLabel(value) + "\"}")
	}
	e.w.WriteString(" " + strconv.FormatFloat(v, 'g', -1, 64) + "\n")
}

func (e *expo) sample2(name, l1, v1, l2, v2 string, v float64) {
	e.w.WriteString(name + "{" + l1 + "=\"" + escapeLabel(v1) + "\"," + l2 + "=\"" + escapeLabel(v2) + "\"} " + strconv.FormatFloat(v, 'g', -1, 64) + "\n")
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
