package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// Answers of a node to a stanza forwarded to one of its rooms.
var (
	roomTaken = []byte("ok")
	roomMoved = []byte("moved") // this node does not own the room (any more)
)

// ErrRoomMoved is returned by Forward when the node does not own the room or is gone.
var ErrRoomMoved = errors.New("cluster: the room's node did not take the stanza")

// roomOwner is the value of a room's key: the owning node and the incarnation whose lease the
// ownership is bound to. When that lease is gone, any node may take the room over by
// compare-and-set on the key's revision.
type roomOwner struct {
	Node string `json:"n"`
	Inc  uint64 `json:"i"`
}

type ownerEntry struct {
	roomOwner
	rev uint64
}

// roomService is what a MUC service of this node registered (muc.Cluster.Serve).
type roomService struct {
	handle func(ctx context.Context, el *stanza.Element)
	lost   func(node string, self bool)
}

// Rooms gives every room of the MUC services one owner node at a time (it implements
// muc.Cluster). Ownership is a key per room in the JetStream KV bucket <prefix>_rooms, written
// only by compare-and-set and bound to the owner's lease like a session entry; stanzas for a
// room are forwarded to its owner on the subject <prefix>.rooms.<node>, served by one
// subscription so that the stanzas one node forwards keep their order.
type Rooms struct {
	n       *Node
	kv      jetstream.KeyValue
	sub     *nats.Subscription
	subject string

	mu       sync.Mutex
	owners   map[string]ownerEntry // room bare JID → owner as last read or written
	services map[string]roomService
	// watched are the other nodes this node forwarded room stanzas to, with the incarnation
	// seen; their leases are checked so that the loss of one is noticed (watchLoop).
	watched  map[string]uint64
	suspects map[string]bool
}

// Rooms returns the node's room ownership, opening its bucket and subject on first use.
func (n *Node) Rooms(ctx context.Context) (*Rooms, error) {
	if r := n.rooms.Load(); r != nil {
		return r, nil
	}
	js, err := jetstream.New(n.nc)
	if err != nil {
		return nil, fmt.Errorf("cluster: jetstream: %w", err)
	}
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cfg := jetstream.KeyValueConfig{
		Bucket:   n.cfg.BucketPrefix + "_rooms",
		History:  1,
		Storage:  jetstream.MemoryStorage,
		Replicas: n.cfg.Replicas,
	}
	var kv jetstream.KeyValue
	for {
		if kv, err = createKV(octx, js, cfg); err == nil {
			break
		}
		select {
		case <-octx.Done():
			return nil, fmt.Errorf("cluster: creating the rooms bucket: %w", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	r := &Rooms{n: n, kv: kv, subject: n.cfg.BucketPrefix + ".rooms." + n.cfg.NodeName,
		owners: map[string]ownerEntry{}, services: map[string]roomService{},
		watched: map[string]uint64{}, suspects: map[string]bool{}}
	// A subscription of its own: a room's owner forwards messages to occupants on other nodes
	// and waits for them to be taken, which must not wait behind the node's delivery queue.
	if r.sub, err = n.nc.Subscribe(r.subject, r.serve); err != nil {
		return nil, fmt.Errorf("cluster: subscribing to %s: %w", r.subject, err)
	}
	if err := r.sub.SetPendingLimits(n.cfg.InboundQueue, int(n.cfg.InboundQueueBytes)); err != nil {
		_ = r.sub.Unsubscribe()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	_ = n.nc.Flush()
	if !n.rooms.CompareAndSwap(nil, r) {
		_ = r.sub.Unsubscribe()
		return n.rooms.Load(), nil
	}
	n.loop(n.runCtx, n.cfg.LeaseRenew, r.watchLoop)
	return r, nil
}

func roomKey(room string) string { return "r." + base64.RawURLEncoding.EncodeToString([]byte(room)) }

// Serve implements muc.Cluster.
func (r *Rooms) Serve(domain string, handle func(ctx context.Context, el *stanza.Element), lost func(node string, self bool)) {
	r.mu.Lock()
	r.services[strings.ToLower(domain)] = roomService{handle, lost}
	r.mu.Unlock()
}

// NodeOf implements muc.Cluster from the session registry.
func (r *Rooms) NodeOf(full jid.JID) string {
	if r.n.local.Session(full) != nil {
		return r.n.cfg.NodeName
	}
	if rec, ok := r.n.reg.Lookup(full.Bare().String(), full.Resourcepart()); ok {
		return rec.Node
	}
	return ""
}

// Owner implements muc.Cluster. The owner is read from memory when known; otherwise from the
// bucket, where, when take is set, a missing key is created and a key whose owner has no lease
// any more (lost, or fenced and back with a new incarnation) is taken over, both by
// compare-and-set, so that of several nodes taking a room at once exactly one succeeds.
func (r *Rooms) Owner(ctx context.Context, room jid.JID, take bool) (string, bool, bool, error) {
	self := r.n.cfg.NodeName
	if !r.n.owner() {
		return "", false, false, ErrFenced
	}
	inc := r.n.reg.Inc()
	key := roomKey(room.String())
	r.mu.Lock()
	o, ok := r.owners[key]
	r.mu.Unlock()
	if ok && o.Node == self && o.Inc == inc {
		return self, true, false, nil
	}
	if ok && o.Node != self {
		return o.Node, false, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.n.cfg.ForwardTimeout)
	defer cancel()
	mine, _ := json.Marshal(roomOwner{Node: self, Inc: inc})
	for attempt := 0; attempt < 5; attempt++ {
		e, err := r.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if !take {
				return "", false, false, nil
			}
			// Nobody held the room since it was released or the bucket was lost: an instance
			// this node still holds in memory is the latest there is.
			rev, err := r.kv.Create(ctx, key, mine)
			if err == nil {
				r.set(key, ownerEntry{roomOwner{self, inc}, rev})
				return self, true, false, nil
			}
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return "", false, false, err
			}
			continue
		}
		if err != nil {
			return "", false, false, err
		}
		var cur roomOwner
		_ = json.Unmarshal(e.Value(), &cur)
		r.n.log.Debug("cluster: room owner read", "room", room.String(), "node", cur.Node, "incarnation", cur.Inc)
		if cur.Node == self && cur.Inc == inc {
			// Taken by this incarnation; the memory entry had been dropped.
			r.set(key, ownerEntry{cur, e.Revision()})
			return self, true, false, nil
		}
		if cur.Node != self && cur.Node != "" {
			live, err := r.n.reg.LeaseOf(ctx, cur.Node)
			if err != nil {
				return "", false, false, err
			}
			if live == cur.Inc {
				r.set(key, ownerEntry{cur, e.Revision()})
				r.mu.Lock()
				r.watched[cur.Node] = cur.Inc
				r.mu.Unlock()
				return cur.Node, false, false, nil
			}
		}
		if !take {
			return "", false, false, nil
		}
		// The owner's lease is gone: its rooms died with it, or it fenced itself and dropped
		// them. Take the room over; it is loaded from storage.
		rev, err := r.kv.Update(ctx, key, mine, e.Revision())
		if err == nil {
			r.n.log.Info("cluster: took over a room of a lost node", "room", room.String(), "from", cur.Node)
			r.set(key, ownerEntry{roomOwner{self, inc}, rev})
			return self, true, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return "", false, false, err
		}
	}
	return "", false, false, fmt.Errorf("cluster: taking room %s: too many concurrent claims", room.String())
}

func (r *Rooms) set(key string, e ownerEntry) {
	r.mu.Lock()
	r.owners[key] = e
	r.mu.Unlock()
}

// forget drops what this node remembers of a room's owner, after the owner did not take a
// stanza: the next Owner reads the bucket.
func (r *Rooms) forget(key string) {
	r.mu.Lock()
	delete(r.owners, key)
	r.mu.Unlock()
}

// Forward implements muc.Cluster: el goes to node's rooms subject by request, which node
// answers as soon as it takes el (before handling it), so the wait is short and the order of
// the forwarded stanzas is that of the requests. NATS answers at once when node is gone.
func (r *Rooms) Forward(_ context.Context, room jid.JID, node string, el *stanza.Element) error {
	r.n.Forwarded.Add(1)
	// The sending node and incarnation come first: the owner watches the lease of every node
	// its occupants are connected through. Then the registry revision of the sending session:
	// a session that just bound may not have reached the owner's replica yet, and the room's
	// answers to it must not be dropped as addressed to nobody.
	var rev uint64
	r.n.mu.Lock()
	if o := r.n.owned[el.Attr("from")]; o != nil {
		rev = o.rev
	}
	r.n.mu.Unlock()
	body := make([]byte, 0, 512)
	body = append(body, r.n.cfg.NodeName...)
	body = append(body, ' ')
	body = strconv.AppendUint(body, r.n.reg.Inc(), 10)
	body = append(body, ' ')
	body = strconv.AppendUint(body, rev, 10)
	body = append(body, '\n')
	body = el.AppendXML(body, stanza.NSClient)
	msg, err := r.n.nc.Request(r.n.cfg.BucketPrefix+".rooms."+node, body, r.n.cfg.ForwardTimeout)
	if err == nil && string(msg.Data) == string(roomTaken) {
		return nil
	}
	r.n.log.Debug("cluster: a room's node did not take a stanza", "room", room.String(), "node", node, "err", err)
	r.forget(roomKey(room.String()))
	if err != nil {
		return fmt.Errorf("cluster: forwarding to room %s on %s: %w", room.String(), node, err)
	}
	return ErrRoomMoved
}

// Release implements muc.Cluster: the key is deleted only at the revision this node wrote, so
// a room another node took meanwhile keeps its owner.
func (r *Rooms) Release(ctx context.Context, room jid.JID) {
	key := roomKey(room.String())
	r.mu.Lock()
	o, ok := r.owners[key]
	delete(r.owners, key)
	r.mu.Unlock()
	if !ok || o.Node != r.n.cfg.NodeName {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.n.cfg.ForwardTimeout)
	defer cancel()
	if err := r.kv.Delete(ctx, key, jetstream.LastRevision(o.rev)); err != nil {
		r.n.log.Debug("cluster: releasing a room", "room", room.String(), "err", err)
	}
}

// serve takes the stanzas other nodes forward to this node's rooms, one at a time. A node
// that does not own the room answers "moved" and the sender asks the bucket again.
func (r *Rooms) serve(m *nats.Msg) {
	head, xml, _ := bytes.Cut(m.Data, []byte{'\n'})
	var sender Record
	if f := strings.Fields(string(head)); len(f) == 3 && f[0] != r.n.cfg.NodeName {
		if inc, err := strconv.ParseUint(f[1], 10, 64); err == nil && inc != 0 {
			r.mu.Lock()
			r.watched[f[0]] = inc
			r.mu.Unlock()
			sender.Node, sender.Inc = f[0], inc
		}
		sender.Rev, _ = strconv.ParseUint(f[2], 10, 64)
	}
	el, err := parseStanza(xml)
	if err != nil {
		r.n.log.Warn("cluster: undecodable stanza from another node", "err", err)
		_ = m.Respond(roomTaken) // resending it would not help
		return
	}
	r.n.Received.Add(1)
	to, err := jid.Parse(el.Attr("to"))
	if err != nil {
		_ = m.Respond(roomTaken)
		return
	}
	r.mu.Lock()
	svc, ok := r.services[to.Domainpart()]
	o, owned := r.owners[roomKey(to.Bare().String())]
	r.mu.Unlock()
	if !ok || !owned || o.Node != r.n.cfg.NodeName || o.Inc != r.n.reg.Inc() || !r.n.owner() {
		_ = m.Respond(roomMoved)
		return
	}
	_ = m.Respond(roomTaken)
	if sender.Rev != 0 && sender.Node != "" && !r.awaitRevision(sender.Rev) {
		// The replica's watch lags (it does while JetStream elects a leader): the room's
		// answers must still reach the session, which the sending node vouches for.
		if from, err := jid.Parse(el.Attr("from")); err == nil {
			sender.Bare, sender.Resource = from.Bare().String(), from.Resourcepart()
			r.n.reg.learn(sender)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svc.handle(ctx, el)
}

// awaitRevision waits, at most forward_timeout, until the registry replica has seen revision
// rev, so that the sessions bound up to it are known here; it reports whether it has. The watch delivers within
// milliseconds; the bound keeps a stalled watch from holding the rooms queue.
func (r *Rooms) awaitRevision(rev uint64) bool {
	deadline := time.Now().Add(r.n.cfg.ForwardTimeout)
	for r.n.reg.lastSeen.Load() < rev {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// watchLoop checks the leases of the nodes owning rooms this node forwarded to, and of the
// nodes that forwarded stanzas to this node's rooms. A lease found
// missing (or held by another incarnation) on two checks in a row means the node was lost:
// the services are told, so that the local occupants of its rooms learn that they must enter
// again, which makes a live node take the room.
func (r *Rooms) watchLoop(ctx context.Context) {
	if !r.n.owner() {
		return
	}
	r.mu.Lock()
	nodes := make(map[string]uint64, len(r.watched))
	for node, inc := range r.watched {
		nodes[node] = inc
	}
	r.mu.Unlock()
	for node, inc := range nodes {
		live, err := r.n.reg.LeaseOf(ctx, node)
		if err != nil {
			return // no verdict without the registry
		}
		key := fmt.Sprintf("%s#%d", node, inc)
		if live == inc {
			delete(r.suspects, key)
			continue
		}
		if !r.suspects[key] {
			r.suspects[key] = true
			continue
		}
		delete(r.suspects, key)
		r.mu.Lock()
		if r.watched[node] == inc {
			delete(r.watched, node)
		}
		r.mu.Unlock()
		r.nodeLost(node, inc)
	}
}

// nodeLost forgets the rooms of a lost node incarnation and tells the services. It is also
// called by the session sweep, which notices lost nodes hosting sessions (occupants of this
// node's rooms among them); a service handles a repeated notice as a no-op.
func (r *Rooms) nodeLost(node string, inc uint64) {
	r.mu.Lock()
	for key, o := range r.owners {
		if o.Node == node && (inc == 0 || o.Inc == inc) {
			delete(r.owners, key)
		}
	}
	svcs := make([]roomService, 0, len(r.services))
	for _, s := range r.services {
		svcs = append(svcs, s)
	}
	r.mu.Unlock()
	for _, s := range svcs {
		s.lost(node, false)
	}
}

// fenced drops every room ownership of this node: other nodes take the rooms over once the
// lease has expired, and the services drop their rooms from memory.
func (r *Rooms) fenced() {
	r.mu.Lock()
	r.owners = map[string]ownerEntry{}
	svcs := make([]roomService, 0, len(r.services))
	for _, s := range r.services {
		svcs = append(svcs, s)
	}
	r.mu.Unlock()
	for _, s := range svcs {
		s.lost(r.n.cfg.NodeName, true)
	}
}
