// Package transport holds what a stream needs of its connection beyond XML: an outbound queue
// drained by one writer goroutine, so that any goroutine can hand a session bytes without
// ever blocking on a slow peer, with a bound on what may wait.
package transport

import (
	"errors"
	"net"
	"sync"
	"time"
)

// ErrQueueFull is reported when a peer does not read fast enough and its queue passed the bound.
var ErrQueueFull = errors.New("transport: outbound queue full")

// ErrClosed is reported for writes after Close.
var ErrClosed = errors.New("transport: writer closed")

// idleBufferCap is the largest buffer kept while idle; larger ones are dropped so an idle
// session holds little memory after a burst.
const idleBufferCap = 4096

// Writer queues bytes for a connection and writes them from its own goroutine.
// Appends from any goroutine are cheap: they copy into the pending buffer under a mutex.
type Writer struct {
	mu       sync.Mutex
	cond     sync.Cond
	conn     net.Conn
	pending  []byte // bytes waiting to be written
	spare    []byte // the buffer being written, reused for the next swap
	maxQueue int
	closing  bool
	err      error
	done     chan struct{}
	onError  func(error)
	timeout  time.Duration
}

// NewWriter returns a writer for conn. maxQueue bounds pending bytes (0 means 1 MiB);
// writeTimeout bounds one write system call (0 means 60 s). onError is called once, from the
// writer goroutine, when the connection fails or the queue overflows.
func NewWriter(conn net.Conn, maxQueue int, writeTimeout time.Duration, onError func(error)) *Writer {
	if maxQueue <= 0 {
		maxQueue = 1 << 20
	}
	if writeTimeout <= 0 {
		writeTimeout = 60 * time.Second
	}
	w := &Writer{conn: conn, maxQueue: maxQueue, done: make(chan struct{}), onError: onError, timeout: writeTimeout}
	w.cond.L = &w.mu
	go w.run()
	return w
}

// Append queues the bytes produced by fill, which appends to the buffer it is given.
// Serializing straight into the queue avoids an intermediate copy.
func (w *Writer) Append(fill func([]byte) []byte) error {
	w.mu.Lock()
	if w.err != nil || w.closing {
		err := w.err
		w.mu.Unlock()
		if err == nil {
			err = ErrClosed
		}
		return err
	}
	w.pending = fill(w.pending)
	if len(w.pending) > w.maxQueue {
		w.err = ErrQueueFull
		w.pending = nil
		w.cond.Signal()
		w.mu.Unlock()
		return ErrQueueFull
	}
	w.cond.Signal()
	w.mu.Unlock()
	return nil
}

// Write queues b.
func (w *Writer) Write(b []byte) (int, error) {
	if err := w.Append(func(dst []byte) []byte { return append(dst, b...) }); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (w *Writer) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.pending) == 0 && w.err == nil && !w.closing {
			if cap(w.pending) > idleBufferCap {
				w.pending = nil
			}
			if cap(w.spare) > idleBufferCap {
				w.spare = nil
			}
			w.cond.Wait()
		}
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			w.fail(err)
			return
		}
		if len(w.pending) == 0 && w.closing {
			w.mu.Unlock()
			return
		}
		buf := w.pending
		w.pending = w.spare[:0]
		w.mu.Unlock()

		_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
		_, err := w.conn.Write(buf)
		w.mu.Lock()
		w.spare = buf[:0]
		if err != nil && w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
	}
}

func (w *Writer) fail(err error) {
	if w.onError != nil {
		w.onError(err)
	}
}

// Close writes what is queued (waiting at most timeout) and stops the writer. It does not close the connection.
func (w *Writer) Close(timeout time.Duration) {
	w.mu.Lock()
	w.closing = true
	w.cond.Signal()
	w.mu.Unlock()
	select {
	case <-w.done:
	case <-time.After(timeout):
		// The peer is not reading; unblock the write so the goroutine ends.
		_ = w.conn.SetWriteDeadline(time.Now())
		<-w.done
	}
}

// Err returns the writer's error, if any.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
