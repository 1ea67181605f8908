package core

import (
	"strings"
	"sync"
	"sync/atomic"

	"mellium.im/xmpp/jid"

	"impetus/internal/jidutil"
)

// DefaultJIDCacheSize is the number of prepared 'to' addresses a Core remembers when its
// JIDCacheSize is zero.
const DefaultJIDCacheSize = 16384

// maxCachedJIDLen keeps long addresses out of the cache, so that its memory stays bounded by
// about JIDCacheSize × 256 bytes whatever clients address.
const maxCachedJIDLen = 256

// jidCache remembers the result of jidutil.Parse for the 'to' addresses clients send. PRECIS
// preparation of an address was 9% of the server's CPU in a chat load test and seven
// allocations per message, although a client addresses the same few contacts over and over.
// Parsing is a pure function of the string, so a cached result is exact. Only valid addresses
// are cached; when the cache is full it starts over, which keeps it simple and bounded.
type jidCache struct {
	m sync.Map // string → jid.JID
	n atomic.Int64
}

// parse returns jidutil.Parse(s), from the cache when it can. max bounds the entries; zero or
// less disables the cache.
func (c *jidCache) parse(s string, max int) (jid.JID, error) {
	if max <= 0 || len(s) > maxCachedJIDLen {
		return jidutil.Parse(s)
	}
	if v, ok := c.m.Load(s); ok {
		return v.(jid.JID), nil
	}
	// s points into the stanza's text; the cached key and the JID built from it must not keep
	// that whole buffer alive.
	s = strings.Clone(s)
	j, err := jidutil.Parse(s)
	if err != nil {
		return j, err
	}
	if c.n.Add(1) > int64(max) {
		c.m.Clear()
		c.n.Store(1)
	}
	c.m.Store(s, j)
	return j, nil
}
