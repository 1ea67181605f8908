package httpd

import (
	"net"
	"sync"
)

// limitListener bounds open connections in total and per client IP address. A connection over
// either bound is closed as soon as it is accepted, before anything is read from it.
type limitListener struct {
	net.Listener
	max, perIP int // 0 means no bound
	mu         sync.Mutex
	total      int
	byIP       map[string]int
}

func newLimitListener(l net.Listener, max, perIP int) net.Listener {
	if max <= 0 && perIP <= 0 {
		return l
	}
	return &limitListener{Listener: l, max: max, perIP: perIP, byIP: map[string]int{}}
}

// Accept implements net.Listener.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := c.RemoteAddr().String()
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		l.mu.Lock()
		if (l.max > 0 && l.total >= l.max) || (l.perIP > 0 && l.byIP[ip] >= l.perIP) {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.total++
		l.byIP[ip]++
		l.mu.Unlock()
		return &limitConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *limitListener) release(ip string) {
	l.mu.Lock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
	l.mu.Unlock()
}

type limitConn struct {
	net.Conn
	l    *limitListener
	ip   string
	once sync.Once
}

// Close implements net.Conn and gives the connection's place back once.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
