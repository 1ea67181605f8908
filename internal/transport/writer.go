// Package transport holds what a stream needs of its connection beyond XML: an outbound queue
// drained by a writer goroutine, so that any goroutine can hand a session bytes without ever
// blocking on a slow peer, with a bound on what may wait.
//
// The writer goroutine exists only while there is something to write: an idle session, which
// is most sessions of a large server, holds neither a goroutine stack nor a buffer for output.
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

// keepBufferCap is the largest buffer a running writer reuses between writes; larger ones,
// left by a burst, are dropped so a busy session's memory follows its current traffic.
const keepBufferCap = 4096

// Writer queues bytes for a connection and writes them from a goroutine that runs while the
// queue is not empty. Appends from any goroutine are cheap: they copy into the pending buffer
// under a mutex, and the first append to an empty queue starts the goroutine.
type Writer struct {
	mu       sync.Mutex
	conn     net.Conn
	pending  []byte // bytes waiting to be written
	spare    []byte // the buffer being written, reused for the next swap while running
	maxQueue int
	running  bool // a goroutine is draining the queue
	closing  bool
	err      error
	exited   chan struct{} // closed when the running goroutine ends, once Close waits for it
	onError  func(error)
	timeout  time.Duration
}

// NewWriter returns a writer for conn. maxQueue bounds pending bytes (0 means 1 MiB);
// writeTimeout bounds one write system call (0 means 60 s). onError is called once, from a
// writer goroutine, when the connection fails or the queue overflows.
func NewWriter(conn net.Conn, maxQueue int, writeTimeout time.Duration, onError func(error)) *Writer {
	if maxQueue <= 0 {
		maxQueue = 1 << 20
	}
	if writeTimeout <= 0 {
		writeTimeout = 60 * time.Second
	}
	return &Writer{conn: conn, maxQueue: maxQueue, onError: onError, timeout: writeTimeout}
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
		// The error is reported from a writer goroutine, never from the caller's: onError
		// may write to the connection.
		w.startLocked()
		w.mu.Unlock()
		return ErrQueueFull
	}
	w.startLocked()
	w.mu.Unlock()
	return nil
}

// startLocked starts the writer goroutine unless one runs. Called with mu held.
func (w *Writer) startLocked() {
	if !w.running {
		w.running = true
		go w.run()
	}
}

// Write queues b.
func (w *Writer) Write(b []byte) (int, error) {
	if err := w.Append(func(dst []byte) []byte { return append(dst, b...) }); err != nil {
		return 0, err
	}
	return len(b), nil
}

// run writes until the queue is empty, then ends.
func (w *Writer) run() {
	for {
		w.mu.Lock()
		if w.err != nil {
			err := w.err
			w.pending, w.spare = nil, nil
			w.mu.Unlock()
			// Close waits for the report, as it waits for the writes.
			w.fail(err)
			w.mu.Lock()
			w.stopLocked()
			w.mu.Unlock()
			return
		}
		if len(w.pending) == 0 {
			// Nothing left: drop the buffers with the goroutine, so an idle session keeps
			// neither. The next append allocates a buffer sized for what it queues.
			w.pending, w.spare = nil, nil
			w.stopLocked()
			w.mu.Unlock()
			return
		}
		buf := w.pending
		w.pending = w.spare[:0]
		w.spare = nil
		w.mu.Unlock()

		_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
		_, err := w.conn.Write(buf)
		w.mu.Lock()
		if cap(buf) <= keepBufferCap {
			w.spare = buf[:0]
		}
		if err != nil && w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
	}
}

// stopLocked marks the goroutine ended and wakes Close. Called with mu held.
func (w *Writer) stopLocked() {
	w.running = false
	if w.exited != nil {
		close(w.exited)
		w.exited = nil
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
	if !w.running {
		w.mu.Unlock()
		return
	}
	if w.exited == nil {
		w.exited = make(chan struct{})
	}
	exited := w.exited
	w.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		// The peer is not reading; unblock the write so the goroutine ends.
		_ = w.conn.SetWriteDeadline(time.Now())
		<-exited
	}
}

// Err returns the writer's error, if any.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
