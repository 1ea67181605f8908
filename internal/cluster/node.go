package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"mellium.im/xmpp/jid"

	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// Operations carried on a node's subject. A message is one operation byte, the addressed full
// JID, a newline and, for deliveries, the stanza as written in a client stream.
const (
	opDeliver = 'D' // deliver to a local session; no answer (presence, broadcasts)
	opRequest = 'R' // deliver to a local session and answer "ok" or "gone" (messages, iq)
	opKick    = 'K' // a newer session bound this full JID elsewhere: close ours with <conflict/>
)

var (
	replyOK   = []byte("ok")
	replyGone = []byte("gone")
)

// Hooks are what the node needs of the server it runs in.
type Hooks struct {
	// Fenced closes every client stream after the node lost its lease: its sessions may
	// already be owned elsewhere, so its clients must reconnect.
	Fenced func()
	// Gone announces that a session of a lost node ended without its owner telling anyone:
	// its contacts get unavailable presence. It is called once per session in the cluster.
	Gone func(ctx context.Context, full jid.JID)
}

// owned is a session this node hosts and its registry revision.
type owned struct {
	s       router.Session
	rev     uint64 // 0 while the claim is under way or failed
	pending bool
	since   int64
	pres    string // last available presence, as written
	flags   []string
}

// lostSession is a session of a lost node waiting for its grace period to end.
type lostSession struct {
	full jid.JID
	rev  uint64 // revision of the removed entry
	due  time.Time
}

// Node is one Impetus node of a cluster. It implements router.Router around the node's
// router.Local: sessions on this node are delivered to directly, sessions elsewhere through
// their node's NATS subject.
type Node struct {
	cfg      Config
	log      *slog.Logger
	local    *router.Local
	accounts router.Accounts
	rules    router.Rules
	hooks    Hooks

	emb     *embedded
	nc      *nats.Conn
	reg     *Registry
	subject string
	sub     *nats.Subscription

	mu    sync.Mutex
	owned map[string]*owned // full JID → session
	dirty map[string]bool   // full JIDs whose presence changed since the last registry write
	lost  []lostSession
	// suspects are owners (node#incarnation) whose lease one sweep found missing; used
	// only by the sweep goroutine.
	suspects map[string]bool

	wake chan struct{}
	// rebuild is signalled when the registry stream elected a leader.
	rebuild chan struct{}
	fenced  atomic.Bool
	// fed is the node's federation (s2s.go), once the server started it.
	fed    atomic.Pointer[Federation]
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Counters for metrics and tests.
	Forwarded atomic.Int64
	Received  atomic.Int64
	Cleaned   atomic.Int64
	// BatchedRecipients counts the recipients of the presence sent in batches (batch.go).
	BatchedRecipients atomic.Int64

	// rooms gives MUC rooms an owner node (rooms.go), once a service uses it.
	rooms atomic.Pointer[Rooms]
	// runCtx ends when the node leaves the cluster; background work started later uses it.
	runCtx context.Context
}

// Start connects to NATS (starting the embedded server if configured), takes the node's lease,
// loads the registry and subscribes to the node's subject.
func Start(ctx context.Context, cfg Config, dataDir string, local *router.Local, accounts router.Accounts, hooks Hooks, log *slog.Logger) (*Node, error) {
	n := &Node{cfg: cfg, log: log, local: local, accounts: accounts, hooks: hooks,
		owned: map[string]*owned{}, dirty: map[string]bool{}, suspects: map[string]bool{}, wake: make(chan struct{}, 1),
		subject: cfg.BucketPrefix + ".node." + cfg.NodeName}
	n.rules = router.Rules{Sessions: n.Sessions, Session: n.Session, Deliver: n.deliver, Accounts: accounts}
	var err error
	if cfg.EmbeddedNATS {
		if n.emb, err = startEmbedded(&cfg, dataDir, log); err != nil {
			return nil, err
		}
	}
	if n.nc, err = connect(&cfg, n.emb, log); err != nil {
		n.emb.close()
		return nil, fmt.Errorf("cluster: connecting to nats: %w", err)
	}
	// A JetStream cluster needs a quorum of its servers before buckets can be created; the
	// nodes of a new cluster start at about the same time, so this waits for the others.
	octx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if n.reg, err = OpenRegistry(octx, n.nc, &cfg); err != nil {
		n.close()
		return nil, err
	}
	n.reg.logger = log
	var inc uint64
	for {
		if inc, err = n.reg.Acquire(octx); err == nil {
			break
		}
		select {
		case <-octx.Done():
			n.close()
			return nil, err
		case <-time.After(250 * time.Millisecond):
		}
	}
	rctx, rcancel := context.WithCancel(context.Background())
	n.cancel = rcancel
	n.runCtx = rctx
	if err := n.reg.Watch(rctx, n.watched); err != nil {
		n.close()
		return nil, err
	}
	// A new leader of the in-memory registry stream may lack the old leader's last writes, and
	// a watch positioned beyond them would skip the writes that reuse their sequence numbers
	// (Registry.CheckWatch): the replica is rebuilt as soon as JetStream announces the election.
	n.rebuild = make(chan struct{}, 1)
	if _, err = n.nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."+n.reg.StreamName(), func(*nats.Msg) {
		select {
		case n.rebuild <- struct{}{}:
		default:
		}
	}); err != nil {
		n.close()
		return nil, fmt.Errorf("cluster: subscribing to the registry's leader elections: %w", err)
	}
	if n.sub, err = n.nc.Subscribe(n.subject, n.handle); err != nil {
		n.close()
		return nil, fmt.Errorf("cluster: subscribing to %s: %w", n.subject, err)
	}
	// Beyond NATS's default of 65536 pending messages a burst of presence from a large node
	// would be dropped here; the queue is bounded by configuration instead.
	if err := n.sub.SetPendingLimits(cfg.InboundQueue, int(cfg.InboundQueueBytes)); err != nil {
		n.close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	_ = n.nc.Flush()
	n.loop(rctx, cfg.LeaseRenew, n.renew)
	n.loop(rctx, cfg.LeaseRenew, n.sweep)
	n.loop(rctx, cfg.AntiEntropy, n.antiEntropy)
	n.loop(rctx, 100*time.Millisecond, n.announceLost)
	n.wg.Add(2)
	go n.presenceWriter(rctx)
	go n.rebuilder(rctx)
	log.Info("cluster: node joined", "node", cfg.NodeName, "incarnation", inc, "subject", n.subject)
	return n, nil
}

// loop runs fn every interval until ctx ends.
func (n *Node) loop(ctx context.Context, every time.Duration, fn func(context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn(ctx)
			}
		}
	}()
}

// Close leaves the cluster: the background work stops, the lease is released so other nodes
// clean up at once whatever registry entries the closing sessions left, and NATS is closed.
func (n *Node) Close() {
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	if n.reg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ForwardTimeout)
		n.mu.Lock()
		var left []Record
		for full, o := range n.owned {
			if j, err := jid.Parse(full); err == nil && o.rev != 0 {
				left = append(left, Record{Bare: j.Bare().String(), Resource: j.Resourcepart(), Rev: o.rev})
			}
		}
		n.mu.Unlock()
		for _, r := range left {
			_ = n.reg.Remove(ctx, r.Bare, r.Resource, r.Rev)
		}
		n.reg.Release(ctx)
		cancel()
	}
	n.close()
}

func (n *Node) close() {
	if n.nc != nil {
		_ = n.nc.Drain()
		n.nc.Close()
	}
	n.emb.close()
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// Registry returns the session registry.
func (n *Node) Registry() *Registry { return n.reg }

// owner reports whether the node may act as the owner of sessions: it holds a lease renewed
// within fence_after. The renewal time is checked too, so that a process resumed after a pause
// longer than its lease stops acting before its renewal loop notices.
func (n *Node) owner() bool {
	return !n.fenced.Load() && n.reg.Inc() != 0 && n.reg.SinceRenewal() < n.cfg.FenceAfter
}

// Fenced reports whether the node lost its lease and has not taken a new one yet.
func (n *Node) Fenced() bool { return n.fenced.Load() }

// Bind implements router.Router: the session is bound locally at once and claimed in the
// registry; a session with the same full JID on another node is told to close (RFC 6120
// §7.7.2.2: the new session wins).
func (n *Node) Bind(s router.Session) {
	if !n.owner() {
		// Closed before Bind returns (Bind runs on the session's own goroutine), so that the
		// client sees nothing answered on a session the cluster does not know.
		if c, ok := s.(interface{ Close(*stanza.StreamError) }); ok {
			c.Close(stanza.NewStreamError("system-shutdown", "this node is not part of the cluster at the moment; connect again"))
		}
		return
	}
	n.local.Bind(s)
	full := s.JID()
	key := full.String()
	o := &owned{s: s, pending: true, since: time.Now().UnixMilli()}
	n.mu.Lock()
	n.owned[key] = o
	n.mu.Unlock()
	e := n.entryOf(o)
	rev, err := n.reg.Claim(context.Background(), full.Bare().String(), full.Resourcepart(), e, n.kick)
	// While JetStream elects a registry leader (seconds, after a node's crash) claims fail. An
	// unregistered session is unreachable from the other nodes, whose messages for it go to
	// offline storage, which only its next initial presence would deliver: the claim is retried
	// here, on the session's own goroutine, before the client's next stanza (its initial
	// presence) is read. A registry out of reach for longer fences the node anyway.
	for start := time.Now(); err != nil && n.owner() && time.Since(start) < n.cfg.FenceAfter; {
		time.Sleep(n.cfg.LeaseRenew / 4)
		n.mu.Lock()
		ours := n.owned[key] == o
		e = n.entryOf(o)
		n.mu.Unlock()
		if !ours {
			break // unbound meanwhile
		}
		rev, err = n.reg.Claim(context.Background(), full.Bare().String(), full.Resourcepart(), e, n.kick)
	}
	n.mu.Lock()
	o.pending = false
	o.rev = rev
	stillOurs := n.owned[key] == o
	recheck := n.dirty[key]
	n.mu.Unlock()
	if err != nil {
		// Anti-entropy claims it later; until then other nodes cannot reach this session.
		n.log.Warn("cluster: registering session failed", "jid", key, "err", err)
		return
	}
	if !stillOurs {
		// Unbound while the claim was under way.
		_ = n.reg.Remove(context.Background(), full.Bare().String(), full.Resourcepart(), rev)
		return
	}
	if recheck {
		n.signal()
	}
}

// Unbind implements router.Router; the registry entry is deleted only if it is still this
// session's, so a session replaced elsewhere never deletes its successor's entry.
func (n *Node) Unbind(s router.Session) {
	n.local.Unbind(s)
	full := s.JID()
	key := full.String()
	n.mu.Lock()
	o := n.owned[key]
	if o == nil || o.s != s {
		n.mu.Unlock()
		return
	}
	delete(n.owned, key)
	delete(n.dirty, key)
	rev := o.rev
	n.mu.Unlock()
	if rev != 0 {
		if err := n.reg.Remove(context.Background(), full.Bare().String(), full.Resourcepart(), rev); err != nil {
			n.log.Debug("cluster: removing session entry", "jid", key, "err", err)
		}
	}
}

// Session implements router.Router.
func (n *Node) Session(full jid.JID) router.Session {
	if s := n.local.Session(full); s != nil {
		return s
	}
	if rec, ok := n.reg.Lookup(full.Bare().String(), full.Resourcepart()); ok && rec.Node != n.cfg.NodeName {
		return n.proxy(full, rec)
	}
	return nil
}

// Sessions implements router.Router: this node's sessions of bare and proxies for the others.
func (n *Node) Sessions(bare jid.JID) []router.Session {
	loc := n.local.Sessions(bare)
	recs := n.reg.Resources(bare.String())
	if len(recs) == 0 {
		return loc
	}
	out := make([]router.Session, 0, len(loc)+len(recs))
	out = append(out, loc...)
	for _, rec := range recs {
		if rec.Node == n.cfg.NodeName {
			continue
		}
		full, err := jid.New(bare.Localpart(), bare.Domainpart(), rec.Resource)
		if err != nil {
			continue
		}
		out = append(out, n.proxy(full, rec))
	}
	return out
}

// PresenceChanged records that a local session sent broadcast presence, so that its registry
// entry (availability, priority, presence for probes) is rewritten by the presence writer.
func (n *Node) PresenceChanged(s router.Session, el *stanza.Element) {
	key := s.JID().String()
	n.mu.Lock()
	o := n.owned[key]
	if o == nil || o.s != s {
		n.mu.Unlock()
		return
	}
	if el.Attr("type") == "" {
		o.pres = n.trimPresence(el)
	} else {
		o.pres = ""
	}
	n.dirty[key] = true
	n.mu.Unlock()
	n.signal()
}

func (n *Node) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// trimPresence keeps a presence for the registry within max_presence_bytes: a larger one is
// reduced to its show, status and priority.
func (n *Node) trimPresence(el *stanza.Element) string {
	b := el.AppendXML(nil, stanza.NSClient)
	if int64(len(b)) <= n.cfg.MaxPresenceBytes {
		return string(b)
	}
	small := stanza.NewElement(stanza.NSClient, "presence")
	for _, a := range el.Attrs {
		small.SetAttr(a.Name, a.Value)
	}
	for _, name := range []string{"show", "priority"} {
		if c := el.Child(stanza.NSClient, name); c != nil {
			small.AddChild(c.Copy())
		}
	}
	// Other nodes read the entity capabilities (XEP-0115) from here for PEP notifications.
	if c := el.Child("http://jabber.org/protocol/caps", "c"); c != nil {
		small.AddChild(c.Copy())
	}
	return string(small.AppendXML(nil, stanza.NSClient))
}

func (n *Node) entryOf(o *owned) Entry {
	return Entry{Node: n.cfg.NodeName, Inc: n.reg.Inc(), Avail: o.s.Available(), Prio: o.s.Priority(), Pres: o.pres, Flags: o.flags, Since: o.since}
}

// MarkInterested records that a local session asked for the pushes of namespace ns (the roster,
// carbons), or stopped (on false), so that modules on other nodes push to it as well.
func (n *Node) MarkInterested(s router.Session, ns string, on bool) {
	key := s.JID().String()
	n.mu.Lock()
	o := n.owned[key]
	if o == nil || o.s != s || slices.Contains(o.flags, ns) == on {
		n.mu.Unlock()
		return
	}
	if on {
		o.flags = append(slices.Clip(o.flags), ns)
	} else {
		o.flags = slices.DeleteFunc(slices.Clone(o.flags), func(f string) bool { return f == ns })
	}
	n.dirty[key] = true
	n.mu.Unlock()
	n.signal()
}

// presenceWriter rewrites the registry entries of sessions whose presence changed. Changes
// that arrive while a write is under way are coalesced into the next one.
func (n *Node) presenceWriter(ctx context.Context) {
	defer n.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		}
		n.mu.Lock()
		type job struct {
			key string
			o   *owned
			e   Entry
			rev uint64
		}
		var jobs []job
		for key := range n.dirty {
			o := n.owned[key]
			if o == nil {
				delete(n.dirty, key)
				continue
			}
			if o.pending || o.rev == 0 {
				continue // written when the claim completes
			}
			delete(n.dirty, key)
			jobs = append(jobs, job{key, o, n.entryOf(o), o.rev})
		}
		n.mu.Unlock()
		for _, j := range jobs {
			full := j.o.s.JID()
			rev, err := n.reg.Update(ctx, full.Bare().String(), full.Resourcepart(), j.e, j.rev)
			n.mu.Lock()
			if err == nil && j.o.rev == j.rev {
				j.o.rev = rev
			}
			n.mu.Unlock()
			if err != nil {
				n.log.Debug("cluster: writing presence to the registry", "jid", j.key, "err", err)
			}
		}
	}
}

// kick tells the node of an older session with the same full JID to close it. A node that
// does not answer is gone or cut off; its entry is replaced anyway and it learns of the
// replacement from its registry watch once it can.
func (n *Node) kick(old Record) error {
	if old.Node == n.cfg.NodeName {
		return nil // the local router already replaced it
	}
	full := old.Bare + "/" + old.Resource
	_, err := n.nc.Request(n.cfg.BucketPrefix+".node."+old.Node, envelope(opKick, full, nil), n.cfg.ForwardTimeout)
	if err != nil && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
		return err
	}
	return nil
}

// watched is called for each registry change seen after start-up. An entry for a session of
// this node that now names another node means the session was replaced there.
func (n *Node) watched(rec Record, deleted bool) {
	if deleted || rec.Node == n.cfg.NodeName {
		return
	}
	key := rec.Bare + "/" + rec.Resource
	n.mu.Lock()
	o := n.owned[key]
	older := o != nil && rec.Since < o.since
	n.mu.Unlock()
	if older {
		// Written for a session bound before this one: a lost node's last write committed
		// after a leader election, or a watch replaying what it had delivered. Anti-entropy
		// claims the entry back, as it does for a stale entry it finds itself.
		return
	}
	n.replacedElsewhere(key)
}

// replacedElsewhere closes this node's session of full with <conflict/>, if there is one.
func (n *Node) replacedElsewhere(full string) {
	n.mu.Lock()
	o := n.owned[full]
	if o == nil || o.pending {
		n.mu.Unlock()
		return
	}
	delete(n.owned, full)
	delete(n.dirty, full)
	n.mu.Unlock()
	n.local.Unbind(o.s)
	o.s.Replaced()
}

// handle serves the node's subject, one message at a time in arrival order, so stanzas from
// one sender node keep their order.
func (n *Node) handle(m *nats.Msg) {
	if len(m.Data) < 2 {
		return
	}
	op := m.Data[0]
	full, body, _ := bytes.Cut(m.Data[1:], []byte{'\n'})
	switch op {
	case opKick:
		n.replacedElsewhere(string(full))
		_ = m.Respond(replyOK)
		return
	case opS2S:
		if f := n.fed.Load(); f != nil {
			f.handle(m, string(full), body)
		} else {
			_ = m.Respond(s2sUnable)
		}
		return
	case opBatch:
		n.handleBatch(m.Data[1:])
		return
	case opDeliver, opRequest:
	default:
		return
	}
	n.Received.Add(1)
	to, err := jid.Parse(string(full))
	var s router.Session
	if err == nil {
		s = n.local.Session(to)
	}
	if s == nil {
		if op == opRequest {
			_ = m.Respond(replyGone)
		}
		return
	}
	el, err := parseStanza(body)
	if err != nil {
		n.log.Warn("cluster: undecodable stanza from another node", "err", err)
		if op == opRequest {
			_ = m.Respond(replyOK) // resending it would not help
		}
		return
	}
	s.Deliver(el)
	if op == opRequest {
		_ = m.Respond(replyOK)
	}
}

const streamHead = `<stream:stream xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams">`

// parseStanza decodes a stanza written as in a client stream.
func parseStanza(b []byte) (*stanza.Element, error) {
	d := xmlstream.NewDecoder(strings.NewReader(streamHead+string(b)), xmlstream.Limits{})
	if _, err := d.ReadHeader(); err != nil {
		return nil, err
	}
	return d.ReadElement()
}

func envelope(op byte, full string, el *stanza.Element) []byte {
	b := make([]byte, 0, 256)
	b = append(b, op)
	b = append(b, full...)
	b = append(b, '\n')
	if el != nil {
		b = el.AppendXML(b, stanza.NSClient)
	}
	return b
}

// closeSession ends a session's stream with serr, when the session can be closed so.
func closeSession(s router.Session, serr *stanza.StreamError) {
	if c, ok := s.(interface{ Close(*stanza.StreamError) }); ok {
		go c.Close(serr)
	}
}

// rebuilder rebuilds the registry replica after each leader election of the registry stream,
// retrying every lease_renew while JetStream cannot serve the watch yet.
func (n *Node) rebuilder(ctx context.Context) {
	defer n.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.rebuild:
		}
		for {
			err := n.reg.rewatch()
			if err == nil {
				n.log.Info("cluster: registry replica rebuilt after a leader election")
				break
			}
			n.log.Warn("cluster: rebuilding the registry replica after a leader election", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(n.cfg.LeaseRenew):
			}
		}
	}
}
