package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func isRunning(w *Writer) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running
}

// TestWriterOrderAndIdle checks that bytes arrive in order and that the writer goroutine and
// its buffers are gone once the queue is drained.
func TestWriterOrderAndIdle(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := NewWriter(a, 0, 0, func(err error) { t.Errorf("unexpected writer error: %v", err) })
	if isRunning(w) {
		t.Fatal("a new writer runs a goroutine before anything is queued")
	}
	var want bytes.Buffer
	for round := 0; round < 3; round++ {
		for i := 0; i < 100; i++ {
			msg := []byte{byte('a' + round), byte('0' + i%10)}
			want.Write(msg)
			if _, err := w.Write(msg); err != nil {
				t.Fatal(err)
			}
		}
		got := make([]byte, 200)
		if _, err := io.ReadFull(b, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()[round*200:]) {
			t.Fatalf("round %d: got %q", round, got)
		}
		// The goroutine ends after its last write; wait for that without a time bound on
		// correctness (the loop ends as soon as it has).
		for isRunning(w) {
			time.Sleep(time.Millisecond)
		}
		w.mu.Lock()
		if w.pending != nil || w.spare != nil {
			t.Errorf("an idle writer keeps buffers: pending %d, spare %d", cap(w.pending), cap(w.spare))
		}
		w.mu.Unlock()
	}
	w.Close(time.Second)
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestWriterCloseFlushes checks that Close writes what is queued.
func TestWriterCloseFlushes(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := NewWriter(a, 0, 0, nil)
	var got []byte
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		got, _ = io.ReadAll(b)
	}()
	_, _ = w.Write([]byte("hello "))
	_, _ = w.Write([]byte("world"))
	w.Close(5 * time.Second)
	a.Close()
	wg.Wait()
	if string(got) != "hello world" {
		t.Fatalf("got %q", got)
	}
}

// TestWriterQueueFull checks that a peer that does not read makes the queue overflow, that the
// overflow is reported once, and that Close returns within its bound.
func TestWriterQueueFull(t *testing.T) {
	a, b := net.Pipe() // nobody reads b
	defer a.Close()
	defer b.Close()
	reports := make(chan error, 4)
	w := NewWriter(a, 64, time.Minute, func(err error) { reports <- err })
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = w.Write(bytes.Repeat([]byte("x"), 16))
	}
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("got %v, want ErrQueueFull", err)
	}
	// The goroutine is blocked writing to the pipe; Close unblocks it after its timeout.
	w.Close(10 * time.Millisecond)
	select {
	case e := <-reports:
		if !errors.Is(e, ErrQueueFull) {
			t.Fatalf("reported %v", e)
		}
	default:
		t.Fatal("the overflow was not reported before Close returned")
	}
	if len(reports) != 0 {
		t.Fatalf("reported more than once")
	}
}
