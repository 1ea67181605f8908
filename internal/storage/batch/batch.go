// Package batch is the group commit of archive appends. Many sessions append to the message
// archive at the same time, each from its own read loop; writing each item in its own
// transaction costs one commit and, on SQLite with synchronous=FULL, one fsync per item, paid
// inside the sender's read loop. A Writer instead queues the appends and one goroutine writes
// whatever has gathered with a single Archive.AppendMany: one transaction and one fsync for
// every item that arrived while the previous commit was running.
//
// Durability contract: Enqueue returns once the item is queued, before it is durable. A queued
// item is committed by the next batch (normally within the time of one commit, plus Delay);
// Flush waits for every item queued before it, and Close flushes everything before it returns.
// A crash of the process or the machine loses the items still queued, never an item of a batch
// whose commit returned. The archive's readers see the queue as if it were already written:
// the Archive a Writer returns waits for earlier queued items before Get, Query, Count, Delete,
// Purge and DeleteOlder.
//
// The queue is bounded: when MaxQueue items wait, Enqueue blocks until a commit makes room or
// its context ends, which slows the senders down to what the database can write instead of
// growing memory without limit.
package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"impetus/internal/storage"
	"impetus/internal/storage/internal/common"
)

// Defaults of Options. A batch's cost is dominated by the index pages it changes, about one
// per user and per-user index whatever the number of rows: on SQLite, batches of 4096 archive
// rows over 1000 users cost half the CPU per row of batches of 256 (docs/performance.md).
const (
	DefaultMaxBatch     = 4096
	DefaultMaxQueue     = 4 * DefaultMaxBatch
	DefaultDelay        = 10 * time.Millisecond
	DefaultAttempts     = 3
	DefaultRetryBackoff = 100 * time.Millisecond
	DefaultMaxWait      = 10 * time.Second
)

// ErrQueueFull is returned by Enqueue when the queue stayed full for MaxWait.
var ErrQueueFull = errors.New("batch: archive queue full")

// ErrClosed is returned by Enqueue after Close.
var ErrClosed = errors.New("batch: writer closed")

// Options tune a Writer. The zero value is usable.
type Options struct {
	// MaxBatch bounds the items written in one transaction (DefaultMaxBatch when zero or
	// less). A larger batch amortises more, but holds the database's write lock longer.
	MaxBatch int
	// MaxQueue bounds the items queued or being written (DefaultMaxQueue when zero or less);
	// Enqueue waits when it is reached.
	MaxQueue int
	// MaxWait bounds how long Enqueue waits for room in a full queue (DefaultMaxWait when
	// zero or less). Past it Enqueue gives up with ErrQueueFull: a database that stopped
	// answering then costs archive copies, not the delivery of every message.
	MaxWait time.Duration
	// Delay is how long the writer waits, after the first item of a batch arrives, for more
	// to join it, unless a full batch is queued already. It delays the commit, not the
	// message: items are delivered before they are written. Zero writes at once; under load,
	// batches still form from the items that arrive while the previous commit runs, and a
	// delay makes fewer, larger commits at moderate rates. Negative means zero.
	Delay time.Duration
	// Attempts is how often a batch is tried before its items are given up
	// (DefaultAttempts when zero or less). Retrying is safe because AppendMany skips items
	// whose id is already stored.
	Attempts int
	// RetryBackoff is the wait before the second attempt, doubled for each further one
	// (DefaultRetryBackoff when zero or less).
	RetryBackoff time.Duration
	// OnError, when set, is called by the writer goroutine with the error of a batch that
	// could not be written after every attempt and the number of items lost with it.
	OnError func(err error, lost int)
}

// Writer queues appends to one Archive and writes them in batches. Its methods are safe for
// concurrent use.
type Writer struct {
	store storage.Archive
	opts  Options

	mu       sync.Mutex
	pending  []storage.Entry // queued, not yet taken by the writer goroutine
	spare    []storage.Entry // the previous batch's array, reused for the next queue
	inflight int             // items taken and being written
	queued   uint64          // items ever queued
	finished uint64          // items ever written or given up; the queue is FIFO
	progress chan struct{}   // closed and replaced whenever finished grows
	closed   bool

	wake chan struct{} // capacity one: there is something to write
	quit chan struct{} // closed by Close: write what is left and stop
	done chan struct{} // closed when the writer goroutine has ended

	// ctx bounds the writer's database calls; Close cancels it when its own context ends
	// before the queue is empty.
	ctx    context.Context
	cancel context.CancelFunc
}

// New starts a Writer in front of store. Close must be called to write what is queued and
// stop its goroutine.
func New(store storage.Archive, opts Options) *Writer {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = DefaultMaxQueue
	}
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = DefaultRetryBackoff
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	w := &Writer{
		store:    store,
		opts:     opts,
		progress: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w
}

// Enqueue queues item for user's archive and returns its id, generated now when item.ID is
// empty; a zero item.Time becomes the current time, so the archive keeps the order of arrival.
// The item is durable once a later Flush or Close returns. Enqueue waits only while the queue
// is full, until ctx ends or for MaxWait (ErrQueueFull). An invalid user or item yields
// storage.ErrInvalid at once.
func (w *Writer) Enqueue(ctx context.Context, user string, item storage.Item) (string, error) {
	if err := common.User(user); err != nil {
		return "", err
	}
	item, err := common.PrepareItem(item, time.Now())
	if err != nil {
		return "", err
	}
	var expired <-chan time.Time // set when Enqueue first has to wait
	w.mu.Lock()
	for {
		if w.closed {
			w.mu.Unlock()
			return "", ErrClosed
		}
		if len(w.pending)+w.inflight < w.opts.MaxQueue {
			break
		}
		ch := w.progress
		w.mu.Unlock()
		if expired == nil {
			t := time.NewTimer(w.opts.MaxWait)
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-ch:
		case <-expired:
			return "", fmt.Errorf("%w for %v", ErrQueueFull, w.opts.MaxWait)
		case <-ctx.Done():
			return "", fmt.Errorf("batch: waiting for room in the archive queue: %w", ctx.Err())
		}
		w.mu.Lock()
	}
	w.pending = append(w.pending, storage.Entry{User: user, Item: item})
	w.queued++
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // the writer has been woken already
	}
	return item.ID, nil
}

// Flush waits until every item queued before the call has been written (or given up after
// its attempts), or until ctx ends.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.queued
	for w.finished < target {
		ch := w.progress
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("batch: flush: %w", ctx.Err())
		}
		w.mu.Lock()
	}
	w.mu.Unlock()
	return nil
}

// Pending returns the number of items queued or being written.
func (w *Writer) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) + w.inflight
}

// Close stops accepting items, writes everything queued and stops the writer goroutine. If
// ctx ends first, the write in progress is cancelled, the items not written are reported to
// OnError, and ctx's error is returned. Close may be called more than once.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.quit)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.cancel()
		<-w.done
		return fmt.Errorf("batch: close: %w", ctx.Err())
	}
}

// run is the writer goroutine: it takes up to MaxBatch queued items at a time and writes them
// with one AppendMany, until Close has been called and the queue is empty.
func (w *Writer) run() {
	defer close(w.done)
	defer w.cancel()
	var timer *time.Timer
	for {
		select {
		case <-w.wake:
		case <-w.quit:
		}
		if w.opts.Delay > 0 && !w.quitting() && !w.full() {
			if timer == nil {
				timer = time.NewTimer(w.opts.Delay)
			} else {
				timer.Reset(w.opts.Delay)
			}
			select {
			case <-timer.C:
			case <-w.quit:
				timer.Stop()
			}
		}
		for {
			batch := w.take()
			if len(batch) == 0 {
				break
			}
			w.write(batch)
			w.finish(batch)
		}
		if w.quitting() {
			w.mu.Lock()
			empty := len(w.pending) == 0
			w.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

// full reports whether a whole batch is queued.
func (w *Writer) full() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) >= w.opts.MaxBatch
}

func (w *Writer) quitting() bool {
	select {
	case <-w.quit:
		return true
	default:
		return false
	}
}

// take removes up to MaxBatch items from the head of the queue.
func (w *Writer) take() []storage.Entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(w.pending)
	if n == 0 {
		return nil
	}
	var batch []storage.Entry
	if n <= w.opts.MaxBatch {
		// The common case: the whole queue is one batch. Swap arrays instead of copying, and
		// let the next queue reuse the previous batch's array.
		batch = w.pending
		w.pending = w.spare[:0]
		w.spare = nil
	} else {
		batch = make([]storage.Entry, w.opts.MaxBatch)
		copy(batch, w.pending)
		rest := copy(w.pending, w.pending[w.opts.MaxBatch:])
		clear(w.pending[rest:])
		w.pending = w.pending[:rest]
	}
	w.inflight = len(batch)
	return batch
}

// finish records a written batch, wakes the senders and flushes waiting for it and keeps the
// batch's array for reuse.
func (w *Writer) finish(batch []storage.Entry) {
	w.mu.Lock()
	w.finished += uint64(len(batch))
	w.inflight = 0
	close(w.progress)
	w.progress = make(chan struct{})
	if w.spare == nil && cap(batch) <= 4*w.opts.MaxBatch {
		clear(batch) // drop the references to the items' data
		w.spare = batch[:0]
	}
	w.mu.Unlock()
}

// write stores batch, retrying on error; AppendMany skips items already stored, so a batch
// whose commit failed ambiguously is not written twice.
func (w *Writer) write(batch []storage.Entry) {
	backoff := w.opts.RetryBackoff
	var err error
	for attempt := 1; ; attempt++ {
		if _, err = w.store.AppendMany(w.ctx, batch); err == nil {
			return
		}
		if attempt >= w.opts.Attempts || w.ctx.Err() != nil || errors.Is(err, storage.ErrInvalid) {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-w.ctx.Done():
			t.Stop()
		}
		backoff *= 2
	}
	if w.opts.OnError != nil {
		w.opts.OnError(err, len(batch))
	}
}

// Archive returns store as seen through the writer: appends made with Enqueue are visible to
// its reads, deletes and purges, which first wait for the items queued before them. Append
// itself stays synchronous and bypasses the queue; AppendMany writes directly too.
func (w *Writer) Archive() storage.Archive { return archive{w.store, w} }

type archive struct {
	storage.Archive
	w *Writer
}

func (a archive) Get(ctx context.Context, user, id string) (storage.Item, error) {
	if err := a.w.Flush(ctx); err != nil {
		return storage.Item{}, err
	}
	return a.Archive.Get(ctx, user, id)
}

func (a archive) Query(ctx context.Context, user string, q storage.Query) ([]storage.Item, storage.Page, error) {
	if err := a.w.Flush(ctx); err != nil {
		return nil, storage.Page{}, err
	}
	return a.Archive.Query(ctx, user, q)
}

func (a archive) Delete(ctx context.Context, user string, ids ...string) error {
	if err := a.w.Flush(ctx); err != nil {
		return err
	}
	return a.Archive.Delete(ctx, user, ids...)
}

func (a archive) Count(ctx context.Context, user string) (int, error) {
	if err := a.w.Flush(ctx); err != nil {
		return 0, err
	}
	return a.Archive.Count(ctx, user)
}

func (a archive) Purge(ctx context.Context, user string) error {
	if err := a.w.Flush(ctx); err != nil {
		return err
	}
	return a.Archive.Purge(ctx, user)
}

func (a archive) DeleteOlder(ctx context.Context, before time.Time) (int64, error) {
	if err := a.w.Flush(ctx); err != nil {
		return 0, err
	}
	return a.Archive.DeleteOlder(ctx, before)
}
