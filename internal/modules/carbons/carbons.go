// Package carbons implements XEP-0280: Message Carbons. A resource that enables carbons gets a
// copy of the messages its account sends from other resources (wrapped in <sent/>) and of the
// messages the account receives that were delivered to other resources (wrapped in
// <received/>), each forwarded with XEP-0297.
//
// Copies of sent messages are made in the Outbound hook, once the client's message has passed
// the checks on what an account may send (blocking) and is about to be delivered or leave the
// server; copies of received messages in the MessageDeliver hook, after the checks on what an
// account accepts, just before the router delivers the original. The hook works out which resources the router's RFC 6121 §8.5 rules
// will pick, exactly as the router does, so that those get the original and only the others a
// copy (§6: "that did not receive it").
package carbons

import (
	"context"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/stanza"
)

// Namespaces of XEP-0280 and the payloads its rules look at.
const (
	NS        = "urn:xmpp:carbons:2"
	NSForward = "urn:xmpp:forward:0"
	// NSRulesFeature advertises the eligibility rules of version 0.13 and later (type normal
	// messages with a body are copied too).
	NSRulesFeature = "urn:xmpp:carbons:rules:0"
	nsHints        = "urn:xmpp:hints"
	nsMUCUser      = "http://jabber.org/protocol/muc#user"
)

// Hook priorities: below modules that may drop or answer a message themselves (blocking,
// archives), so that only messages which go on get copied.
const hookPriority = -100

func init() { module.Register("carbons", func() module.Module { return new(Carbons) }) }

// Carbons is the carbons module of one hosted domain.
type Carbons struct {
	h *module.Host

	mu      sync.Mutex
	enabled map[router.Session]struct{}
}

// Provision implements module.Module.
func (c *Carbons) Provision(h *module.Host) error {
	c.h = h
	c.enabled = make(map[router.Session]struct{})
	h.AddFeature(NS)
	h.AddFeature(NSRulesFeature)
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "enable", c.enable)
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "disable", c.disable)
	h.Hook(module.Outbound, hookPriority, c.sent)
	h.Hook(module.MessageDeliver, hookPriority, c.received)
	h.OnSessionClosed(func(_ context.Context, s module.Session) {
		c.mu.Lock()
		delete(c.enabled, s)
		c.mu.Unlock()
	})
	return nil
}

// enable turns carbons on for the requesting resource (§4). A repeated request is answered
// with success (§8.1).
func (c *Carbons) enable(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	s, err := c.own(iq)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.enabled[s] = struct{}{}
	c.mu.Unlock()
	return nil, nil
}

// disable turns carbons off for the requesting resource (§5).
func (c *Carbons) disable(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	s, err := c.own(iq)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	delete(c.enabled, s)
	c.mu.Unlock()
	return nil, nil
}

// own returns the local session behind a request for its own account; anything else is
// not-allowed (§4.1, §5.1).
func (c *Carbons) own(iq *module.IQ) (router.Session, error) {
	if iq.Session == nil || !iq.From.Bare().Equal(iq.To.Bare()) {
		return nil, stanza.ErrNotAllowed
	}
	return iq.Session, nil
}

// Enabled reports whether s enabled carbons.
func (c *Carbons) Enabled(s router.Session) bool {
	c.mu.Lock()
	_, ok := c.enabled[s]
	c.mu.Unlock()
	if r, remote := s.(interface{ Interested(ns string) bool }); remote && !ok {
		// A session on another node of a cluster that enabled carbons there.
		return r.Interested(NS)
	}
	return ok
}

// eligible applies the rules of §6 to a message: chat messages, and normal messages with a
// body; never groupchat, errors or headlines; never one marked <private/> or <no-copy/>
// (XEP-0334), and never a carbon itself.
func eligible(el *stanza.Element) bool {
	switch el.Attr("type") {
	case "chat":
	case "", "normal":
		if el.Child(stanza.NSClient, "body") == nil {
			return false
		}
	default:
		return false
	}
	for ch := range el.Elements() {
		switch {
		case ch.Space == NS && (ch.Local == "private" || ch.Local == "sent" || ch.Local == "received"):
			return false
		case ch.Space == nsHints && ch.Local == "no-copy":
			return false
		}
	}
	return true
}

// wrap returns the carbon of el for the resource to (§6, §7).
func wrap(kind string, el *stanza.Element, user, to jid.JID) *stanza.Element {
	m := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: user.String()},
		stanza.Attr{Name: "to", Value: to.String()})
	if t := el.Attr("type"); t != "" {
		m.SetAttr("type", t)
	}
	// A copy: the original keeps changing after this (hooks add and strip stanza ids), while the
	// carbon may wait in a queue (client state indication, stream management) before it is written.
	fwd := stanza.NewElement(NSForward, "forwarded").AddChild(el.Copy())
	return m.AddChild(stanza.NewElement(NS, kind).AddChild(fwd))
}

// sent copies a message a local client sends to the other carbons-enabled resources of its
// account (§7), except the resource it is addressed to, which gets the original.
func (c *Carbons) sent(_ context.Context, st *module.Stanza) (module.Verdict, error) {
	if st.Session == nil || st.El.Local != "message" || !eligible(st.El) {
		return module.Continue, nil
	}
	from := st.Session.JID()
	if st.To.Equal(from) {
		// A message to the sending resource itself has no one else to tell.
		return module.Continue, nil
	}
	user := from.Bare()
	for _, s := range c.h.Router.Sessions(user) {
		if s == router.Session(st.Session) || s.JID().Equal(st.To) || !c.Enabled(s) {
			continue
		}
		s.Deliver(wrap("sent", st.El, user, s.JID()))
	}
	return module.Continue, nil
}

// received copies a message for a local account to the carbons-enabled resources that the
// router's delivery rules do not pick (§6), and strips the <private/> hint, which is for this
// server only (§8).
func (c *Carbons) received(_ context.Context, st *module.Stanza) (module.Verdict, error) {
	el := st.El
	if el.Local != "message" || st.To.Localpart() == "" {
		return module.Continue, nil
	}
	if el.Child(NS, "private") != nil {
		stripPrivate(el)
		return module.Continue, nil
	}
	if !eligible(el) {
		return module.Continue, nil
	}
	if st.From.Bare().Equal(st.To.Bare()) {
		// Between resources of one account the sent carbon already told the others.
		return module.Continue, nil
	}
	if el.Child(nsMUCUser, "x") != nil {
		// A private message from a room occupant (XEP-0045 §7.5): the other resources are not
		// in the room and cannot answer it; MUC messages are not copied (§6).
		return module.Continue, nil
	}
	user := st.To.Bare()
	sessions := c.h.Router.Sessions(user)
	if len(sessions) == 0 {
		return module.Continue, nil
	}
	targets, ok := recipients(sessions, st.To, el.Attr("type"))
	if !ok {
		// The router bounces the message: no one received it, so no one gets a copy.
		return module.Continue, nil
	}
	for _, s := range sessions {
		if !c.Enabled(s) || !s.Available() || targets[s] {
			continue
		}
		s.Deliver(wrap("received", el, user, s.JID()))
	}
	return module.Continue, nil
}

// recipients returns the sessions the router delivers a chat or normal message for to to,
// following router.Local: the addressed resource when it is bound; else, for chat messages and
// messages to the bare JID, the available resources of the highest non-negative priority
// (RFC 6121 §8.5.2.1.1, §8.5.3.2.1). ok is false when the router bounces the message instead.
func recipients(sessions []router.Session, to jid.JID, typ string) (out map[router.Session]bool, ok bool) {
	out = map[router.Session]bool{}
	if to.Resourcepart() != "" {
		for _, s := range sessions {
			if s.JID().Equal(to) {
				out[s] = true
				return out, true
			}
		}
		if typ != "chat" {
			return out, false
		}
	}
	top := -1
	for _, s := range sessions {
		if s.Available() && s.Priority() >= 0 && s.Priority() > top {
			top = s.Priority()
		}
	}
	for _, s := range sessions {
		if s.Available() && s.Priority() >= 0 && s.Priority() == top {
			out[s] = true
		}
	}
	return out, true
}

func stripPrivate(el *stanza.Element) {
	kept := el.Children[:0:0]
	for _, n := range el.Children {
		if n.Elem != nil && n.Elem.Space == NS && n.Elem.Local == "private" {
			continue
		}
		kept = append(kept, n)
	}
	el.Children = kept
}

var _ module.Module = (*Carbons)(nil)
