package transport

import (
	"sync"
	"syscall"
	"time"
)

// A Poller waits for input on parked connections, so that an idle stream holds no goroutine:
// a goroutine blocked in a read keeps a stack of at least 8 KiB once a stream has been
// negotiated on it, which is most of what an idle session costs. A stream parks its connection
// when it has read nothing for a while and has nothing buffered, and its goroutine returns;
// when the connection becomes readable, its timeout passes, or Wake is called, the poller
// calls the stream's wake function on a new goroutine, which reads on.
//
// The Go runtime's own network poller is not reachable without a goroutine waiting in it, so
// the poller keeps its own epoll instance (on Linux; elsewhere nothing parks and streams keep
// their goroutines). One goroutine waits in epoll_wait for all parked connections.
type Poller struct {
	impl *poller

	mu     sync.Mutex
	parked map[int]*Parked // by file descriptor
	gen    uint32
}

// Parked is a connection waiting in a Poller.
type Parked struct {
	p     *Poller
	fd    int
	gen   uint32
	wake  func()
	timer *time.Timer
}

var (
	defaultPoller     *Poller
	defaultPollerOnce sync.Once
)

// DefaultPoller returns the process's poller, or nil where connections cannot be parked.
func DefaultPoller() *Poller {
	defaultPollerOnce.Do(func() {
		impl, err := newPoller()
		if err != nil {
			return
		}
		defaultPoller = &Poller{impl: impl, parked: make(map[int]*Parked)}
		go defaultPoller.run()
	})
	return defaultPoller
}

// Park registers conn, which must have nothing buffered above the socket, and returns at once.
// wake runs on a new goroutine when conn becomes readable or closed, when timeout passes (if
// positive), or when Wake is called, whichever is first, and only once. Park returns nil when
// conn cannot be parked (it is not a socket); the caller then reads as usual.
//
// Whoever closes a parked connection must call Wake first: a closed descriptor leaves the
// epoll set without an event, and the stream would never learn that it ended.
func (p *Poller) Park(conn syscall.Conn, timeout time.Duration, wake func()) *Parked {
	if p == nil {
		return nil
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil
	}
	var pk *Parked
	cerr := rc.Control(func(fd uintptr) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.gen++
		k := &Parked{p: p, fd: int(fd), gen: p.gen, wake: wake}
		if timeout > 0 {
			// Set under the lock, so a timer that fires at once finds the registration.
			k.timer = time.AfterFunc(timeout, func() { k.Wake() })
		}
		if err := p.impl.add(k.fd, k.gen); err != nil {
			if k.timer != nil {
				k.timer.Stop()
			}
			return
		}
		p.parked[k.fd] = k
		pk = k
	})
	if cerr != nil || pk == nil {
		return nil
	}
	return pk
}

// Wake takes the connection out of the poller and runs its wake function on a new goroutine,
// unless input or a timeout already did. It reports whether it did.
func (k *Parked) Wake() bool {
	if !k.p.take(k.fd, k.gen) {
		return false
	}
	k.start()
	return true
}

func (k *Parked) start() {
	if k.timer != nil {
		k.timer.Stop()
	}
	go k.wake()
}

// take removes the registration of fd if it is still generation gen. The descriptor is
// removed from the epoll set under the lock, while its owner cannot have closed it yet (it
// calls Wake first), so a number reused by a new connection is never touched.
func (p *Poller) take(fd int, gen uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.parked[fd]
	if !ok || k.gen != gen {
		return false
	}
	delete(p.parked, fd)
	p.impl.remove(fd)
	return true
}

// Parked reports how many connections wait in the poller.
func (p *Poller) Parked() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

func (p *Poller) run() {
	p.impl.wait(func(fd int, gen uint32) {
		p.mu.Lock()
		k, ok := p.parked[fd]
		if ok && k.gen == gen {
			delete(p.parked, fd)
			p.impl.remove(fd)
		} else {
			k = nil
		}
		p.mu.Unlock()
		if k != nil {
			k.start()
		}
	})
}
