package pep

import (
	"context"
	"errors"
	"slices"
	"sort"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/modules/blocking"
	"impetus/internal/modules/caps"
	"impetus/internal/modules/disco"
	"impetus/internal/router"
	"impetus/internal/stanza"
)

// capsUpdates is implemented by a caps cache that reports when an entity's features become
// known, which may be after its presence arrived (a disco#info round trip).
type capsUpdates interface {
	OnKnown(fn func(ctx context.Context, full jid.JID, features []string))
}

// capsFor returns the caps module of h, or nil when the host runs none.
func capsFor(h *module.Host) Features {
	if c := caps.ForHost(h); c != nil {
		return c
	}
	return nil
}

func sortStrings(s []string) { sort.Strings(s) }

// wants reports whether the entity at full asked for notifications of node (XEP-0163 §4.2,
// filtered notifications). Without a caps cache nothing can be known, and only the owner's own
// resources, which the service trusts, get everything.
func (p *Pep) wants(full jid.JID, node string, own bool) bool {
	if p.Caps == nil {
		return own
	}
	return slices.Contains(p.Caps.Features(full), node+"+notify")
}

// wantsSession is wants for a session, which in a cluster may be on another node, whose caps
// the caps module reads from the session registry (caps.FeaturesOf).
func (p *Pep) wantsSession(ctx context.Context, s router.Session, node string, own bool) bool {
	if f, ok := p.Caps.(interface {
		FeaturesOf(context.Context, router.Session) []string
	}); ok {
		return slices.Contains(f.FeaturesOf(ctx, s), node+"+notify")
	}
	return p.wants(s.JID(), node, own)
}

// remoteContacts returns the available resources on other nodes of a cluster of the owner's
// contacts who receive the owner's presence (subscription from or both). Their presence never
// passed through this node, so presenceToOwner could not track them; single nodes have none.
func (p *Pep) remoteContacts(ctx context.Context, owner jid.JID) []router.Session {
	if _, clustered := p.h.Router.(interface{ Name() string }); !clustered {
		return nil
	}
	items, _, err := p.r.Store().All(ctx, owner.String())
	if err != nil {
		p.h.Log.Warn("pep: reading the roster for notifications", "owner", owner.String(), "err", err)
		return nil
	}
	var out []router.Session
	for i := range items {
		it := &items[i]
		if !it.HasFrom() {
			continue
		}
		bare, err := jid.Parse(it.JID)
		if err != nil || bare.Localpart() == "" {
			continue
		}
		for _, s := range p.h.Router.Sessions(bare) {
			if _, remote := s.(interface{ Node() string }); remote && s.Available() {
				out = append(out, s)
			}
		}
	}
	return out
}

// blocked reports whether owner blocks the entity at to (XEP-0163 §4.3.3: no notifications to
// an entity the owner blocks, XEP-0191).
func (p *Pep) blocked(ctx context.Context, owner, to jid.JID) bool {
	b := blocking.ForHost(p.h)
	return b != nil && b.Blocks(ctx, owner, to)
}

// message wraps an event for one recipient (XEP-0163 §4.3.1: from the owner's bare JID);
// extra children (XEP-0033 addresses) follow the event.
func message(owner, to jid.JID, ev *stanza.Element, extra ...*stanza.Element) *stanza.Element {
	m := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: owner.String()},
		stanza.Attr{Name: "to", Value: to.String()},
		stanza.Attr{Name: "type", Value: "headline"},
		stanza.Attr{Name: "id", Value: randomID()})
	m.AddChild(ev)
	for _, e := range extra {
		if e != nil {
			m.AddChild(e)
		}
	}
	return m
}

func (p *Pep) send(ctx context.Context, el *stanza.Element) {
	if err := p.h.Send(ctx, el); err != nil {
		p.h.Log.Debug("pep: notification not routable", "to", el.Attr("to"), "err", err)
	}
}

// recipient is one address a notification goes to other than the owner's own resources.
type recipient struct {
	to jid.JID
	// subscribed is whether the recipient's user has a presence subscription to the owner,
	// which allows the XEP-0163 §4.3.1 replyto address.
	subscribed bool
}

// recipients returns who, besides the owner's resources, gets notifications of owner's node
// with configuration cfg and explicit subscriptions subs (XEP-0163 §4.3): the available
// resources of contacts that share presence with the owner, that the access model admits and
// that asked for the node in their capabilities; and the explicit subscribers the access model
// admits, each by its subscribed full JID, or by the bare JID's interested resources, or by the
// bare JID when the service knows of none (§4.3.2). withSub asks for the subscribed flags,
// which cost a roster lookup per user.
func (p *Pep) recipients(ctx context.Context, owner jid.JID, node string, cfg *Config, subs []string, withSub bool) []recipient {
	if cfg.AccessModel == AccessWhitelist {
		return nil
	}
	p.mu.Lock()
	var targets []string
	for full := range p.contacts[owner.String()] {
		targets = append(targets, full)
	}
	p.mu.Unlock()
	sort.Strings(targets)
	admitted := map[string]bool{}
	admits := func(bare jid.JID) bool {
		ok, seen := admitted[bare.String()]
		if !seen {
			ok = p.access(ctx, owner, bare, cfg) == nil && !p.blocked(ctx, owner, bare)
			admitted[bare.String()] = ok
		}
		return ok
	}
	subscribed := map[string]bool{}
	hasSub := func(bare jid.JID) bool {
		if !withSub {
			return false
		}
		ok, seen := subscribed[bare.String()]
		if !seen {
			it, found, err := p.r.Store().Get(ctx, owner.String(), bare.String())
			ok = err == nil && found && it.Listed() && it.HasFrom()
			subscribed[bare.String()] = ok
		}
		return ok
	}
	var out []recipient
	seen := map[string]bool{}
	add := func(to jid.JID) {
		if k := to.String(); !seen[k] {
			seen[k] = true
			out = append(out, recipient{to: to, subscribed: hasSub(to.Bare())})
		}
	}
	interested := map[string][]jid.JID{} // bare → tracked resources that want the node
	for _, t := range targets {
		full, err := jid.Parse(t)
		if err != nil {
			continue
		}
		if admits(full.Bare()) && p.wants(full, node, false) && !p.blocked(ctx, owner, full) {
			add(full)
			interested[full.Bare().String()] = append(interested[full.Bare().String()], full)
		}
	}
	for _, s := range p.remoteContacts(ctx, owner) {
		full := s.JID()
		if admits(full.Bare()) && p.wantsSession(ctx, s, node, false) && !p.blocked(ctx, owner, full) {
			add(full)
			interested[full.Bare().String()] = append(interested[full.Bare().String()], full)
		}
	}
	for _, s := range subs {
		sj, err := jid.Parse(s)
		if err != nil || sj.Bare().Equal(owner) || !admits(sj.Bare()) {
			continue
		}
		switch {
		case sj.Resourcepart() != "":
			add(sj)
		case len(interested[sj.String()]) == 0:
			add(sj)
		}
	}
	return out
}

// notify sends ev about owner's node to every resource that gets its notifications: the
// owner's available resources that asked for the node, and the recipients. publisher, when a
// full JID, is named as the XEP-0163 §4.3.1 replyto address to the owner's resources and to
// recipients with a presence subscription to the owner, and to nobody else.
func (p *Pep) notify(ctx context.Context, owner jid.JID, node string, cfg *Config, ev *stanza.Element, publisher jid.JID, subs []string) {
	var replyto *stanza.Element
	if publisher.Resourcepart() != "" && publisher.Bare().Equal(owner) {
		replyto = stanza.NewElement(NSAddress, "addresses").AddChild(
			stanza.NewElement(NSAddress, "address", stanza.Attr{Name: "type", Value: "replyto"}, stanza.Attr{Name: "jid", Value: publisher.String()}))
	}
	for _, s := range p.h.Router.Sessions(owner) {
		if s.Available() && s.Priority() >= 0 && p.wantsSession(ctx, s, node, true) {
			p.send(ctx, message(owner, s.JID(), ev, replyto))
		}
	}
	for _, r := range p.recipients(ctx, owner, node, cfg, subs, replyto != nil) {
		if r.subscribed {
			p.send(ctx, message(owner, r.to, ev, replyto))
		} else {
			p.send(ctx, message(owner, r.to, ev))
		}
	}
}

// presenceToOwner tracks the contacts' resources that share presence with a local account, and
// sends a newly available one the last items it is interested in (XEP-0163 §4.3.3).
func (p *Pep) presenceToOwner(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	from, to := st.From, st.To.Bare()
	if from.Resourcepart() == "" || from.Bare().Equal(to) || to.Localpart() == "" {
		return module.Continue, nil
	}
	typ := st.El.Attr("type")
	if typ != "" && typ != "unavailable" {
		return module.Continue, nil
	}
	f, o := from.String(), to.String()
	p.mu.Lock()
	if typ == "unavailable" {
		delete(p.contacts[o], f)
		if len(p.contacts[o]) == 0 {
			delete(p.contacts, o)
		}
		delete(p.watchers[f], o)
		if len(p.watchers[f]) == 0 {
			delete(p.watchers, f)
		}
		p.mu.Unlock()
		return module.Continue, nil
	}
	set := p.contacts[o]
	if set == nil {
		set = map[string]bool{}
		p.contacts[o] = set
	}
	sent, tracked := set[f]
	if !tracked {
		set[f] = false
		w := p.watchers[f]
		if w == nil {
			w = map[string]struct{}{}
			p.watchers[f] = w
		}
		w[o] = struct{}{}
	}
	known := p.Caps != nil && p.Caps.Features(from) != nil
	if !sent && known {
		set[f] = true
	}
	p.mu.Unlock()
	if !sent && known {
		p.sendLast(ctx, to, from, false)
	}
	return module.Continue, nil
}

// presenceFromOwner sends an owner's resource that becomes available the last items it is
// interested in, and forgets a resource that goes unavailable.
func (p *Pep) presenceFromOwner(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	if st.Session == nil || st.To.Domainpart() != "" {
		return module.Continue, nil
	}
	switch st.El.Attr("type") {
	case "unavailable":
		p.mu.Lock()
		delete(p.own, st.Session)
		p.mu.Unlock()
		return module.Continue, nil
	case "":
	default:
		return module.Continue, nil
	}
	known := p.Caps == nil || p.Caps.Features(st.Session.JID()) != nil
	p.mu.Lock()
	sent, tracked := p.own[st.Session]
	if !tracked || (!sent && known) {
		p.own[st.Session] = known
	}
	p.mu.Unlock()
	if !sent && known && st.Session.Priority() >= 0 {
		p.sendLast(ctx, st.From.Bare(), st.Session.JID(), true)
	}
	return module.Continue, nil
}

// capsUpdated runs when the features of an entity become known after its presence arrived:
// a resource that was waiting for them gets its last items now.
func (p *Pep) capsUpdated(ctx context.Context, full jid.JID, _ []string) {
	f := full.String()
	var owners []string
	var own router.Session
	p.mu.Lock()
	for o := range p.watchers[f] {
		if sent, ok := p.contacts[o][f]; ok && !sent {
			p.contacts[o][f] = true
			owners = append(owners, o)
		}
	}
	for s, sent := range p.own {
		if !sent && s.JID().Equal(full) {
			p.own[s] = true
			own = s
		}
	}
	p.mu.Unlock()
	for _, o := range owners {
		if oj, err := jid.Parse(o); err == nil {
			p.sendLast(ctx, oj, full, false)
		}
	}
	if own != nil && own.Available() && own.Priority() >= 0 {
		p.sendLast(ctx, full.Bare(), full, true)
	}
}

func (p *Pep) sessionClosed(_ context.Context, s module.Session) {
	p.mu.Lock()
	delete(p.own, s)
	p.mu.Unlock()
}

// sendLast sends to the resource full the last item of each of owner's nodes that it asked
// for and may read, for nodes configured to send it on presence (XEP-0163 §4.3.3).
func (p *Pep) sendLast(ctx context.Context, owner, full jid.JID, own bool) {
	if !own && p.blocked(ctx, owner, full) {
		return
	}
	all, err := p.store.All(ctx, owner.String())
	if err != nil {
		p.h.Log.Error("pep: reading nodes", "user", owner.String(), "err", err)
		return
	}
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	sort.Strings(names)
	admitted := map[string]bool{} // by access model: one roster lookup per model
	for _, name := range names {
		if !p.wants(full, name, own) {
			continue
		}
		n, err := decodeNode(all[name])
		if err != nil {
			p.h.Log.Error("pep: stored node", "user", owner.String(), "node", name, "err", err)
			continue
		}
		p.dropExpired(n)
		c := &n.Config
		if len(n.Items) == 0 || c.SendLast != SendLastOnSubPresence || !c.DeliverNotifications {
			continue
		}
		if !own {
			ok, seen := admitted[c.AccessModel]
			if !seen || c.AccessModel == AccessRoster {
				ok = p.access(ctx, owner, full.Bare(), c) == nil
				admitted[c.AccessModel] = ok
			}
			if !ok {
				continue
			}
		}
		ev := eventItems(name)
		ev.FirstElement().AddChild(n.Items[len(n.Items)-1].element(NSEvent, c.DeliverPayloads))
		p.send(ctx, message(owner, full, ev))
	}
}

// discoItems lists owner's nodes that requester may see as disco items of the account
// (XEP-0163 §7, XEP-0060 §5.2).
func (p *Pep) discoItems(ctx context.Context, owner, requester jid.JID) []module.Item {
	names, err := p.Nodes(ctx, owner, requester)
	if err != nil {
		p.h.Log.Error("pep: listing nodes", "user", owner.String(), "err", err)
		return nil
	}
	out := make([]module.Item, 0, len(names))
	for _, n := range names {
		out = append(out, module.Item{JID: owner.Bare().String(), Node: n})
	}
	return out
}

// visibleNode returns owner's node when requester may see it, or nil.
func (p *Pep) visibleNode(ctx context.Context, owner, requester jid.JID, node string) (*nodeData, error) {
	n, err := p.load(ctx, owner.Bare().String(), node)
	if errors.Is(err, errNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !requester.Bare().Equal(owner.Bare()) && p.access(ctx, owner.Bare(), requester.Bare(), &n.Config) != nil {
		return nil, nil
	}
	return n, nil
}

// discoNodeInfo answers disco#info for a node: a leaf node (XEP-0060 §5.3).
func (p *Pep) discoNodeInfo(ctx context.Context, owner, requester jid.JID, node string) (*stanza.Element, error) {
	n, err := p.visibleNode(ctx, owner, requester, node)
	if n == nil || err != nil {
		return nil, err
	}
	q := stanza.NewElement(disco.NSInfo, "query", stanza.Attr{Name: "node", Value: node})
	q.AddChild(stanza.NewElement(disco.NSInfo, "identity", stanza.Attr{Name: "category", Value: "pubsub"}, stanza.Attr{Name: "type", Value: "leaf"}))
	q.AddChild(stanza.NewElement(disco.NSInfo, "feature", stanza.Attr{Name: "var", Value: NS}))
	return q, nil
}

// discoNodeItems answers disco#items for a node with its item ids (XEP-0060 §5.5).
func (p *Pep) discoNodeItems(ctx context.Context, owner, requester jid.JID, node string) (*stanza.Element, error) {
	n, err := p.visibleNode(ctx, owner, requester, node)
	if n == nil || err != nil {
		return nil, err
	}
	q := stanza.NewElement(disco.NSItems, "query", stanza.Attr{Name: "node", Value: node})
	for _, it := range n.Items {
		q.AddChild(stanza.NewElement(disco.NSItems, "item", stanza.Attr{Name: "jid", Value: owner.Bare().String()}, stanza.Attr{Name: "name", Value: it.ID}))
	}
	return q, nil
}
