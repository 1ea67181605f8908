package scriptlet

import (
	"errors"
	"runtime/metrics"
	"time"
)

// Why a call was stopped. The messages end up in the log line of the failed call.
var (
	errInstructions = errors.New("instruction budget exhausted")
	errTime         = errors.New("time budget exhausted")
	errMemory       = errors.New("memory budget exhausted")
)

// closed is a channel that is always ready, handed to the VM once a budget is spent.
var closed = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// How often the budget looks at the clock and at the heap, in VM instructions. The heap is
// sampled often because a loop doubling a string grows memory exponentially per instruction;
// the clock less often because time.Now costs more than a counter and a time overrun is linear.
const (
	memEvery  = 8
	timeEvery = 256
)

// budget is the context.Context a Lua state runs under during one call. gopher-lua polls
// Done before every VM instruction, which makes Done the one place that sees every instruction:
// it counts them, and every few instructions compares the clock with the deadline and the
// bytes allocated since the call began with the memory bound. Once a bound is crossed Done
// stays ready, so a script that catches the error with pcall fails again at its next
// instruction. A budget belongs to one goroutine, the one running the state, and is not safe
// for concurrent use; the sandbox has no coroutines, which would poll it from another one.
type budget struct {
	steps, maxSteps int64
	deadline        time.Time
	memStart        uint64
	maxMem          uint64
	sample          [1]metrics.Sample
	err             error
}

const allocMetric = "/gc/heap/allocs:bytes"

// start resets b for a new call.
func (b *budget) start(maxSteps int64, d time.Duration, maxMem int64) {
	b.steps, b.maxSteps, b.err = 0, maxSteps, nil
	b.deadline = time.Now().Add(d)
	b.maxMem = uint64(maxMem)
	b.sample[0].Name = allocMetric
	b.memStart = b.allocated()
}

// allocated returns the bytes the process has allocated so far. It is process-wide: Go has no
// per-goroutine count, so allocations by other goroutines during the call count too, which
// makes the bound a ceiling with some slack rather than an exact figure.
func (b *budget) allocated() uint64 {
	metrics.Read(b.sample[:])
	if b.sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return b.sample[0].Value.Uint64()
}

// check looks at every bound now; Go functions of the API call it after allocating.
func (b *budget) check() error {
	if b.err != nil {
		return b.err
	}
	if b.maxSteps > 0 && b.steps > b.maxSteps {
		b.err = errInstructions
	} else if b.maxMem > 0 && b.allocated()-b.memStart > b.maxMem {
		b.err = errMemory
	} else if time.Now().After(b.deadline) {
		b.err = errTime
	}
	return b.err
}

// Deadline implements context.Context.
func (b *budget) Deadline() (time.Time, bool) { return b.deadline, true }

// Done implements context.Context; it is called once per VM instruction.
func (b *budget) Done() <-chan struct{} {
	if b.err != nil {
		return closed
	}
	b.steps++
	if b.maxSteps > 0 && b.steps > b.maxSteps {
		b.err = errInstructions
		return closed
	}
	if b.steps%memEvery == 0 && b.maxMem > 0 && b.allocated()-b.memStart > b.maxMem {
		b.err = errMemory
		return closed
	}
	if b.steps%timeEvery == 0 && time.Now().After(b.deadline) {
		b.err = errTime
		return closed
	}
	// A nil channel is never ready, so the VM's select takes its default branch.
	return nil
}

// Err implements context.Context.
func (b *budget) Err() error { return b.err }

// Value implements context.Context; a budget carries no values.
func (b *budget) Value(any) any { return nil }
