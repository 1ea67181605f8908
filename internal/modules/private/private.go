// Package private implements XEP-0049: Private XML Storage. An account keeps arbitrary XML
// elements on its server, one per (namespace, name), that only the account itself reads and
// writes (jabber:iq:private get and set on its own bare JID).
//
// Elements live in the storage.Map StoreName under the key "{namespace}name", serialized with
// their namespace declarations. Other modules may mirror one element elsewhere (the bookmarks
// module keeps storage:bookmarks in step with XEP-0402): OnSet tells them of client writes, and
// Put writes without telling them, so a mirror never loops.
package private

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/module"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// NS is the namespace of XEP-0049.
const NS = "jabber:iq:private"

// StoreName is the storage.Map holding the elements.
const StoreName = "private"

// DefaultMaxEntries bounds the elements one account keeps.
const DefaultMaxEntries = 100

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "private_storage",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "limits of private XML storage (XEP-0049)",
		Options: []config.OptionSpec{
			{Name: "max_entries", Type: config.TypeInt, Default: strconv.Itoa(DefaultMaxEntries), Doc: "elements (distinct namespaces) one account may store (Impetus)"},
		},
	})
	module.Register("private", func() module.Module { return &Private{MaxEntries: DefaultMaxEntries} })
}

// SetFunc is told that a client stored el for owner.
type SetFunc func(ctx context.Context, owner jid.JID, el *stanza.Element) error

// Private is the private storage module of one hosted domain.
type Private struct {
	// MaxEntries bounds the elements of one account.
	MaxEntries int `conf:"max_entries"`

	h     *module.Host
	store storage.Map
	onSet map[string][]SetFunc
}

var (
	hostsMu sync.Mutex
	hosts   = map[*module.Host]*Private{}
)

// ForHost returns the private storage module provisioned on h, or nil.
func ForHost(h *module.Host) *Private {
	hostsMu.Lock()
	defer hostsMu.Unlock()
	return hosts[h]
}

// Provision implements module.Module.
func (p *Private) Provision(h *module.Host) error {
	p.h = h
	if h.Config != nil {
		if secs := h.Config.Sections("private_storage"); len(secs) > 0 {
			if err := secs[0].Decode(p); err != nil {
				return err
			}
		}
	}
	if p.MaxEntries < 1 {
		return errors.New("private: max_entries must be positive")
	}
	p.store = h.Storage.Map(StoreName)
	p.onSet = map[string][]SetFunc{}
	h.AddFeature(NS)
	h.HandleIQ(module.ToAccount, stanza.Get, NS, "query", p.get)
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "query", p.set)
	hostsMu.Lock()
	hosts[h] = p
	hostsMu.Unlock()
	return nil
}

// Stop implements module.Stopper.
func (p *Private) Stop() error {
	hostsMu.Lock()
	delete(hosts, p.h)
	hostsMu.Unlock()
	return nil
}

// OnSet registers fn to run after a client stores an element {space}local. It is meant for
// Provision time.
func (p *Private) OnSet(space, local string, fn SetFunc) {
	k := Key(space, local)
	p.onSet[k] = append(p.onSet[k], fn)
}

// Key is the storage key of the element {space}local.
func Key(space, local string) string { return "{" + space + "}" + local }

// payloads returns the query's elements, refusing what XEP-0049 §3 refuses: nothing to store,
// elements without a namespace or in a reserved jabber: namespace.
func payloads(q *stanza.Element) ([]*stanza.Element, error) {
	var out []*stanza.Element
	for c := range q.Elements() {
		if c.Space == "" || c.Space == stanza.NSClient || strings.HasPrefix(c.Space, "jabber:") {
			return nil, stanza.NewError("not-acceptable", "elements in jabber: namespaces cannot be stored")
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, stanza.NewError("not-acceptable", "the query names no element")
	}
	return out, nil
}

// ownerOnly refuses access to another account's data (§3: forbidden).
func ownerOnly(iq *module.IQ) error {
	if !iq.From.Bare().Equal(iq.To.Bare()) {
		return stanza.ErrForbidden
	}
	return nil
}

func (p *Private) get(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if err := ownerOnly(iq); err != nil {
		return nil, err
	}
	els, err := payloads(iq.Payload)
	if err != nil {
		return nil, err
	}
	out := stanza.NewElement(NS, "query")
	for _, want := range els {
		el, err := p.Get(ctx, iq.To.Bare(), want.Space, want.Local)
		if err != nil {
			return nil, err
		}
		if el == nil {
			// Nothing stored: the empty element says so (§3, Example 4).
			el = stanza.NewElement(want.Space, want.Local)
		}
		out.AddChild(el)
	}
	return out, nil
}

func (p *Private) set(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if err := ownerOnly(iq); err != nil {
		return nil, err
	}
	els, err := payloads(iq.Payload)
	if err != nil {
		return nil, err
	}
	owner := iq.To.Bare()
	if err := p.put(ctx, owner, els); err != nil {
		return nil, err
	}
	for _, el := range els {
		for _, fn := range p.onSet[Key(el.Space, el.Local)] {
			if err := fn(ctx, owner, el); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// Get returns owner's stored element {space}local, or nil when there is none.
func (p *Private) Get(ctx context.Context, owner jid.JID, space, local string) (*stanza.Element, error) {
	b, err := p.store.Get(ctx, owner.Bare().String(), Key(space, local))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return stanza.Parse(b)
}

// Put stores el for owner without running the OnSet functions.
func (p *Private) Put(ctx context.Context, owner jid.JID, el *stanza.Element) error {
	return p.put(ctx, owner.Bare(), []*stanza.Element{el})
}

func (p *Private) put(ctx context.Context, owner jid.JID, els []*stanza.Element) error {
	return p.store.Update(ctx, owner.String(), func(tx storage.MapTx) error {
		all, err := tx.All()
		if err != nil {
			return err
		}
		n := len(all)
		for _, el := range els {
			k := Key(el.Space, el.Local)
			if _, ok := all[k]; !ok {
				n++
			}
			if n > p.MaxEntries {
				return stanza.NewError("resource-constraint", "the account stores too many elements")
			}
			if err := tx.Set(k, el.AppendXML(nil, "")); err != nil {
				return err
			}
		}
		return nil
	})
}

var _ module.Module = (*Private)(nil)
