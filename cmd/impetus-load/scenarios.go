package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"impetus/internal/stanza"
)

// loginRetries counts logins tried again while setting up a scenario.
var loginRetries atomic.Int64

// loginAll logs in users [0, n) with at most conc logins in parallel. A failed login leaves nil
// in its slot and is counted.
func loginAll(ctx context.Context, o *options, d *dialOptions, n int, user func(i int) string, errs *errorCount) []*client {
	out := make([]*client, n)
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < max(1, o.conc); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := login(ctx, d, user(i), "load")
				// Setting up a scenario is not what it measures: a login that a busy server
				// left unanswered is tried again, twice at most, and counted.
				for try := 0; err != nil && try < 2 && ctx.Err() == nil; try++ {
					loginRetries.Add(1)
					c, err = login(ctx, d, user(i), "load")
				}
				if err != nil {
					mu.Lock()
					errs.add(fmt.Errorf("%s: %w", user(i), err))
					mu.Unlock()
					continue
				}
				out[i] = c
			}
		}()
	}
	wg.Wait()
	return out
}

func closeAll(cs []*client) {
	var wg sync.WaitGroup
	for _, c := range cs {
		if c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.close() }()
		}
	}
	wg.Wait()
}

// runLogin measures complete logins (connect, STARTTLS, SASL, bind, close) per second.
func runLogin(ctx context.Context, o *options) (*result, error) {
	var errs errorCount
	var mu sync.Mutex
	var next, done atomic.Int64
	s, err := o.sample()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < max(1, o.conc); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= o.n {
					return
				}
				// Cycle through a pool of users so that a server's per-account state is not
				// the only thing measured.
				c, err := login(ctx, &o.dial, o.user(i%max(1, o.users)), "login"+strconv.Itoa(i))
				if err != nil {
					mu.Lock()
					errs.add(err)
					mu.Unlock()
					continue
				}
				c.close()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	r := &result{N: int(done.Load()), Seconds: el, Rate: float64(done.Load()) / el}
	errs.fill(r)
	if err := s.finish(r); err != nil {
		return r, err
	}
	if ctx.Err() != nil {
		return r, errTimeout
	}
	return r, nil
}

// runIdle logs in n sessions, waits for the server to settle, and reports the growth of its
// resident memory divided by n.
func runIdle(ctx context.Context, o *options) (*result, error) {
	var errs errorCount
	s, err := o.sample()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	cs := loginAll(ctx, o, &o.dial, o.n, o.user, &errs)
	el := time.Since(start).Seconds()
	defer closeAll(cs)
	live := 0
	for _, c := range cs {
		if c != nil {
			live++
		}
	}
	select {
	case <-time.After(o.settle):
	case <-ctx.Done():
	}
	r := &result{N: live, Seconds: el, Rate: float64(live) / el}
	errs.fill(r)
	if err := s.finish(r); err != nil {
		return r, err
	}
	if live > 0 {
		r.PerSession = float64(r.RSSAfter-r.RSSBefore) / float64(live)
	}
	if o.hold > 0 {
		// Tell whoever profiles the server that the sessions are up and measured.
		fmt.Fprintf(os.Stderr, "idle: %d sessions measured; holding them for %v\n", live, o.hold)
		select {
		case <-time.After(o.hold):
		case <-ctx.Done():
		}
	}
	return r, nil
}

// latencies gathers end-to-end delays from many receivers.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

// runChat measures one-to-one chat: each pair's sender writes messages to its receiver's full
// JID, at most window of them unreceived at a time, for the run's duration; every message
// carries its send time, so the receiver measures end-to-end latency. Nothing may be lost.
func runChat(ctx context.Context, o *options) (*result, error) {
	var errs errorCount
	senders := loginAll(ctx, o, &o.dial, o.pairs, func(i int) string { return o.user(2 * i) }, &errs)
	receivers := loginAll(ctx, o, &o.dial2, o.pairs, func(i int) string { return o.user(2*i + 1) }, &errs)
	defer closeAll(senders)
	defer closeAll(receivers)
	if errs.n > 0 {
		r := &result{Pairs: o.pairs}
		errs.fill(r)
		return r, fmt.Errorf("load: %d logins failed: %v", errs.n, errs.first)
	}
	// Let presence echoes and other login traffic drain before measuring.
	time.Sleep(500 * time.Millisecond)

	var sent, received atomic.Int64
	var lat latencies
	runID := "r" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	var emu sync.Mutex
	sendCtx, stopSending := context.WithTimeout(ctx, o.duration)
	defer stopSending()
	pad := ""
	if o.bodySize > 20 {
		pad = strings.Repeat("x", o.bodySize-20)
	}
	s, err := o.sample()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var interval time.Duration
	if o.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(o.pairs) / o.rate)
	}

	var rwg, swg sync.WaitGroup
	var stopping atomic.Bool
	for i := range o.pairs {
		window := make(chan struct{}, o.window)
		rc := receivers[i]
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			var local []time.Duration
			defer func() { lat.add(local) }()
			for {
				el, err := rc.dec.ReadElement()
				if err != nil {
					if !stopping.Load() {
						emu.Lock()
						errs.add(fmt.Errorf("receiver %d: %w", i, err))
						emu.Unlock()
					}
					return
				}
				if el.Local != "message" {
					continue
				}
				b := el.Child(stanza.NSClient, "body")
				if b == nil {
					continue
				}
				// Only this run's messages count: a server may still deliver messages queued
				// for the same full JID by an earlier run.
				txt, ok := strings.CutPrefix(b.Text(), runID)
				if !ok {
					continue
				}
				if sp := strings.IndexByte(txt, ' '); sp > 0 {
					txt = txt[:sp]
				}
				ns, err := strconv.ParseInt(txt, 10, 64)
				if err != nil {
					continue
				}
				local = append(local, time.Since(time.Unix(0, ns)))
				received.Add(1)
				select {
				case <-window:
				default:
				}
			}
		}()
		sc := senders[i]
		to := receivers[i].jid
		swg.Add(1)
		go func() {
			defer swg.Done()
			buf := make([]byte, 0, 256)
			next := time.Now()
			for k := 0; ; k++ {
				select {
				case window <- struct{}{}:
				case <-sendCtx.Done():
					return
				}
				if interval > 0 {
					next = next.Add(interval)
					if d := time.Until(next); d > 0 {
						select {
						case <-time.After(d):
						case <-sendCtx.Done():
							return
						}
					}
				}
				buf = append(buf[:0], "<message type='chat' to='"...)
				buf = append(buf, to...)
				buf = append(buf, "' id='m"...)
				buf = strconv.AppendInt(buf, int64(k), 10)
				buf = append(buf, "'><body>"...)
				buf = append(buf, runID...)
				buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
				buf = append(buf, ' ')
				buf = append(buf, pad...)
				buf = append(buf, "</body></message>"...)
				if err := sc.send(buf); err != nil {
					emu.Lock()
					errs.add(fmt.Errorf("sender %d: %w", i, err))
					emu.Unlock()
					return
				}
				sent.Add(1)
			}
		}()
	}
	swg.Wait()
	sendEnd := time.Now()
	// Wait for what is in flight, bounded: a message missing after this is lost.
	drainCtx, cancelDrain := context.WithTimeout(ctx, 10*time.Second)
	waitFor(drainCtx, func() bool { return received.Load() >= sent.Load() })
	cancelDrain()
	end := time.Now()
	r := &result{Pairs: o.pairs, Window: o.window, Sent: sent.Load(), Received: received.Load()}
	r.Lost = r.Sent - r.Received
	r.Seconds = end.Sub(start).Seconds()
	if o.rate > 0 {
		r.Seconds = sendEnd.Sub(start).Seconds()
	}
	r.Rate = float64(r.Received) / r.Seconds
	if err := s.finish(r); err != nil {
		return r, err
	}
	// Unblock the receivers, so closing does not race their reads.
	stopping.Store(true)
	for _, c := range receivers {
		_ = c.nc.SetReadDeadline(time.Now())
	}
	rwg.Wait()
	lat.mu.Lock()
	sortDurations(lat.d)
	r.P50ms, r.P99ms = percentile(lat.d, 0.50), percentile(lat.d, 0.99)
	lat.mu.Unlock()
	emu.Lock()
	errs.fill(r)
	emu.Unlock()
	return r, nil
}

// runPresence measures presence fan-out. Setup: user i subscribes to users i+1..i+contacts
// (modulo users), and every subscription request is approved, so each user has contacts
// watchers. Then every user changes its status changes times; each change must reach every
// watcher.
func runPresence(ctx context.Context, o *options) (*result, error) {
	var errs errorCount
	d := o.dial
	d.presence, d.roster = true, true
	cs := loginAll(ctx, o, &d, o.users, o.user, &errs)
	defer closeAll(cs)
	if errs.n > 0 {
		r := &result{N: o.users}
		errs.fill(r)
		return r, fmt.Errorf("load: %d logins failed: %v", errs.n, errs.first)
	}
	bare := func(i int) string { return o.user(i%o.users) + "@" + o.dial.domain }
	var subscribed, changes atomic.Int64
	var stopping atomic.Bool
	var lat latencies
	var emu sync.Mutex
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			defer func() { lat.add(local) }()
			var out []byte
			for {
				el, err := c.dec.ReadElement()
				if err != nil {
					if !stopping.Load() {
						emu.Lock()
						errs.add(fmt.Errorf("user %d: %w", i, err))
						emu.Unlock()
					}
					return
				}
				out = out[:0]
				switch el.Local {
				case "presence":
					from := el.Attr("from")
					switch el.Attr("type") {
					case "subscribe":
						out = append(out, "<presence type='subscribed' to='"...)
						out = stanza.AppendAttrValue(out, from)
						out = append(out, "'/>"...)
					case "subscribed":
						subscribed.Add(1)
					case "":
						st := el.Child(stanza.NSClient, "status")
						if st == nil {
							break
						}
						txt, ok := strings.CutPrefix(st.Text(), "m ")
						if !ok {
							break
						}
						if ns, err := strconv.ParseInt(txt, 10, 64); err == nil && !strings.HasPrefix(from, c.jid) {
							local = append(local, time.Since(time.Unix(0, ns)))
							changes.Add(1)
						}
					}
				case "iq":
					// Roster pushes and pings get an empty result (RFC 6121 §2.1.6).
					if t := el.Attr("type"); t == "get" || t == "set" {
						out = append(out, "<iq type='result' id='"...)
						out = stanza.AppendAttrValue(out, el.Attr("id"))
						if f := el.Attr("from"); f != "" {
							out = append(out, "' to='"...)
							out = stanza.AppendAttrValue(out, f)
						}
						out = append(out, "'/>"...)
					}
				}
				if len(out) > 0 {
					if err := c.send(out); err != nil {
						return
					}
				}
			}
		}()
	}
	defer func() {
		stopping.Store(true)
		for _, c := range cs {
			_ = c.nc.SetReadDeadline(time.Now())
		}
		wg.Wait()
	}()

	setupStart := time.Now()
	for i, c := range cs {
		for k := 1; k <= o.contacts; k++ {
			msg := "<presence type='subscribe' to='" + bare(i+k) + "'/>"
			if err := c.send([]byte(msg)); err != nil {
				return nil, err
			}
		}
	}
	want := int64(o.users * o.contacts)
	if !waitFor(ctx, func() bool { return subscribed.Load() >= want }) {
		return &result{N: o.users, Sent: want, Received: subscribed.Load()}, fmt.Errorf("load: only %d of %d subscriptions approved", subscribed.Load(), want)
	}
	fmt.Fprintf(os.Stderr, "presence: %d subscriptions in %.1fs\n", want, time.Since(setupStart).Seconds())
	time.Sleep(time.Second)

	s, err := o.sample()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var swg sync.WaitGroup
	for _, c := range cs {
		swg.Add(1)
		go func() {
			defer swg.Done()
			for k := 0; k < o.changes && ctx.Err() == nil; k++ {
				show := "away"
				if k%2 == 1 {
					show = "chat"
				}
				msg := "<presence><show>" + show + "</show><status>m " + strconv.FormatInt(time.Now().UnixNano(), 10) + "</status></presence>"
				if err := c.send([]byte(msg)); err != nil {
					return
				}
				// One change per user every 10 ms keeps the run a fan-out measurement rather
				// than a queue-overflow one.
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	swg.Wait()
	expect := int64(o.users * o.changes * o.contacts)
	waitFor(ctx, func() bool { return changes.Load() >= expect || time.Since(start) > 30*time.Second })
	el := time.Since(start).Seconds()
	r := &result{N: o.users, Sent: expect, Received: changes.Load(), Seconds: el}
	r.Lost = r.Sent - r.Received
	r.Rate = float64(r.Received) / el
	if err := s.finish(r); err != nil {
		return r, err
	}
	stopping.Store(true)
	for _, c := range cs {
		_ = c.nc.SetReadDeadline(time.Now())
	}
	wg.Wait()
	lat.mu.Lock()
	sortDurations(lat.d)
	r.P50ms, r.P99ms = percentile(lat.d, 0.50), percentile(lat.d, 0.99)
	lat.mu.Unlock()
	emu.Lock()
	errs.fill(r)
	emu.Unlock()
	return r, nil
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) bool {
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}
