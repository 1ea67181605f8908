// Package core processes stanzas once a stream has authenticated them: it validates and
// classifies each stanza by its addressee, runs the hosted domain's module hooks and iq
// handlers, and hands the rest to the router (local accounts) or to the remote path (other
// servers). Errors become error replies here, in one place.
package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/stanza"
)

// RemoteFunc sends a stanza to a domain this server does not host.
type RemoteFunc func(ctx context.Context, el *stanza.Element, to jid.JID) error

// Core is the stanza processor shared by every stream.
type Core struct {
	Router router.Router
	Log    *slog.Logger
	// Remote handles stanzas for other domains; nil means federation is off.
	Remote RemoteFunc
	// JIDCacheSize bounds the prepared 'to' addresses of client stanzas kept to skip their
	// PRECIS preparation; zero means DefaultJIDCacheSize and a negative value disables it.
	JIDCacheSize int

	hosts map[string]*module.Host

	// components maps the domains of connected external components (XEP-0114) to the
	// function writing to their streams; they come and go while the server runs.
	compMu     sync.RWMutex
	components map[string]RemoteFunc

	toCache jidCache
}

// ErrDomainTaken is returned by Attach for a hosted domain or one a component already serves.
var ErrDomainTaken = errors.New("core: domain already served")

// Attach routes every stanza for domain, and for JIDs under it, to fn until Detach: an external
// component (XEP-0114) serves the domain while its stream is up.
func (c *Core) Attach(domain string, fn RemoteFunc) error {
	c.compMu.Lock()
	defer c.compMu.Unlock()
	if c.hosts[domain] != nil || c.components[domain] != nil {
		return ErrDomainTaken
	}
	if c.components == nil {
		c.components = make(map[string]RemoteFunc)
	}
	c.components[domain] = fn
	return nil
}

// Detach ends Attach for domain.
func (c *Core) Detach(domain string) {
	c.compMu.Lock()
	delete(c.components, domain)
	c.compMu.Unlock()
}

// component returns the function of the component serving domain, or nil.
func (c *Core) component(domain string) RemoteFunc {
	c.compMu.RLock()
	defer c.compMu.RUnlock()
	return c.components[domain]
}

// New returns a core with no hosts.
func New(r router.Router, log *slog.Logger) *Core {
	return &Core{Router: r, Log: log, hosts: make(map[string]*module.Host)}
}

// AddHost adds a hosted domain.
func (c *Core) AddHost(h *module.Host) { c.hosts[h.Domain] = h }

// Host returns the hosted domain's host, or nil.
func (c *Core) Host(domain string) *module.Host { return c.hosts[domain] }

// Hosts returns every host.
func (c *Core) Hosts() []*module.Host {
	out := make([]*module.Host, 0, len(c.hosts))
	for _, h := range c.hosts {
		out = append(out, h)
	}
	return out
}

// parseTo prepares the 'to' address of a client stanza, through the cache.
func (c *Core) parseTo(s string) (jid.JID, error) {
	n := c.JIDCacheSize
	if n == 0 {
		n = DefaultJIDCacheSize
	}
	return c.toCache.parse(s, n)
}

// FromClient processes a stanza sent by a bound local session. The stream layer has already
// stamped 'from' with the session's full JID.
func (c *Core) FromClient(ctx context.Context, s module.Session, el *stanza.Element) {
	from := s.JID()
	var to jid.JID
	if t := el.Attr("to"); t != "" {
		var err error
		// jidutil.Parse also refuses addresses jid.Parse prepares into an invalid form.
		if to, err = c.parseTo(t); err != nil {
			c.bounce(ctx, el, stanza.NewError("jid-malformed", "invalid 'to' address"))
			return
		}
	}
	switch el.Local {
	case "iq":
		if to.Domainpart() == "" {
			// No 'to' from a client means the client's own account (RFC 6120 §10.3.3).
			to = from.Bare()
		}
		if h := c.hosts[from.Domainpart()]; h != nil {
			st := &module.Stanza{El: el, From: from, To: to, Session: s}
			if v, err := h.RunHooks(ctx, module.IQIn, st); v == module.Handled {
				c.hookError(ctx, el, err)
				return
			}
			to = st.To
		}
		c.processIQ(ctx, s, el, from, to)
	case "message":
		if to.Domainpart() == "" {
			to = from.Bare()
		}
		st := &module.Stanza{El: el, From: from, To: to, Session: s}
		if h := c.hosts[from.Domainpart()]; h != nil {
			if v, err := h.RunHooks(ctx, module.MessageIn, st); v == module.Handled {
				c.hookError(ctx, el, err)
				return
			}
		}
		c.deliver(ctx, st)
	case "presence":
		st := &module.Stanza{El: el, From: from, To: to, Session: s}
		if h := c.hosts[from.Domainpart()]; h != nil {
			if v, err := h.RunHooks(ctx, module.PresenceIn, st); v == module.Handled {
				c.hookError(ctx, el, err)
				return
			}
		}
		if to.Domainpart() == "" {
			// Broadcast presence belongs to the presence module; without it there is no one to tell.
			return
		}
		c.deliver(ctx, st)
	}
}

// Route sends a stanza that already has 'from' and 'to', from a module or another server.
func (c *Core) Route(ctx context.Context, el *stanza.Element) error {
	to, err := jid.Parse(el.Attr("to"))
	if err != nil {
		return stanza.NewError("jid-malformed", "invalid 'to' address")
	}
	from, _ := jid.Parse(el.Attr("from"))
	if el.Local == "iq" && to.Resourcepart() == "" && c.hosts[to.Domainpart()] != nil {
		c.processIQ(ctx, nil, el, from, to)
		return nil
	}
	c.deliver(ctx, &module.Stanza{El: el, From: from, To: to})
	return nil
}

// deliver runs the recipient host's delivery hooks and routes the stanza.
func (c *Core) deliver(ctx context.Context, st *module.Stanza) {
	el, to := st.El, st.To
	if fh := c.hosts[st.From.Domainpart()]; fh != nil && st.From.Localpart() != "" && fh.Service() == nil {
		// Whatever a local account sends, its own broadcasts included, passes its host's
		// outbound hooks (blocking) before it goes anywhere.
		if v, err := fh.RunHooks(ctx, module.Outbound, st); v == module.Handled {
			c.hookError(ctx, el, err)
			return
		}
	}
	h := c.hosts[to.Domainpart()]
	if h == nil {
		c.remote(ctx, el, to)
		return
	}
	if svc := h.Service(); svc != nil && to.Localpart() != "" {
		// Entities of a service domain (rooms, occupants) are the service's, not the router's.
		c.hookError(ctx, el, svc(ctx, st))
		return
	}
	if to.Localpart() == "" {
		// Messages and presence to the domain itself: no module claimed them. Messages of type
		// chat or normal get an error so senders learn nobody reads them; the rest is dropped.
		if el.Local == "message" && (el.Attr("type") == "" || el.Attr("type") == "normal" || el.Attr("type") == "chat") {
			c.bounce(ctx, el, stanza.ErrServiceUnavailable)
		}
		return
	}
	if el.Local != "iq" {
		point := module.MessageDeliver
		if el.Local == "presence" {
			point = module.PresenceDeliver
		}
		if v, err := h.RunHooks(ctx, point, st); v == module.Handled {
			c.hookError(ctx, el, err)
			return
		}
	}
	err := c.Router.Route(ctx, el, to)
	if errors.Is(err, router.ErrOffline) {
		// Offline storage (XEP-0160) is a module's business; without one the sender learns
		// the message could not be delivered (RFC 6121 §8.5.2.2.1).
		if v, herr := h.RunHooks(ctx, module.MessageOffline, st); v == module.Handled {
			c.hookError(ctx, el, herr)
			return
		}
		err = stanza.ErrServiceUnavailable
	}
	if err != nil {
		c.routeError(ctx, el, err)
	}
}

func (c *Core) remote(ctx context.Context, el *stanza.Element, to jid.JID) {
	if fn := c.component(to.Domainpart()); fn != nil {
		if err := fn(ctx, el, to); err != nil {
			c.routeError(ctx, el, err)
		}
		return
	}
	if c.Remote == nil {
		c.bounce(ctx, el, stanza.ErrRemoteServerNotFound)
		return
	}
	if err := c.Remote(ctx, el, to); err != nil {
		c.routeError(ctx, el, err)
	}
}

// processIQ dispatches an iq: requests to the domain or to an account go to the host's handlers,
// everything else is routed.
func (c *Core) processIQ(ctx context.Context, s module.Session, el *stanza.Element, from, to jid.JID) {
	typ := el.Attr("type")
	if serr := stanza.ValidIQ(el); serr != nil {
		if typ == stanza.Get || typ == stanza.Set || typ == "" {
			c.bounce(ctx, el, serr)
		}
		return
	}
	h := c.hosts[to.Domainpart()]
	if h == nil {
		c.remote(ctx, el, to)
		return
	}
	if svc := h.Service(); svc != nil && to.Localpart() != "" {
		// Requests and responses alike: a service entity may be waiting for a response.
		c.hookError(ctx, el, svc(ctx, &module.Stanza{El: el, From: from, To: to, Session: s}))
		return
	}
	if to.Localpart() != "" {
		st := &module.Stanza{El: el, From: from, To: to, Session: s}
		if v, err := h.RunHooks(ctx, module.IQDeliver, st); v == module.Handled {
			c.hookError(ctx, el, err)
			return
		}
	}
	if to.Resourcepart() != "" {
		if to.Localpart() == "" {
			// A domain with a resource names no entity on this server.
			if typ == stanza.Get || typ == stanza.Set {
				c.bounce(ctx, el, stanza.ErrServiceUnavailable)
			}
			return
		}
		if err := c.Router.Route(ctx, el, to); err != nil {
			c.routeError(ctx, el, err)
		}
		return
	}
	if typ != stanza.Get && typ != stanza.Set {
		// Responses to the server or to an account go to the modules waiting for them; the
		// rest are dropped, as no request is answered twice.
		_, _ = h.RunHooks(ctx, module.IQResult, &module.Stanza{El: el, From: from, To: to, Session: s})
		return
	}
	target := module.ToAccount
	if to.Localpart() == "" {
		target = module.ToServer
	}
	if el.Attr("to") == "" {
		// The client addressed its own account implicitly; results and errors come from it.
		el.SetAttr("to", to.String())
	}
	payload := el.FirstElement()
	fn := h.IQHandler(target, typ, payload.Space, payload.Local)
	if fn == nil {
		c.bounce(ctx, el, stanza.ErrServiceUnavailable)
		return
	}
	iq := &module.IQ{El: el, Payload: payload, From: from, To: to, Session: s}
	res, err := c.callIQ(ctx, fn, iq)
	if err != nil {
		c.routeError(ctx, el, err)
		return
	}
	c.reply(ctx, s, stanza.ResultReply(el, res))
}

// callIQ runs a handler, turning a panic into internal-server-error so one bad request
// never takes the server down.
func (c *Core) callIQ(ctx context.Context, fn module.IQHandler, iq *module.IQ) (res *stanza.Element, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.Log.Error("iq handler panicked", "payload", iq.Payload.Space+" "+iq.Payload.Local, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			res, err = nil, stanza.ErrInternalServerError
		}
	}()
	return fn(ctx, iq)
}

// reply sends a response to the requester: straight to its session when it is local.
func (c *Core) reply(ctx context.Context, s module.Session, reply *stanza.Element) {
	if s != nil {
		s.Send(reply)
		return
	}
	if err := c.Route(ctx, reply); err != nil {
		c.Log.Debug("reply not routable", "err", err)
	}
}

// hookError answers a stanza whose hook failed.
func (c *Core) hookError(ctx context.Context, el *stanza.Element, err error) {
	if err != nil {
		c.routeError(ctx, el, err)
	}
}

// routeError maps any error from routing or a handler to the error reply (the one place that does).
func (c *Core) routeError(ctx context.Context, el *stanza.Element, err error) {
	var serr *stanza.Error
	if !errors.As(err, &serr) {
		c.Log.Error("stanza processing failed", "kind", el.Local, "err", err)
		serr = stanza.ErrInternalServerError
	}
	c.bounce(ctx, el, serr)
}

// bounce sends an error reply for el to its sender, unless el is itself an error (RFC 6120 §8.3.1)
// or a presence other than a subscription request's (presence errors are not worth a loop).
func (c *Core) bounce(ctx context.Context, el *stanza.Element, serr *stanza.Error) {
	if el.Attr("type") == "error" || el.Attr("type") == stanza.Result || el.Attr("from") == "" {
		return
	}
	reply := stanza.ErrorReply(el, serr)
	if _, err := jid.Parse(reply.Attr("to")); err != nil {
		return
	}
	if err := c.Route(ctx, reply); err != nil {
		c.Log.Debug("error reply not routable", "err", err)
	}
}
