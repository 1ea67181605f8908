package c2s

import (
	"context"
	"sync"
	"sync/atomic"

	"impetus/internal/stanza"
)

// Streams is the set of live client streams, bound or not, so that shutdown can tell every
// one of them (RFC 6120 §4.9.3.17 system-shutdown), not only the sessions the router knows.
type Streams struct {
	mu  sync.Mutex
	set map[*Session]struct{}
	// resumable holds the sessions that may be resumed (XEP-0198), by resumption id, whether
	// their connection is up or they are hibernated.
	resumable map[string]*Session
	// closing is set once the server shuts down: sessions no longer hibernate then, since
	// nobody could resume them.
	closing atomic.Bool
	// handover, when set, resumes sessions held by other nodes of a cluster (handover.go).
	handover atomic.Pointer[Handover]
}

func (t *Streams) add(s *Session) {
	t.mu.Lock()
	if t.set == nil {
		t.set = make(map[*Session]struct{})
	}
	t.set[s] = struct{}{}
	t.mu.Unlock()
}

func (t *Streams) remove(s *Session) {
	t.mu.Lock()
	delete(t.set, s)
	t.mu.Unlock()
}

// Len returns the number of live streams.
func (t *Streams) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.set)
}

// CloseAll ends every live stream with serr, and every hibernated session: their
// unacknowledged messages go to offline storage before the server stops.
func (t *Streams) CloseAll(serr *stanza.StreamError) {
	t.closing.Store(true)
	defer t.endHibernated()
	t.mu.Lock()
	all := make([]*Session, 0, len(t.set))
	for s := range t.set {
		all = append(all, s)
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() { defer wg.Done(); s.Close(serr) }()
	}
	wg.Wait()
}

func (t *Streams) addResumable(id string, s *Session) {
	t.mu.Lock()
	if t.resumable == nil {
		t.resumable = make(map[string]*Session)
	}
	t.resumable[id] = s
	t.mu.Unlock()
}

func (t *Streams) removeResumable(id string, s *Session) {
	t.mu.Lock()
	if t.resumable[id] == s {
		delete(t.resumable, id)
	}
	t.mu.Unlock()
}

func (t *Streams) lookupResumable(id string) *Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resumable[id]
}

// Hibernated returns the number of sessions waiting for resumption without a connection.
func (t *Streams) Hibernated() int {
	t.mu.Lock()
	all := make([]*Session, 0, len(t.resumable))
	for _, s := range t.resumable {
		all = append(all, s)
	}
	t.mu.Unlock()
	n := 0
	for _, s := range all {
		if o := s.out.Load(); o != nil {
			o.mu.Lock()
			if o.detached {
				n++
			}
			o.mu.Unlock()
		}
	}
	return n
}

// endHibernated ends the sessions that wait for resumption without a connection.
func (t *Streams) endHibernated() {
	t.mu.Lock()
	all := make([]*Session, 0, len(t.resumable))
	for _, s := range t.resumable {
		all = append(all, s)
	}
	t.mu.Unlock()
	for _, s := range all {
		if o := s.out.Load(); o != nil {
			o.mu.Lock()
			detached := o.detached
			o.mu.Unlock()
			if detached {
				s.endSession(context.Background())
			}
		}
	}
}
