package cluster

// XEP-0198 resumption on another node. A resumption id ends with the name of the node that
// issued it. A client that resumes on another node makes that node ask the holder, on the
// holder's hand-over subject, for the session; the holder checks that the session belongs to
// the account the client authenticated as, detaches it without announcing it unavailable and
// answers with its state (c2s.HandoverState). The resuming node binds it again, which
// replaces the holder's registry entry by compare-and-set, and confirms ("taken"). Until the
// confirmation the holder keeps the unacknowledged stanzas: if none comes within twice
// handover_timeout and the registry does not show the session on another node, they go to
// offline storage and the session's contacts see it unavailable, as for a session that ended.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"mellium.im/xmpp/jid"

	"impetus/internal/c2s"
	"impetus/internal/router"
	"impetus/internal/stanza"
)

// handoverRequest is what a resuming node sends to the holder; Taken alone confirms a
// completed hand-over.
type handoverRequest struct {
	ID    string `json:"id"`
	Bare  string `json:"bare,omitempty"`
	H     uint32 `json:"h"`
	Taken bool   `json:"taken,omitempty"`
}

// handoverReply is the holder's answer: Status "ok" with State, "none" when it holds no such
// session for the account, or "count" when the client's h is higher than what was sent.
type handoverReply struct {
	Status string     `json:"status"`
	Sent   uint32     `json:"sent,omitempty"`
	State  *wireState `json:"state,omitempty"`
}

// wireState is c2s.HandoverState with its stanzas written as in a client stream.
type wireState struct {
	ID        string   `json:"id"`
	JID       string   `json:"jid"`
	InH       uint32   `json:"in"`
	OutH      uint32   `json:"out"`
	Acked     uint32   `json:"acked"`
	Queue     []string `json:"queue,omitempty"`
	Held      []string `json:"held,omitempty"`
	TimeoutMS int64    `json:"timeout"`
	Avail     bool     `json:"avail,omitempty"`
	Prio      int      `json:"prio,omitempty"`
	Pres      string   `json:"pres,omitempty"`
	Interests []string `json:"interests,omitempty"`
	Inactive  bool     `json:"inactive,omitempty"`
}

func toWire(st *c2s.HandoverState) *wireState {
	w := &wireState{ID: st.ID, JID: st.JID.String(), InH: st.InH, OutH: st.OutH, Acked: st.Acked,
		TimeoutMS: st.Timeout.Milliseconds(), Avail: st.Available, Prio: st.Priority,
		Interests: st.Interests, Inactive: st.Inactive}
	for _, el := range st.Queue {
		w.Queue = append(w.Queue, string(el.AppendXML(nil, stanza.NSClient)))
	}
	for _, el := range st.Held {
		w.Held = append(w.Held, string(el.AppendXML(nil, stanza.NSClient)))
	}
	if st.Presence != nil {
		w.Pres = string(st.Presence.AppendXML(nil, stanza.NSClient))
	}
	return w
}

func fromWire(w *wireState, holder string) (*c2s.HandoverState, error) {
	full, err := jid.Parse(w.JID)
	if err != nil {
		return nil, err
	}
	st := &c2s.HandoverState{ID: w.ID, Holder: holder, JID: full, InH: w.InH, OutH: w.OutH, Acked: w.Acked,
		Timeout: time.Duration(w.TimeoutMS) * time.Millisecond, Available: w.Avail, Priority: w.Prio,
		Interests: w.Interests, Inactive: w.Inactive}
	parse := func(in []string) ([]*stanza.Element, error) {
		out := make([]*stanza.Element, 0, len(in))
		for _, s := range in {
			el, err := parseStanza([]byte(s))
			if err != nil {
				return nil, err
			}
			out = append(out, el)
		}
		return out, nil
	}
	if st.Queue, err = parse(w.Queue); err != nil {
		return nil, err
	}
	if st.Held, err = parse(w.Held); err != nil {
		return nil, err
	}
	if w.Pres != "" {
		if st.Presence, err = parseStanza([]byte(w.Pres)); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// handover serves and makes hand-overs for one node; it implements c2s.Handover.
type handover struct {
	n       *Node
	streams *c2s.Streams
	sub     *nats.Subscription

	mu      sync.Mutex
	pending map[string]*time.Timer // resumption id → abandonment of an unconfirmed hand-over
}

func (n *Node) handoverSubject(node string) string {
	return n.cfg.BucketPrefix + ".handover." + node
}

// ServeHandover lets clients resume on this node the sessions other nodes hold, and other
// nodes take over the sessions of streams. It is called once, before the listeners start.
// Hand-over requests have their own subject, so that one in progress (which closes a
// connection and runs the session hooks) does not hold up the stanzas of the node's subject.
func (n *Node) ServeHandover(streams *c2s.Streams) error {
	h := &handover{n: n, streams: streams, pending: map[string]*time.Timer{}}
	sub, err := n.nc.Subscribe(n.handoverSubject(n.cfg.NodeName), h.serve)
	if err != nil {
		return fmt.Errorf("cluster: subscribing to the hand-over subject: %w", err)
	}
	h.sub = sub
	streams.SetHandover(h)
	return nil
}

// NewID implements c2s.Handover: 96 random bits, a dot and this node's name (node names
// have no dots).
func (h *handover) NewID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "." + h.n.cfg.NodeName
}

// holderOf returns the node named in a resumption id, or "".
func holderOf(id string) string {
	i := strings.LastIndexByte(id, '.')
	if i < 0 || !namePattern.MatchString(id[i+1:]) {
		return ""
	}
	return id[i+1:]
}

// Fetch implements c2s.Handover. It asks the node named in the id first and then the other
// nodes holding sessions of the account, since a session resumed once on another node keeps
// its id and its first node's name.
func (h *handover) Fetch(ctx context.Context, id string, bare jid.JID, hIn uint32) (*c2s.HandoverState, error) {
	n := h.n
	if !n.owner() {
		return nil, c2s.ErrNotHeld
	}
	var nodes []string
	if hn := holderOf(id); hn != "" && hn != n.cfg.NodeName {
		nodes = append(nodes, hn)
	}
	for _, rec := range n.reg.Resources(bare.String()) {
		if rec.Node != n.cfg.NodeName && !contains(nodes, rec.Node) {
			nodes = append(nodes, rec.Node)
		}
	}
	req, _ := json.Marshal(handoverRequest{ID: id, Bare: bare.String(), H: hIn})
	for _, node := range nodes {
		rctx, cancel := context.WithTimeout(ctx, n.cfg.HandoverTimeout)
		msg, err := n.nc.RequestWithContext(rctx, n.handoverSubject(node), req)
		cancel()
		if err != nil {
			if !errors.Is(err, nats.ErrNoResponders) {
				n.log.Warn("cluster: asking another node for a session to resume", "node", node, "err", err)
			}
			continue
		}
		var rep handoverReply
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			n.log.Warn("cluster: undecodable hand-over answer", "node", node, "err", err)
			continue
		}
		switch rep.Status {
		case "ok":
			if rep.State == nil {
				continue
			}
			st, err := fromWire(rep.State, node)
			if err != nil {
				// The holder released the session; it saves the stanzas when no
				// confirmation comes.
				n.log.Error("cluster: undecodable session state from another node", "node", node, "err", err)
				return nil, c2s.ErrNotHeld
			}
			return st, nil
		case "count":
			serr := stanza.NewStreamError("undefined-condition", "the client acknowledged more stanzas than were sent")
			serr.App = stanza.NewElement(c2s.NSSM, "handled-count-too-high",
				stanza.Attr{Name: "h", Value: strconv.FormatUint(uint64(hIn), 10)},
				stanza.Attr{Name: "send-count", Value: strconv.FormatUint(uint64(rep.Sent), 10)})
			return nil, serr
		}
	}
	return nil, c2s.ErrNotHeld
}

// Taken implements c2s.Handover.
func (h *handover) Taken(st *c2s.HandoverState) {
	b, _ := json.Marshal(handoverRequest{ID: st.ID, Taken: true})
	if err := h.n.nc.Publish(h.n.handoverSubject(st.Holder), b); err != nil {
		h.n.log.Warn("cluster: confirming a hand-over", "node", st.Holder, "err", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// serve answers the hand-over requests of other nodes.
func (h *handover) serve(m *nats.Msg) {
	var req handoverRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.ID == "" {
		return
	}
	if req.Taken {
		h.mu.Lock()
		if t := h.pending[req.ID]; t != nil {
			t.Stop()
			delete(h.pending, req.ID)
		}
		h.mu.Unlock()
		return
	}
	respond := func(rep handoverReply) {
		b, _ := json.Marshal(rep)
		if err := m.Respond(b); err != nil {
			h.n.log.Debug("cluster: answering a hand-over request", "err", err)
		}
	}
	bare, err := jid.Parse(req.Bare)
	if err != nil || !h.n.owner() {
		respond(handoverReply{Status: "none"})
		return
	}
	ctx := context.Background()
	handed, err := h.streams.HandOver(ctx, req.ID, bare.Bare(), req.H, h.n.release)
	var serr *stanza.StreamError
	switch {
	case errors.As(err, &serr):
		var sent uint32
		if serr.App != nil {
			if v, perr := strconv.ParseUint(serr.App.Attr("send-count"), 10, 32); perr == nil {
				sent = uint32(v)
			}
		}
		respond(handoverReply{Status: "count", Sent: sent})
		return
	case err != nil:
		respond(handoverReply{Status: "none"})
		return
	}
	b, _ := json.Marshal(handoverReply{Status: "ok", State: toWire(handed.State)})
	if int64(len(b)) > h.n.nc.MaxPayload() {
		// Too large for one NATS message: the session ends here as if it had expired, and
		// the client binds anew on the other node and finds its messages offline.
		h.n.log.Warn("cluster: session state too large to hand over; ending the session", "jid", handed.State.JID.String(), "bytes", len(b))
		h.abandon(handed)
		respond(handoverReply{Status: "none"})
		return
	}
	id := req.ID
	h.mu.Lock()
	h.pending[id] = time.AfterFunc(2*h.n.cfg.HandoverTimeout, func() {
		h.mu.Lock()
		_, still := h.pending[id]
		delete(h.pending, id)
		h.mu.Unlock()
		if still {
			h.unconfirmed(handed)
		}
	})
	h.mu.Unlock()
	if err := m.Respond(b); err != nil {
		h.n.log.Warn("cluster: sending a session to another node", "err", err)
	}
}

// unconfirmed handles a hand-over the other node never confirmed: if the registry shows the
// session bound elsewhere, only the confirmation was lost; otherwise the session ends here.
func (h *handover) unconfirmed(handed *c2s.Handed) {
	full := handed.State.JID
	if rec, ok := h.n.reg.Lookup(full.Bare().String(), full.Resourcepart()); ok && rec.Node != h.n.cfg.NodeName {
		return
	}
	h.n.log.Warn("cluster: hand-over not confirmed; ending the session", "jid", full.String())
	h.abandon(handed)
}

// abandon ends a handed-over session that no node took: its stanzas go back to the core and
// its contacts see it unavailable.
func (h *handover) abandon(handed *c2s.Handed) {
	handed.Abandon()
	if handed.State.Available && h.n.hooks.Gone != nil {
		h.n.hooks.Gone(context.Background(), handed.State.JID)
	}
}

// release takes a session being handed over out of this node without deleting its registry
// entry, which the resuming node replaces by compare-and-set: between the two, forwards to
// this node find no session and fall back to the rules of RFC 6121 (offline storage), which
// the resumed session's presence then flushes. It returns the session's registered presence
// and push interests.
func (n *Node) release(s router.Session) (*stanza.Element, []string) {
	key := s.JID().String()
	var pres string
	var flags []string
	n.mu.Lock()
	if o := n.owned[key]; o != nil && o.s == s {
		pres, flags = o.pres, o.flags
		delete(n.owned, key)
		delete(n.dirty, key)
	}
	n.mu.Unlock()
	n.local.Unbind(s)
	var el *stanza.Element
	if pres != "" {
		if p, err := parseStanza([]byte(pres)); err == nil {
			el = p
		}
	}
	return el, flags
}
