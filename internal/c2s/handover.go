package c2s

// XEP-0198 resumption of a session that another node of a cluster holds.
//
// The package knows nothing of the cluster: the server gives Streams a Handover, which names
// resumption ids after the node that issued them and fetches a session's state from another
// node. The node holding the session answers such a request with Streams.HandOver: the
// session is detached from its connection and from this node, without the unavailable
// presence of an ending session, and its state goes to the node the client resumes on, which
// binds it again (resumeRemote).

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/transport"
)

// Handover moves resumable sessions between the nodes of a cluster.
type Handover interface {
	// NewID returns a new resumption id from which other nodes can tell that this node
	// issued it.
	NewID() string
	// Fetch asks the node holding resumption id for account bare to hand the session over.
	// h is the count of stanzas the client says it handled, checked by the holder. It
	// returns ErrNotHeld when no node holds a matching session, or a *stanza.StreamError
	// that ends the client's stream (an h higher than what was sent).
	Fetch(ctx context.Context, id string, bare jid.JID, h uint32) (*HandoverState, error)
	// Taken tells the former holder that the session was bound again here, so it may forget
	// the copy of the unacknowledged stanzas it keeps until then.
	Taken(state *HandoverState)
}

// ErrNotHeld is what Fetch and HandOver return when no session matches a resumption id and
// account: XEP-0198 §5 answers it with <item-not-found/>.
var ErrNotHeld = errors.New("c2s: no resumable session with that id for this account")

// HandoverState is what a session carries from one node to another.
type HandoverState struct {
	// ID is the resumption id; Holder the node that handed the session over.
	ID     string
	Holder string
	// JID is the session's full JID.
	JID jid.JID
	// InH counts the stanzas handled from the client; OutH those sent to it, of which it
	// acknowledged Acked (before the h of its <resume/>).
	InH, OutH, Acked uint32
	// Queue holds the stanzas sent and not acknowledged, oldest first; Held those a client
	// in the inactive state (XEP-0352) had not been sent yet.
	Queue []*stanza.Element
	Held  []*stanza.Element
	// Timeout is how long the session waits for a resumption once detached.
	Timeout time.Duration
	// Available, Priority and Presence are its broadcast presence (RFC 6121 §4), Presence
	// nil when it is unavailable.
	Available bool
	Priority  int
	Presence  *stanza.Element
	// Interests are the namespaces of the pushes the session asked for (roster, carbons).
	Interests []string
	// Inactive is its XEP-0352 state.
	Inactive bool
}

// Handed is a session this node handed over: it keeps the unacknowledged stanzas until the
// new holder confirms it bound the session, so that they can be saved if it never does.
type Handed struct {
	State *HandoverState
	s     *Session
}

// Abandon hands the stanzas of a hand-over that was never completed back to the core, as
// for a session that ended (messages to the account's other resources or offline storage).
func (h *Handed) Abandon() {
	for _, el := range h.State.Queue {
		h.s.reroute(el)
	}
	for _, el := range h.State.Held {
		if el.Local == "message" {
			h.s.reroute(el)
		}
	}
}

// SetHandover makes resumption work across the nodes of a cluster. It is called before the
// listeners start.
func (t *Streams) SetHandover(h Handover) { t.handover.Store(&h) }

func (t *Streams) handoverOf() Handover {
	if t == nil {
		return nil
	}
	if p := t.handover.Load(); p != nil {
		return *p
	}
	return nil
}

// handoverCtx marks the module hooks run while a session moves to another node.
func handoverCtx(ctx context.Context) context.Context { return module.WithHandover(ctx) }

// HandOver detaches the resumable session id of account bare from this node for another
// node's client, which resumes it there (XEP-0198 §5). h is the count the client reported;
// an impossible one is refused with the stream error of XEP-0198 §4 and the session stays.
// release takes the session out of this node's router without announcing it unavailable and
// returns what the router knew of it (presence, interests). A connection still attached is
// closed with <conflict/>, as when a resumption happens on the same node.
func (t *Streams) HandOver(ctx context.Context, id string, bare jid.JID, h uint32, release func(router.Session) (*stanza.Element, []string)) (*Handed, error) {
	s := t.lookupResumable(id)
	if s == nil || !s.jid.Bare().Equal(bare) {
		return nil, ErrNotHeld
	}
	o := s.out.Load()
	if o == nil {
		return nil, ErrNotHeld
	}
	// Unavailable first: a message rerouted to the bare JID while this runs must not come
	// back to this session.
	avail := s.available.Swap(false)
	o.mu.Lock()
	if o.ended || o.replaced || o.id == "" {
		o.mu.Unlock()
		s.available.CompareAndSwap(false, avail)
		return nil, ErrNotHeld
	}
	if uint64(h-o.acked) > uint64(len(o.queue)) {
		serr := stanza.NewStreamError("undefined-condition", "the client acknowledged more stanzas than were sent")
		serr.App = stanza.NewElement(NSSM, "handled-count-too-high",
			stanza.Attr{Name: "h", Value: strconv.FormatUint(uint64(h), 10)},
			stanza.Attr{Name: "send-count", Value: strconv.FormatUint(uint64(o.outH), 10)})
		o.mu.Unlock()
		s.available.CompareAndSwap(false, avail)
		return nil, serr
	}
	st := &HandoverState{ID: o.id, JID: s.jid, InH: o.inH, OutH: o.outH, Acked: o.acked,
		Queue: o.queue, Held: o.held, Timeout: o.timeout, Available: avail,
		Priority: int(s.priority.Load()), Inactive: o.inactive}
	// Ended: whatever reaches this copy from now on is rerouted like the stanzas of an ended
	// session; the connection's shutdown finds nothing left to do.
	o.ended = true
	o.queue, o.held = nil, nil
	clear(o.heldKey)
	prev := o.conn
	o.conn = nil
	o.detached = false
	if o.expire != nil {
		o.expire.Stop()
		o.expire = nil
	}
	if o.reqTimer != nil {
		o.reqTimer.Stop()
		o.reqTimer = nil
	}
	o.mu.Unlock()
	t.removeResumable(id, s)
	if release != nil {
		st.Presence, st.Interests = release(s)
	} else {
		s.cfg.Core.Router.Unbind(s)
	}
	if !avail {
		st.Presence = nil
	}
	if hst := s.cfg.Core.Host(s.domain); hst != nil {
		hst.SessionClosed(handoverCtx(ctx), s)
	}
	if prev != nil {
		prev.closeWith(stanza.NewStreamError("conflict", "the session was resumed on another connection"))
	}
	s.log.Info("session handed over to another node", "unacked", len(st.Queue))
	return &Handed{State: st, s: s}, nil
}

// resumeRemote resumes a session that another node holds (XEP-0198 §5 across a cluster). It
// has resumeWith's results.
func (s *Session) resumeRemote(ho Handover, previd string, h uint32, wrap func(resumed *stanza.Element) []*stanza.Element) (bool, *stanza.Element, error) {
	ctx := context.Background()
	st, err := ho.Fetch(ctx, previd, s.jid, h)
	var serr *stanza.StreamError
	switch {
	case errors.As(err, &serr):
		return false, nil, serr
	case err != nil:
		if !errors.Is(err, ErrNotHeld) {
			s.log.Warn("resumption on another node failed", "err", err)
		}
		return false, smFailed("item-not-found", 0, false), nil
	case !st.JID.Bare().Equal(s.jid) || st.JID.Domainpart() != s.domain:
		// The holder checks the account; a mismatch here means a broken peer.
		s.log.Error("another node handed over a session of another account", "jid", st.JID.String())
		return false, smFailed("item-not-found", 0, false), nil
	}
	s.jid = st.JID
	s.log = s.log.With("jid", st.JID.String())
	s.w = transport.NewWriter(s.nc, s.cfg.MaxQueue, 0, s.writerFailed)
	o := &outState{s: s, conn: s, sm: true, id: st.ID, timeout: st.Timeout,
		inH: st.InH, outH: st.OutH, acked: st.Acked, queue: st.Queue, inactive: st.Inactive}
	// The holder checked h against the queue.
	_ = o.ack(h)
	o.interests = st.Interests
	s.priority.Store(int32(st.Priority))
	s.available.Store(st.Available)
	s.out.Store(o)
	s.cfg.Streams.addResumable(o.id, s)
	o.mu.Lock()
	// Bound (and registered in the cluster) before <resumed/> is written, so that the client
	// learns of the resumption only once other nodes route to this one; deliveries wait on
	// o.mu meanwhile, and follow the retransmitted stanzas.
	s.bound.Store(true)
	s.cfg.Core.Router.Bind(s)
	unacked := s.writeResumed(o, wrap)
	o.mu.Unlock()
	ho.Taken(st)
	if m, ok := s.cfg.Core.Router.(interface {
		MarkInterested(router.Session, string, bool)
	}); ok {
		for _, ns := range st.Interests {
			m.MarkInterested(s, ns, true)
		}
	}
	if hst := s.cfg.Core.Host(s.domain); hst != nil {
		hst.SessionBound(ctx, s)
	}
	if st.Available && st.Presence != nil {
		// The modules learn the session's presence again (the presence module without
		// broadcasting it; offline storage sends what arrived during the hand-over).
		p := st.Presence.Copy()
		p.RemoveAttr("to")
		p.SetAttr("from", s.jid.String())
		s.cfg.Core.FromClient(handoverCtx(ctx), s, p)
	}
	for _, el := range st.Held {
		s.Deliver(el)
	}
	s.log.Info("session resumed from another node", "node", st.Holder, "unacked", unacked)
	return true, nil, nil
}

// Interested reports whether the session asked for the pushes of namespace ns on the node it
// was resumed from; the modules of this node track what it asks for here.
func (s *Session) Interested(ns string) bool {
	o := s.out.Load()
	if o == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Contains(o.interests, ns)
}

// SetInterested records that the session stopped (or started) wanting the pushes of ns, so
// that what it asked for on its former node does not outlive its own change here.
func (s *Session) SetInterested(ns string, on bool) {
	o := s.out.Load()
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.interests = slices.DeleteFunc(slices.Clone(o.interests), func(i string) bool { return i == ns })
	if on {
		o.interests = append(o.interests, ns)
	}
}
