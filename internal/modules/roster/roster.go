// Package roster implements roster management of RFC 6121 §2: roster get, set and remove
// (§2.2–§2.5) with their error cases, roster pushes to interested resources (§2.1.6), roster
// versioning (§2.6) and the storage of the subscription state of each item (§2.1.2, §3) that the
// presence module drives through the state machine of Appendix A.
//
// A roster lives in the storage.Map named StoreName; Store is the only code that knows its
// encoding, so the Momentum import writes through it too.
package roster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"unicode/utf8"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/stanza"
)

// Namespaces of RFC 6121.
const (
	NS = "jabber:iq:roster"
	// NSVer is the stream feature of roster versioning (§2.6.1).
	NSVer = "urn:xmpp:features:rosterver"
	// NSPreApproval is the stream feature of subscription pre-approval (§3.4.1).
	NSPreApproval = "urn:xmpp:features:pre-approval"
)

// Defaults of the configurable limits.
const (
	DefaultMaxItems = 1000
	// DefaultMaxText bounds item names and group names, in characters (§2.3.3 lets the server
	// choose); 1023 matches the JID part limit, which is what clients already cope with.
	DefaultMaxText = 1023
)

func init() {
	module.Register("roster", func() module.Module {
		return &Roster{MaxItems: DefaultMaxItems, MaxText: DefaultMaxText}
	})
}

// Roster is the roster module of one hosted domain.
type Roster struct {
	// MaxItems bounds the entries of a roster; zero or less means no bound.
	MaxItems int
	// MaxText bounds the length of item and group names in characters.
	MaxText int

	h     *module.Host
	store *Store

	mu sync.Mutex
	// interested holds the sessions that requested the roster (§2.1.6), by full JID. The session
	// itself is kept so that a session replaced under the same JID cannot unregister its successor.
	interested map[string]router.Session
}

var (
	hostsMu sync.Mutex
	hosts   = map[*module.Host]*Roster{}
)

// ForHost returns the roster module provisioned on h, or nil. The presence module finds the
// roster through it, which is why it must be provisioned after this one.
func ForHost(h *module.Host) *Roster {
	hostsMu.Lock()
	defer hostsMu.Unlock()
	return hosts[h]
}

// Provision implements module.Module.
func (r *Roster) Provision(h *module.Host) error {
	r.h = h
	if x := h.XMPP(); x != nil {
		r.MaxItems = x.MaxRosterItems
	}
	r.store = NewStore(h.Storage)
	r.store.MaxItems = r.MaxItems
	r.interested = make(map[string]router.Session)
	h.HandleIQ(module.ToAccount, stanza.Get, NS, "query", r.get)
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "query", r.set)
	h.AddStreamFeature(stanza.NewElement(NSVer, "ver"))
	h.AddStreamFeature(stanza.NewElement(NSPreApproval, "sub"))
	h.OnSessionClosed(func(_ context.Context, s module.Session) {
		r.mu.Lock()
		if r.interested[s.JID().String()] == router.Session(s) {
			delete(r.interested, s.JID().String())
		}
		r.mu.Unlock()
	})
	hostsMu.Lock()
	hosts[h] = r
	hostsMu.Unlock()
	return nil
}

// Stop implements module.Stopper.
func (r *Roster) Stop() error {
	hostsMu.Lock()
	delete(hosts, r.h)
	hostsMu.Unlock()
	return nil
}

// Store returns the module's store.
func (r *Roster) Store() *Store { return r.store }

// get answers a roster get (§2.2), or an empty result when the client's cached version is the
// current one (§2.6.3).
func (r *Roster) get(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !iq.From.Bare().Equal(iq.To) {
		// Another account's roster is not the requester's business; say nothing about it.
		return nil, stanza.ErrServiceUnavailable
	}
	owner := iq.To.String()
	if iq.Session != nil {
		r.mu.Lock()
		r.interested[iq.Session.JID().String()] = iq.Session
		r.mu.Unlock()
	}
	items, ver, err := r.store.All(ctx, owner)
	if err != nil {
		return nil, err
	}
	versioned := iq.Payload.HasAttr("ver")
	if versioned && iq.Payload.Attr("ver") == ver {
		return nil, nil
	}
	q := stanza.NewElement(NS, "query")
	if versioned {
		q.SetAttr("ver", ver)
	}
	for i := range items {
		if items[i].Listed() {
			q.AddChild(items[i].Element())
		}
	}
	return q, nil
}

// set handles a roster set (§2.3–§2.5).
func (r *Roster) set(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !iq.From.Bare().Equal(iq.To) {
		return nil, stanza.ErrForbidden
	}
	var item *stanza.Element
	n := 0
	for c := range iq.Payload.Elements() {
		if c.Space == NS && c.Local == "item" {
			item = c
			n++
		}
	}
	if n != 1 {
		return nil, stanza.NewError("bad-request", "a roster set carries exactly one item")
	}
	raw := item.Attr("jid")
	if raw == "" {
		return nil, stanza.NewError("bad-request", "the item has no 'jid'")
	}
	contact, err := jid.Parse(raw)
	if err != nil {
		return nil, stanza.NewError("jid-malformed", "the item's 'jid' is not a valid JID")
	}
	if contact.Bare().Equal(iq.To) {
		// The user's own JID is implicitly subscribed both ways (RFC 6121 §4.2.2, §4.5.2); an item
		// for it would make the subscription state machine talk to itself.
		return nil, stanza.NewError("not-allowed", "the account's own JID cannot be a roster item")
	}
	owner := iq.To
	if item.Attr("subscription") == "remove" {
		return nil, r.remove(ctx, owner, contact.String())
	}
	name := item.Attr("name")
	if utf8.RuneCountInString(name) > r.MaxText {
		return nil, stanza.NewError("not-acceptable", "the item name is too long")
	}
	var groups []string
	for g := range item.Elements() {
		if g.Space != NS || g.Local != "group" {
			continue
		}
		t := g.Text()
		switch {
		case t == "":
			return nil, stanza.NewError("not-acceptable", "a group name is empty")
		case utf8.RuneCountInString(t) > r.MaxText:
			return nil, stanza.NewError("not-acceptable", "a group name is too long")
		}
		for _, prev := range groups {
			if prev == t {
				return nil, stanza.NewError("bad-request", "the item lists a group twice")
			}
		}
		groups = append(groups, t)
	}
	// 'subscription' other than 'remove', 'ask' and 'approved' belong to the server and are
	// ignored in a set (§2.1.2.2, §2.1.2.5).
	_, err = r.Update(ctx, owner, contact.String(), func(it *Item, _ bool) error {
		it.Hidden = false
		it.Name = name
		it.Groups = groups
		return nil
	})
	return nil, err
}

// remove deletes an item (§2.5): the server cancels the subscriptions both ways on the user's
// behalf first (§2.5.2).
func (r *Roster) remove(ctx context.Context, owner jid.JID, contact string) error {
	var old Item
	_, err := r.Update(ctx, owner, contact, func(it *Item, exists bool) error {
		if !exists || it.Hidden {
			return stanza.ErrItemNotFound
		}
		old = *it
		*it = Item{JID: contact, Subscription: None, Hidden: true}
		return nil
	})
	if err != nil {
		return err
	}
	from := owner.String()
	if old.HasTo() || old.Ask {
		r.send(ctx, Subscription(from, contact, "unsubscribe"))
	}
	if old.HasFrom() || old.PendingIn {
		if old.HasFrom() {
			// Sent before 'unsubscribed': once the contact's server processes that, it no longer
			// accepts presence from the user.
			r.SendUnavailable(ctx, owner, contact)
		}
		r.send(ctx, Subscription(from, contact, "unsubscribed"))
	}
	return nil
}

// Update changes the entry of contact in owner's roster (see Store.Update) and pushes the item to
// the owner's interested resources when it changed as they see it.
func (r *Roster) Update(ctx context.Context, owner jid.JID, contact string, fn func(it *Item, exists bool) error) (Change, error) {
	ch, err := r.store.Update(ctx, owner.String(), contact, fn)
	if err != nil {
		return ch, err
	}
	if ch.Pushed {
		it := ch.Item.Element()
		if ch.Removed {
			it = stanza.NewElement(NS, "item", stanza.Attr{Name: "jid", Value: contact}, stanza.Attr{Name: "subscription", Value: "remove"})
		}
		r.push(owner, it, ch.Version)
	}
	return ch, nil
}

// push sends a roster push (§2.1.6) to every interested resource of owner. The query is built
// once and shared by the pushes, which differ only in their addressee.
func (r *Roster) push(owner jid.JID, item *stanza.Element, ver string) {
	q := stanza.NewElement(NS, "query", stanza.Attr{Name: "ver", Value: ver})
	q.AddChild(item)
	id := "push-" + randomID()
	for _, s := range r.h.Router.Sessions(owner) {
		full := s.JID().String()
		r.mu.Lock()
		ok := r.interested[full] == s
		r.mu.Unlock()
		if c, remote := s.(interface{ Interested(ns string) bool }); remote && !ok {
			// A session on another node of a cluster that requested the roster there.
			ok = c.Interested(NS)
		}
		if !ok {
			continue
		}
		iq := stanza.NewElement(stanza.NSClient, "iq",
			stanza.Attr{Name: "type", Value: stanza.Set}, stanza.Attr{Name: "id", Value: id}, stanza.Attr{Name: "to", Value: full})
		iq.AddChild(q)
		s.Deliver(iq)
	}
}

// SendUnavailable sends unavailable presence from each of owner's available resources to contact,
// as the server does when the contact loses its subscription to the owner (§3.2.2).
func (r *Roster) SendUnavailable(ctx context.Context, owner jid.JID, contact string) {
	for _, s := range r.h.Router.Sessions(owner) {
		if !s.Available() {
			continue
		}
		r.send(ctx, stanza.NewElement(stanza.NSClient, "presence",
			stanza.Attr{Name: "type", Value: "unavailable"},
			stanza.Attr{Name: "from", Value: s.JID().String()},
			stanza.Attr{Name: "to", Value: contact}))
	}
}

func (r *Roster) send(ctx context.Context, el *stanza.Element) {
	if err := r.h.Send(ctx, el); err != nil {
		r.h.Log.Debug("roster: stanza not routable", "to", el.Attr("to"), "err", err)
	}
}

// Subscription returns a subscription stanza of type typ from one bare JID to another.
func Subscription(from, to, typ string) *stanza.Element {
	return stanza.NewElement(stanza.NSClient, "presence",
		stanza.Attr{Name: "type", Value: typ}, stanza.Attr{Name: "from", Value: from}, stanza.Attr{Name: "to", Value: to})
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IsSubscription reports whether typ is one of the four subscription presence types.
func IsSubscription(typ string) bool {
	switch typ {
	case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
		return true
	}
	return false
}

var _ module.Module = (*Roster)(nil)
