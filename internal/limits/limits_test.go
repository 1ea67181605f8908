package limits

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// clock is a settable time source, so that windows and lapses are tested without waiting.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestConnsLimits(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c := NewConns(time.Minute)
	c.now = clk.now
	a := netip.MustParseAddr("127.0.0.2")
	b := netip.MustParseAddr("127.0.0.3")
	for i := 0; i < 2; i++ {
		if ok, by := c.Admit(a, 3, 2); !ok {
			t.Fatalf("admission %d from a refused by %s", i, by)
		}
	}
	if ok, by := c.Admit(a, 3, 2); ok || by != "max_connections_per_ip" {
		t.Fatalf("third from a: %v %q, want refusal by max_connections_per_ip", ok, by)
	}
	if ok, _ := c.Admit(b, 3, 2); !ok {
		t.Fatal("first from b refused")
	}
	if ok, by := c.Admit(b, 3, 2); ok || by != "max_connections" {
		t.Fatalf("fourth in all: %v %q, want refusal by max_connections", ok, by)
	}
	_, rel := c.Claim(a)
	rel()
	rel() // a second call must not release another connection
	if total, fromA := c.Open(a); total != 2 || fromA != 1 {
		t.Fatalf("after one release: total %d, from a %d; want 2, 1", total, fromA)
	}
}

// TestConnsLapse checks that an admission no handler claims (a connection that never sent a
// header) is released once, after the pending time, and that a claimed one is not.
func TestConnsLapse(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c := NewConns(time.Minute)
	c.now = clk.now
	a := netip.MustParseAddr("::1")
	c.Admit(a, 0, 0)
	c.Admit(a, 0, 0)
	_, rel := c.Claim(a)
	clk.advance(2 * time.Minute)
	if total, _ := c.Open(a); total != 2 {
		t.Fatalf("before any call after the lapse: total %d, want 2", total)
	}
	c.Admit(netip.MustParseAddr("127.0.0.1"), 0, 0)
	if total, fromA := c.Open(a); total != 2 || fromA != 1 {
		t.Fatalf("after the lapse: total %d, from a %d; want 2, 1", total, fromA)
	}
	rel()
	if total, fromA := c.Open(a); total != 1 || fromA != 0 {
		t.Fatalf("after the release: total %d, from a %d; want 1, 0", total, fromA)
	}
	if len(c.ips) != 1 {
		t.Fatalf("%d addresses remembered, want 1", len(c.ips))
	}
	// A claim whose admission already lapsed still balances.
	clk.advance(2 * time.Minute)
	_, rel2 := c.Claim(a)
	rel2()
	if total, _ := c.Open(a); total != 0 {
		t.Fatalf("total %d after everything left, want 0", total)
	}
}

// TestAddressKey checks that IPv6 addresses of one /64 share their limits.
func TestAddressKey(t *testing.T) {
	c := NewConns(time.Minute)
	if ok, _ := c.Admit(netip.MustParseAddr("2001:db8:1:2::1"), 0, 1); !ok {
		t.Fatal("first refused")
	}
	if ok, _ := c.Admit(netip.MustParseAddr("2001:db8:1:2:ffff::9"), 0, 1); ok {
		t.Fatal("a second address of the same /64 got its own share")
	}
	if ok, _ := c.Admit(netip.MustParseAddr("2001:db8:1:3::1"), 0, 1); !ok {
		t.Fatal("another /64 refused")
	}
	if ok, _ := c.Admit(netip.MustParseAddr("::ffff:10.0.0.1"), 0, 1); !ok {
		t.Fatal("a mapped IPv4 address refused")
	}
	if ok, _ := c.Admit(netip.MustParseAddr("10.0.0.1"), 0, 1); ok {
		t.Fatal("an IPv4 address and its mapped form counted apart")
	}
}

func TestAuthThrottle(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	th := NewAuthThrottle()
	th.now = clk.now
	for i := 0; i < 3; i++ {
		if th.Blocked("ip:1", 3, time.Minute) {
			t.Fatalf("blocked after %d failures", i)
		}
		th.Fail("ip:1", 3, time.Minute)
		clk.advance(time.Second)
	}
	if !th.Blocked("ip:1", 3, time.Minute) {
		t.Fatal("not blocked after 3 failures")
	}
	if th.Blocked("ip:2", 3, time.Minute) {
		t.Fatal("another key is blocked")
	}
	clk.advance(time.Minute)
	if th.Blocked("ip:1", 3, time.Minute) {
		t.Fatal("still blocked after the window")
	}
	if th.Len() != 0 {
		t.Fatalf("%d keys remembered after the window, want 0", th.Len())
	}
}

func TestAuthThrottleBounded(t *testing.T) {
	th := NewAuthThrottle()
	th.MaxKeys = 100
	for i := 0; i < 10000; i++ {
		th.Fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), 5, time.Hour)
		th.Fail("same", 5, time.Hour)
	}
	if n := th.Len(); n > 100 {
		t.Fatalf("%d keys remembered, bound 100", n)
	}
	if n := len(th.keys["same"]); n > 5 {
		t.Fatalf("%d failures kept for one key, limit 5", n)
	}
}

// TestShape checks the token bucket's accounting with a fake clock: the sleeps asked for add
// up to what the rate requires for the bytes read beyond the burst.
func TestShape(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	go func() {
		buf := make([]byte, 1000)
		for i := 0; i < 10; i++ {
			if _, err := cli.Write(buf); err != nil {
				return
			}
		}
		cli.Close()
	}()
	clk := &clock{t: time.Unix(1000, 0)}
	sc := Shape(srv, 1000, 2000).(*ShapedConn)
	sc.now = clk.now
	sc.last = clk.t
	var slept time.Duration
	sc.sleep = func(d time.Duration) { slept += d; clk.advance(d) }
	n, err := io.Copy(io.Discard, sc)
	if err != nil || n != 10000 {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	// 10000 bytes at 1000 B/s with a 2000-byte burst: about 8 s of waiting, never much less.
	if slept < 7*time.Second || slept > 9*time.Second {
		t.Fatalf("slept %v for 10000 bytes at 1000 B/s with a 2000 B burst, want about 8s", slept)
	}
	if c := Shape(srv, 0, 0); c != net.Conn(srv) {
		t.Fatal("a rate of 0 must not wrap the connection")
	}
}
