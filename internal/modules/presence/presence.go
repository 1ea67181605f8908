// Package presence implements presence subscriptions and presence exchange of RFC 6121: the
// subscription state machine of §3 and Appendix A on both the user's server (outbound requests,
// stamped with the bare JID, §3.1.2) and the contact's server (inbound requests, pending requests
// kept for offline contacts, auto-replies and pre-approval, §3.1.3, §3.4); and presence broadcast
// of §4: initial presence with probes (§4.2, §4.3), subsequent presence (§4.4), unavailable
// presence including on disconnection (§4.5), and directed presence (§4.6).
//
// Broadcasts reach local and remote contacts the same way, through module.Host.Send; the
// receiving side (the PresenceDeliver hook) decides what reaches the contact's clients, so
// presence is never delivered to someone whose roster does not accept it.
package presence

import (
	"context"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/modules/roster"
	"impetus/internal/router"
	"impetus/internal/stanza"
)

func init() { module.Register("presence", func() module.Module { return new(Presence) }) }

// Presence is the presence module of one hosted domain. It requires the roster module.
type Presence struct {
	h *module.Host
	r *roster.Roster

	mu sync.Mutex
	// last is the last available broadcast presence of each available session, without 'to';
	// probes are answered from it.
	last map[router.Session]*stanza.Element
	// directed holds, per session, the JIDs that got directed available presence from it and are
	// not covered by the broadcast; they get unavailable presence when the session goes (§4.6.3).
	directed map[router.Session]map[string]struct{}
}

// Provision implements module.Module.
func (p *Presence) Provision(h *module.Host) error {
	p.h = h
	p.r = roster.ForHost(h)
	if p.r == nil {
		return errNoRoster
	}
	p.last = make(map[router.Session]*stanza.Element)
	p.directed = make(map[router.Session]map[string]struct{})
	h.Hook(module.PresenceIn, 0, p.fromClient)
	h.Hook(module.PresenceDeliver, 0, p.toAccount)
	h.OnSessionClosed(p.closed)
	return nil
}

type provisionError string

func (e provisionError) Error() string { return string(e) }

const errNoRoster = provisionError("presence: the roster module must be provisioned first")

// fromClient handles presence a local client sends.
func (p *Presence) fromClient(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	if st.Session == nil {
		return module.Continue, nil
	}
	typ := st.El.Attr("type")
	if st.To.Domainpart() == "" {
		switch typ {
		case "":
			p.available(ctx, st.Session, st.El)
			// Continue lets later hooks (offline delivery) see initial presence; the core does
			// nothing more with presence that has no 'to'.
			return module.Continue, nil
		case "unavailable":
			p.unavailable(ctx, st.Session, st.El, true)
			return module.Continue, nil
		case "error":
			return module.Handled, nil
		}
		return module.Handled, stanza.NewError("bad-request", "this presence type needs a 'to' address")
	}
	switch typ {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
		return module.Handled, p.outbound(ctx, st, typ)
	case "":
		p.trackDirected(ctx, st, true)
		return module.Continue, nil
	case "unavailable":
		p.trackDirected(ctx, st, false)
		return module.Continue, nil
	case "error":
		return module.Continue, nil
	case "probe":
		// Probes are the server's business (§4.3); a client's probe is dropped.
		return module.Handled, nil
	}
	return module.Handled, stanza.NewError("bad-request", "unknown presence type")
}

// stamp returns the presence to send to one recipient: el's attributes with 'to' set and 'from'
// as given, sharing el's children, which nobody modifies once they are sent.
func stamp(el *stanza.Element, from, to string) *stanza.Element {
	out := &stanza.Element{Space: stanza.NSClient, Local: "presence", Children: el.Children}
	out.Attrs = make([]stanza.Attr, 0, len(el.Attrs)+1)
	for _, a := range el.Attrs {
		if a.Name != "to" && a.Name != "from" {
			out.Attrs = append(out.Attrs, a)
		}
	}
	out.Attrs = append(out.Attrs, stanza.Attr{Name: "from", Value: from}, stanza.Attr{Name: "to", Value: to})
	return out
}

func (p *Presence) send(ctx context.Context, el *stanza.Element) {
	if err := p.h.Send(ctx, el); err != nil {
		p.h.Log.Debug("presence: stanza not routable", "to", el.Attr("to"), "err", err)
	}
}

// available handles initial and subsequent available presence (§4.2, §4.4).
func (p *Presence) available(ctx context.Context, s module.Session, el *stanza.Element) {
	full := s.JID()
	bare := full.Bare()
	p.mu.Lock()
	_, wasAvailable := p.last[s]
	p.last[s] = el
	p.mu.Unlock()
	if module.IsHandover(ctx) {
		// A session resumed from another node of a cluster: its contacts saw this presence.
		return
	}
	// In a cluster, the broadcast reaches each other node in one transfer per distinct stanza.
	ctx, done := router.Batch(ctx, p.h.Router)
	defer done()

	items, _, err := p.r.Store().All(ctx, bare.String())
	if err != nil {
		p.h.Log.Error("presence: reading roster", "user", bare.String(), "err", err)
	}
	for i := range items {
		if it := &items[i]; it.Listed() && it.HasFrom() {
			p.send(ctx, stamp(el, full.String(), it.JID))
		}
	}
	// The user's own resources, the sender included, see the presence (§4.2.2, §4.4.2).
	own := stamp(el, full.String(), bare.String())
	for _, o := range p.h.Router.Sessions(bare) {
		if o.Available() {
			o.Deliver(own)
		}
	}
	if wasAvailable {
		return
	}
	for i := range items {
		if it := &items[i]; it.Listed() && it.HasTo() {
			p.send(ctx, stanza.NewElement(stanza.NSClient, "presence",
				stanza.Attr{Name: "type", Value: "probe"},
				stanza.Attr{Name: "from", Value: full.String()},
				stanza.Attr{Name: "to", Value: it.JID}))
		}
	}
	// The new resource learns about the user's other available resources.
	for _, o := range p.h.Router.Sessions(bare) {
		if o == router.Session(s) {
			continue
		}
		p.mu.Lock()
		lp := p.lastOf(o)
		p.mu.Unlock()
		if lp != nil {
			s.Deliver(stamp(lp, o.JID().String(), full.String()))
		}
	}
	// Subscription requests that arrived while the user was away (§3.1.3).
	for i := range items {
		it := &items[i]
		if !it.PendingIn {
			continue
		}
		req := stanza.NewElement(stanza.NSClient, "presence",
			stanza.Attr{Name: "type", Value: "subscribe"},
			stanza.Attr{Name: "from", Value: it.JID},
			stanza.Attr{Name: "to", Value: bare.String()})
		s.Deliver(req)
	}
}

// unavailable handles unavailable presence from a session, sent by the client (sender true) or
// generated when the session ends (§4.5).
func (p *Presence) unavailable(ctx context.Context, s router.Session, el *stanza.Element, sender bool) {
	full := s.JID()
	bare := full.Bare()
	p.mu.Lock()
	_, wasAvailable := p.last[s]
	delete(p.last, s)
	directed := p.directed[s]
	delete(p.directed, s)
	p.mu.Unlock()
	ctx, done := router.Batch(ctx, p.h.Router)
	defer done()

	covered := map[string]bool{}
	if wasAvailable {
		items, _, err := p.r.Store().All(ctx, bare.String())
		if err != nil {
			p.h.Log.Error("presence: reading roster", "user", bare.String(), "err", err)
		}
		for i := range items {
			if it := &items[i]; it.Listed() && it.HasFrom() {
				covered[it.JID] = true
				p.send(ctx, stamp(el, full.String(), it.JID))
			}
		}
		own := stamp(el, full.String(), bare.String())
		for _, o := range p.h.Router.Sessions(bare) {
			if o.Available() || (sender && o == s) {
				o.Deliver(own)
			}
		}
	}
	for to := range directed {
		if covered[to] {
			continue
		}
		if j, err := jid.Parse(to); err == nil && covered[j.Bare().String()] && j.Resourcepart() == "" {
			continue
		}
		p.send(ctx, stamp(el, full.String(), to))
	}
}

// closed sends unavailable presence for a session that ended without saying so (§4.5.3).
func (p *Presence) closed(ctx context.Context, s module.Session) {
	p.mu.Lock()
	_, avail := p.last[s]
	n := len(p.directed[s])
	if module.IsHandover(ctx) {
		// The session goes on on another node of a cluster: nothing to announce.
		delete(p.last, s)
		delete(p.directed, s)
		avail, n = false, 0
	}
	p.mu.Unlock()
	if !avail && n == 0 {
		return
	}
	el := stanza.NewElement(stanza.NSClient, "presence", stanza.Attr{Name: "type", Value: "unavailable"})
	p.unavailable(ctx, s, el, false)
}

// trackDirected records directed presence (§4.6): available presence to an entity that does not
// get the broadcast is remembered so that it learns when the user goes; directed unavailable
// presence ends that.
func (p *Presence) trackDirected(ctx context.Context, st *module.Stanza, avail bool) {
	to := st.To.String()
	if st.To.Bare().Equal(st.From.Bare()) {
		return
	}
	if !avail {
		p.mu.Lock()
		delete(p.directed[st.Session], to)
		p.mu.Unlock()
		return
	}
	it, ok, err := p.r.Store().Get(ctx, st.From.Bare().String(), st.To.Bare().String())
	if err != nil {
		p.h.Log.Error("presence: reading roster", "err", err)
	}
	if ok && it.Listed() && it.HasFrom() && st.To.Resourcepart() == "" {
		// The broadcast reaches this contact already.
		return
	}
	p.mu.Lock()
	set := p.directed[st.Session]
	if set == nil {
		set = make(map[string]struct{})
		p.directed[st.Session] = set
	}
	set[to] = struct{}{}
	p.mu.Unlock()
}

// hasDirected reports whether a session of user sent directed presence to the entity from.
func (p *Presence) hasDirected(user jid.JID, from jid.JID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.h.Router.Sessions(user) {
		for to := range p.directed[s] {
			if j, err := jid.Parse(to); err == nil && (j.Equal(from) || j.Equal(from.Bare())) {
				return true
			}
		}
	}
	return false
}

// outbound handles a subscription stanza from the user (§3, Appendix A.2).
func (p *Presence) outbound(ctx context.Context, st *module.Stanza, typ string) error {
	user := st.From.Bare()
	contact := st.To.Bare()
	if contact.Equal(user) {
		// The own account is subscribed both ways implicitly; there is nothing to change.
		return nil
	}
	var route, lostFrom, gainedFrom bool
	_, err := p.r.Update(ctx, user, contact.String(), func(it *roster.Item, _ bool) error {
		hadFrom := it.HasFrom()
		route = it.Outbound(typ)
		lostFrom = hadFrom && !it.HasFrom()
		gainedFrom = !hadFrom && it.HasFrom()
		return nil
	})
	if err != nil {
		return err
	}
	if !route {
		return nil
	}
	if lostFrom {
		// Before 'unsubscribed': afterwards the contact's server accepts no presence from the user.
		p.r.SendUnavailable(ctx, user, contact.String())
	}
	// §3.1.2: the server stamps the request with the user's bare JID and addresses the
	// contact's bare JID.
	p.send(ctx, stamp(st.El, user.String(), contact.String()))
	if gainedFrom {
		// §3.1.5: the newly subscribed contact gets the user's current presence.
		p.sendCurrent(ctx, user, contact.String())
	}
	return nil
}

// sendCurrent sends the last presence of each of user's available resources to to.
func (p *Presence) sendCurrent(ctx context.Context, user jid.JID, to string) {
	for _, el := range p.current(user) {
		p.send(ctx, stamp(el.el, el.from, to))
	}
}

type lastPresence struct {
	from string
	el   *stanza.Element
}

// lastOf returns the last available presence of s, with p.mu held: kept here for a session of
// this node, or carried by the session itself when it lives on another node of a cluster.
func (p *Presence) lastOf(s router.Session) *stanza.Element {
	if el := p.last[s]; el != nil {
		return el
	}
	if r, ok := s.(interface{ LastPresence() *stanza.Element }); ok {
		return r.LastPresence()
	}
	return nil
}

// current returns the last presence of each available resource of user.
func (p *Presence) current(user jid.JID) []lastPresence {
	var out []lastPresence
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.h.Router.Sessions(user) {
		if el := p.lastOf(s); el != nil && s.Available() {
			out = append(out, lastPresence{s.JID().String(), el})
		}
	}
	return out
}

// toAccount handles presence for a local account before delivery.
func (p *Presence) toAccount(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	typ := st.El.Attr("type")
	switch typ {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
		p.inbound(ctx, st, typ)
		return module.Handled, nil
	case "probe":
		p.probe(ctx, st)
		return module.Handled, nil
	case "error":
		return module.Continue, nil
	case "", "unavailable":
	default:
		return module.Handled, nil
	}
	if st.Session != nil || st.To.Resourcepart() != "" || st.From.Bare().Equal(st.To.Bare()) {
		// Directed presence from a local client, presence for one resource, or the user's own.
		return module.Continue, nil
	}
	if typ == "unavailable" {
		// Unavailable presence tells nothing but an end, and may end directed presence or a
		// subscription that the receiving roster no longer shows, so it is always delivered.
		return module.Continue, nil
	}
	// Available presence to the bare JID from elsewhere is a broadcast: it is delivered only when
	// the user's roster accepts the sender's presence (§4.2.3, §4.4.3) or the user sent the
	// sender directed presence, which invites an answer.
	user := st.To.Bare()
	it, ok, err := p.r.Store().Get(ctx, user.String(), st.From.Bare().String())
	if err != nil {
		return module.Handled, err
	}
	if ok && it.Listed() && it.HasTo() {
		return module.Continue, nil
	}
	if p.hasDirected(user, st.From) {
		return module.Continue, nil
	}
	return module.Handled, nil
}

// inbound handles a subscription stanza for a local user (§3, Appendix A.3).
func (p *Presence) inbound(ctx context.Context, st *module.Stanza, typ string) {
	user := st.To.Bare()
	contact := st.From.Bare()
	if contact.Equal(user) || contact.Domainpart() == "" {
		return
	}
	if p.h.Accounts != nil {
		ok, err := p.h.Accounts.Exists(ctx, user.Localpart(), user.Domainpart())
		if err != nil {
			p.h.Log.Error("presence: account lookup", "err", err)
			return
		}
		if !ok {
			if typ == "subscribe" {
				// §3.1.3: a request for a missing account is answered 'unsubscribed'.
				p.send(ctx, roster.Subscription(user.String(), contact.String(), "unsubscribed"))
			}
			return
		}
	}
	// The stanza is delivered from and to the bare JIDs whatever the sender's server put there
	// (§3.1.3).
	el := stamp(st.El, contact.String(), user.String())
	var action int
	var lostFrom bool
	_, err := p.r.Update(ctx, user, contact.String(), func(it *roster.Item, _ bool) error {
		hadFrom := it.HasFrom()
		action = it.Inbound(typ)
		lostFrom = hadFrom && !it.HasFrom()
		return nil
	})
	if err != nil {
		p.h.Log.Error("presence: roster update", "user", user.String(), "err", err)
		return
	}
	switch action {
	case roster.AutoSubscribed:
		p.send(ctx, roster.Subscription(user.String(), contact.String(), "subscribed"))
		p.sendCurrent(ctx, user, contact.String())
	case roster.Deliver:
		if lostFrom {
			p.r.SendUnavailable(ctx, user, contact.String())
		}
		for _, s := range p.h.Router.Sessions(user) {
			if s.Available() {
				s.Deliver(el)
			}
		}
	}
}

// probe answers a presence probe for a local user (§4.3.2).
func (p *Presence) probe(ctx context.Context, st *module.Stanza) {
	user := st.To.Bare()
	from := st.From
	if from.Bare().Equal(user) || from.Domainpart() == "" {
		return
	}
	it, ok, err := p.r.Store().Get(ctx, user.String(), from.Bare().String())
	if err != nil {
		p.h.Log.Error("presence: reading roster", "err", err)
		return
	}
	if !ok || !it.Listed() || !it.HasFrom() {
		// The prober is not subscribed: no presence, and 'unsubscribed' lets its server correct
		// a subscription state it believes in.
		p.send(ctx, roster.Subscription(user.String(), from.Bare().String(), "unsubscribed"))
		return
	}
	cur := p.current(user)
	if len(cur) == 0 {
		p.send(ctx, stanza.NewElement(stanza.NSClient, "presence",
			stanza.Attr{Name: "type", Value: "unavailable"},
			stanza.Attr{Name: "from", Value: user.String()},
			stanza.Attr{Name: "to", Value: from.String()}))
		return
	}
	for _, lp := range cur {
		p.send(ctx, stamp(lp.el, lp.from, from.String()))
	}
}

var _ module.Module = (*Presence)(nil)
