package pep

import (
	"context"
	"slices"
	"sort"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Explicit subscriptions (XEP-0060 §6.1, §6.2, §5.6, §8.8) complement PEP's implicit ones: an
// entity that does not share presence with the owner (XEP-0163 §4, an open node read by a
// stranger) or that wants notifications without advertising "+notify" subscribes to the node.
// A subscription is one JID, bare or full, per node; it has no options and no subid, and it
// needs no approval: the node's access model decides at subscription and at every
// notification.

var (
	errJIDRequired   = pubsubError("bad-request", "jid-required", "")
	errInvalidJID    = pubsubError("bad-request", "invalid-jid", "the JID to subscribe must be the requester's")
	errNotSubscribed = pubsubError("unexpected-request", "not-subscribed", "")
	errTooManySubs   = pubsubError("not-allowed", "too-many-subscriptions", "the node has as many subscriptions as it may")
)

// dropExpired removes the items older than the node's pubsub#item_expire from n, in memory;
// the next write of the node stores the removal.
func (p *Pep) dropExpired(n *nodeData) {
	d := n.Config.expiry()
	if d == 0 || len(n.Items) == 0 {
		return
	}
	cutoff := p.Now().Add(-d)
	n.Items = slices.DeleteFunc(n.Items, func(it storedItem) bool { return !it.At.IsZero() && !it.At.After(cutoff) })
}

// subscriptionJID reads the jid attribute of a subscribe or unsubscribe request.
func subscriptionJID(op *stanza.Element) (jid.JID, error) {
	v := op.Attr("jid")
	if v == "" {
		return jid.JID{}, errJIDRequired
	}
	j, err := jid.Parse(v)
	if err != nil {
		return jid.JID{}, errInvalidJID
	}
	return j, nil
}

func subscriptionEl(space, node string, j string, state string) *stanza.Element {
	el := stanza.NewElement(space, "subscription")
	if node != "" {
		el.SetAttr("node", node)
	}
	el.SetAttr("jid", j)
	el.SetAttr("subscription", state)
	return el
}

// subscribe handles XEP-0060 §6.1 for a node of the account.
func (p *Pep) subscribe(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	sub, err := subscriptionJID(op)
	if err != nil {
		return nil, err
	}
	if !sub.Bare().Equal(iq.From.Bare()) {
		return nil, errInvalidJID
	}
	owner := iq.To.Bare()
	n, err := p.load(ctx, owner.String(), node)
	if err != nil {
		return nil, err
	}
	if !isOwner(iq) {
		if err := p.access(ctx, owner, sub.Bare(), &n.Config); err != nil {
			return nil, err
		}
	}
	var last *storedItem
	var cfg Config
	err = p.store.Update(ctx, owner.String(), func(tx storage.MapTx) error {
		last = nil
		n, err := loadNode(tx, node)
		if err != nil {
			return err
		}
		p.dropExpired(n)
		cfg = n.Config
		if len(n.Items) > 0 {
			last = &n.Items[len(n.Items)-1]
		}
		if slices.Contains(n.Subs, sub.String()) {
			return nil
		}
		if len(n.Subs) >= p.Limits.MaxSubscriptions {
			return errTooManySubs
		}
		n.Subs = append(n.Subs, sub.String())
		enc, err := n.encode()
		if err != nil {
			return err
		}
		return tx.Set(node, enc)
	})
	if err != nil {
		return nil, err
	}
	// The last published item goes to the new subscriber (§6.1.7), to the subscribed JID. It
	// may arrive before the iq result, which the core sends once this handler returns.
	if last != nil && cfg.DeliverNotifications && cfg.SendLast != SendLastNever {
		ev := eventItems(node)
		ev.FirstElement().AddChild(last.element(NSEvent, cfg.DeliverPayloads))
		p.send(ctx, message(owner, sub, ev))
	}
	out := stanza.NewElement(NS, "pubsub")
	out.AddChild(subscriptionEl(NS, node, sub.String(), "subscribed"))
	return out, nil
}

// unsubscribe handles XEP-0060 §6.2.
func (p *Pep) unsubscribe(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	sub, err := subscriptionJID(op)
	if err != nil {
		return nil, err
	}
	if !sub.Bare().Equal(iq.From.Bare()) {
		return nil, stanza.NewError("forbidden", "only the subscriber may unsubscribe")
	}
	owner := iq.To.Bare()
	err = p.updateSubs(ctx, owner, node, func(subs []string) ([]string, error) {
		i := slices.Index(subs, sub.String())
		if i < 0 {
			return nil, errNotSubscribed
		}
		return slices.Delete(subs, i, i+1), nil
	})
	return nil, err
}

// updateSubs changes the subscriptions of owner's node in one transaction.
func (p *Pep) updateSubs(ctx context.Context, owner jid.JID, node string, fn func([]string) ([]string, error)) error {
	return p.store.Update(ctx, owner.String(), func(tx storage.MapTx) error {
		n, err := loadNode(tx, node)
		if err != nil {
			return err
		}
		subs, err := fn(slices.Clone(n.Subs))
		if err != nil {
			return err
		}
		if len(subs) > p.Limits.MaxSubscriptions && len(subs) > len(n.Subs) {
			return errTooManySubs
		}
		n.Subs = subs
		enc, err := n.encode()
		if err != nil {
			return err
		}
		return tx.Set(node, enc)
	})
}

// subscriptions handles XEP-0060 §5.6: the requester's subscriptions to the account's nodes,
// or to one node.
func (p *Pep) subscriptions(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	owner := iq.To.Bare()
	all, err := p.store.All(ctx, owner.String())
	if err != nil {
		return nil, err
	}
	want := op.Attr("node")
	names := make([]string, 0, len(all))
	for name := range all {
		if want == "" || want == name {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if want != "" && len(names) == 0 {
		return nil, errNoNode
	}
	list := stanza.NewElement(NS, "subscriptions")
	if want != "" {
		list.SetAttr("node", want)
	}
	requester := iq.From.Bare()
	for _, name := range names {
		n, err := decodeNode(all[name])
		if err != nil {
			continue
		}
		for _, s := range n.Subs {
			if sj, err := jid.Parse(s); err == nil && sj.Bare().Equal(requester) {
				list.AddChild(subscriptionEl(NS, name, s, "subscribed"))
			}
		}
	}
	return stanza.NewElement(NS, "pubsub").AddChild(list), nil
}

// nodeSubscriptions handles XEP-0060 §8.8.1: the owner's list of a node's subscribers.
func (p *Pep) nodeSubscriptions(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	n, err := p.load(ctx, iq.To.Bare().String(), node)
	if err != nil {
		return nil, err
	}
	list := stanza.NewElement(NSOwner, "subscriptions", stanza.Attr{Name: "node", Value: node})
	for _, s := range n.Subs {
		list.AddChild(subscriptionEl(NSOwner, "", s, "subscribed"))
	}
	return stanza.NewElement(NSOwner, "pubsub").AddChild(list), nil
}

// setSubscriptions handles XEP-0060 §8.8.2: the owner subscribes JIDs ("subscribed") or
// removes their subscriptions ("none"); each affected JID is told (§8.8.4).
func (p *Pep) setSubscriptions(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	type change struct {
		j     jid.JID
		state string
	}
	var changes []change
	for c := range op.Elements() {
		if c.Space != NSOwner || c.Local != "subscription" {
			continue
		}
		j, err := jid.Parse(c.Attr("jid"))
		if err != nil {
			return nil, stanza.NewError("jid-malformed", "invalid jid")
		}
		state := c.Attr("subscription")
		if state != "none" && state != "subscribed" {
			return nil, unsupported("manage-subscriptions")
		}
		changes = append(changes, change{j, state})
	}
	owner := iq.To.Bare()
	var done []change
	err := p.updateSubs(ctx, owner, node, func(subs []string) ([]string, error) {
		done = nil
		for _, c := range changes {
			i := slices.Index(subs, c.j.String())
			switch {
			case c.state == "none" && i >= 0:
				subs = slices.Delete(subs, i, i+1)
			case c.state == "subscribed" && i < 0:
				subs = append(subs, c.j.String())
			default:
				continue
			}
			done = append(done, c)
		}
		return subs, nil
	})
	if err != nil {
		return nil, err
	}
	for _, c := range done {
		p.tellSubscription(ctx, owner, node, c.j, c.state)
	}
	return nil, nil
}

// tellSubscription notifies an entity that its subscription changed (XEP-0060 §8.8.4).
func (p *Pep) tellSubscription(ctx context.Context, owner jid.JID, node string, sub jid.JID, state string) {
	ps := stanza.NewElement(NS, "pubsub").AddChild(subscriptionEl(NS, node, sub.String(), state))
	m := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: owner.String()}, stanza.Attr{Name: "to", Value: sub.String()},
		stanza.Attr{Name: "id", Value: randomID()})
	p.send(ctx, m.AddChild(ps))
}

// narrowed applies a change of a node's access model or roster groups: the explicit
// subscribers the new model refuses lose their subscription (and are told), and whoever got
// the node's notifications before and no longer does is sent the retraction of its items, so
// their clients drop what they may not see any more.
func (p *Pep) narrowed(ctx context.Context, owner jid.JID, node string, old, cfg *Config, subs, ids []string) {
	var dropped []jid.JID
	kept := make([]string, 0, len(subs))
	for _, s := range subs {
		sj, err := jid.Parse(s)
		if err != nil {
			continue
		}
		if !sj.Bare().Equal(owner) && p.access(ctx, owner, sj.Bare(), cfg) != nil {
			dropped = append(dropped, sj)
			continue
		}
		kept = append(kept, s)
	}
	before := p.recipients(ctx, owner, node, old, subs, false)
	after := map[string]bool{}
	for _, r := range p.recipients(ctx, owner, node, cfg, kept, false) {
		after[r.to.String()] = true
	}
	if len(dropped) > 0 {
		gone := map[string]bool{}
		for _, d := range dropped {
			gone[d.String()] = true
		}
		err := p.updateSubs(ctx, owner, node, func(cur []string) ([]string, error) {
			return slices.DeleteFunc(cur, func(s string) bool { return gone[s] }), nil
		})
		if err != nil {
			p.h.Log.Error("pep: dropping refused subscriptions", "user", owner.String(), "node", node, "err", err)
		}
	}
	if len(ids) > 0 && cfg.DeliverNotifications {
		ev := eventItems(node)
		for _, id := range ids {
			ev.FirstElement().AddChild(stanza.NewElement(NSEvent, "retract", stanza.Attr{Name: "id", Value: id}))
		}
		for _, r := range before {
			if !after[r.to.String()] {
				p.send(ctx, message(owner, r.to, ev))
			}
		}
	}
	for _, d := range dropped {
		p.tellSubscription(ctx, owner, node, d, "none")
	}
}
