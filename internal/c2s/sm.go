package c2s

// XEP-0198 stream management and XEP-0352 client state indication.
//
// A session (the router's view: one full JID) and a connection (one socket with its reader,
// writer and read goroutine) are the same *Session until stream management separates them.
// Once a client enables resumable stream management, the session's output goes through an
// outState: the unacknowledged stanzas are kept there, written to whichever connection is
// attached. When the connection is lost the session stays bound ("hibernated"): the router keeps
// delivering into the queue. A new connection that resumes attaches itself to the outState,
// gets the unacknowledged stanzas again, and reads on behalf of the original session (owner).
// When the session finally ends, the stanzas the client never acknowledged are handed back to
// the core: messages to the account's other resources or offline storage, iq requests answered
// with errors.

import (
	"context"
	"strconv"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/stanza"
	"impetus/internal/transport"
)

// Namespaces of stream management and client state indication.
const (
	NSSM  = "urn:xmpp:sm:3"
	NSCSI = "urn:xmpp:csi:0"
	// nsChatStates is XEP-0085, whose notifications alone are not worth waking a client for.
	nsChatStates = "http://jabber.org/protocol/chatstates"
	// nsPubSubEvent carries PEP notifications, which can wait for an inactive client too.
	nsPubSubEvent = "http://jabber.org/protocol/pubsub#event"
)

// outState is a session's output once stream management or client state indication is on.
// Every field is guarded by mu.
type outState struct {
	s  *Session // the session (router identity) this output belongs to
	mu sync.Mutex

	conn *Session // the attached connection; nil while detached

	// XEP-0198
	sm       bool
	id       string // resumption id; "" when the session is not resumable
	timeout  time.Duration
	inH      uint32 // stanzas handled from the client
	outH     uint32 // stanzas sent to the client
	acked    uint32 // the last h the client acknowledged
	queue    []*stanza.Element
	sinceReq int
	reqOut   bool // a request is outstanding
	reqTimer *time.Timer
	detached bool
	ended    bool
	replaced bool
	expire   *time.Timer

	// XEP-0352
	inactive bool
	held     []*stanza.Element
	heldKey  map[string]int // sender and kind → index in held, so only the latest is kept

	// interests are the push namespaces a session resumed from another node had asked for
	// there (handover.go).
	interests []string
}

// smEnabled reports whether stream management may be offered on this listener.
func (s *Session) smEnabled() bool { return s.cfg.SM.Enabled }

// identity is the session a connection reads for: itself, or the session it resumed.
func (s *Session) identity() *Session {
	if s.owner != nil {
		return s.owner
	}
	return s
}

// mobileFeatures are the stream features of XEP-0198 and XEP-0352, offered after authentication.
func (s *Session) mobileFeatures(f *stanza.Element) {
	if s.cfg.SM.Enabled {
		f.AddChild(stanza.NewElement(NSSM, "sm"))
	}
	if s.cfg.SM.CSI {
		f.AddChild(stanza.NewElement(NSCSI, "csi"))
	}
}

// output returns the session's outState, creating it when missing. Only the read goroutine of
// the attached connection calls it.
func (s *Session) output(conn *Session) *outState {
	if o := s.out.Load(); o != nil {
		return o
	}
	o := &outState{s: s, conn: conn}
	s.out.Store(o)
	return o
}

// attachOutput gives a session that is being bound its outState when stream management or
// client state indication may be used, before the session is reachable: every stanza then takes
// the same path, so none can slip past the count between <enable/> and <enabled/>.
func (s *Session) attachOutput() {
	if s.cfg.SM.Enabled || s.cfg.SM.CSI {
		s.output(s)
	}
}

// deliver is Deliver once an outState exists.
func (o *outState) deliver(el *stanza.Element) {
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		o.s.reroute(el)
		return
	}
	if o.inactive && o.holdBack(el) {
		o.mu.Unlock()
		return
	}
	if o.inactive && el.Local == "message" {
		// An important message: what was held back goes first, in order.
		o.flushHeld()
	}
	overflow := o.send(el)
	detached := o.detached
	o.mu.Unlock()
	if overflow {
		o.overflow()
		return
	}
	if detached && el.Local == "message" {
		o.s.hibernatedMessage(el)
	}
}

// send queues a stanza for acknowledgement and writes it to the attached connection. It
// reports whether the unacknowledged queue passed its bound. o.mu is held.
func (o *outState) send(el *stanza.Element) bool {
	// Whatever namespace a stanza arrived in (a server stream's jabber:server), the client
	// reads it as a stanza and counts it.
	isStanza := stanza.IsStanza(el, el.Space) && el.Space != NSSM && el.Space != NSCSI
	if o.sm && isStanza {
		o.outH++
		o.queue = append(o.queue, el)
	}
	if o.conn != nil {
		o.conn.write(el)
		if o.sm && isStanza {
			o.sinceReq++
			o.maybeRequest()
		}
	}
	return o.sm && len(o.queue) > o.s.cfg.SM.MaxUnacked
}

// maybeRequest asks the client for an acknowledgement after RequestEvery stanzas, or arms a
// timer that asks after RequestInterval. o.mu is held.
func (o *outState) maybeRequest() {
	if o.reqOut || o.conn == nil {
		return
	}
	cfg := o.s.cfg.SM
	if cfg.RequestEvery > 0 && o.sinceReq >= cfg.RequestEvery {
		o.request()
		return
	}
	if cfg.RequestInterval > 0 && o.reqTimer == nil {
		o.reqTimer = time.AfterFunc(cfg.RequestInterval, func() {
			o.mu.Lock()
			o.reqTimer = nil
			if !o.reqOut && o.conn != nil && len(o.queue) > 0 {
				o.request()
			}
			o.mu.Unlock()
		})
	}
}

// request writes <r/>. o.mu is held.
func (o *outState) request() {
	o.reqOut = true
	o.sinceReq = 0
	if o.reqTimer != nil {
		o.reqTimer.Stop()
		o.reqTimer = nil
	}
	o.conn.write(stanza.NewElement(NSSM, "r"))
}

// overflow ends a session whose client acknowledges nothing while the queue grows.
func (o *outState) overflow() {
	o.mu.Lock()
	c := o.conn
	o.replaced = true // no hibernation: the session ends and its queue goes back to the core
	o.mu.Unlock()
	o.s.log.Warn("too many unacknowledged stanzas; ending the session", "jid", o.s.jid.String())
	if c != nil {
		c.closeWith(stanza.NewStreamError("policy-violation", "too many unacknowledged stanzas"))
		return
	}
	o.s.endSession(context.Background())
}

// write queues an element on this connection's writer.
func (s *Session) write(el *stanza.Element) {
	err := s.w.Append(func(dst []byte) []byte { return el.AppendXML(dst, stanza.NSClient) })
	if err == transport.ErrQueueFull {
		_ = s.nc.SetWriteDeadline(time.Now())
	}
	if ob := s.cfg.Observer; ob != nil && err == nil && stanza.IsStanza(el, el.Space) {
		ob.StanzaDelivered(s.remote, el)
	}
}

// holdBack keeps an unimportant stanza for an inactive client (XEP-0352 §4): presence, only the
// latest per sender, and messages carrying only a chat state. It reports whether el was kept.
// o.mu is held.
func (o *outState) holdBack(el *stanza.Element) bool {
	var key string
	switch el.Local {
	case "presence":
		switch el.Attr("type") {
		case "", "unavailable":
			key = "p " + el.Attr("from")
		default:
			// Subscription requests and their answers need the user.
			return false
		}
	case "message":
		if el.Attr("type") == "error" || el.Child(stanza.NSClient, "body") != nil || el.Child(stanza.NSClient, "subject") != nil {
			return false
		}
		// Only a chat state, or only a PEP notification (XEP-0163), of which the latest per
		// sender (and node) is kept.
		var only *stanza.Element
		for c := range el.Elements() {
			if only != nil || (c.Space != nsChatStates && !(c.Space == nsPubSubEvent && c.Local == "event")) {
				return false
			}
			only = c
		}
		switch {
		case only == nil:
			return false
		case only.Space == nsChatStates:
			key = "c " + el.Attr("from")
		default:
			node := ""
			if items := only.Child(nsPubSubEvent, "items"); items != nil {
				node = items.Attr("node")
			}
			key = "e " + el.Attr("from") + " " + node
		}
	default:
		return false
	}
	if o.heldKey == nil {
		o.heldKey = make(map[string]int)
	}
	if i, ok := o.heldKey[key]; ok {
		o.held[i] = el
		return true
	}
	if len(o.held) >= o.s.cfg.SM.CSIMaxBuffer {
		o.flushHeld()
	}
	o.heldKey[key] = len(o.held)
	o.held = append(o.held, el)
	return true
}

// flushHeld sends what an inactive client had held back. o.mu is held.
func (o *outState) flushHeld() {
	held := o.held
	o.held = nil
	clear(o.heldKey)
	for _, el := range held {
		o.send(el)
	}
}

// nonza handles the stream-level elements of XEP-0198 and XEP-0352 read on a bound stream.
// It reports whether el was one of them; an error ends the stream.
func (s *Session) nonza(el *stanza.Element) (bool, error) {
	me := s.identity()
	switch {
	case el.Space == NSCSI && s.cfg.SM.CSI && (el.Local == "active" || el.Local == "inactive"):
		o := me.output(s)
		o.mu.Lock()
		o.inactive = el.Local == "inactive"
		if !o.inactive {
			o.flushHeld()
		}
		o.mu.Unlock()
		return true, nil
	case el.Space != NSSM || !s.cfg.SM.Enabled:
		return false, nil
	}
	switch el.Local {
	case "enable":
		o := me.output(s)
		o.mu.Lock()
		defer o.mu.Unlock()
		o.conn.write(s.smEnable(me, o, el))
		return true, nil
	case "r":
		o := me.out.Load()
		if o == nil || !o.smOn() {
			return false, nil
		}
		o.mu.Lock()
		o.conn.write(stanza.NewElement(NSSM, "a", stanza.Attr{Name: "h", Value: strconv.FormatUint(uint64(o.inH), 10)}))
		o.mu.Unlock()
		return true, nil
	case "a":
		o := me.out.Load()
		if o == nil || !o.smOn() {
			return false, nil
		}
		h, err := strconv.ParseUint(el.Attr("h"), 10, 32)
		if err != nil {
			return true, stanza.NewStreamError("bad-format", "an acknowledgement needs a numeric 'h'")
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		o.reqOut = false
		if serr := o.ack(uint32(h)); serr != nil {
			return true, serr
		}
		if len(o.queue) > 0 {
			o.maybeRequest()
		}
		return true, nil
	case "resume":
		// A resumption on a bound stream is too late (XEP-0198 §5).
		s.write(smFailed("unexpected-request", 0, false))
		return true, nil
	}
	return false, nil
}

// smEnable turns stream management on for session me (XEP-0198 §3) and returns the
// <enabled/> or <failed/> answer. o.mu is held.
func (s *Session) smEnable(me *Session, o *outState, el *stanza.Element) *stanza.Element {
	if o.sm {
		return smFailed("unexpected-request", 0, false)
	}
	o.sm = true
	enabled := stanza.NewElement(NSSM, "enabled")
	if r := el.Attr("resume"); (r == "true" || r == "1") && s.cfg.SM.Resume && s.cfg.Streams != nil {
		o.id = newStreamID()
		if ho := s.cfg.Streams.handoverOf(); ho != nil {
			// In a cluster the id also names this node, for a resumption on another one.
			o.id = ho.NewID()
		}
		o.timeout = s.cfg.SM.ResumeTimeout
		if m, err := strconv.Atoi(el.Attr("max")); err == nil && m > 0 {
			o.timeout = time.Duration(m) * time.Second
		}
		o.timeout = min(o.timeout, s.cfg.SM.MaxResumeTimeout)
		s.cfg.Streams.addResumable(o.id, me)
		enabled.SetAttr("id", o.id)
		enabled.SetAttr("resume", "true")
		enabled.SetAttr("max", strconv.Itoa(int(o.timeout/time.Second)))
		if s.cfg.SM.Location != "" {
			enabled.SetAttr("location", s.cfg.SM.Location)
		}
	}
	return enabled
}

func (o *outState) smOn() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sm
}

// ack drops what the client acknowledged with h (XEP-0198 §4; h counts modulo 2^32). o.mu is held.
func (o *outState) ack(h uint32) *stanza.StreamError {
	n := h - o.acked
	if uint64(n) > uint64(len(o.queue)) {
		serr := stanza.NewStreamError("undefined-condition", "the client acknowledged more stanzas than were sent")
		serr.App = stanza.NewElement(NSSM, "handled-count-too-high",
			stanza.Attr{Name: "h", Value: strconv.FormatUint(uint64(h), 10)},
			stanza.Attr{Name: "send-count", Value: strconv.FormatUint(uint64(o.outH), 10)})
		return serr
	}
	clear(o.queue[:n])
	o.queue = o.queue[n:]
	if len(o.queue) == 0 {
		o.queue = nil
	}
	o.acked = h
	return nil
}

// handled counts a stanza read from the client (the h the server reports).
func (s *Session) handled() {
	if o := s.identity().out.Load(); o != nil {
		o.mu.Lock()
		if o.sm {
			o.inH++
		}
		o.mu.Unlock()
	}
}

func smFailed(cond string, h uint32, withH bool) *stanza.Element {
	f := stanza.NewElement(NSSM, "failed")
	if withH {
		f.SetAttr("h", strconv.FormatUint(uint64(h), 10))
	}
	return f.AddChild(stanza.NewElement(stanza.NSStanzaErr, cond))
}

// resume attaches this authenticated connection to a hibernated session (XEP-0198 §5). It
// reports whether it did; a refusal is answered with <failed/> and the client may bind instead.
func (s *Session) resume(el *stanza.Element) (bool, error) {
	ok, failed, err := s.resumeWith(el, func(resumed *stanza.Element) []*stanza.Element { return []*stanza.Element{resumed} })
	if failed != nil {
		return false, s.writeSync(failed)
	}
	return ok, err
}

// resumeWith is resume with the answer left to the caller: on success, what wrap makes of the
// <resumed/> element is written before the unacknowledged stanzas; on refusal the <failed/>
// element is returned unwritten (SASL2 carries both inside its own elements).
func (s *Session) resumeWith(el *stanza.Element, wrap func(resumed *stanza.Element) []*stanza.Element) (bool, *stanza.Element, error) {
	fail := func(cond string) (bool, *stanza.Element, error) {
		return false, smFailed(cond, 0, false), nil
	}
	if !s.cfg.SM.Enabled || s.cfg.Streams == nil {
		return fail("feature-not-implemented")
	}
	h, err := strconv.ParseUint(el.Attr("h"), 10, 32)
	if err != nil || el.Attr("previd") == "" {
		return fail("bad-request")
	}
	old := s.cfg.Streams.lookupResumable(el.Attr("previd"))
	if ho := s.cfg.Streams.handoverOf(); old == nil && ho != nil && s.cfg.SM.Resume {
		// Perhaps held by another node of the cluster.
		return s.resumeRemote(ho, el.Attr("previd"), uint32(h), wrap)
	}
	if old == nil || !old.jid.Bare().Equal(s.jid) || old.domain != s.domain {
		return fail("item-not-found")
	}
	o := old.out.Load()
	s.w = transport.NewWriter(s.nc, s.cfg.MaxQueue, 0, s.writerFailed)
	o.mu.Lock()
	if o.ended || o.replaced || o.id == "" {
		o.mu.Unlock()
		s.w.Close(time.Second)
		s.w = nil
		return fail("item-not-found")
	}
	if serr := o.ack(uint32(h)); serr != nil {
		o.mu.Unlock()
		s.w.Close(time.Second)
		s.w = nil
		return false, nil, serr
	}
	prev := o.conn
	o.conn = s
	o.detached = false
	o.reqOut = false
	o.sinceReq = 0
	if o.expire != nil {
		o.expire.Stop()
		o.expire = nil
	}
	s.owner = old
	s.jid = old.jid
	s.log = s.log.With("jid", old.jid.String())
	unacked := s.writeResumed(o, wrap)
	o.mu.Unlock()
	s.bound.Store(true)
	if prev != nil {
		// The client came back before the old connection was noticed dead.
		prev.closeWith(stanza.NewStreamError("conflict", "the session was resumed on another connection"))
	}
	s.log.Info("session resumed", "unacked", unacked)
	return true, nil, nil
}

// detach keeps a resumable session bound after its connection was lost, for the resumption
// timeout. It reports whether the connection's shutdown must leave the session alone: it
// hibernated, or another connection took it over.
func (s *Session) detach() bool {
	me := s.identity()
	o := me.out.Load()
	if o == nil {
		return false
	}
	o.mu.Lock()
	if o.conn != s {
		other := o.conn != nil || o.detached
		o.mu.Unlock()
		return other
	}
	if !o.sm || o.id == "" || o.ended || o.replaced || !s.lost || s.cfg.Streams == nil || s.cfg.Streams.closing.Load() {
		o.mu.Unlock()
		return false
	}
	o.conn = nil
	o.detached = true
	o.reqOut = false
	if o.reqTimer != nil {
		o.reqTimer.Stop()
		o.reqTimer = nil
	}
	o.expire = time.AfterFunc(o.timeout, func() { me.expire(o) })
	me.log.Info("session hibernated", "timeout", o.timeout, "unacked", len(o.queue))
	// Messages written to the connection before it was found dead were never read: they count
	// as arriving during hibernation (push notifications).
	var pending []*stanza.Element
	for _, el := range o.queue {
		if el.Local == "message" && el.Child(stanza.NSClient, "body") != nil {
			pending = append(pending, el)
		}
	}
	o.mu.Unlock()
	for _, el := range pending {
		me.hibernatedMessage(el)
	}
	return true
}

// expire ends a session that was not resumed in time.
func (s *Session) expire(o *outState) {
	o.mu.Lock()
	still := o.detached && !o.ended
	o.mu.Unlock()
	if still {
		s.log.Info("hibernated session expired")
		s.endSession(context.Background())
	}
}

// endSession unbinds the session, tells the modules, and hands unacknowledged stanzas back.
// It runs once per session.
func (s *Session) endSession(ctx context.Context) {
	var queue, held []*stanza.Element
	if o := s.out.Load(); o != nil {
		o.mu.Lock()
		if o.ended {
			o.mu.Unlock()
			return
		}
		o.ended = true
		o.conn = nil
		o.detached = false
		queue, held = o.queue, o.held
		o.queue, o.held = nil, nil
		if o.expire != nil {
			o.expire.Stop()
		}
		if o.reqTimer != nil {
			o.reqTimer.Stop()
		}
		id := o.id
		o.mu.Unlock()
		if id != "" && s.cfg.Streams != nil {
			s.cfg.Streams.removeResumable(id, s)
		}
	}
	// Unavailable first, so nothing rerouted to the bare JID comes back here.
	s.available.Store(false)
	s.cfg.Core.Router.Unbind(s)
	if h := s.cfg.Core.Host(s.domain); h != nil {
		h.SessionClosed(ctx, s)
	}
	s.log.Info("session ended", "jid", s.jid.String(), "unacked", len(queue))
	for _, el := range queue {
		s.reroute(el)
	}
	for _, el := range held {
		if el.Local == "message" {
			s.reroute(el)
		}
	}
}

// reroute handles a stanza the client never acknowledged once its session is gone (XEP-0198
// §4 and RFC 6120 §10.5): messages go to the account's bare JID — its other resources or
// offline storage —, requests are answered with service-unavailable, the rest is dropped.
func (s *Session) reroute(el *stanza.Element) {
	ctx := context.Background()
	typ := el.Attr("type")
	switch el.Local {
	case "message":
		if typ != "" && typ != "normal" && typ != "chat" {
			return
		}
		if el.Child(stanza.NSClient, "body") == nil {
			return
		}
		c := el.Copy()
		c.SetAttr("to", s.jid.Bare().String())
		if c.Child(stanza.NSDelay, "delay") == nil {
			c.AddChild(stanza.NewElement(stanza.NSDelay, "delay",
				stanza.Attr{Name: "from", Value: s.domain},
				stanza.Attr{Name: "stamp", Value: time.Now().UTC().Format("2006-01-02T15:04:05Z")}))
		}
		if err := s.cfg.Core.Route(ctx, c); err != nil {
			s.log.Debug("unacknowledged message not rerouted", "err", err)
		}
	case "iq":
		if typ != stanza.Get && typ != stanza.Set || el.Attr("from") == "" {
			return
		}
		if err := s.cfg.Core.Route(ctx, stanza.ErrorReply(el, stanza.ErrServiceUnavailable)); err != nil {
			s.log.Debug("error for unacknowledged request not routed", "err", err)
		}
	}
}

// hibernatedMessage tells modules (push notifications) about a message queued while the
// session has no connection.
func (s *Session) hibernatedMessage(el *stanza.Element) {
	h := s.cfg.Core.Host(s.domain)
	if h == nil {
		return
	}
	st := &module.Stanza{El: el, To: s.jid, Session: s}
	st.From, _ = jid.Parse(el.Attr("from"))
	if _, err := h.RunHooks(context.Background(), module.MessageHibernated, st); err != nil {
		s.log.Debug("hibernation hook failed", "err", err)
	}
}

// smReplaced handles Replaced for a session with an outState: it reports whether it did.
func (s *Session) smReplaced() bool {
	o := s.out.Load()
	if o == nil {
		return false
	}
	o.mu.Lock()
	o.replaced = true
	c, detached := o.conn, o.detached
	o.mu.Unlock()
	switch {
	case c != nil:
		go c.closeWith(stanza.NewStreamError("conflict", "replaced by a new session with the same resource"))
	case detached:
		go s.endSession(context.Background())
	}
	return true
}

// writeResumed writes <resumed/> (wrapped as the resumption asked) and then the
// unacknowledged stanzas again, in order, which keep their place in the count; it returns
// how many there were. Called with o.mu held.
func (s *Session) writeResumed(o *outState, wrap func(resumed *stanza.Element) []*stanza.Element) int {
	for _, w := range wrap(stanza.NewElement(NSSM, "resumed",
		stanza.Attr{Name: "previd", Value: o.id},
		stanza.Attr{Name: "h", Value: strconv.FormatUint(uint64(o.inH), 10)})) {
		s.write(w)
	}
	for _, q := range o.queue {
		s.write(q)
	}
	if len(o.queue) > 0 {
		o.request()
	}
	return len(o.queue)
}
