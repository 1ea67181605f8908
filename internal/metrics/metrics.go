// Package metrics counts what the server does and exposes the counts in the Prometheus text
// format. Counting is on the stanza path, so every update is an atomic add on a field fixed
// at compile time: no map lookups, no label strings built per event. Labels are known sets
// (stanza kinds, SASL mechanisms, link directions) resolved by a switch.
package metrics

import (
	"sync"
	"sync/atomic"
	"time"

	"impetus/internal/stanza"
)

// Kind is a stanza kind label.
type Kind int

// The stanza kinds counted; Other is every stream-level element (features, SASL, errors).
const (
	Message Kind = iota
	Presence
	IQ
	Other
	numKinds
)

var kindNames = [numKinds]string{"message", "presence", "iq", "other"}

// KindOf classifies an element by its local name.
func KindOf(el *stanza.Element) Kind {
	switch el.Local {
	case "message":
		return Message
	case "presence":
		return Presence
	case "iq":
		return IQ
	}
	return Other
}

// mechanisms are the SASL mechanism labels; anything else counts as "other".
var mechanisms = [...]string{"PLAIN", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS", "EXTERNAL", "other"}

func mechIndex(m string) int {
	for i, n := range mechanisms[:len(mechanisms)-1] {
		if n == m {
			return i
		}
	}
	return len(mechanisms) - 1
}

// Direction is a server-to-server link's direction.
type Direction int

// The link directions: Inbound streams were opened by a peer, Outbound ones by this server.
const (
	Inbound Direction = iota
	Outbound
)

var directionNames = [2]string{"inbound", "outbound"}

// Registry holds one server's metrics. The zero value is not usable; call New.
type Registry struct {
	connsAccepted atomic.Uint64
	connsOpen     atomic.Int64
	stanzasIn     [numKinds]atomic.Uint64
	stanzasOut    [numKinds]atomic.Uint64
	auth          [len(mechanisms)][2]atomic.Uint64 // [mechanism][0 failure, 1 success]
	s2sLinks      [2]atomic.Int64
	reloads       [2]atomic.Uint64 // [0 rejected, 1 applied]
	route         Histogram
	start         time.Time

	mu      sync.Mutex
	gauges  []funcGauge
	counter []funcCounter
}

type funcGauge struct {
	name, help string
	fn         func() float64
}

type funcCounter struct {
	name, help, label string
	fn                func() map[string]uint64
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{route: newHistogram(routeBuckets), start: time.Now()}
}

// Default is the registry of the running server. Packages that cannot be handed a registry,
// such as a stream implementation deep in the call tree, count here.
var Default = New()

// ConnectionOpened counts an accepted stream connection; ConnectionClosed its end.
func (r *Registry) ConnectionOpened() { r.connsAccepted.Add(1); r.connsOpen.Add(1) }

// ConnectionClosed counts the end of a connection counted by ConnectionOpened.
func (r *Registry) ConnectionClosed() { r.connsOpen.Add(-1) }

// StanzaReceived implements observe.Observer: it counts an element read, by kind.
func (r *Registry) StanzaReceived(_ string, el *stanza.Element) { r.stanzasIn[KindOf(el)].Add(1) }

// StanzaDelivered implements observe.Observer: it counts a stanza written, by kind.
func (r *Registry) StanzaDelivered(_ string, el *stanza.Element) { r.stanzasOut[KindOf(el)].Add(1) }

// Auth counts an authentication attempt's outcome for a SASL mechanism.
func (r *Registry) Auth(mechanism string, ok bool) {
	i := 0
	if ok {
		i = 1
	}
	r.auth[mechIndex(mechanism)][i].Add(1)
}

// S2SLinkUp counts a server-to-server stream that became usable (authenticated by dialback
// or SASL EXTERNAL); S2SLinkDown its end. The gauge is the number of links up.
func (r *Registry) S2SLinkUp(d Direction) { r.s2sLinks[d&1].Add(1) }

// S2SLinkDown counts the end of a link counted by S2SLinkUp.
func (r *Registry) S2SLinkDown(d Direction) { r.s2sLinks[d&1].Add(-1) }

// Reload counts a configuration reload, applied or rejected.
func (r *Registry) Reload(applied bool) {
	if applied {
		r.reloads[1].Add(1)
	} else {
		r.reloads[0].Add(1)
	}
}

// ObserveRoute records how long routing one stanza took.
func (r *Registry) ObserveRoute(d time.Duration) { r.route.Observe(d) }

// GaugeFunc adds a gauge read when the metrics are collected, e.g. the number of sessions
// from the router: cheaper than counting on every bind and unbind.
func (r *Registry) GaugeFunc(name, help string, fn func() float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, g := range r.gauges {
		if g.name == name {
			r.gauges[i].fn = fn
			return
		}
	}
	r.gauges = append(r.gauges, funcGauge{name, help, fn})
}

// CounterFunc adds a labelled counter family read when the metrics are collected.
func (r *Registry) CounterFunc(name, help, label string, fn func() map[string]uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, c := range r.counter {
		if c.name == name {
			r.counter[i].fn = fn
			return
		}
	}
	r.counter = append(r.counter, funcCounter{name, help, label, fn})
}

// Stats is a snapshot of the main counters, for the control tool.
type Stats struct {
	Uptime              time.Duration
	ConnectionsAccepted uint64
	ConnectionsOpen     int64
	StanzasIn           map[string]uint64
	StanzasOut          map[string]uint64
	AuthSuccess         uint64
	AuthFailure         uint64
	S2SInbound          int64
	S2SOutbound         int64
	RoutedStanzas       uint64
}

// Snapshot returns the current counts.
func (r *Registry) Snapshot() Stats {
	s := Stats{
		Uptime:              time.Since(r.start).Round(time.Second),
		ConnectionsAccepted: r.connsAccepted.Load(),
		ConnectionsOpen:     r.connsOpen.Load(),
		StanzasIn:           map[string]uint64{},
		StanzasOut:          map[string]uint64{},
		S2SInbound:          r.s2sLinks[Inbound].Load(),
		S2SOutbound:         r.s2sLinks[Outbound].Load(),
		RoutedStanzas:       r.route.count.Load(),
	}
	for k := range numKinds {
		s.StanzasIn[kindNames[k]] = r.stanzasIn[k].Load()
		s.StanzasOut[kindNames[k]] = r.stanzasOut[k].Load()
	}
	for i := range mechanisms {
		s.AuthFailure += r.auth[i][0].Load()
		s.AuthSuccess += r.auth[i][1].Load()
	}
	return s
}
