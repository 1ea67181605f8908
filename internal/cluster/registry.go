package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Entry is the registry's record of one bound full JID: which node (and which incarnation of
// it) owns the session, and what the RFC 6121 delivery rules need to know of it. The last
// available presence is kept so that any node can answer a presence probe without a round trip.
type Entry struct {
	Node  string `json:"n"`
	Inc   uint64 `json:"i"`
	Avail bool   `json:"a,omitempty"`
	Prio  int    `json:"p,omitempty"`
	Pres  string `json:"x,omitempty"`
	// Flags are per-session states that modules on other nodes need, such as the namespaces
	// of the pushes a session asked for (the roster, RFC 6121 §2.1.6).
	Flags []string `json:"f,omitempty"`
	Since int64    `json:"t"` // Unix milliseconds of the bind
}

// Record is an entry with its key and revision, as the replica holds it.
type Record struct {
	Bare, Resource string
	Entry
	Rev uint64
}

// ErrFenced is returned by owner actions while this node holds no lease.
var ErrFenced = errors.New("cluster: node fenced: no lease")

// sessionKey is the KV key of a full JID. Key characters are restricted, so both parts are
// unpadded base64url; the bare part first lets a watch be filtered by account.
func sessionKey(bare, resource string) string { return pairOfKey("s.", bare, resource) }

func parseSessionKey(k string) (bare, resource string, ok bool) { return parsePairOfKey("s.", k) }

// pairOfKey builds a KV key of two strings under prefix: each part unpadded base64url, since
// key characters are restricted.
func pairOfKey(prefix, a, b string) string {
	return prefix + base64.RawURLEncoding.EncodeToString([]byte(a)) + "." + base64.RawURLEncoding.EncodeToString([]byte(b))
}

func parsePairOfKey(prefix, k string) (a, b string, ok bool) {
	rest, found := strings.CutPrefix(k, prefix)
	if !found {
		return "", "", false
	}
	ea, eb, found := strings.Cut(rest, ".")
	if !found {
		return "", "", false
	}
	da, err1 := base64.RawURLEncoding.DecodeString(ea)
	db, err2 := base64.RawURLEncoding.DecodeString(eb)
	if err1 != nil || err2 != nil {
		return "", "", false
	}
	return string(da), string(db), true
}

func leaseKey(node string) string { return "n." + node }

// lease is the value of a node's lease key.
type lease struct {
	Inc uint64 `json:"i"`
}

// Registry is the session registry of the cluster in JetStream KV: a sessions bucket written
// only with compare-and-set, and a leases bucket whose keys vanish lease_ttl after their last
// renewal (the bucket's max age). A watch keeps a replica of the sessions in memory, from
// which routing decisions are taken without I/O.
type Registry struct {
	node    string
	js      jetstream.JetStream
	sess    jetstream.KeyValue
	leases  jetstream.KeyValue
	timeout time.Duration
	bucket  string // name of the sessions bucket

	mu          sync.RWMutex
	byBare      map[string]map[string]Record // bare → resource → record
	onWatch     func(r Record, deleted bool)
	watchCtx    context.Context
	watchCancel context.CancelFunc // ends the current watch
	lastSeen    atomic.Uint64      // highest revision the watches delivered
	prevLast    uint64             // bucket's last revision at the previous CheckWatch
	stale       bool               // the replica must be rebuilt (CheckWatch); only CheckWatch uses it
	prevLeader  string             // the bucket stream's leader at the previous CheckWatch

	// logger, when set, reports the rebuilds of the replica.
	logger *slog.Logger

	leaseMu  sync.Mutex
	inc      uint64 // revision of this node's lease key; its incarnation
	leaseRev uint64
	lastOK   time.Time
}

// OpenRegistry creates or opens the buckets and starts the watch. It retries while a JetStream
// cluster is still electing its leader, up to ctx.
func OpenRegistry(ctx context.Context, nc *nats.Conn, c *Config) (*Registry, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("cluster: jetstream: %w", err)
	}
	r := &Registry{node: c.NodeName, js: js, timeout: c.ForwardTimeout, byBare: map[string]map[string]Record{}, bucket: c.BucketPrefix + "_sessions"}
	sessCfg := jetstream.KeyValueConfig{
		Bucket:   r.bucket,
		History:  1,
		Storage:  jetstream.MemoryStorage,
		Replicas: c.Replicas,
	}
	leaseCfg := jetstream.KeyValueConfig{
		Bucket:   c.BucketPrefix + "_leases",
		History:  1,
		TTL:      c.LeaseTTL,
		Storage:  jetstream.MemoryStorage,
		Replicas: c.Replicas,
	}
	for {
		if r.sess == nil {
			r.sess, err = createKV(ctx, js, sessCfg)
		}
		if err == nil && r.leases == nil {
			r.leases, err = createKV(ctx, js, leaseCfg)
		}
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: creating the registry buckets: %w", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	return r, nil
}

func createKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(cctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.KeyValue(cctx, cfg.Bucket)
	}
	return kv, err
}

// StreamName returns the name of the JetStream stream behind the sessions bucket.
func (r *Registry) StreamName() string { return "KV_" + r.bucket }

// Watch keeps the replica up to date until ctx ends, calling fn (which may be nil) for each
// change after the initial values. It returns once the initial values are loaded.
func (r *Registry) Watch(ctx context.Context, fn func(rec Record, deleted bool)) error {
	r.onWatch = fn
	r.watchCtx = ctx
	return r.rewatch()
}

// rewatch starts a new watch, loads the bucket's current values into a fresh replica and swaps
// it in, ending the previous watch. A watch is an ordered consumer that the server may drop,
// for instance while this process was paused; the replica is then rebuilt rather than trusted.
func (r *Registry) rewatch() error {
	wctx, cancel := context.WithCancel(r.watchCtx)
	w, err := r.sess.WatchAll(wctx)
	if err != nil {
		cancel()
		return fmt.Errorf("cluster: watching the registry: %w", err)
	}
	fresh := map[string]map[string]Record{}
	var freshSeen uint64 // highest revision of the initial values, read once loaded is closed
	loaded := make(chan struct{})
	go func() {
		defer w.Stop()
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(loaded)
				}
				continue
			}
			if initial {
				applyTo(fresh, e)
				freshSeen = max(freshSeen, e.Revision())
				continue
			}
			r.mu.Lock()
			current := r.watchCancel != nil && wctx.Err() == nil
			var rec Record
			var deleted bool
			if current {
				rec, deleted = applyTo(r.byBare, e)
			}
			r.mu.Unlock()
			if !current {
				return
			}
			r.noteSeen(e.Revision())
			if r.onWatch != nil {
				r.onWatch(rec, deleted)
			}
		}
	}()
	// Bounded: a watch whose consumer is lost during the initial load (a leader change)
	// never delivers its end marker, and the caller (renewal, anti-entropy) must go on.
	timer := time.NewTimer(30 * r.timeout)
	defer timer.Stop()
	select {
	case <-loaded:
	case <-wctx.Done():
		cancel()
		return wctx.Err()
	case <-timer.C:
		cancel()
		return errors.New("cluster: loading the registry: no end of the initial values")
	}
	r.mu.Lock()
	old := r.watchCancel
	r.byBare = fresh
	r.watchCancel = cancel
	// What the previous watch saw may lie beyond what the bucket holds now (see CheckWatch).
	r.lastSeen.Store(freshSeen)
	r.mu.Unlock()
	if old != nil {
		old()
	}
	return nil
}

func (r *Registry) noteSeen(rev uint64) {
	for {
		cur := r.lastSeen.Load()
		if rev <= cur || r.lastSeen.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// CheckWatch rebuilds the replica when the watch has fallen behind: the bucket's last revision
// at the previous check was never delivered to it.
func (r *Registry) CheckWatch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	st, err := r.sess.Status(ctx)
	if err != nil {
		return err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return nil
	}
	last := bs.StreamInfo().State.LastSeq
	prev := r.prevLast
	r.prevLast = last
	seen := r.lastSeen.Load()
	leader := ""
	if ci := bs.StreamInfo().Cluster; ci != nil {
		leader = ci.Leader
	}
	prevLeader := r.prevLeader
	r.prevLeader = leader
	switch {
	case prev != 0 && seen < prev:
		r.prevLast = 0
		return r.rewatch()
	case r.stale:
		// A rebuild that failed is tried again until it succeeds.
		if err := r.rewatch(); err != nil {
			return err
		}
		r.stale = false
	case prevLeader != "" && leader != prevLeader:
		// A new leader of the in-memory stream may lack the last writes of the old one (a
		// paused process's replica, a leader killed before it replicated them): the stream's
		// sequence goes back and a watch positioned beyond it skips the writes below its
		// position, which the revision comparisons may never notice once the sequence has
		// caught up. Rebuilt on every leader change, which is rare.
		r.prevLast = 0
		r.log("cluster: the registry's leader changed; rebuilding the replica", "leader", leader, "previous", prevLeader)
		r.stale = true
		if err := r.rewatch(); err != nil {
			return err
		}
		r.stale = false
	case last < seen:
		// The bucket's sequence went back: its in-memory stream lost writes in a leader change
		// (a paused process's replica, a leader killed with the last writes unreplicated), and
		// the watch now waits for sequences the stream will write for other keys, skipping
		// every write below them. Seen only as a stale replica: a node then routed no message to
		// sessions bound since, and they went to offline storage.
		r.prevLast = 0
		r.log("cluster: the registry's last revision went back; rebuilding the replica", "last", last, "seen", seen)
		r.stale = true
		if err := r.rewatch(); err != nil {
			return err
		}
		r.stale = false
	}
	return nil
}

// applyTo applies one watched entry to a replica map and returns the record it concerned.
func applyTo(m map[string]map[string]Record, e jetstream.KeyValueEntry) (Record, bool) {
	bare, res, ok := parseSessionKey(e.Key())
	if !ok {
		return Record{}, false
	}
	rec := Record{Bare: bare, Resource: res, Rev: e.Revision()}
	deleted := e.Operation() != jetstream.KeyValuePut
	if !deleted && json.Unmarshal(e.Value(), &rec.Entry) != nil {
		deleted = true
	}
	rm := m[bare]
	if deleted {
		if old, ok := rm[res]; ok {
			rec.Entry = old.Entry
		}
		delete(rm, res)
		if len(rm) == 0 {
			delete(m, bare)
		}
		return rec, true
	}
	if rm == nil {
		rm = map[string]Record{}
		m[bare] = rm
	}
	rm[res] = rec
	return rec, false
}

// Resources returns the replica's records of a bare JID.
func (r *Registry) Resources(bare string) []Record {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m := r.byBare[bare]
	if len(m) == 0 {
		return nil
	}
	out := make([]Record, 0, len(m))
	for _, rec := range m {
		out = append(out, rec)
	}
	return out
}

// Lookup returns the replica's record of a full JID.
func (r *Registry) Lookup(bare, resource string) (Record, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rec, ok := r.byBare[bare][resource]
	return rec, ok
}

// Len returns the number of records in the replica.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, m := range r.byBare {
		n += len(m)
	}
	return n
}

// Snapshot returns every record of the replica.
func (r *Registry) Snapshot() []Record {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Record
	for _, m := range r.byBare {
		for _, rec := range m {
			out = append(out, rec)
		}
	}
	return out
}

// learn adds a record another node vouched for to the replica when the replica has none for
// its full JID yet; the watch replaces it with the bucket's entry when it catches up. The
// record is unavailable, so it never changes where messages to the bare JID go.
func (r *Registry) learn(rec Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byBare[rec.Bare][rec.Resource]; ok {
		return
	}
	rec.Avail, rec.Prio = false, 0
	if r.byBare[rec.Bare] == nil {
		r.byBare[rec.Bare] = map[string]Record{}
	}
	r.byBare[rec.Bare][rec.Resource] = rec
}

// Fetch reads the bucket's entries of a bare JID, or of one of its resources when resource is
// set, bypassing the replica, and puts into the replica those it lacks or holds at an older
// revision. It reports whether one of them is older than what the watch already delivered:
// the watch skipped it and the replica cannot be trusted (a newer one is only the watch's lag).
func (r *Registry) Fetch(ctx context.Context, bare, resource string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var entries []jetstream.KeyValueEntry
	if resource != "" {
		e, err := r.sess.Get(ctx, sessionKey(bare, resource))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		entries = append(entries, e)
	} else {
		w, err := r.sess.WatchFiltered(ctx, []string{"s." + base64.RawURLEncoding.EncodeToString([]byte(bare)) + ".*"}, jetstream.IgnoreDeletes())
		if err != nil {
			return false, err
		}
		defer w.Stop()
	read:
		for {
			select {
			case e := <-w.Updates():
				if e == nil {
					break read
				}
				entries = append(entries, e)
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
	}
	skipped := false
	seen := r.lastSeen.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range entries {
		if cur, ok := r.byBare[bare]; ok {
			if rec, ok := cur[resourceOf(e.Key())]; ok && rec.Rev >= e.Revision() {
				continue
			}
		}
		m := map[string]map[string]Record{bare: r.byBare[bare]}
		if m[bare] == nil {
			m[bare] = map[string]Record{}
		}
		if _, deleted := applyTo(m, e); !deleted {
			r.byBare[bare] = m[bare]
			skipped = skipped || e.Revision() <= seen
		}
	}
	return skipped, nil
}

func resourceOf(key string) string {
	_, res, _ := parseSessionKey(key)
	return res
}

// forget drops a record from the replica before the watch reports it gone, after the owning
// node answered that it no longer has the session.
func (r *Registry) forget(bare, resource string, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec, ok := r.byBare[bare][resource]; ok && rec.Rev == rev {
		delete(r.byBare[bare], resource)
		if len(r.byBare[bare]) == 0 {
			delete(r.byBare, bare)
		}
	}
}

// Acquire takes this node's lease: a new key, or a stale one of a previous process of the same
// node name (taken over by compare-and-set). The revision becomes the node's incarnation.
func (r *Registry) Acquire(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	val := func(inc uint64) []byte { b, _ := json.Marshal(lease{Inc: inc}); return b }
	rev, err := r.leases.Create(ctx, leaseKey(r.node), val(0))
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := r.leases.Get(ctx, leaseKey(r.node))
		if gerr != nil {
			return 0, fmt.Errorf("cluster: reading the lease: %w", gerr)
		}
		rev, err = r.leases.Update(ctx, leaseKey(r.node), val(0), e.Revision())
	}
	if err != nil {
		return 0, fmt.Errorf("cluster: acquiring the lease: %w", err)
	}
	// The incarnation is written into the lease so other nodes can read it with the key.
	rev2, err := r.leases.Update(ctx, leaseKey(r.node), val(rev), rev)
	if err != nil {
		return 0, fmt.Errorf("cluster: acquiring the lease: %w", err)
	}
	r.leaseMu.Lock()
	r.inc, r.leaseRev, r.lastOK = rev, rev2, time.Now()
	r.leaseMu.Unlock()
	return rev, nil
}

// Renew renews the lease by compare-and-set, which fails if the key expired meanwhile (and
// was perhaps taken by another process) as much as if NATS cannot be reached.
func (r *Registry) Renew(ctx context.Context) error {
	r.leaseMu.Lock()
	inc, rev := r.inc, r.leaseRev
	r.leaseMu.Unlock()
	if inc == 0 {
		return ErrFenced
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	b, _ := json.Marshal(lease{Inc: inc})
	nrev, err := r.leases.Update(ctx, leaseKey(r.node), b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		// A renewal that timed out may still have been written, leaving this node with a stale
		// revision: the lease is lost only if the key is gone or holds another incarnation.
		e, gerr := r.leases.Get(ctx, leaseKey(r.node))
		var l lease
		if gerr != nil || json.Unmarshal(e.Value(), &l) != nil || l.Inc != inc {
			return err
		}
		nrev, err = r.leases.Update(ctx, leaseKey(r.node), b, e.Revision())
	}
	if err != nil {
		return err
	}
	r.leaseMu.Lock()
	if r.inc == inc {
		r.leaseRev, r.lastOK = nrev, time.Now()
	}
	r.leaseMu.Unlock()
	return nil
}

// SinceRenewal is how long ago the lease was last renewed.
func (r *Registry) SinceRenewal() time.Duration {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	return time.Since(r.lastOK)
}

// Drop forgets the lease after fencing, so nothing is written under the old incarnation.
func (r *Registry) Drop() {
	r.leaseMu.Lock()
	r.inc, r.leaseRev = 0, 0
	r.leaseMu.Unlock()
}

// Inc returns the current incarnation, 0 while fenced.
func (r *Registry) Inc() uint64 {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	return r.inc
}

// Release deletes this node's lease on a clean shutdown.
func (r *Registry) Release(ctx context.Context) {
	r.leaseMu.Lock()
	rev := r.leaseRev
	r.inc, r.leaseRev = 0, 0
	r.leaseMu.Unlock()
	if rev != 0 {
		_ = r.leases.Delete(ctx, leaseKey(r.node), jetstream.LastRevision(rev))
	}
}

// LeaseOf returns the incarnation holding node's lease, or 0 when the node holds none. It
// reads the key itself: a listing of the bucket (a watch) can miss keys that are rewritten
// while it runs, which leases are every few seconds.
func (r *Registry) LeaseOf(ctx context.Context, node string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	e, err := r.leases.Get(ctx, leaseKey(node))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var l lease
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		return 0, nil
	}
	return l.Inc, nil
}

// Claim makes this node the owner of a full JID. It returns the record it replaced when
// another node owned the JID, so the caller can tell that node to close its session.
// Every write is compare-and-set: a racing claim makes this one retry, never overwrite blindly.
func (r *Registry) Claim(ctx context.Context, bare, resource string, e Entry, kick func(old Record) error) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	key := sessionKey(bare, resource)
	val, _ := json.Marshal(e)
	for attempt := 0; attempt < 5; attempt++ {
		rev, err := r.sess.Create(ctx, key, val)
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, err
		}
		cur, err := r.sess.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted meanwhile: create again
		}
		if err != nil {
			return 0, err
		}
		var old Entry
		_ = json.Unmarshal(cur.Value(), &old)
		if (old.Node != e.Node || old.Inc != e.Inc) && kick != nil {
			// RFC 6120 §7.7.2.2: the new session wins; the old node closes its own.
			if err := kick(Record{Bare: bare, Resource: resource, Entry: old, Rev: cur.Revision()}); err != nil {
				return 0, err
			}
		}
		rev, err = r.sess.Update(ctx, key, val, cur.Revision())
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, err
		}
	}
	return 0, fmt.Errorf("cluster: claiming %s/%s: too many concurrent claims", bare, resource)
}

// Update rewrites this node's record of a full JID if it is still at rev.
func (r *Registry) Update(ctx context.Context, bare, resource string, e Entry, rev uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	val, _ := json.Marshal(e)
	return r.sess.Update(ctx, sessionKey(bare, resource), val, rev)
}

// Remove deletes a record only if it is still at rev, so that a session replaced by a newer one
// elsewhere can never delete the newer one's record.
func (r *Registry) Remove(ctx context.Context, bare, resource string, rev uint64) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return r.sess.Delete(ctx, sessionKey(bare, resource), jetstream.LastRevision(rev))
}

func (r *Registry) log(msg string, args ...any) {
	if r.logger != nil {
		r.logger.Warn(msg, args...)
	}
}
