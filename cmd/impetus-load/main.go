// Command impetus-load drives an XMPP server with standard client traffic and reports what it
// measured: login rate, memory per idle session, one-to-one chat throughput and latency,
// presence fan-out, and chat between two federated servers. It speaks plain XMPP (RFC 6120,
// RFC 6121), so it measures Impetus, ejabberd and Prosody alike.
//
// Every run is bounded in count and in time, and it only connects to the addresses it is given,
// which the benchmark script keeps on loopback. Users named <prefix><n> with one shared password
// must exist on the server; see docs/performance.md for provisioning.
//
// Usage:
//
//	impetus-load login    [flags]   logins per second (-n logins, -c in parallel)
//	impetus-load idle     [flags]   -n idle authenticated sessions; server RSS delta / n
//	impetus-load chat     [flags]   -pairs senders→receivers, -window in flight, -duration
//	impetus-load presence [flags]   -users each with -contacts watchers, -changes status changes
//
// A server-to-server run is a chat run with -addr2 and -domain2: receivers log in to the
// second server and senders address them there.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the flags every scenario shares.
type options struct {
	dial      dialOptions
	dial2     dialOptions // the second server of a federation run
	prefix    string
	first     int // number of the first user
	conc      int
	pids      []int
	label     string
	timeout   time.Duration
	n         int
	pairs     int
	window    int
	duration  time.Duration
	rate      float64
	users     int
	contacts  int
	changes   int
	settle    time.Duration
	hold      time.Duration
	bodySize  int
	allowLoss bool
}

// result is one scenario's measurement, printed as one JSON line on stdout.
type result struct {
	Scenario    string  `json:"scenario"`
	Label       string  `json:"label,omitempty"`
	TLS         bool    `json:"tls"`
	Mech        string  `json:"mech"`
	N           int     `json:"n,omitempty"`
	Pairs       int     `json:"pairs,omitempty"`
	Window      int     `json:"window,omitempty"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"` // logins/s, messages/s or presences/s received
	Sent        int64   `json:"sent,omitempty"`
	Received    int64   `json:"received,omitempty"`
	Lost        int64   `json:"lost,omitempty"`
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	P50ms       float64 `json:"p50_ms,omitempty"`
	P99ms       float64 `json:"p99_ms,omitempty"`
	ServerCPU   float64 `json:"server_cpu_s"`
	LoadCPU     float64 `json:"load_cpu_s"`
	RSSBefore   int64   `json:"rss_before,omitempty"`
	RSSAfter    int64   `json:"rss_after,omitempty"`
	PerSession  float64 `json:"bytes_per_session,omitempty"`
	LoadAverage float64 `json:"loadavg"`
	Iterations  int64   `json:"scram_iterations,omitempty"`
	Retries     int64   `json:"login_retries,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	scenario := os.Args[1]
	fs := flag.NewFlagSet(scenario, flag.ExitOnError)
	var o options
	var sources, pids string
	fs.StringVar(&o.dial.addr, "addr", "127.0.0.1:5222", "client listener of the server")
	fs.StringVar(&o.dial.domain, "domain", "localhost", "XMPP domain of the users")
	fs.StringVar(&o.dial.password, "password", "loadpass", "password of every user")
	fs.BoolVar(&o.dial.tls, "tls", true, "STARTTLS before authenticating")
	fs.StringVar(&o.dial.mech, "mech", "SCRAM-SHA-1", "SASL mechanism: SCRAM-SHA-1 or PLAIN")
	fs.StringVar(&o.dial2.addr, "addr2", "", "federation run: client listener of the receivers' server")
	fs.StringVar(&o.dial2.domain, "domain2", "", "federation run: domain of the receivers")
	fs.StringVar(&sources, "sources", "", "comma-separated local addresses to connect from (127.0.0.x); more than one past ~25,000 connections")
	fs.StringVar(&o.prefix, "prefix", "user", "user names are <prefix><n>")
	fs.IntVar(&o.first, "first", 0, "number of the first user")
	fs.IntVar(&o.conc, "c", 32, "logins in parallel")
	fs.StringVar(&pids, "pid", "", "comma-separated server process ids to sample for CPU and memory")
	fs.StringVar(&o.label, "label", "", "label copied into the result")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "bound on the whole run")
	fs.DurationVar(&o.dial.timeout, "login-timeout", 30*time.Second, "bound on one login")
	fs.IntVar(&o.n, "n", 1000, "login: logins; idle: sessions")
	fs.IntVar(&o.pairs, "pairs", 50, "chat: sender/receiver pairs")
	fs.IntVar(&o.window, "window", 16, "chat: messages in flight per pair")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "chat: how long senders send")
	fs.Float64Var(&o.rate, "rate", 0, "chat: total messages per second to offer; 0 sends as fast as the window allows")
	fs.IntVar(&o.bodySize, "body", 64, "chat: body size in bytes (at least the timestamp)")
	fs.IntVar(&o.users, "users", 200, "presence: users")
	fs.IntVar(&o.contacts, "contacts", 20, "presence: contacts watching each user")
	fs.IntVar(&o.changes, "changes", 5, "presence: status changes per user")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "idle: wait after the last login before sampling memory")
	fs.DurationVar(&o.hold, "hold", 0, "idle: keep the sessions this long after sampling")
	fs.BoolVar(&o.allowLoss, "allow-loss", false, "exit 0 even when messages were lost")
	_ = fs.Parse(os.Args[2:])

	for _, s := range splitList(sources) {
		ip := net.ParseIP(s)
		if ip == nil {
			fatalf("load: bad source address %q", s)
		}
		o.dial.sources = append(o.dial.sources, ip)
	}
	for _, s := range splitList(pids) {
		p, err := strconv.Atoi(s)
		if err != nil {
			fatalf("load: bad pid %q", s)
		}
		o.pids = append(o.pids, p)
	}
	if o.dial.mech != "PLAIN" && o.dial.mech != "SCRAM-SHA-1" {
		fatalf("load: -mech must be SCRAM-SHA-1 or PLAIN")
	}
	o.dial.sources = append([]net.IP(nil), o.dial.sources...)
	d2 := o.dial
	if o.dial2.addr != "" {
		d2.addr = o.dial2.addr
		if o.dial2.domain != "" {
			d2.domain = o.dial2.domain
		}
	}
	o.dial2 = d2

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	var r *result
	var err error
	switch scenario {
	case "login":
		r, err = runLogin(ctx, &o)
	case "idle":
		r, err = runIdle(ctx, &o)
	case "chat":
		r, err = runChat(ctx, &o)
	case "presence":
		r, err = runPresence(ctx, &o)
	default:
		usage()
	}
	if r != nil {
		r.Scenario, r.Label, r.TLS, r.Mech = scenario, o.label, o.dial.tls, o.dial.mech
		r.LoadAverage = loadAverage()
		r.Iterations = scramIterations.Load()
		r.Retries = loginRetries.Load()
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
	}
	if err != nil {
		fatalf("%v", err)
	}
	if r != nil && r.Lost > 0 && !o.allowLoss {
		fatalf("load: %d of %d lost", r.Lost, r.Sent)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: impetus-load login|idle|chat|presence [flags]; impetus-load <scenario> -h lists the flags")
	os.Exit(2)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (o *options) user(i int) string { return o.prefix + strconv.Itoa(o.first+i) }

// sampler measures the servers between two points of a run.
type sampler struct {
	pids      []int
	start     procSample
	loadStart float64
}

func (o *options) sample() (*sampler, error) {
	s := &sampler{pids: o.pids, loadStart: selfCPU()}
	if len(o.pids) == 0 {
		return s, nil
	}
	var err error
	s.start, err = sampleProcs(o.pids)
	return s, err
}

// finish fills in the CPU used since start and the memory now.
func (s *sampler) finish(r *result) error {
	r.LoadCPU = selfCPU() - s.loadStart
	if len(s.pids) == 0 {
		return nil
	}
	end, err := sampleProcs(s.pids)
	if err != nil {
		return err
	}
	r.ServerCPU = end.cpu - s.start.cpu
	r.RSSBefore, r.RSSAfter = s.start.rss, end.rss
	return nil
}

// selfCPU is the load tool's own CPU seconds, reported so a run limited by the load tool shows.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// percentile returns the q-quantile of sorted durations in milliseconds.
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return float64(sorted[i]) / float64(time.Millisecond)
}

func sortDurations(d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
}

// errorCount collects errors from many goroutines, keeping the first for the report.
type errorCount struct {
	n     int64
	first error
}

func (e *errorCount) add(err error) {
	if e.first == nil {
		e.first = err
	}
	e.n++
}

func (e *errorCount) fill(r *result) {
	r.Errors = e.n
	if e.first != nil {
		r.FirstError = e.first.Error()
	}
}

var errTimeout = errors.New("load: run bound reached before the scenario finished")
