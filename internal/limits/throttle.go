package limits

import (
	"sync"
	"time"
)

// DefaultMaxKeys bounds the addresses and accounts an AuthThrottle remembers.
const DefaultMaxKeys = 100000

// AuthThrottle counts failed authentications per key (an IP address, an account) within a
// window. Once a key has reached its limit, Blocked reports it until its oldest counted failure
// leaves the window, so a guesser gets a limited number of tries per window wherever the
// tries come from.
//
// Memory is bounded: a key keeps at most limit timestamps, keys whose failures all left the
// window are swept, and when MaxKeys keys are remembered a new key evicts an arbitrary one. An
// attacker who makes the table overflow can thus make it forget some keys, but can never make
// it grow.
type AuthThrottle struct {
	// MaxKeys bounds the keys remembered; 0 means DefaultMaxKeys.
	MaxKeys int
	now     func() time.Time

	mu        sync.Mutex
	keys      map[string][]time.Time // failures within the window, oldest first
	lastSweep time.Time
}

// NewAuthThrottle returns an empty throttle.
func NewAuthThrottle() *AuthThrottle {
	return &AuthThrottle{now: time.Now, keys: make(map[string][]time.Time)}
}

// Blocked reports whether key had limit or more failures within window. A limit of 0 or less
// never blocks.
func (t *AuthThrottle) Blocked(key string, limit int, window time.Duration) bool {
	if limit <= 0 || key == "" {
		return false
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	ts := t.trim(key, now, window)
	return len(ts) >= limit
}

// Fail records a failure of key. Only the newest limit failures are kept: more say nothing new.
func (t *AuthThrottle) Fail(key string, limit int, window time.Duration) {
	if limit <= 0 || key == "" {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now, window)
	ts := t.trim(key, now, window)
	if ts == nil {
		max := t.MaxKeys
		if max <= 0 {
			max = DefaultMaxKeys
		}
		if len(t.keys) >= max {
			for k := range t.keys {
				delete(t.keys, k)
				break
			}
		}
	}
	if len(ts) >= limit {
		ts = append(ts[:0], ts[len(ts)-limit+1:]...)
	}
	t.keys[key] = append(ts, now)
}

// Len returns how many keys are remembered.
func (t *AuthThrottle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}

// trim drops key's failures older than window and returns the rest; t.mu is held.
func (t *AuthThrottle) trim(key string, now time.Time, window time.Duration) []time.Time {
	ts, ok := t.keys[key]
	if !ok {
		return nil
	}
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= window {
		i++
	}
	if i == len(ts) {
		delete(t.keys, key)
		return nil
	}
	if i > 0 {
		ts = append(ts[:0], ts[i:]...)
		t.keys[key] = ts
	}
	return ts
}

// sweep forgets the keys whose failures all left the window, at most once per window so that
// its cost stays small against the failures it serves; t.mu is held.
func (t *AuthThrottle) sweep(now time.Time, window time.Duration) {
	if now.Sub(t.lastSweep) < window {
		return
	}
	t.lastSweep = now
	for k, ts := range t.keys {
		if len(ts) == 0 || now.Sub(ts[len(ts)-1]) >= window {
			delete(t.keys, k)
		}
	}
}
