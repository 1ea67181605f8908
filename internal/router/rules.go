package router

import (
	"context"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// Rules applies the delivery rules of RFC 6121 §8.5 and RFC 6120 §10.5 to stanzas for local
// accounts over any view of the sessions: Local uses its own table, and a cluster node uses the
// cluster-wide registry and forwards to sessions on other nodes. The rules live here once.
type Rules struct {
	// Sessions and Session look sessions up by bare and full JID.
	Sessions func(bare jid.JID) []Session
	Session  func(full jid.JID) Session
	// Deliver hands el to s and reports whether s took it (a session on another node may be
	// gone); nil means s.Deliver, which always takes it.
	Deliver func(s Session, el *stanza.Element) bool
	// Accounts tells offline accounts from missing ones; nil means every account exists.
	Accounts Accounts
}

func (r *Rules) deliver(s Session, el *stanza.Element) bool {
	if r.Deliver != nil {
		return r.Deliver(s, el)
	}
	s.Deliver(el)
	return true
}

// Route applies the rules to el, addressed to an account on a local domain.
func (r *Rules) Route(ctx context.Context, el *stanza.Element, to jid.JID) error {
	typ := el.Attr("type")
	if to.Resourcepart() != "" {
		if s := r.Session(to); s != nil && r.deliver(s, el) {
			return nil
		}
		return r.toMissingResource(ctx, el, to, typ)
	}
	switch el.Local {
	case "message":
		return r.messageToBare(ctx, el, to, typ)
	case "iq":
		// An iq to a bare JID is handled by the server on the account's behalf (RFC 6120 §10.5.3.2);
		// the core does that before routing, so reaching here means nobody handles it.
		if typ == stanza.Get || typ == stanza.Set {
			return stanza.ErrServiceUnavailable
		}
		return nil
	case "presence":
		// Directed presence to a bare JID goes to every available resource (RFC 6121 §4.6).
		for _, s := range r.Sessions(to) {
			if s.Available() || typ != "" {
				r.deliver(s, el)
			}
		}
		return nil
	}
	return nil
}

// toMissingResource applies RFC 6121 §8.5.3.2 (messages), §4.6 (presence) and RFC 6120 §10.5.3.2 (iq)
// when no session has the addressed resource.
func (r *Rules) toMissingResource(ctx context.Context, el *stanza.Element, to jid.JID, typ string) error {
	switch el.Local {
	case "message":
		switch typ {
		case "chat":
			return r.messageToBare(ctx, el, to.Bare(), typ)
		case "", "normal", "groupchat":
			return stanza.ErrServiceUnavailable
		}
		// Headlines and errors are dropped silently.
		return nil
	case "iq":
		if typ == stanza.Get || typ == stanza.Set {
			return stanza.ErrServiceUnavailable
		}
	}
	return nil
}

// messageToBare applies RFC 6121 §8.5.2 for a message to a local bare JID.
func (r *Rules) messageToBare(ctx context.Context, el *stanza.Element, to jid.JID, typ string) error {
	switch typ {
	case "error":
		return nil
	case "groupchat":
		// A groupchat message to a bare JID is never delivered (§8.5.2.1.3).
		return stanza.ErrServiceUnavailable
	}
	sessions := r.Sessions(to)
	var best [8]Session // most accounts have few resources: no allocation
	targets := best[:0]
	top := 0
	for _, s := range sessions {
		if !s.Available() || s.Priority() < 0 {
			continue
		}
		p := s.Priority()
		// Chat and normal messages go to the highest-priority resources (§8.5.2.1.1);
		// headlines go to every non-negative one (§8.5.2.1.2).
		if typ != "headline" && len(targets) > 0 {
			if p < top {
				continue
			}
			if p > top {
				targets = targets[:0]
			}
		}
		top = p
		targets = append(targets, s)
	}
	delivered := false
	for _, s := range targets {
		if r.deliver(s, el) {
			delivered = true
		}
	}
	if delivered {
		return nil
	}
	if r.Accounts != nil {
		ok, err := r.Accounts.Exists(ctx, to.Localpart(), to.Domainpart())
		if err != nil {
			return stanza.ErrInternalServerError
		}
		if !ok {
			if typ == "headline" {
				return nil
			}
			return stanza.ErrServiceUnavailable
		}
	}
	if typ == "headline" {
		return nil
	}
	return ErrOffline
}
