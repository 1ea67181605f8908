package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// opS2S carries a stanza for a remote domain to the node that holds the outgoing server stream
// of its domain pair. The addressed field is the stanza's 'to'; the answer is one of the s2s
// replies below.
const opS2S = 'S'

// Answers to an opS2S request.
var (
	// s2sSent: the owner queued the stanza on its outgoing stream.
	s2sSent = []byte("ok")
	// s2sMoved: the node does not own the pair; the sender reads the owner again.
	s2sMoved = []byte("moved")
	// s2sUnable: the node owns the pair by the record but cannot act as its owner (it is
	// fenced, starting or leaving); the sender takes the pair over if the node's lease says so.
	s2sUnable = []byte("unable")
	// s2sErrPrefix starts an answer carrying the stanza error the owner's Send returned:
	// "e:" condition, a newline, the text.
	s2sErrPrefix = []byte("e:")
)

// s2sAttempts bounds how often one stanza follows a changed ownership before the sender gets
// remote-server-timeout: each attempt follows a write or a reading of the key, so more than a
// few mean the pair is contended by nodes that keep failing.
const s2sAttempts = 4

// secretKey is the key of the cluster's shared dialback secret in the s2s bucket.
const secretKey = "dialback_secret"

// FederationHooks are what the cluster's federation needs of the node's own server-to-server
// manager.
type FederationHooks struct {
	// Send queues a stanza on this node's outgoing stream of its domain pair, opening the
	// stream when there is none (the single-node path).
	Send func(ctx context.Context, el *stanza.Element, to jid.JID) error
	// Pair returns the domain pair a stanza for to would be sent on, or the stanza error that
	// refuses it before any stream is involved (an unhosted sender, a domain not federated).
	Pair func(el *stanza.Element, to jid.JID) (local, remote string, err error)
	// Drop closes this node's outgoing stream of a pair, after another node took the pair over
	// or this node fenced itself; nil closes nothing.
	Drop func(local, remote string)
}

// s2sOwner is the value of a pair's key: the node, and its incarnation, that holds the pair's
// outgoing stream. The right lasts as long as that incarnation's lease.
type s2sOwner struct {
	Node string `json:"n"`
	Inc  uint64 `json:"i"`
}

// ownerRec is a pair's owner with the key's revision.
type ownerRec struct {
	s2sOwner
	Rev uint64
}

// Federation makes the nodes of a cluster one server towards other servers: for each pair of
// local and remote domain one node, the owner, holds the outgoing stream, and the other nodes
// forward their stanzas for the pair to it over NATS. Ownership is a key of the s2s bucket
// written only by compare-and-set and bound to the owner's lease: a sender finding the owner
// gone (no responders on its subject, or its lease lost) takes the key over and sends on a
// stream of its own. Inbound streams are not affected: they are accepted by any node and their
// stanzas routed like client traffic.
type Federation struct {
	n     *Node
	kv    jetstream.KeyValue
	hooks FederationHooks

	secret []byte

	mu     sync.RWMutex
	owners map[string]ownerRec // key → owner, kept by the watch and by this node's writes

	ready    atomic.Bool     // serving forwarded stanzas; false before StartFederation returns and after Close
	watching atomic.Bool     // the watch of the bucket runs; the server may end it
	runCtx   context.Context // ends with Close; the watch and the reconciliation run under it
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// Counters for metrics and tests.
	Forwarded atomic.Int64 // stanzas this node forwarded to the owner of their pair
	Received  atomic.Int64 // stanzas other nodes forwarded to this node
	Takeovers atomic.Int64 // pairs this node took over from a lost or fenced owner
}

// pairKey is the key of a domain pair in the s2s bucket.
func pairKey(local, remote string) string { return pairOfKey("o.", local, remote) }

func parsePairKey(k string) (local, remote string, ok bool) { return parsePairOfKey("o.", k) }

// StartFederation opens the s2s bucket, loads (or creates) the cluster's dialback secret and
// starts serving stanzas other nodes forward for the pairs this node owns.
func (n *Node) StartFederation(ctx context.Context, hooks FederationHooks) (*Federation, error) {
	if hooks.Send == nil || hooks.Pair == nil {
		return nil, errors.New("cluster: federation needs Send and Pair")
	}
	js, err := jetstream.New(n.nc)
	if err != nil {
		return nil, fmt.Errorf("cluster: jetstream: %w", err)
	}
	kv, err := createKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:   n.cfg.BucketPrefix + "_s2s",
		History:  1,
		Storage:  jetstream.MemoryStorage,
		Replicas: n.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: creating the s2s bucket: %w", err)
	}
	f := &Federation{n: n, kv: kv, hooks: hooks, owners: map[string]ownerRec{}}
	if f.secret, err = f.loadSecret(ctx); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	f.runCtx, f.cancel = wctx, cancel
	if err := f.watch(wctx); err != nil {
		cancel()
		return nil, err
	}
	f.wg.Add(1)
	go f.reconcileLoop(wctx)
	f.ready.Store(true)
	n.fed.Store(f)
	return f, nil
}

// loadSecret returns the dialback secret every node of the cluster uses for hosted domains
// without XMPP_Dialback_Secret: the first node creates it, the others read it, so a peer's
// db:verify is answered correctly by whichever node it reaches.
func (f *Federation) loadSecret(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.n.cfg.ForwardTimeout)
	defer cancel()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	val := []byte(base64.StdEncoding.EncodeToString(b))
	_, err := f.kv.Create(ctx, secretKey, val)
	if err == nil {
		return val, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("cluster: storing the dialback secret: %w", err)
	}
	for {
		e, err := f.kv.Get(ctx, secretKey)
		if err == nil {
			return e.Value(), nil
		}
		// The key exists, but the read may be served by a replica that has not seen it yet.
		if !errors.Is(err, jetstream.ErrKeyNotFound) || !pause(ctx) {
			return nil, fmt.Errorf("cluster: reading the dialback secret: %w", err)
		}
	}
}

// replicaLag is the pause before reading again a key a write reported as existing while a read
// did not find it: reads may be served by a replica behind the stream's leader.
const replicaLag = 25 * time.Millisecond

// pause waits replicaLag and reports false, without waiting, once ctx is done.
func pause(ctx context.Context) bool {
	t := time.NewTimer(replicaLag)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// DialbackSecret returns the cluster's shared dialback secret.
func (f *Federation) DialbackSecret() []byte { return f.secret }

// watch keeps the owners replica up to date and closes this node's stream of a pair that
// another node took over. It returns once the current owners are loaded.
func (f *Federation) watch(ctx context.Context) error {
	w, err := f.kv.Watch(ctx, "o.>")
	if err != nil {
		return fmt.Errorf("cluster: watching the s2s bucket: %w", err)
	}
	loaded := make(chan struct{})
	f.wg.Add(1)
	f.watching.Store(true)
	go func() {
		defer f.wg.Done()
		defer f.watching.Store(false)
		defer func() { _ = w.Stop() }()
		initial := true
		defer func() {
			if initial {
				close(loaded)
			}
		}()
		for {
			var e jetstream.KeyValueEntry
			var open bool
			select {
			case <-ctx.Done():
				return
			case e, open = <-w.Updates():
			}
			if !open {
				return
			}
			if e == nil {
				if initial {
					initial = false
					close(loaded)
				}
				continue
			}
			f.watched(e, initial)
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watched applies one change of the bucket. A pair that moved from this node to another one
// loses this node's stream, so that the cluster keeps one stream per pair.
func (f *Federation) watched(e jetstream.KeyValueEntry, initial bool) {
	local, remote, ok := parsePairKey(e.Key())
	if !ok {
		return
	}
	var o s2sOwner
	deleted := e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &o) != nil
	f.mu.Lock()
	old, had := f.owners[e.Key()]
	if had && old.Rev >= e.Revision() {
		f.mu.Unlock()
		return
	}
	if deleted {
		delete(f.owners, e.Key())
	} else {
		f.owners[e.Key()] = ownerRec{o, e.Revision()}
	}
	f.mu.Unlock()
	if !initial && had && old.Node == f.n.cfg.NodeName && (deleted || o.Node != f.n.cfg.NodeName) && f.hooks.Drop != nil {
		f.n.log.Info("cluster: another node took over a federation pair; closing this node's stream", "local", local, "remote", remote, "owner", o.Node)
		f.hooks.Drop(local, remote)
	}
}

// reconcileLoop runs reconcile every anti_entropy_interval until ctx ends.
func (f *Federation) reconcileLoop(ctx context.Context) {
	defer f.wg.Done()
	t := time.NewTicker(f.n.cfg.AntiEntropy)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.reconcile(ctx)
		}
	}
}

// reconcile checks the pairs the replica says this node owns against the bucket, for what a
// watch can miss: a watch the server ended (it is started again), a change it did not deliver
// (another owner: this node's stream is closed), a key NATS lost (written again for this node,
// which still holds the stream).
func (f *Federation) reconcile(ctx context.Context) {
	if !f.watching.Load() && f.runCtx.Err() == nil {
		if err := f.watch(f.runCtx); err != nil {
			f.n.log.Warn("cluster: watching the s2s bucket again", "err", err)
		}
	}
	if !f.n.owner() {
		return
	}
	me := f.self()
	f.mu.RLock()
	mine := map[string]ownerRec{}
	for key, rec := range f.owners {
		if rec.s2sOwner == me {
			mine[key] = rec
		}
	}
	f.mu.RUnlock()
	for key, rec := range mine {
		if ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, f.n.cfg.ForwardTimeout)
		e, err := f.kv.Get(rctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			val, _ := json.Marshal(me)
			if rev, cerr := f.kv.Create(rctx, key, val); cerr == nil {
				f.mu.Lock()
				f.owners[key] = ownerRec{me, rev}
				f.mu.Unlock()
			}
			cancel()
			continue
		}
		cancel()
		var o s2sOwner
		// A revision older than the replica's comes from a replica behind the leader.
		if err != nil || e.Revision() <= rec.Rev || json.Unmarshal(e.Value(), &o) != nil || o == me {
			continue
		}
		f.mu.Lock()
		if cur, ok := f.owners[key]; ok && cur.Rev == rec.Rev {
			f.owners[key] = ownerRec{o, e.Revision()}
		}
		f.mu.Unlock()
		if local, remote, ok := parsePairKey(key); ok && f.hooks.Drop != nil {
			f.n.log.Info("cluster: another node holds a federation pair this node had; closing this node's stream", "local", local, "remote", remote, "owner", o.Node)
			f.hooks.Drop(local, remote)
		}
	}
}

// note records an owner this node wrote or read, unless the replica knows a newer revision.
func (f *Federation) note(key string, rec ownerRec) {
	f.mu.Lock()
	if old, ok := f.owners[key]; !ok || old.Rev < rec.Rev {
		f.owners[key] = rec
	}
	f.mu.Unlock()
}

// forgetOwner drops a replica entry that proved stale, so the next lookup reads the key.
func (f *Federation) forgetOwner(key string, rev uint64) {
	f.mu.Lock()
	if old, ok := f.owners[key]; ok && old.Rev == rev {
		delete(f.owners, key)
	}
	f.mu.Unlock()
}

func (f *Federation) cached(key string) (ownerRec, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	rec, ok := f.owners[key]
	return rec, ok
}

// self is this node's current claim to a pair.
func (f *Federation) self() s2sOwner {
	return s2sOwner{Node: f.n.cfg.NodeName, Inc: f.n.reg.Inc()}
}

// lookup returns a pair's owner: from the replica unless fresh is set, else from the bucket,
// creating the key for this node when nobody owns the pair yet.
func (f *Federation) lookup(ctx context.Context, key string, fresh bool) (ownerRec, error) {
	if !fresh {
		if rec, ok := f.cached(key); ok {
			return rec, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, f.n.cfg.ForwardTimeout)
	defer cancel()
	exists := false // a write found the key while a read did not
	for {
		e, err := f.kv.Get(ctx, key)
		if err == nil {
			var o s2sOwner
			if json.Unmarshal(e.Value(), &o) == nil {
				rec := ownerRec{o, e.Revision()}
				f.note(key, rec)
				return rec, nil
			}
			// An unreadable value is replaced as a lost owner would be.
			return ownerRec{Rev: e.Revision()}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return ownerRec{}, err
		}
		if exists {
			// Served by a replica behind the leader: read again.
			if !pause(ctx) {
				return ownerRec{}, err
			}
			continue
		}
		if !f.n.owner() {
			return ownerRec{}, ErrFenced
		}
		me := f.self()
		val, _ := json.Marshal(me)
		rev, err := f.kv.Create(ctx, key, val)
		if err == nil {
			rec := ownerRec{me, rev}
			f.note(key, rec)
			return rec, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return ownerRec{}, err
		}
		// Another node created it meanwhile: read it.
		exists = true
	}
}

// takeOver makes this node the owner of a pair whose owner at rev is gone. Only one node
// succeeds for a given revision; the others find the new owner on their next reading.
func (f *Federation) takeOver(ctx context.Context, key string, old ownerRec) (ownerRec, error) {
	if !f.n.owner() {
		return ownerRec{}, ErrFenced
	}
	ctx, cancel := context.WithTimeout(ctx, f.n.cfg.ForwardTimeout)
	defer cancel()
	me := f.self()
	val, _ := json.Marshal(me)
	rev, err := f.kv.Update(ctx, key, val, old.Rev)
	if err != nil {
		return ownerRec{}, err
	}
	if old.Node != me.Node {
		f.Takeovers.Add(1)
		f.n.log.Info("cluster: took over a federation pair", "key", key, "from", old.Node, "incarnation", old.Inc)
	}
	rec := ownerRec{me, rev}
	f.note(key, rec)
	return rec, nil
}

// leaseHolds reports whether the owner's lease is still the one the record names.
func (f *Federation) leaseHolds(ctx context.Context, rec ownerRec) (bool, error) {
	if rec.Node == "" {
		return false, nil
	}
	inc, err := f.n.reg.LeaseOf(ctx, rec.Node)
	if err != nil {
		return false, err
	}
	return inc == rec.Inc, nil
}

// Send is the core's path to other servers in a cluster: the stanza goes out on this node's
// own stream when the node owns the pair, and to the owner over NATS otherwise, waiting until
// the owner accepted it so that one sender's stanzas for a pair keep their order.
func (f *Federation) Send(ctx context.Context, el *stanza.Element, to jid.JID) error {
	local, remote, err := f.hooks.Pair(el, to)
	if err != nil {
		return err
	}
	key := pairKey(local, remote)
	fresh := false
	// next is the owner this node just wrote; reading the key back could be served by a
	// replica that has not seen the write yet.
	var next *ownerRec
	for attempt := 0; attempt < s2sAttempts; attempt++ {
		var rec ownerRec
		if next != nil {
			rec, next = *next, nil
		} else if rec, err = f.lookup(ctx, key, fresh); err != nil {
			return f.unavailable(remote, err)
		}
		fresh = true
		me := f.self()
		switch {
		case rec.s2sOwner == me:
			if !f.n.owner() {
				return f.unavailable(remote, ErrFenced)
			}
			return f.hooks.Send(ctx, el, to)
		case rec.Node == me.Node || rec.Node == "":
			// A previous incarnation of this node, or an unreadable value: nobody serves it.
			if next, err = f.tryTakeOver(ctx, key, rec); err != nil {
				return f.unavailable(remote, err)
			}
			continue
		}
		f.Forwarded.Add(1)
		msg, err := f.n.nc.Request(f.n.nodeSubject(rec.Node), envelope(opS2S, to.String(), el), f.n.cfg.ForwardTimeout)
		switch {
		case err == nil && bytes.Equal(msg.Data, s2sSent):
			return nil
		case err == nil && bytes.HasPrefix(msg.Data, s2sErrPrefix):
			cond, text, _ := strings.Cut(string(msg.Data[len(s2sErrPrefix):]), "\n")
			return stanza.NewError(cond, text)
		case err == nil && bytes.Equal(msg.Data, s2sMoved):
			f.forgetOwner(key, rec.Rev)
			// The key changed since it was read; a read right away may still be served by a
			// replica that has not seen the change.
			pause(ctx)
			continue
		case errors.Is(err, nats.ErrNoResponders):
			// Nothing listens on the owner's subject: its process is gone. The pair is taken
			// over at once rather than after its lease expires, so federation does not stop for
			// lease_ttl; a node that was only cut off from NATS closes its stream when it sees
			// the new owner.
			f.n.log.Info("cluster: owner of a federation pair is gone", "remote", remote, "owner", rec.Node)
		case err == nil || errors.Is(err, nats.ErrTimeout):
			// The owner cannot serve the pair (fenced, starting, leaving) or did not answer:
			// it is replaced only when the key is unchanged and its lease is no longer the one
			// the key names; otherwise the stanza may well have been sent.
			cur, lerr := f.lookup(ctx, key, true)
			if lerr != nil {
				return f.unavailable(remote, lerr)
			}
			if cur.Rev != rec.Rev {
				next = &cur
				continue
			}
			holds, lerr := f.leaseHolds(ctx, rec)
			if lerr != nil {
				return f.unavailable(remote, lerr)
			}
			if holds {
				if err != nil {
					return stanza.NewError("remote-server-timeout", "the cluster node holding the connection to "+remote+" did not answer")
				}
				return stanza.NewError("remote-server-timeout", "the cluster node holding the connection to "+remote+" cannot use it at the moment")
			}
		default:
			return f.unavailable(remote, err)
		}
		if next, err = f.tryTakeOver(ctx, key, rec); err != nil {
			return f.unavailable(remote, err)
		}
	}
	return stanza.NewError("remote-server-timeout", "the connection to "+remote+" changed hands too often")
}

// tryTakeOver takes a pair over and returns the new record; when another node changed the key
// first it returns nil and no error, and the caller reads the key again.
func (f *Federation) tryTakeOver(ctx context.Context, key string, old ownerRec) (*ownerRec, error) {
	rec, err := f.takeOver(ctx, key, old)
	if isConflict(err) {
		// Reading the key right away may be served by a replica that has not seen the change.
		pause(ctx)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// isConflict reports whether a compare-and-set failed because the key changed meanwhile.
func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// unavailable is the stanza error for a stanza that could not be handed to any stream because
// the cluster could not settle who holds the pair.
func (f *Federation) unavailable(remote string, err error) error {
	f.n.log.Warn("cluster: federation pair unavailable", "remote", remote, "err", err)
	return stanza.NewError("remote-server-timeout", "the cluster cannot reach "+remote+" at the moment")
}

// handle serves a stanza another node forwarded for a pair it believes this node owns. It runs
// on the node's subscription, so forwarded stanzas are handed to the stream in arrival order.
func (f *Federation) handle(m *nats.Msg, to string, body []byte) {
	f.Received.Add(1)
	tj, err := jid.Parse(to)
	el, perr := parseStanza(body)
	if err != nil || perr != nil {
		// Resending it would not help.
		_ = m.Respond(append(append([]byte{}, s2sErrPrefix...), "bad-request\nundecodable forwarded stanza"...))
		return
	}
	local, remote, err := f.hooks.Pair(el, tj)
	if err != nil {
		_ = m.Respond(errAnswer(err))
		return
	}
	if !f.ready.Load() || !f.n.owner() {
		_ = m.Respond(s2sUnable)
		return
	}
	key := pairKey(local, remote)
	rec, ok := f.cached(key)
	if !ok {
		// The sender read the key more recently than this node's watch delivered it.
		if rec, err = f.lookup(context.Background(), key, true); err != nil {
			_ = m.Respond(s2sUnable)
			return
		}
	}
	me := f.self()
	switch {
	case rec.s2sOwner == me:
	case rec.Node == me.Node:
		// Written by a previous incarnation of this node: it is this node's to take.
		if _, err := f.takeOver(context.Background(), key, rec); err != nil {
			_ = m.Respond(s2sMoved)
			return
		}
	default:
		_ = m.Respond(s2sMoved)
		return
	}
	if err := f.hooks.Send(context.Background(), el, tj); err != nil {
		_ = m.Respond(errAnswer(err))
		return
	}
	_ = m.Respond(s2sSent)
}

// errAnswer encodes an error of the owner's Send for the forwarding node.
func errAnswer(err error) []byte {
	serr := stanza.NewError("remote-server-timeout", "")
	var e *stanza.Error
	if errors.As(err, &e) {
		serr = e
	}
	return append(append(append([]byte{}, s2sErrPrefix...), serr.Condition...), "\n"+serr.Text...)
}

// fenced closes this node's streams after it lost its lease: other nodes take its pairs over
// once the lease expires, and a fenced node must not keep a second stream open meanwhile.
func (f *Federation) fenced() {
	if f.hooks.Drop == nil {
		return
	}
	f.mu.RLock()
	var pairs [][2]string
	for key, rec := range f.owners {
		if rec.Node != f.n.cfg.NodeName {
			continue
		}
		if l, r, ok := parsePairKey(key); ok {
			pairs = append(pairs, [2]string{l, r})
		}
	}
	f.mu.RUnlock()
	for _, p := range pairs {
		f.hooks.Drop(p[0], p[1])
	}
}

// Close stops serving forwarded stanzas and releases the pairs this node owns, so that the
// next sender creates them afresh instead of finding the owner gone. Call it before the
// node's streams are closed.
func (f *Federation) Close() {
	f.ready.Store(false)
	f.n.fed.CompareAndSwap(f, nil)
	f.mu.RLock()
	me := f.self()
	var mine []ownerRec
	var keys []string
	for key, rec := range f.owners {
		if rec.s2sOwner == me {
			mine = append(mine, rec)
			keys = append(keys, key)
		}
	}
	f.mu.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), f.n.cfg.ForwardTimeout)
	for i, key := range keys {
		_ = f.kv.Delete(ctx, key, jetstream.LastRevision(mine[i].Rev))
	}
	cancel()
	f.cancel()
	f.wg.Wait()
}

// Owner returns the node holding the outgoing stream of a domain pair as this node's replica
// knows it, and whether it knows one.
func (f *Federation) Owner(local, remote string) (string, bool) {
	rec, ok := f.cached(pairKey(local, remote))
	return rec.Node, ok
}
