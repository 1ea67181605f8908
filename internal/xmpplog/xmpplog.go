// Package xmpplog implements Momentum's xmpp_logger: one line per stanza received
// (reception), per stanza written (delivery), and a periodic heartbeat, each shaped by a
// format of literal text and %macros.
//
// Logging never blocks the stanza path. The line is formatted by the caller, which is cheap
// and has to happen before the element changes, and then handed to a bounded queue that one
// goroutine per logger writes to the file. When the queue is full the line is dropped and
// counted; the count is reported in the server log once the writer catches up.
package xmpplog

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"impetus/internal/stanza"
)

// DefaultQueue is the number of lines a logger holds while its file is slow.
const DefaultQueue = 8192

// Options configure one logger instance; they mirror the xmpp_logger options.
type Options struct {
	// Name is the instance name, used in diagnostics.
	Name string
	// Path is the log file; Mode its permissions, applied whenever it is opened.
	Path string
	Mode os.FileMode
	// Heartbeat is the interval between heartbeat lines; 0 disables them.
	Heartbeat time.Duration
	// LogReception and LogDelivery select the events logged.
	LogReception bool
	LogDelivery  bool
	// The formats of the three kinds of line.
	ReceptionFormat string
	DeliveryFormat  string
	HeartbeatFormat string
	// Namespace is the macro namespace list; "" means the default.
	Namespace string
	// Queue bounds the lines waiting to be written; 0 means DefaultQueue.
	Queue int
	// Log receives the logger's own diagnostics: open and write failures, dropped lines.
	Log *slog.Logger
	// Now and Ticker replace the clock in tests. Ticker returns the channel heartbeats are
	// read from and a function that stops it.
	Now    func() time.Time
	Ticker func(d time.Duration) (<-chan time.Time, func())
}

// Logger is one running xmpp_logger instance.
type Logger struct {
	opts                       Options
	reception, delivery, heart *Format
	log                        *slog.Logger

	queue   chan []byte
	ctl     chan request
	done    chan struct{}
	dropped atomic.Uint64 // since the last report
	total   atomic.Uint64 // since the start
	closed  atomic.Bool
	once    sync.Once

	// Owned by the writer goroutine.
	f      *os.File
	w      *bufio.Writer
	failed bool
}

type op int

const (
	opSync op = iota
	opReopen
	opClose
)

type request struct {
	op    op
	reply chan error
}

// New checks the formats, opens the file and starts the writer.
func New(opts Options) (*Logger, error) {
	l := &Logger{opts: opts, log: opts.Log}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if l.reception, err = ParseFormat(opts.ReceptionFormat, opts.Namespace); err != nil {
		return nil, fmt.Errorf("log_reception_format: %w", err)
	}
	if l.delivery, err = ParseFormat(opts.DeliveryFormat, opts.Namespace); err != nil {
		return nil, fmt.Errorf("log_delivery_format: %w", err)
	}
	if l.heart, err = ParseFormat(opts.HeartbeatFormat, opts.Namespace); err != nil {
		return nil, fmt.Errorf("log_heartbeat_format: %w", err)
	}
	if l.opts.Now == nil {
		l.opts.Now = time.Now
	}
	if l.opts.Ticker == nil {
		l.opts.Ticker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	if l.opts.Mode == 0 {
		l.opts.Mode = 0o644
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	n := opts.Queue
	if n <= 0 {
		n = DefaultQueue
	}
	l.queue = make(chan []byte, n)
	l.ctl = make(chan request)
	l.done = make(chan struct{})
	go l.run()
	return l, nil
}

// Name returns the instance name.
func (l *Logger) Name() string { return l.opts.Name }

// Path returns the log file's path.
func (l *Logger) Path() string { return l.opts.Path }

// Dropped returns how many lines were dropped because the queue was full.
func (l *Logger) Dropped() uint64 { return l.total.Load() }

// StanzaReceived logs a reception; it implements observe.Observer.
func (l *Logger) StanzaReceived(remote string, el *stanza.Element) {
	if l.opts.LogReception {
		l.enqueue(l.reception, remote, el)
	}
}

// StanzaDelivered logs a delivery; it implements observe.Observer.
func (l *Logger) StanzaDelivered(remote string, el *stanza.Element) {
	if l.opts.LogDelivery {
		l.enqueue(l.delivery, remote, el)
	}
}

func (l *Logger) enqueue(f *Format, remote string, el *stanza.Element) {
	if l.closed.Load() {
		return
	}
	line := f.Append(make([]byte, 0, 128), l.opts.Now(), remote, el)
	line = append(line, '\n')
	select {
	case l.queue <- line:
	default:
		l.dropped.Add(1)
		l.total.Add(1)
	}
}

// Reopen closes and reopens the log file, for log rotation: after the old file was renamed,
// new lines go to a new file at the configured path. Queued lines go to the old file first.
func (l *Logger) Reopen() error { return l.call(opReopen) }

// Sync waits until every line queued before the call is written to the file.
func (l *Logger) Sync() error { return l.call(opSync) }

// Close writes the queued lines and closes the file. Later events are ignored.
func (l *Logger) Close() error {
	var err error
	l.once.Do(func() {
		err = l.call(opClose)
		l.closed.Store(true)
		<-l.done
	})
	return err
}

func (l *Logger) call(o op) error {
	r := request{op: o, reply: make(chan error, 1)}
	select {
	case l.ctl <- r:
		return <-r.reply
	case <-l.done:
		return errors.New("xmpplog: logger closed")
	}
}

// run is the writer goroutine: it owns the file.
func (l *Logger) run() {
	defer close(l.done)
	var tick <-chan time.Time
	if l.opts.Heartbeat > 0 {
		c, stop := l.opts.Ticker(l.opts.Heartbeat)
		defer stop()
		tick = c
	}
	for {
		select {
		case line := <-l.queue:
			l.write(line)
			if len(l.queue) == 0 {
				l.flush()
			}
		case t := <-tick:
			// Lines queued before the tick come first, so the file stays in time order.
			l.drain()
			l.write(append(l.heart.Append(nil, t, "", nil), '\n'))
			l.flush()
		case r := <-l.ctl:
			l.drain()
			var err error
			switch r.op {
			case opSync:
				err = l.flushErr()
			case opReopen:
				l.flush()
				l.f.Close()
				err = l.open()
				if err != nil {
					l.log.Error("xmpp_logger cannot reopen its file", "logger", l.opts.Name, "path", l.opts.Path, "err", err)
				}
			case opClose:
				err = l.flushErr()
				if l.f != nil {
					if cerr := l.f.Close(); err == nil {
						err = cerr
					}
				}
				l.f = nil
				r.reply <- err
				return
			}
			r.reply <- err
		}
	}
}

// drain writes whatever is queued, so that a request sees every earlier line.
func (l *Logger) drain() {
	for {
		select {
		case line := <-l.queue:
			l.write(line)
		default:
			return
		}
	}
}

func (l *Logger) write(line []byte) {
	l.reportDrops()
	if l.w == nil {
		return
	}
	if _, err := l.w.Write(line); err != nil {
		l.writeFailed(err)
	}
}

func (l *Logger) flush() { _ = l.flushErr() }

func (l *Logger) flushErr() error {
	l.reportDrops()
	if l.w == nil {
		return errors.New("xmpplog: no log file open")
	}
	if err := l.w.Flush(); err != nil {
		l.writeFailed(err)
		// A failed bufio.Writer keeps failing; start over so the next flush retries.
		l.w = bufio.NewWriterSize(l.f, 32<<10)
		return err
	}
	l.failed = false
	return nil
}

// writeFailed reports a write error once per run of failures, not once per line.
func (l *Logger) writeFailed(err error) {
	if !l.failed {
		l.failed = true
		l.log.Error("xmpp_logger write failed", "logger", l.opts.Name, "path", l.opts.Path, "err", err)
	}
}

// reportDrops logs the lines dropped since the last report.
func (l *Logger) reportDrops() {
	if n := l.dropped.Swap(0); n > 0 {
		l.log.Warn("xmpp_logger queue full; lines dropped", "logger", l.opts.Name, "dropped", n, "dropped_total", l.total.Load())
	}
}

// open opens the file for appending and applies the configured mode.
func (l *Logger) open() error {
	f, err := os.OpenFile(l.opts.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, l.opts.Mode)
	if err != nil {
		return fmt.Errorf("xmpplog: %w", err)
	}
	// The umask narrows the mode at creation, and an existing file keeps its own; logmode is
	// what the operator asked for either way.
	if err := f.Chmod(l.opts.Mode); err != nil {
		l.log.Warn("xmpp_logger cannot set the log file mode", "logger", l.opts.Name, "path", l.opts.Path, "err", err)
	}
	l.f = f
	l.w = bufio.NewWriterSize(f, 32<<10)
	l.failed = false
	return nil
}
