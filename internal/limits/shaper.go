package limits

import (
	"net"
	"time"
)

// ShapedConn limits the rate at which a connection is read, as ejabberd's shapers and
// Prosody's mod_limits do: a token bucket of Burst bytes refilled at Rate bytes per second.
//
// Reads happen on the connection's own goroutine, so waiting for tokens is a sleep on that
// goroutine: no extra goroutine, no lock held. A read takes at most Burst bytes and may leave the
// bucket in debt; the next read first sleeps the debt off. The longest sleep is thus Burst/Rate.
// While it sleeps the kernel's receive buffer fills and TCP flow control slows the sender, which
// is the point.
type ShapedConn struct {
	net.Conn
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
	sleep  func(time.Duration)
	now    func() time.Time
}

// Shape wraps c so that it is read at most rate bytes per second after an initial burst. A rate
// of 0 or less returns c itself; a burst below rate is raised to rate, so that one second's
// worth can always be read at once.
func Shape(c net.Conn, rate, burst int) net.Conn {
	if rate <= 0 {
		return c
	}
	burst = max(burst, rate)
	return &ShapedConn{Conn: c, rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: time.Now(), sleep: time.Sleep, now: time.Now}
}

// Read implements net.Conn.
func (s *ShapedConn) Read(p []byte) (int, error) {
	s.refill()
	if s.tokens < 1 {
		// Pay off the debt before reading more; the read deadline still bounds the read that
		// follows.
		wait := time.Duration((1 - s.tokens) / s.rate * float64(time.Second))
		s.sleep(wait)
		s.refill()
	}
	if len(p) > int(s.burst) {
		p = p[:int(s.burst)]
	}
	n, err := s.Conn.Read(p)
	s.tokens -= float64(n)
	return n, err
}

func (s *ShapedConn) refill() {
	now := s.now()
	if el := now.Sub(s.last); el > 0 {
		s.tokens = min(s.burst, s.tokens+el.Seconds()*s.rate)
	}
	s.last = now
}
