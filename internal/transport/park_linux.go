package transport

import (
	"errors"
	"log/slog"
	"syscall"
)

// poller is an epoll instance in which each parked descriptor is registered once
// (EPOLLONESHOT), its generation carried in the event's data so that a late event for a
// descriptor number since reused is recognised and ignored.
type poller struct{ epfd int }

func newPoller() (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &poller{epfd: fd}, nil
}

func (p *poller) add(fd int, gen uint32) error {
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR | syscall.EPOLLONESHOT,
		Fd:     int32(fd),
		Pad:    int32(gen),
	}
	return syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
}

func (p *poller) remove(fd int) {
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
}

// wait delivers events forever. It blocks an OS thread in epoll_wait, which the Go runtime
// accounts for like any blocking system call.
func (p *poller) wait(ready func(fd int, gen uint32)) {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			// Not expected on a valid epoll descriptor; parked streams then wake on their
			// timeouts or when closed.
			slog.Error("transport: epoll_wait failed; parked connections wake only on timeouts", "err", err)
			return
		}
		for _, ev := range events[:n] {
			ready(int(ev.Fd), uint32(ev.Pad))
		}
	}
}
