// Package blocking implements XEP-0191: Blocking Command. A user's blocklist is kept in the
// Map store "blocking" (one entry per blocked JID); the module answers the blocklist, block
// and unblock commands, pushes changes to the resources that retrieved the list, and enforces
// the list: stanzas from a blocked entity are dropped or answered with service-unavailable
// (§3.3), stanzas to one are refused with not-acceptable and the <blocked/> condition.
package blocking

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/jidutil"
	"impetus/internal/module"
	"impetus/internal/modules/roster"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Namespaces of XEP-0191.
const (
	NS       = "urn:xmpp:blocking"
	NSErrors = "urn:xmpp:blocking:errors"
)

// StoreName is the Map store holding blocklists: user → blocked JID → empty value.
const StoreName = "blocking"

// Defaults of the blocking scope.
const (
	DefaultMaxItems  = 1000
	DefaultMaxCached = 10000
)

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "blocking",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0191 blocking command (Impetus)",
		Options: []config.OptionSpec{
			{Name: "max_items", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxItems), Doc: "JIDs one blocklist may hold; 0 means no bound (Impetus)"},
			{Name: "max_cached", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxCached), Doc: "blocklists kept in memory for checking stanzas (Impetus)"},
		},
	})
	module.Register("blocking", func() module.Module {
		return &Blocking{Config: Config{MaxItems: DefaultMaxItems, MaxCached: DefaultMaxCached}}
	})
}

// Config is the blocking scope, decoded.
type Config struct {
	MaxItems  int `conf:"max_items"`
	MaxCached int `conf:"max_cached"`
}

// Blocking is the blocking module of one hosted domain.
type Blocking struct {
	Config

	h     *module.Host
	store storage.Map

	mu         sync.Mutex
	cache      map[string]map[string]bool // user → blocked JIDs, as stored
	interested map[string]router.Session  // full JID → session that retrieved the list
}

var (
	hostsMu sync.Mutex
	hosts   = map[*module.Host]*Blocking{}
)

// ForHost returns the blocking module provisioned on h, or nil.
func ForHost(h *module.Host) *Blocking {
	hostsMu.Lock()
	defer hostsMu.Unlock()
	return hosts[h]
}

// Provision implements module.Module.
func (b *Blocking) Provision(h *module.Host) error {
	b.h = h
	if h.Config != nil && h.Config.Root != nil {
		if secs := h.Config.Sections("blocking"); len(secs) > 0 {
			if err := secs[0].Decode(&b.Config); err != nil {
				return fmt.Errorf("blocking: %w", err)
			}
		}
	}
	b.store = h.Storage.Map(StoreName)
	b.cache = make(map[string]map[string]bool)
	b.interested = make(map[string]router.Session)
	h.AddFeature(NS)
	h.AddAccountFeature(NS)
	h.HandleIQ(module.ToAccount, stanza.Get, NS, "blocklist", b.get)
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "block", b.block)
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "unblock", b.unblock)
	// Inbound checks run before anything else sees the stanza; outbound ones before carbons
	// or archiving copy it.
	h.Hook(module.MessageDeliver, 1000, b.inbound)
	h.Hook(module.PresenceDeliver, 1000, b.inbound)
	h.Hook(module.IQDeliver, 1000, b.inbound)
	h.Hook(module.Outbound, 1000, b.outbound)
	h.Hook(module.IQIn, 1000, b.outbound)
	h.OnSessionClosed(func(_ context.Context, s module.Session) {
		b.mu.Lock()
		if b.interested[s.JID().String()] == router.Session(s) {
			delete(b.interested, s.JID().String())
		}
		b.mu.Unlock()
	})
	hostsMu.Lock()
	hosts[h] = b
	hostsMu.Unlock()
	return nil
}

// Stop implements module.Stopper.
func (b *Blocking) Stop() error {
	hostsMu.Lock()
	delete(hosts, b.h)
	hostsMu.Unlock()
	return nil
}

// list returns user's blocklist, from the cache when it is there.
func (b *Blocking) list(ctx context.Context, user string) (map[string]bool, error) {
	b.mu.Lock()
	l, ok := b.cache[user]
	b.mu.Unlock()
	if ok {
		return l, nil
	}
	all, err := b.store.All(ctx, user)
	if err != nil {
		return nil, err
	}
	l = make(map[string]bool, len(all))
	for k := range all {
		l[k] = true
	}
	b.remember(user, l)
	return l, nil
}

// remember caches a blocklist; the lists are never modified once cached, only replaced.
func (b *Blocking) remember(user string, l map[string]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.cache[user]; !ok && b.MaxCached > 0 && len(b.cache) >= b.MaxCached {
		for u := range b.cache {
			delete(b.cache, u)
			break
		}
	}
	b.cache[user] = l
}

// Matches reports whether entity is covered by a blocklist, with the JID matching rules of
// XEP-0016 §2.1 that XEP-0191 §3.3 refers to: full JID, bare JID, domain/resource, domain.
func Matches(l map[string]bool, entity jid.JID) bool {
	if len(l) == 0 {
		return false
	}
	if l[entity.String()] || l[entity.Bare().String()] || l[entity.Domainpart()] {
		return true
	}
	if r := entity.Resourcepart(); r != "" && l[entity.Domainpart()+"/"+r] {
		return true
	}
	return false
}

// Blocks reports whether user (a bare JID of this host) blocks entity.
func (b *Blocking) Blocks(ctx context.Context, user jid.JID, entity jid.JID) bool {
	l, err := b.list(ctx, user.Bare().String())
	if err != nil {
		b.h.Log.Error("blocking: reading blocklist", "user", user.Bare().String(), "err", err)
		return false
	}
	return Matches(l, entity)
}

// inbound applies §3.3 to stanzas from a blocked entity: presence is dropped silently,
// messages and iq requests get service-unavailable, iq responses are dropped.
func (b *Blocking) inbound(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	if st.To.Localpart() == "" || st.From.Domainpart() == "" || st.From.Bare().Equal(st.To.Bare()) {
		return module.Continue, nil
	}
	if st.El.Attr("type") == "error" && isBlockedError(st.El) {
		// The answer to the user's own stanza to an entity it blocks comes back "from" that
		// entity and must reach the user.
		return module.Continue, nil
	}
	if !b.Blocks(ctx, st.To, st.From) {
		return module.Continue, nil
	}
	switch st.El.Local {
	case "message":
		return module.Handled, stanza.ErrServiceUnavailable
	case "iq":
		if t := st.El.Attr("type"); t == stanza.Get || t == stanza.Set {
			return module.Handled, stanza.ErrServiceUnavailable
		}
	}
	return module.Handled, nil
}

func isBlockedError(el *stanza.Element) bool {
	e := el.Child(el.Space, "error")
	return e != nil && e.Child(NSErrors, "blocked") != nil
}

// outbound refuses what a user sends to an entity it blocks (§3.3). Unavailable presence
// passes, so blocking makes the user look offline to the contact.
func (b *Blocking) outbound(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	if st.To.Domainpart() == "" || st.From.Localpart() == "" || st.From.Bare().Equal(st.To.Bare()) {
		return module.Continue, nil
	}
	if st.To.Localpart() == "" && st.To.Domainpart() == b.h.Domain {
		// The user's own server stays reachable whatever the list says.
		return module.Continue, nil
	}
	typ := st.El.Attr("type")
	if typ == "error" || (st.El.Local == "presence" && typ == "unavailable") {
		return module.Continue, nil
	}
	if !b.Blocks(ctx, st.From, st.To) {
		return module.Continue, nil
	}
	if st.El.Local == "presence" || st.Session == nil {
		// Presence, and what modules send on the user's behalf (PEP notifications), is not
		// sent; only the user's own client learns that its stanza was refused.
		return module.Handled, nil
	}
	return module.Handled, BlockedError()
}

// BlockedError returns the error for a stanza to a blocked entity: not-acceptable with the
// <blocked/> application condition.
func BlockedError() *stanza.Error {
	e := stanza.NewError("not-acceptable", "")
	e.App = stanza.NewElement(NSErrors, "blocked")
	return e
}

// get answers a blocklist request (§3.2) and makes the session interested in pushes.
func (b *Blocking) get(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !iq.To.Equal(iq.From.Bare()) {
		return nil, stanza.ErrForbidden
	}
	all, err := b.store.All(ctx, iq.To.String())
	if err != nil {
		return nil, err
	}
	if iq.Session != nil {
		b.mu.Lock()
		b.interested[iq.From.String()] = iq.Session
		b.mu.Unlock()
	}
	res := stanza.NewElement(NS, "blocklist")
	for j := range all {
		res.AddChild(stanza.NewElement(NS, "item", stanza.Attr{Name: "jid", Value: j}))
	}
	return res, nil
}

var errTooMany = stanza.NewError("resource-constraint", "the blocklist is full")

// items reads the JIDs of a block or unblock command, normalized.
func items(payload *stanza.Element) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for c := range payload.Elements() {
		if c.Space != NS || c.Local != "item" {
			continue
		}
		j, err := jidutil.Parse(c.Attr("jid"))
		if err != nil {
			return nil, stanza.ErrJIDMalformed
		}
		if s := j.String(); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}

// block adds JIDs to the list (§3.3).
func (b *Blocking) block(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !iq.To.Equal(iq.From.Bare()) {
		return nil, stanza.ErrForbidden
	}
	list, err := items(iq.Payload)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, stanza.NewError("bad-request", "block needs at least one item")
	}
	user := iq.To.String()
	var after map[string]bool
	err = b.store.Update(ctx, user, func(tx storage.MapTx) error {
		all, err := tx.All()
		if err != nil {
			return err
		}
		after = make(map[string]bool, len(all)+len(list))
		for k := range all {
			after[k] = true
		}
		for _, j := range list {
			if !after[j] {
				after[j] = true
				if err := tx.Set(j, nil); err != nil {
					return err
				}
			}
		}
		if b.MaxItems > 0 && len(after) > b.MaxItems && len(after) > len(all) {
			return errTooMany
		}
		return nil
	})
	if errors.Is(err, errTooMany) {
		return nil, errTooMany
	}
	if err != nil {
		return nil, err
	}
	b.remember(user, after)
	b.push(iq.To, "block", list)
	b.sendUnavailable(ctx, iq.To, after, list)
	return nil, nil
}

// unblock removes JIDs from the list, or all of them when the command names none (§3.4, §3.5).
func (b *Blocking) unblock(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !iq.To.Equal(iq.From.Bare()) {
		return nil, stanza.ErrForbidden
	}
	list, err := items(iq.Payload)
	if err != nil {
		return nil, err
	}
	user := iq.To.String()
	var removed []string
	var after map[string]bool
	err = b.store.Update(ctx, user, func(tx storage.MapTx) error {
		all, err := tx.All()
		if err != nil {
			return err
		}
		removed = removed[:0]
		after = make(map[string]bool, len(all))
		for k := range all {
			after[k] = true
		}
		targets := list
		if len(targets) == 0 {
			for k := range all {
				targets = append(targets, k)
			}
		}
		for _, j := range targets {
			if after[j] {
				delete(after, j)
				removed = append(removed, j)
				if err := tx.Delete(j); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.remember(user, after)
	b.push(iq.To, "unblock", list)
	b.sendCurrent(ctx, iq.To, after, removed)
	return nil, nil
}

// push tells the interested resources of user about a change (§3.3, §3.4).
func (b *Blocking) push(user jid.JID, op string, list []string) {
	for _, s := range b.h.Router.Sessions(user) {
		b.mu.Lock()
		ok := b.interested[s.JID().String()] == s
		b.mu.Unlock()
		if r, remote := s.(interface{ Interested(ns string) bool }); remote && !ok {
			// A session on another node of a cluster that retrieved the list there.
			ok = r.Interested(NS)
		}
		if !ok {
			continue
		}
		payload := stanza.NewElement(NS, op)
		for _, j := range list {
			payload.AddChild(stanza.NewElement(NS, "item", stanza.Attr{Name: "jid", Value: j}))
		}
		iq := stanza.NewElement(stanza.NSClient, "iq", stanza.Attr{Name: "type", Value: stanza.Set},
			stanza.Attr{Name: "id", Value: pushID()}, stanza.Attr{Name: "to", Value: s.JID().String()})
		s.Deliver(iq.AddChild(payload))
	}
}

func pushID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "push-" + hex.EncodeToString(b[:])
}

// subscribedContacts returns the contacts of user with a subscription to the user's presence
// that one of the given blocklist entries covers.
func (b *Blocking) subscribedContacts(ctx context.Context, user jid.JID, entries []string) []string {
	r := roster.ForHost(b.h)
	if r == nil {
		return nil
	}
	items, _, err := r.Store().All(ctx, user.String())
	if err != nil {
		b.h.Log.Error("blocking: reading roster", "user", user.String(), "err", err)
		return nil
	}
	sel := make(map[string]bool, len(entries))
	for _, e := range entries {
		sel[e] = true
	}
	var out []string
	for i := range items {
		it := &items[i]
		if !it.HasFrom() {
			continue
		}
		if j, err := jid.Parse(it.JID); err == nil && Matches(sel, j) {
			out = append(out, it.JID)
		}
	}
	return out
}

// sendUnavailable makes the user look offline to newly blocked contacts that could see its
// presence (§3.3).
func (b *Blocking) sendUnavailable(ctx context.Context, user jid.JID, _ map[string]bool, added []string) {
	contacts := b.subscribedContacts(ctx, user, added)
	if len(contacts) == 0 {
		return
	}
	for _, s := range b.h.Router.Sessions(user) {
		if !s.Available() {
			continue
		}
		for _, c := range contacts {
			b.send(ctx, stanza.NewElement(stanza.NSClient, "presence", stanza.Attr{Name: "type", Value: "unavailable"},
				stanza.Attr{Name: "from", Value: s.JID().String()}, stanza.Attr{Name: "to", Value: c}))
		}
	}
}

// sendCurrent gives newly unblocked contacts that may see the user's presence its current
// presence (§3.4): a probe on the contact's behalf makes the presence module answer it with
// the presence of every available resource, as for any subscribed contact.
func (b *Blocking) sendCurrent(ctx context.Context, user jid.JID, after map[string]bool, removed []string) {
	for _, c := range b.subscribedContacts(ctx, user, removed) {
		if j, err := jid.Parse(c); err != nil || Matches(after, j) {
			continue
		}
		b.send(ctx, stanza.NewElement(stanza.NSClient, "presence", stanza.Attr{Name: "type", Value: "probe"},
			stanza.Attr{Name: "from", Value: c}, stanza.Attr{Name: "to", Value: user.String()}))
	}
}

func (b *Blocking) send(ctx context.Context, el *stanza.Element) {
	if err := b.h.Send(ctx, el); err != nil {
		b.h.Log.Debug("blocking: stanza not routable", "to", el.Attr("to"), "err", err)
	}
}

var _ module.Module = (*Blocking)(nil)
