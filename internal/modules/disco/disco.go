// Package disco implements XEP-0030: Service Discovery for the server and, on their behalf,
// for its accounts. Features come from what every module registered on the host; items list
// the hosted services and connected components (module.Host.AddItem) and, for accounts, what
// modules contribute (module.Host.AddAccountItems). Modules that serve nodes of the server or
// of accounts (PEP) register node handlers with ForHost(h).
package disco

import (
	"context"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/modules/caps"
	"impetus/internal/modules/roster"
	"impetus/internal/stanza"
)

// Namespaces of XEP-0030.
const (
	NSInfo  = "http://jabber.org/protocol/disco#info"
	NSItems = "http://jabber.org/protocol/disco#items"
)

func init() { module.Register("disco", func() module.Module { return new(Disco) }) }

// NodeFunc answers a disco#info or disco#items query for a node of the entity owner (the
// domain itself for server nodes). It returns the query element of the result, or nil when
// the node is not its own, so the next handler, and finally item-not-found, answers.
type NodeFunc func(ctx context.Context, owner, requester jid.JID, node string) (*stanza.Element, error)

// Disco answers disco#info and disco#items.
type Disco struct {
	host *module.Host

	serverInfoNodes, serverItemNodes   []NodeFunc
	accountInfoNodes, accountItemNodes []NodeFunc
}

var (
	hostsMu sync.Mutex
	hosts   = map[*module.Host]*Disco{}
)

// ForHost returns the disco module provisioned on h, or nil.
func ForHost(h *module.Host) *Disco {
	hostsMu.Lock()
	defer hostsMu.Unlock()
	return hosts[h]
}

// ServerNodes registers handlers for nodes of the server; either may be nil. Call it while
// provisioning.
func (d *Disco) ServerNodes(info, items NodeFunc) {
	if info != nil {
		d.serverInfoNodes = append(d.serverInfoNodes, info)
	}
	if items != nil {
		d.serverItemNodes = append(d.serverItemNodes, items)
	}
}

// AccountNodes registers handlers for nodes of accounts (PEP nodes); either may be nil. The
// account exists and the requester may see it when they run. Call it while provisioning.
func (d *Disco) AccountNodes(info, items NodeFunc) {
	if info != nil {
		d.accountInfoNodes = append(d.accountInfoNodes, info)
	}
	if items != nil {
		d.accountItemNodes = append(d.accountItemNodes, items)
	}
}

// Provision implements module.Module.
func (d *Disco) Provision(h *module.Host) error {
	d.host = h
	h.AddIdentity(module.Identity{Category: "server", Type: "im", Name: "Impetus"})
	h.AddFeature(NSInfo)
	h.AddFeature(NSItems)
	h.HandleIQ(module.ToServer, stanza.Get, NSInfo, "query", d.serverInfo)
	h.HandleIQ(module.ToServer, stanza.Get, NSItems, "query", d.serverItems)
	h.HandleIQ(module.ToAccount, stanza.Get, NSInfo, "query", d.accountInfo)
	h.HandleIQ(module.ToAccount, stanza.Get, NSItems, "query", d.accountItems)
	hostsMu.Lock()
	hosts[h] = d
	hostsMu.Unlock()
	return nil
}

// Stop implements module.Stopper.
func (d *Disco) Stop() error {
	hostsMu.Lock()
	delete(hosts, d.host)
	hostsMu.Unlock()
	return nil
}

func runNodes(ctx context.Context, fns []NodeFunc, owner, requester jid.JID, node string) (*stanza.Element, error) {
	for _, fn := range fns {
		q, err := fn(ctx, owner, requester, node)
		if err != nil || q != nil {
			if q != nil && q.Attr("node") == "" {
				q.SetAttr("node", node)
			}
			return q, err
		}
	}
	return nil, stanza.ErrItemNotFound
}

func (d *Disco) serverInfo(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	node := iq.Payload.Attr("node")
	if node == "" {
		return withForms(infoResult(d.host.Identities(), d.host.Features()), d.host.InfoForms()), nil
	}
	if c := caps.ForHost(d.host); c != nil && node == c.ServerNode() {
		// The node#ver of the server's own caps names the same information (XEP-0115 §6.2).
		q := withForms(infoResult(d.host.Identities(), d.host.Features()), d.host.InfoForms())
		q.SetAttr("node", node)
		return q, nil
	}
	return runNodes(ctx, d.serverInfoNodes, iq.To, iq.From, node)
}

func (d *Disco) serverItems(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if node := iq.Payload.Attr("node"); node != "" {
		return runNodes(ctx, d.serverItemNodes, iq.To, iq.From, node)
	}
	return itemsResult(d.host.Items()), nil
}

// visible decides whether requester may discover owner's account: the owner itself and the
// contacts with a subscription to the owner's presence may (as RFC 6121 §10.5.3 lets the server
// answer on the account's behalf); anyone else, and anyone asking about an account that does
// not exist, gets service-unavailable, so discovery reveals nothing presence would not
// (RFC 6121 §8.5.1).
func (d *Disco) visible(ctx context.Context, owner, requester jid.JID) (bool, error) {
	if d.host.Accounts != nil {
		ok, err := d.host.Accounts.Exists(ctx, owner.Localpart(), owner.Domainpart())
		if err != nil || !ok {
			return false, err
		}
	}
	if requester.Bare().Equal(owner.Bare()) {
		return true, nil
	}
	r := roster.ForHost(d.host)
	if r == nil {
		return false, nil
	}
	it, found, err := r.Store().Get(ctx, owner.Bare().String(), requester.Bare().String())
	if err != nil {
		return false, err
	}
	return found && it.HasFrom(), nil
}

// accountInfo answers for an account (XEP-0030 §3.1 with RFC 6121 §10.5.3).
func (d *Disco) accountInfo(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	ok, err := d.visible(ctx, iq.To, iq.From)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, stanza.ErrServiceUnavailable
	}
	if node := iq.Payload.Attr("node"); node != "" {
		return runNodes(ctx, d.accountInfoNodes, iq.To.Bare(), iq.From, node)
	}
	ids := append([]module.Identity{{Category: "account", Type: "registered"}}, d.host.AccountIdentities()...)
	features := append([]string{NSInfo, NSItems}, d.host.AccountFeatures()...)
	return infoResult(ids, features), nil
}

// accountItems lists what modules publish under an account (PEP nodes).
func (d *Disco) accountItems(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	ok, err := d.visible(ctx, iq.To, iq.From)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, stanza.ErrServiceUnavailable
	}
	if node := iq.Payload.Attr("node"); node != "" {
		return runNodes(ctx, d.accountItemNodes, iq.To.Bare(), iq.From, node)
	}
	return itemsResult(d.host.AccountItems(ctx, iq.To.Bare(), iq.From)), nil
}

func itemsResult(items []module.Item) *stanza.Element {
	q := stanza.NewElement(NSItems, "query")
	for _, it := range items {
		el := stanza.NewElement(NSItems, "item", stanza.Attr{Name: "jid", Value: it.JID})
		if it.Node != "" {
			el.SetAttr("node", it.Node)
		}
		if it.Name != "" {
			el.SetAttr("name", it.Name)
		}
		q.AddChild(el)
	}
	return q
}

func infoResult(ids []module.Identity, features []string) *stanza.Element {
	q := stanza.NewElement(NSInfo, "query")
	for _, id := range ids {
		el := stanza.NewElement(NSInfo, "identity", stanza.Attr{Name: "category", Value: id.Category}, stanza.Attr{Name: "type", Value: id.Type})
		if id.Name != "" {
			el.SetAttr("name", id.Name)
		}
		q.AddChild(el)
	}
	for _, f := range features {
		q.AddChild(stanza.NewElement(NSInfo, "feature", stanza.Attr{Name: "var", Value: f}))
	}
	return q
}

// withForms appends XEP-0128 extended information forms to a disco#info result.
func withForms(q *stanza.Element, forms []*stanza.Element) *stanza.Element {
	for _, f := range forms {
		q.AddChild(f.Copy())
	}
	return q
}

var _ module.Module = (*Disco)(nil)
