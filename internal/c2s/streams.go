package c2s

import (
	"sync"

	"impetus/internal/stanza"
)

// Streams is the set of live client streams, bound or not, so that shutdown can tell every
// one of them (RFC 6120 §4.9.3.17 system-shutdown), not only the sessions the router knows.
type Streams struct {
	mu  sync.Mutex
	set map[*Session]struct{}
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

// CloseAll ends every live stream with serr.
func (t *Streams) CloseAll(serr *stanza.StreamError) {
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
