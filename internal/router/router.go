// Package router delivers stanzas addressed to accounts of this server to their sessions,
// applying the delivery rules of RFC 6121 §8.5 for messages and §10 for iq and presence.
//
// The Router interface is the seam between a single node and a cluster: the local
// implementation keeps the session table in memory; a clustered one keeps the same
// table in a shared registry and forwards stanzas to the owning node.
package router

import (
	"context"
	"errors"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// Session is what the router needs of a bound client session, wherever it lives.
type Session interface {
	// JID is the session's full JID.
	JID() jid.JID
	// Available reports whether the session has sent initial presence and not gone unavailable.
	Available() bool
	// Priority is the priority of the session's last available presence.
	Priority() int
	// Deliver queues el for writing to the session. It never blocks on the peer.
	Deliver(el *stanza.Element)
	// Replaced closes the session because a new session bound the same full JID
	// (RFC 6120 §7.7.2.2): the old one gets a <conflict/> stream error.
	Replaced()
}

// Router is the session registry plus delivery.
type Router interface {
	// Bind registers s. A session already bound to the same full JID is told it was Replaced.
	Bind(s Session)
	// Unbind removes s if it is still the session bound to its JID.
	Unbind(s Session)
	// Session returns the session bound to a full JID, or nil.
	Session(full jid.JID) Session
	// Sessions returns a snapshot of the sessions of a bare JID.
	Sessions(bare jid.JID) []Session
	// Route delivers el, addressed to an account on a local domain, by the rules of RFC 6121 §8.5
	// and RFC 6120 §10.5. It returns a *stanza.Error to bounce to the sender, or nil.
	Route(ctx context.Context, el *stanza.Element, to jid.JID) error
}

// Accounts tells whether an account exists, so the router can tell "offline" from "no such user".
type Accounts interface {
	Exists(ctx context.Context, localpart, domain string) (bool, error)
}

// ErrOffline is returned by Route for a chat or normal message to an existing account that has
// no available resource: the caller may store it for later (XEP-0160) or bounce it.
var ErrOffline = errors.New("router: recipient offline")

// Local is the in-memory Router of one node.
type Local struct {
	mu       sync.RWMutex
	sessions map[string][]Session // bare JID string → sessions
	rules    Rules
}

// NewLocal returns an empty router. accounts may be nil, meaning every account exists.
func NewLocal(accounts Accounts) *Local {
	l := &Local{sessions: make(map[string][]Session)}
	l.rules = Rules{Sessions: l.Sessions, Session: l.Session, Accounts: accounts}
	return l
}

// Bind implements Router.
func (r *Local) Bind(s Session) {
	full := s.JID()
	bare := full.Bare().String()
	var old Session
	r.mu.Lock()
	list := r.sessions[bare]
	for i, o := range list {
		if o.JID().Equal(full) {
			old = o
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	r.sessions[bare] = append(list, s)
	r.mu.Unlock()
	if old != nil {
		old.Replaced()
	}
}

// Unbind implements Router.
func (r *Local) Unbind(s Session) {
	bare := s.JID().Bare().String()
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.sessions[bare]
	for i, o := range list {
		if o == s {
			// Copy so snapshots handed out earlier are never modified.
			nl := append(list[:i:i], list[i+1:]...)
			if len(nl) == 0 {
				delete(r.sessions, bare)
			} else {
				r.sessions[bare] = nl
			}
			return
		}
	}
}

// Session implements Router.
func (r *Local) Session(full jid.JID) Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, s := range r.sessions[full.Bare().String()] {
		if s.JID().Equal(full) {
			return s
		}
	}
	return nil
}

// Sessions implements Router. The returned slice must not be modified.
func (r *Local) Sessions(bare jid.JID) []Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.sessions[bare.String()]
}

// Count returns the number of bound sessions.
func (r *Local) Count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, l := range r.sessions {
		n += len(l)
	}
	return n
}

// All returns a snapshot of every bound session.
func (r *Local) All() []Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Session
	for _, l := range r.sessions {
		out = append(out, l...)
	}
	return out
}

// Route implements Router.
func (r *Local) Route(ctx context.Context, el *stanza.Element, to jid.JID) error {
	return r.rules.Route(ctx, el, to)
}
