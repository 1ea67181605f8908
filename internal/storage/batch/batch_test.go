package batch_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"impetus/internal/storage"
	"impetus/internal/storage/batch"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

// gated wraps an archive so that a test decides when each AppendMany may proceed and can fail
// chosen attempts.
type gated struct {
	storage.Archive
	mu      sync.Mutex
	calls   []int         // sizes of the AppendMany calls
	gate    chan struct{} // when set, each call takes one token first
	entered chan struct{} // signalled when a call starts
	fail    func(call int) error
	after   bool // fail after writing, like a commit whose outcome is unknown
}

func (g *gated) AppendMany(ctx context.Context, entries []storage.Entry) (int, error) {
	g.mu.Lock()
	g.calls = append(g.calls, len(entries))
	call := len(g.calls)
	g.mu.Unlock()
	if g.entered != nil {
		g.entered <- struct{}{}
	}
	if g.gate != nil {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	var err error
	if g.fail != nil {
		err = g.fail(call)
	}
	if err != nil && !g.after {
		return 0, err
	}
	n, werr := g.Archive.AppendMany(ctx, entries)
	if err != nil {
		return 0, err
	}
	return n, werr
}

func (g *gated) sizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.calls...)
}

func newMemory(t *testing.T) storage.Archive {
	t.Helper()
	b := memory.New()
	t.Cleanup(func() { b.Close() })
	return b.Archive("mam")
}

func closeWriter(t *testing.T, w *batch.Writer) {
	t.Helper()
	if err := w.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestConcurrentEnqueueReadYourWrites(t *testing.T) {
	ctx := t.Context()
	w := batch.New(newMemory(t), batch.Options{MaxBatch: 7})
	defer closeWriter(t, w)
	a := w.Archive()
	var wg sync.WaitGroup
	for s := range 8 {
		wg.Go(func() {
			for i := range 100 {
				user := fmt.Sprintf("u%d@example.com", s)
				if _, err := w.Enqueue(ctx, user, storage.Item{With: "peer@example.com", Data: fmt.Appendf(nil, "%d", i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// No Flush: the archive view waits for what was queued before the read.
	for s := range 8 {
		user := fmt.Sprintf("u%d@example.com", s)
		items, _, err := a.Query(ctx, user, storage.Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != 100 {
			t.Fatalf("%s has %d items, want 100", user, len(items))
		}
		// One sender's items keep their order.
		for i, it := range items {
			if string(it.Data) != fmt.Sprint(i) {
				t.Fatalf("%s item %d is %q", user, i, it.Data)
			}
		}
	}
	if n := w.Pending(); n != 0 {
		t.Fatalf("Pending after reads = %d", n)
	}
}

func TestItemsQueuedDuringACommitShareTheNext(t *testing.T) {
	ctx := t.Context()
	g := &gated{Archive: newMemory(t), gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	w := batch.New(g, batch.Options{})
	defer closeWriter(t, w)
	if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the first commit is running
	for range 300 {
		if _, err := w.Enqueue(ctx, "b@example.com", storage.Item{}); err != nil {
			t.Fatal(err)
		}
	}
	g.gate <- struct{}{}
	<-g.entered
	g.gate <- struct{}{}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := g.sizes(); len(got) != 2 || got[0] != 1 || got[1] != 300 {
		t.Fatalf("AppendMany calls = %v, want [1 300]", got)
	}
	close(g.gate) // let Close through
}

func TestMaxBatchSplits(t *testing.T) {
	ctx := t.Context()
	g := &gated{Archive: newMemory(t), gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	w := batch.New(g, batch.Options{MaxBatch: 100})
	if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	for range 250 {
		if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); err != nil {
			t.Fatal(err)
		}
	}
	close(g.gate)
	closeWriter(t, w)
	if got := g.sizes(); fmt.Sprint(got) != "[1 100 100 50]" {
		t.Fatalf("AppendMany calls = %v, want [1 100 100 50]", got)
	}
	if n, _ := g.Count(ctx, "a@example.com"); n != 251 {
		t.Fatalf("stored %d items", n)
	}
}

func TestBackpressure(t *testing.T) {
	ctx := t.Context()
	g := &gated{Archive: newMemory(t), gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	w := batch.New(g, batch.Options{MaxQueue: 3})
	for range 3 {
		if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); err != nil {
			t.Fatal(err)
		}
	}
	<-g.entered // a commit holds some of them; three are queued or in flight
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := w.Enqueue(cancelled, "a@example.com", storage.Item{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Enqueue on a full queue with a cancelled context: %v", err)
	}
	// A sender waiting for room proceeds once the commit finishes.
	done := make(chan error, 1)
	go func() {
		_, err := w.Enqueue(ctx, "a@example.com", storage.Item{})
		done <- err
	}()
	close(g.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	closeWriter(t, w)
	if n, _ := g.Count(ctx, "a@example.com"); n != 4 {
		t.Fatalf("stored %d items, want 4", n)
	}
}

func TestFullQueueWaitIsBounded(t *testing.T) {
	ctx := t.Context()
	g := &gated{Archive: newMemory(t), gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	w := batch.New(g, batch.Options{MaxQueue: 1, MaxWait: 1})
	if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the database hangs
	if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); !errors.Is(err, batch.ErrQueueFull) {
		t.Fatalf("Enqueue while the writer hangs: %v, want ErrQueueFull", err)
	}
	close(g.gate)
	closeWriter(t, w)
}

func TestRetryAfterUnclearCommitDoesNotDuplicate(t *testing.T) {
	ctx := t.Context()
	g := &gated{Archive: newMemory(t), after: true, fail: func(call int) error {
		if call == 1 {
			return errors.New("connection lost during commit")
		}
		return nil
	}}
	var lost int
	w := batch.New(g, batch.Options{RetryBackoff: 1, OnError: func(error, int) { lost++ }})
	for range 5 {
		if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); err != nil {
			t.Fatal(err)
		}
	}
	closeWriter(t, w)
	if n, _ := g.Count(ctx, "a@example.com"); n != 5 || lost != 0 {
		t.Fatalf("stored %d items, lost %d; want 5 and 0 (calls %v)", n, lost, g.sizes())
	}
}

func TestGiveUpReportsLoss(t *testing.T) {
	ctx := t.Context()
	broken := errors.New("disk full")
	g := &gated{Archive: newMemory(t), fail: func(int) error { return broken }}
	var mu sync.Mutex
	var lost int
	var last error
	w := batch.New(g, batch.Options{Attempts: 2, RetryBackoff: 1, OnError: func(err error, n int) {
		mu.Lock()
		lost += n
		last = err
		mu.Unlock()
	}})
	defer closeWriter(t, w)
	for range 4 {
		if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); err != nil {
			t.Fatal(err)
		}
	}
	// Flush returns once the items are given up, it does not hang on a broken database.
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if lost != 4 || !errors.Is(last, broken) {
		t.Fatalf("OnError saw %d lost items, last error %v", lost, last)
	}
	if calls := len(g.sizes()); calls%2 != 0 {
		t.Fatalf("%d AppendMany calls: each batch should be tried twice", calls)
	}
}

func TestCloseTimeoutReportsUnwritten(t *testing.T) {
	ctx := t.Context()
	g := &gated{Archive: newMemory(t), gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	var lost int
	w := batch.New(g, batch.Options{Attempts: 1, OnError: func(_ error, n int) { lost += n }})
	for range 3 {
		if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); err != nil {
			t.Fatal(err)
		}
	}
	<-g.entered
	expired, cancel := context.WithCancel(ctx)
	cancel()
	if err := w.Close(expired); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close with an ended context while a commit hangs: %v", err)
	}
	if lost != 3 {
		t.Fatalf("OnError reported %d lost items, want 3", lost)
	}
	if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); !errors.Is(err, batch.ErrClosed) {
		t.Fatalf("Enqueue after Close: %v", err)
	}
}

func TestEnqueueChecksInput(t *testing.T) {
	ctx := t.Context()
	w := batch.New(newMemory(t), batch.Options{})
	defer closeWriter(t, w)
	if _, err := w.Enqueue(ctx, "", storage.Item{}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("empty user: %v", err)
	}
	if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{With: "\xff"}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("invalid peer: %v", err)
	}
	id, err := w.Enqueue(ctx, "a@example.com", storage.Item{ID: "chosen"})
	if err != nil || id != "chosen" {
		t.Fatalf("Enqueue with an id = %q, %v", id, err)
	}
	if _, err := w.Archive().Get(ctx, "a@example.com", "chosen"); err != nil {
		t.Fatal(err)
	}
}

// TestArchiveViewWaitsBeforeDeleting checks that a purge covers items queued before it.
func TestArchiveViewWaitsBeforeDeleting(t *testing.T) {
	ctx := t.Context()
	w := batch.New(newMemory(t), batch.Options{})
	defer closeWriter(t, w)
	a := w.Archive()
	for range 10 {
		if _, err := w.Enqueue(ctx, "a@example.com", storage.Item{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Purge(ctx, "a@example.com"); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Count(ctx, "a@example.com"); err != nil || n != 0 {
		t.Fatalf("after Purge: %d items, %v", n, err)
	}
}

// TestSQLiteRoundTrip writes through the queue into SQLite, closes, reopens the file and reads.
func TestSQLiteRoundTrip(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "impetus.db")
	b, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	w := batch.New(b.Archive("mam"), batch.Options{MaxBatch: 64})
	var wg sync.WaitGroup
	ids := make([][]string, 4)
	for s := range 4 {
		wg.Go(func() {
			for i := range 200 {
				id, err := w.Enqueue(ctx, fmt.Sprintf("u%d@example.com", s), storage.Item{With: "p@example.com", Data: fmt.Appendf(nil, "<m n='%d'/>", i)})
				if err != nil {
					t.Error(err)
					return
				}
				ids[s] = append(ids[s], id)
			}
		})
	}
	wg.Wait()
	closeWriter(t, w)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for s := range 4 {
		items, _, err := b.Archive("mam").Query(ctx, fmt.Sprintf("u%d@example.com", s), storage.Query{})
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != 200 {
			t.Fatalf("u%d has %d items after reopening", s, len(items))
		}
		for i, it := range items {
			if it.ID != ids[s][i] || string(it.Data) != fmt.Sprintf("<m n='%d'/>", i) {
				t.Fatalf("u%d item %d = %s %q, want %s", s, i, it.ID, it.Data, ids[s][i])
			}
		}
	}
}
