// Package limits holds the server's defences against clients that take more than their share:
// the bound on open connections in total and per IP address, the per-connection read shaper,
// and the throttle on failed authentications per IP address and per account.
//
// Each is safe for concurrent use and keeps bounded memory whatever the peers do.
package limits

import (
	"net/netip"
	"sync"
	"time"
)

// Conns counts open connections in total and per IP address.
//
// A connection is counted from the moment it is admitted, before it sends anything, because an
// idle socket holds a file descriptor as much as a busy one does. The listener admits a
// connection when it starts serving it but only tells its stream handler, which can release the
// count, once a stream header arrived. An admission no handler claimed is therefore pending: it
// is claimed by the handler of the same IP address, or it lapses after the pending time, by
// which the listener has closed every connection that sent no header. Each admission is thus
// released exactly once: by its handler's release function or by lapsing.
type Conns struct {
	pendingTTL time.Duration
	now        func() time.Time

	mu    sync.Mutex
	total int
	ips   map[netip.Prefix]*ipConns // by AddressKey
	// queue holds the pending admissions in order of time, so that lapsed ones are found
	// without scanning every address.
	queue []*admission
}

type ipConns struct {
	open    int          // admitted and not released, pending ones included
	pending []*admission // admissions not yet claimed, oldest first
}

type admission struct {
	ip      netip.Prefix
	at      time.Time
	claimed bool
}

// NewConns returns a counter whose unclaimed admissions lapse after pendingTTL, which must be at
// least the time the listener waits for a stream header.
func NewConns(pendingTTL time.Duration) *Conns {
	return &Conns{pendingTTL: pendingTTL, now: time.Now, ips: make(map[netip.Prefix]*ipConns)}
}

// Admit counts a new connection from ip unless that would exceed maxTotal open connections in
// all or maxPerIP from ip's AddressKey (0 means no bound). It reports the bound that refused it,
// if any.
func (c *Conns) Admit(addr netip.Addr, maxTotal, maxPerIP int) (ok bool, refusedBy string) {
	ip := AddressKey(addr)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lapse(now)
	e := c.ips[ip]
	switch {
	case maxTotal > 0 && c.total >= maxTotal:
		return false, "max_connections"
	case maxPerIP > 0 && e != nil && e.open >= maxPerIP:
		return false, "max_connections_per_ip"
	}
	if e == nil {
		e = &ipConns{}
		c.ips[ip] = e
	}
	a := &admission{ip: ip, at: now}
	e.open++
	e.pending = append(e.pending, a)
	c.total++
	c.queue = append(c.queue, a)
	return true, ""
}

// Claim takes over a pending admission of ip for a connection whose handler now runs. It returns
// when that admission was made and the function that releases it, which may be called any
// number of times. The newest pending admission is taken: connections of one address are
// interchangeable for counting, and the newest one is the likeliest to be this connection.
func (c *Conns) Claim(addr netip.Addr) (admitted time.Time, release func()) {
	ip := AddressKey(addr)
	now := c.now()
	c.mu.Lock()
	c.lapse(now)
	e := c.ips[ip]
	if e != nil && len(e.pending) > 0 {
		a := e.pending[len(e.pending)-1]
		e.pending[len(e.pending)-1] = nil
		e.pending = e.pending[:len(e.pending)-1]
		a.claimed = true
		admitted = a.at
	} else {
		// The admission lapsed (a header slower than the pending time) or was never made: count
		// the connection now so that its release balances.
		if e == nil {
			e = &ipConns{}
			c.ips[ip] = e
		}
		e.open++
		c.total++
		admitted = now
	}
	c.mu.Unlock()
	var once sync.Once
	return admitted, func() { once.Do(func() { c.release(ip) }) }
}

func (c *Conns) release(ip netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop(ip)
}

// drop uncounts one connection of ip; c.mu is held.
func (c *Conns) drop(ip netip.Prefix) {
	c.total--
	if e := c.ips[ip]; e != nil {
		e.open--
		if e.open <= 0 && len(e.pending) == 0 {
			delete(c.ips, ip)
		}
	}
}

// lapse releases the pending admissions older than the pending time; c.mu is held.
func (c *Conns) lapse(now time.Time) {
	n := 0
	for n < len(c.queue) && now.Sub(c.queue[n].at) >= c.pendingTTL {
		a := c.queue[n]
		c.queue[n] = nil
		n++
		if a.claimed {
			continue
		}
		if e := c.ips[a.ip]; e != nil && len(e.pending) > 0 && e.pending[0] == a {
			e.pending[0] = nil
			e.pending = e.pending[1:]
		} else if e != nil {
			// Claims take the newest, so a lapsing admission is normally the oldest; search
			// otherwise.
			for i, p := range e.pending {
				if p == a {
					e.pending = append(e.pending[:i], e.pending[i+1:]...)
					break
				}
			}
		}
		c.drop(a.ip)
	}
	if n > 0 {
		c.queue = c.queue[n:]
		if len(c.queue) == 0 {
			c.queue = nil
		}
	}
}

// AddressKey is what per-address limits count an address as: an IPv4 address as itself, an
// IPv6 address as its /64, the block one subscriber usually holds (RFC 6177), so that a client
// cannot multiply its share by hopping through its own block.
func AddressKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// Open returns the connections counted in total and from addr's AddressKey.
func (c *Conns) Open(addr netip.Addr) (total, fromIP int) {
	ip := AddressKey(addr)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.ips[ip]; e != nil {
		fromIP = e.open
	}
	return c.total, fromIP
}
