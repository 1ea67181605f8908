// Package disco implements XEP-0030: Service Discovery for the server and, on their behalf,
// for its accounts. Features come from what every module registered on the host.
package disco

import (
	"context"

	"impetus/internal/module"
	"impetus/internal/stanza"
)

// Namespaces of XEP-0030.
const (
	NSInfo  = "http://jabber.org/protocol/disco#info"
	NSItems = "http://jabber.org/protocol/disco#items"
)

func init() { module.Register("disco", func() module.Module { return new(Disco) }) }

// Disco answers disco#info and disco#items.
type Disco struct {
	host *module.Host
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
	return nil
}

func (d *Disco) serverInfo(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if iq.Payload.Attr("node") != "" {
		return nil, stanza.ErrItemNotFound
	}
	return infoResult(d.host.Identities(), d.host.Features()), nil
}

func (d *Disco) serverItems(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if iq.Payload.Attr("node") != "" {
		return nil, stanza.ErrItemNotFound
	}
	return stanza.NewElement(NSItems, "query"), nil
}

// accountInfo answers for an account (XEP-0030 §3.1 and RFC 6121 §10.5.3): the account owner
// sees its features; others see the account identity only when it exists.
func (d *Disco) accountInfo(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if iq.Payload.Attr("node") != "" {
		return nil, stanza.ErrItemNotFound
	}
	ids := []module.Identity{{Category: "account", Type: "registered"}}
	features := append([]string{NSInfo, NSItems}, d.host.AccountFeatures()...)
	return infoResult(ids, features), nil
}

func (d *Disco) accountItems(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if iq.Payload.Attr("node") != "" {
		return nil, stanza.ErrItemNotFound
	}
	return stanza.NewElement(NSItems, "query"), nil
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

var _ module.Module = (*Disco)(nil)
