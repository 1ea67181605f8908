// Package observe is the seam between the stream code and whatever watches stanzas go by:
// the xmpp_logger instances and the metrics. A stream calls its Observer at exactly two
// places, once for each element it reads and once for each stanza it queues for writing, so
// that loggers and counters never have to be threaded through the protocol code.
//
// Observers run on the stanza path. They must not block and must not keep the element: the
// element's memory belongs to the stream and may change or be reused once the call returns.
package observe

import (
	"log/slog"
	"sync/atomic"

	"impetus/internal/stanza"
)

// Observer is told about every stanza a stream reads or writes.
//
// remote is the peer's address as "ip:port" (IPv6 in brackets), or the unix socket path.
type Observer interface {
	// StanzaReceived is called for each top-level element read from a stream once it has
	// been parsed and, for client streams, once 'from' has been stamped.
	StanzaReceived(remote string, el *stanza.Element)
	// StanzaDelivered is called for each stanza queued for writing to a stream.
	StanzaDelivered(remote string, el *stanza.Element)
}

// LevelAuth is the log level of the lines log_authentication asks for. It is above every
// debug_level, so the operator who turns log_authentication on sees the lines whatever
// debug_level the module runs at; the log prints it as AUTH.
const LevelAuth = slog.Level(16)

// Multi calls each observer in order. Nil entries are skipped.
type Multi []Observer

// StanzaReceived implements Observer.
func (m Multi) StanzaReceived(remote string, el *stanza.Element) {
	for _, o := range m {
		if o != nil {
			o.StanzaReceived(remote, el)
		}
	}
}

// StanzaDelivered implements Observer.
func (m Multi) StanzaDelivered(remote string, el *stanza.Element) {
	for _, o := range m {
		if o != nil {
			o.StanzaDelivered(remote, el)
		}
	}
}

// Swap is an Observer whose target can be replaced while streams use it: streams keep one
// Swap for their lifetime and a configuration reload stores a new target in it.
// The zero Swap observes nothing.
type Swap struct {
	cur atomic.Pointer[holder]
}

// holder boxes the interface value so it can live in an atomic.Pointer.
type holder struct{ o Observer }

// Store makes o the target; nil stops observing.
func (s *Swap) Store(o Observer) {
	if o == nil {
		s.cur.Store(nil)
		return
	}
	s.cur.Store(&holder{o})
}

// Load returns the current target, or nil.
func (s *Swap) Load() Observer {
	if h := s.cur.Load(); h != nil {
		return h.o
	}
	return nil
}

// StanzaReceived implements Observer.
func (s *Swap) StanzaReceived(remote string, el *stanza.Element) {
	if h := s.cur.Load(); h != nil {
		h.o.StanzaReceived(remote, el)
	}
}

// StanzaDelivered implements Observer.
func (s *Swap) StanzaDelivered(remote string, el *stanza.Element) {
	if h := s.cur.Load(); h != nil {
		h.o.StanzaDelivered(remote, el)
	}
}
