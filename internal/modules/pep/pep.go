// Package pep implements XEP-0163: Personal Eventing Protocol, on the parts of XEP-0060:
// Publish-Subscribe it needs: every account is a virtual pubsub service whose nodes are created
// on first publish (auto-create), configured with publish-options or the owner's configuration
// form, read by those the node's access model admits (open, presence, roster, whitelist), and
// whose notifications go to the owner's resources and to contacts sharing presence, filtered by
// the "+notify" features of their XEP-0115 entity capabilities, and to explicit XEP-0060
// subscribers the access model admits.
//
// The same machinery serves XEP-0084 user avatars, XEP-0223 private storage (whitelist,
// persistent nodes), XEP-0402 bookmarks and XEP-0384 OMEMO device lists and bundles: they are
// nodes with particular configurations, which clients request through publish-options.
//
// Each node is one entry, keyed by node name, of the user's storage.Map StoreName: its
// configuration and its items, oldest first. A publish is one Map.Update, so the item, the trim
// to max_items and the order change together.
package pep

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/module"
	"impetus/internal/modules/disco"
	"impetus/internal/modules/roster"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Namespaces of XEP-0060.
const (
	NS       = "http://jabber.org/protocol/pubsub"
	NSOwner  = "http://jabber.org/protocol/pubsub#owner"
	NSEvent  = "http://jabber.org/protocol/pubsub#event"
	NSErrors = "http://jabber.org/protocol/pubsub#errors"
	// NSAddress is XEP-0033's, for the replyto address of notifications (XEP-0163 §4.3.1).
	NSAddress = "http://jabber.org/protocol/address"
)

// StoreName is the storage.Map holding the nodes.
const StoreName = "pep"

// Defaults of the configurable limits.
const (
	// DefaultMaxItems bounds the items of one node; "max" in a configuration means this.
	DefaultMaxItems = 256
	// DefaultMaxNodes bounds the nodes of one account (OMEMO alone uses one per device).
	DefaultMaxNodes = 256
	// DefaultMaxNodeBytes bounds the stored payload bytes of one node; older items make room.
	DefaultMaxNodeBytes = 1 << 20
	// DefaultMaxSubscriptions bounds the explicit subscriptions of one node.
	DefaultMaxSubscriptions = 1000
)

// features are the XEP-0060 features the service supports, advertised on accounts.
var features = []string{
	"access-open", "access-presence", "access-roster", "access-whitelist",
	"auto-create", "auto-subscribe", "config-node", "create-and-configure", "create-nodes",
	"delete-items", "delete-nodes", "filtered-notifications", "item-ids", "last-published",
	"persistent-items", "presence-notifications", "publish", "publish-options", "purge-nodes",
	"retract-items", "retrieve-affiliations", "retrieve-default", "retrieve-items",
	"subscribe", "retrieve-subscriptions", "manage-subscriptions", "subscription-notifications",
}

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "pep",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "limits of the personal eventing (XEP-0163) service of every account",
		Options: []config.OptionSpec{
			{Name: "max_items", Type: config.TypeInt, Default: strconv.Itoa(DefaultMaxItems), Doc: "items one node may keep; what a client's \"max\" means (Impetus)"},
			{Name: "max_nodes", Type: config.TypeInt, Default: strconv.Itoa(DefaultMaxNodes), Doc: "nodes one account may have (Impetus)"},
			{Name: "max_node_size", Type: config.TypeSize, Default: "1m", Doc: "payload bytes one node may keep; the oldest items make room (Impetus)"},
			{Name: "max_subscriptions", Type: config.TypeInt, Default: strconv.Itoa(DefaultMaxSubscriptions), Doc: "explicit (XEP-0060) subscriptions one node may have (Impetus)"},
		},
	})
	module.Register("pep", func() module.Module { return New() })
}

// Limits are the configurable bounds of the service.
type Limits struct {
	MaxItems    int   `conf:"max_items"`
	MaxNodes    int   `conf:"max_nodes"`
	MaxNodeSize int64 `conf:"max_node_size"`
	// MaxSubscriptions bounds the explicit subscriptions of one node.
	MaxSubscriptions int `conf:"max_subscriptions"`
}

// Features is what the service needs of the entity capabilities cache: the disco features of
// an available client, or nil when they are not known (yet).
type Features interface {
	Features(full jid.JID) []string
}

// ChangeFunc is told that a client changed a node of owner (publish, retract, purge, delete).
type ChangeFunc func(ctx context.Context, owner jid.JID, node string)

// Pep is the PEP module of one hosted domain. It requires the roster module.
type Pep struct {
	Limits Limits
	// Caps tells which features clients advertise; Provision takes the caps module's cache
	// unless a test set one.
	Caps Features
	// Now is the clock that ages items for pubsub#item_expire; nil means time.Now.
	Now func() time.Time

	h     *module.Host
	store storage.Map
	r     *roster.Roster

	listeners map[string][]ChangeFunc

	mu sync.Mutex
	// contacts holds, per owner bare JID, the full JIDs of contacts' available resources that
	// sent the owner presence, with whether their last items went out; notifications go there.
	contacts map[string]map[string]bool
	// watchers is the reverse index of contacts: full JID → owners it sent presence to.
	watchers map[string]map[string]struct{}
	// own holds the owner's available sessions and whether their last items went out.
	own map[router.Session]bool
}

// New returns a module with the default limits.
func New() *Pep {
	return &Pep{Limits: Limits{MaxItems: DefaultMaxItems, MaxNodes: DefaultMaxNodes, MaxNodeSize: DefaultMaxNodeBytes, MaxSubscriptions: DefaultMaxSubscriptions}}
}

var (
	hostsMu sync.Mutex
	hosts   = map[*module.Host]*Pep{}
)

// ForHost returns the PEP module provisioned on h, or nil. Modules that keep data in PEP nodes
// (bookmarks) find it through here, so they are provisioned after it.
func ForHost(h *module.Host) *Pep {
	hostsMu.Lock()
	defer hostsMu.Unlock()
	return hosts[h]
}

// Provision implements module.Module.
func (p *Pep) Provision(h *module.Host) error {
	p.h = h
	if h.Config != nil {
		if secs := h.Config.Sections("pep"); len(secs) > 0 {
			if err := secs[0].Decode(&p.Limits); err != nil {
				return err
			}
		}
	}
	if p.Limits.MaxItems < 1 || p.Limits.MaxNodes < 1 || p.Limits.MaxNodeSize < 1 || p.Limits.MaxSubscriptions < 1 {
		return errors.New("pep: max_items, max_nodes, max_node_size and max_subscriptions must be positive")
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	p.r = roster.ForHost(h)
	if p.r == nil {
		return errors.New("pep: the roster module must be provisioned first")
	}
	if p.Caps == nil {
		p.Caps = capsFor(h)
	}
	if u, ok := p.Caps.(capsUpdates); ok {
		u.OnKnown(p.capsUpdated)
	}
	p.store = h.Storage.Map(StoreName)
	p.listeners = map[string][]ChangeFunc{}
	p.contacts = map[string]map[string]bool{}
	p.watchers = map[string]map[string]struct{}{}
	p.own = map[router.Session]bool{}

	h.HandleIQ(module.ToAccount, stanza.Set, NS, "pubsub", p.set)
	h.HandleIQ(module.ToAccount, stanza.Get, NS, "pubsub", p.get)
	h.HandleIQ(module.ToAccount, stanza.Set, NSOwner, "pubsub", p.ownerSet)
	h.HandleIQ(module.ToAccount, stanza.Get, NSOwner, "pubsub", p.ownerGet)
	h.AddAccountIdentity(module.Identity{Category: "pubsub", Type: "pep"})
	h.AddAccountItems(p.discoItems)
	if d := disco.ForHost(h); d != nil {
		d.AccountNodes(p.discoNodeInfo, p.discoNodeItems)
	}
	h.AddAccountFeature(NS)
	for _, f := range features {
		h.AddAccountFeature(NS + "#" + f)
	}
	// Below the presence module: only presence the roster lets through counts as shared.
	h.Hook(module.PresenceDeliver, -20, p.presenceToOwner)
	h.Hook(module.PresenceIn, -20, p.presenceFromOwner)
	h.OnSessionClosed(p.sessionClosed)
	hostsMu.Lock()
	hosts[h] = p
	hostsMu.Unlock()
	return nil
}

// Stop implements module.Stopper.
func (p *Pep) Stop() error {
	hostsMu.Lock()
	delete(hosts, p.h)
	hostsMu.Unlock()
	return nil
}

// OnChange registers fn to run after a client publishes to, retracts from, purges or deletes
// node. Changes made through Apply do not call it. It is meant for Provision time.
func (p *Pep) OnChange(node string, fn ChangeFunc) {
	p.listeners[node] = append(p.listeners[node], fn)
}

func (p *Pep) changed(ctx context.Context, owner jid.JID, node string) {
	for _, fn := range p.listeners[node] {
		fn(ctx, owner, node)
	}
}

// pubsubError returns a stanza error with a pubsub-specific condition (XEP-0060 §7, §8).
func pubsubError(cond, app, text string, attrs ...stanza.Attr) *stanza.Error {
	e := stanza.NewError(cond, text)
	if app != "" {
		e.App = stanza.NewElement(NSErrors, app, attrs...)
	}
	return e
}

func unsupported(feature string) *stanza.Error {
	return pubsubError("feature-not-implemented", "unsupported", "", stanza.Attr{Name: "feature", Value: feature})
}

var (
	errForbidden          = stanza.NewError("forbidden", "only the account owner may do this")
	errNodeRequired       = pubsubError("bad-request", "nodeid-required", "")
	errNoNode             = stanza.NewError("item-not-found", "no such node")
	errPrecondition       = pubsubError("conflict", "precondition-not-met", "")
	errPresenceRequired   = pubsubError("not-authorized", "presence-subscription-required", "")
	errNotInRosterGroup   = pubsubError("not-authorized", "not-in-roster-group", "")
	errClosedNode         = pubsubError("not-allowed", "closed-node", "")
	errTooManyNodes       = pubsubError("not-allowed", "max-nodes-exceeded", "the account has reached its number of nodes")
	errPayloadTooBig      = pubsubError("not-acceptable", "payload-too-big", "")
	errInvalidPayload     = pubsubError("bad-request", "invalid-payload", "an item carries exactly one payload element")
	errItemRequired       = pubsubError("bad-request", "item-required", "")
	errInstantUnsupported = pubsubError("not-acceptable", "nodeid-required", "instant nodes are not supported")
)

func isOwner(iq *module.IQ) bool { return iq.From.Bare().Equal(iq.To.Bare()) }

// set dispatches a pubsub iq set: publish, retract, create; subscriptions are implicit in PEP.
func (p *Pep) set(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	var op, opts, conf *stanza.Element
	for c := range iq.Payload.Elements() {
		if c.Space != NS {
			continue
		}
		switch c.Local {
		case "publish-options":
			opts = c
		case "configure":
			conf = c
		default:
			if op != nil {
				return nil, stanza.NewError("bad-request", "one operation per request")
			}
			op = c
		}
	}
	if op == nil {
		return nil, stanza.ErrBadRequest
	}
	switch op.Local {
	case "publish":
		return p.publish(ctx, iq, op, opts)
	case "retract":
		return p.retract(ctx, iq, op)
	case "create":
		return p.create(ctx, iq, op, conf)
	case "subscribe":
		return p.subscribe(ctx, iq, op)
	case "unsubscribe":
		return p.unsubscribe(ctx, iq, op)
	case "options":
		return nil, unsupported("subscription-options")
	}
	return nil, stanza.ErrFeatureNotImplemented
}

// get dispatches a pubsub iq get: items, affiliations, subscriptions.
func (p *Pep) get(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	op := iq.Payload.FirstElement()
	if op == nil || op.Space != NS {
		return nil, stanza.ErrBadRequest
	}
	switch op.Local {
	case "items":
		return p.items(ctx, iq, op)
	case "affiliations":
		return p.affiliations(ctx, iq, op)
	case "subscriptions":
		return p.subscriptions(ctx, iq, op)
	case "default", "options":
		return nil, unsupported("subscription-options")
	}
	return nil, stanza.ErrFeatureNotImplemented
}

// ownerSet dispatches an owner iq set: configure, delete, purge.
func (p *Pep) ownerSet(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	op := iq.Payload.FirstElement()
	if op == nil || op.Space != NSOwner {
		return nil, stanza.ErrBadRequest
	}
	if !isOwner(iq) {
		return nil, errForbidden
	}
	switch op.Local {
	case "configure":
		return p.configure(ctx, iq, op)
	case "delete":
		return p.deleteNode(ctx, iq, op)
	case "purge":
		return p.purge(ctx, iq, op)
	case "affiliations":
		return nil, unsupported("modify-affiliations")
	case "subscriptions":
		return p.setSubscriptions(ctx, iq, op)
	}
	return nil, stanza.ErrFeatureNotImplemented
}

// ownerGet dispatches an owner iq get: configure, default.
func (p *Pep) ownerGet(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	op := iq.Payload.FirstElement()
	if op == nil || op.Space != NSOwner {
		return nil, stanza.ErrBadRequest
	}
	if !isOwner(iq) {
		return nil, errForbidden
	}
	switch op.Local {
	case "configure":
		node := op.Attr("node")
		if node == "" {
			return nil, errNodeRequired
		}
		n, err := p.load(ctx, iq.To.Bare().String(), node)
		if err != nil {
			return nil, err
		}
		out := stanza.NewElement(NSOwner, "pubsub")
		c := stanza.NewElement(NSOwner, "configure", stanza.Attr{Name: "node", Value: node})
		c.AddChild(n.Config.form("form", p.Limits.MaxItems))
		out.AddChild(c)
		return out, nil
	case "default":
		def := DefaultConfig()
		out := stanza.NewElement(NSOwner, "pubsub")
		out.AddChild(stanza.NewElement(NSOwner, "default").AddChild(def.form("form", p.Limits.MaxItems)))
		return out, nil
	case "affiliations":
		return nil, unsupported("modify-affiliations")
	case "subscriptions":
		return p.nodeSubscriptions(ctx, iq, op)
	}
	return nil, stanza.ErrFeatureNotImplemented
}

// load reads one node, with errNoNode when it does not exist.
func (p *Pep) load(ctx context.Context, owner, node string) (*nodeData, error) {
	b, err := p.store.Get(ctx, owner, node)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNoNode
	}
	if err != nil {
		return nil, err
	}
	n, err := decodeNode(b)
	if err != nil {
		return nil, err
	}
	p.dropExpired(n)
	return n, nil
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// formFields reads the data form inside el (publish-options or configure), checking its
// FORM_TYPE; a nil el gives no fields.
func formFields(el *stanza.Element, formType string) (map[string][]string, error) {
	if el == nil {
		return nil, nil
	}
	x := el.Child(NSData, "x")
	if x == nil {
		return nil, nil
	}
	if t := x.Attr("type"); t == "cancel" {
		return nil, nil
	} else if t != "submit" {
		return nil, stanza.NewError("bad-request", "the form must be of type submit")
	}
	ft, fields := parseForm(x)
	if ft != "" && ft != formType {
		return nil, stanza.NewError("bad-request", "wrong FORM_TYPE "+strconv.Quote(ft))
	}
	return fields, nil
}

// Item is one item to publish or one published item.
type Item struct {
	ID      string
	Payload *stanza.Element
}

// publish handles XEP-0060 §7.1 with auto-create and publish-options (§7.1.5).
func (p *Pep) publish(ctx context.Context, iq *module.IQ, op, opts *stanza.Element) (*stanza.Element, error) {
	if !isOwner(iq) {
		return nil, errForbidden
	}
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	var item *stanza.Element
	for c := range op.Elements() {
		if c.Space == NS && c.Local == "item" {
			if item != nil {
				return nil, pubsubError("bad-request", "invalid-payload", "one item per publish request")
			}
			item = c
		}
	}
	if item == nil {
		return nil, errItemRequired
	}
	if item.ElementCount() != 1 {
		return nil, errInvalidPayload
	}
	fields, err := formFields(opts, FormPublishOpts)
	if err != nil {
		return nil, err
	}
	it := Item{ID: item.Attr("id"), Payload: item.FirstElement()}
	if it.ID == "" {
		it.ID = randomID()
	}
	owner := iq.To.Bare()
	if err := p.Apply(ctx, owner, node, fields, []Item{it}, nil, iq.From); err != nil {
		return nil, err
	}
	p.changed(ctx, owner, node)
	out := stanza.NewElement(NS, "pubsub")
	pub := stanza.NewElement(NS, "publish", stanza.Attr{Name: "node", Value: node})
	pub.AddChild(stanza.NewElement(NS, "item", stanza.Attr{Name: "id", Value: it.ID}))
	out.AddChild(pub)
	return out, nil
}

// Apply publishes items to and retracts ids from owner's node in one transaction and sends the
// notifications, creating the node when it does not exist with the default configuration
// changed by opts; when it exists, opts are preconditions (XEP-0060 §7.1.5). publisher, when
// set, is the full JID of the publishing client. A retracted id that does not exist is
// item-not-found. Unlike the protocol operations, Apply does not run the OnChange functions:
// modules that mirror a node into other storage call it.
func (p *Pep) Apply(ctx context.Context, owner jid.JID, node string, opts map[string][]string, publish []Item, retract []string, publisher jid.JID) error {
	var cfg Config
	var added []storedItem
	var removed, subs []string
	now := p.Now()
	err := p.store.Update(ctx, owner.String(), func(tx storage.MapTx) error {
		added, removed = nil, nil
		var n *nodeData
		b, err := tx.Get(node)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			if len(publish) == 0 {
				return errNoNode
			}
			all, err := tx.All()
			if err != nil {
				return err
			}
			if len(all) >= p.Limits.MaxNodes {
				return errTooManyNodes
			}
			n = &nodeData{Config: DefaultConfig()}
			if err := n.Config.apply(opts, p.Limits.MaxItems); err != nil {
				return errPrecondition
			}
		case err != nil:
			return err
		default:
			if n, err = decodeNode(b); err != nil {
				return err
			}
			if len(opts) > 0 && !n.Config.matches(opts, p.Limits.MaxItems) {
				return errPrecondition
			}
			p.dropExpired(n)
		}
		for _, id := range retract {
			i := n.find(id)
			if i < 0 {
				return stanza.NewError("item-not-found", "no item "+strconv.Quote(id))
			}
			n.Items = append(n.Items[:i], n.Items[i+1:]...)
			removed = append(removed, id)
		}
		for _, it := range publish {
			si := storedItem{ID: it.ID, XML: string(it.Payload.AppendXML(nil, "")), At: now.UTC()}
			if publisher.Domainpart() != "" {
				si.Publisher = publisher.Bare().String()
			}
			if int64(len(si.XML)) > p.Limits.MaxNodeSize {
				return errPayloadTooBig
			}
			if i := n.find(it.ID); i >= 0 {
				n.Items = append(n.Items[:i], n.Items[i+1:]...)
			}
			n.Items = append(n.Items, si)
			added = append(added, si)
		}
		if !n.Config.PersistItems {
			n.Items = nil
		}
		for len(n.Items) > n.Config.MaxItems || (len(n.Items) > 1 && int64(n.size()) > p.Limits.MaxNodeSize) {
			n.Items = n.Items[1:]
		}
		cfg, subs = n.Config, n.Subs
		enc, err := n.encode()
		if err != nil {
			return err
		}
		return tx.Set(node, enc)
	})
	if err != nil {
		return err
	}
	if !cfg.DeliverNotifications {
		return nil
	}
	if len(added) > 0 {
		ev := eventItems(node)
		for i := range added {
			ev.FirstElement().AddChild(added[i].element(NSEvent, cfg.DeliverPayloads))
		}
		p.notify(ctx, owner, node, &cfg, ev, publisher, subs)
	}
	if len(removed) > 0 && cfg.NotifyRetract {
		ev := eventItems(node)
		for _, id := range removed {
			ev.FirstElement().AddChild(stanza.NewElement(NSEvent, "retract", stanza.Attr{Name: "id", Value: id}))
		}
		p.notify(ctx, owner, node, &cfg, ev, jid.JID{}, subs)
	}
	return nil
}

func eventItems(node string) *stanza.Element {
	ev := stanza.NewElement(NSEvent, "event")
	ev.AddChild(stanza.NewElement(NSEvent, "items", stanza.Attr{Name: "node", Value: node}))
	return ev
}

// retract handles XEP-0060 §7.2.
func (p *Pep) retract(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	if !isOwner(iq) {
		return nil, errForbidden
	}
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	var ids []string
	for c := range op.Elements() {
		if c.Space == NS && c.Local == "item" {
			if c.Attr("id") == "" {
				return nil, pubsubError("bad-request", "item-required", "")
			}
			ids = append(ids, c.Attr("id"))
		}
	}
	if len(ids) == 0 {
		return nil, pubsubError("bad-request", "item-required", "")
	}
	owner := iq.To.Bare()
	// notify='false' asks for silence; 'true' (or the node's notify_retract) for notifications.
	quiet := false
	if v, ok := parseBool(op.Attr("notify")); ok && !v {
		quiet = true
	}
	if quiet {
		if err := p.retractQuiet(ctx, owner, node, ids); err != nil {
			return nil, err
		}
	} else if err := p.Apply(ctx, owner, node, nil, nil, ids, jid.JID{}); err != nil {
		return nil, err
	}
	p.changed(ctx, owner, node)
	return nil, nil
}

func (p *Pep) retractQuiet(ctx context.Context, owner jid.JID, node string, ids []string) error {
	return p.store.Update(ctx, owner.String(), func(tx storage.MapTx) error {
		n, err := loadNode(tx, node)
		if err != nil {
			return err
		}
		for _, id := range ids {
			i := n.find(id)
			if i < 0 {
				return stanza.NewError("item-not-found", "no item "+strconv.Quote(id))
			}
			n.Items = append(n.Items[:i], n.Items[i+1:]...)
		}
		enc, err := n.encode()
		if err != nil {
			return err
		}
		return tx.Set(node, enc)
	})
}

// create handles XEP-0060 §8.1 node creation, with a configuration form when given (§8.1.3).
func (p *Pep) create(ctx context.Context, iq *module.IQ, op, conf *stanza.Element) (*stanza.Element, error) {
	if !isOwner(iq) {
		return nil, errForbidden
	}
	node := op.Attr("node")
	if node == "" {
		return nil, errInstantUnsupported
	}
	fields, err := formFields(conf, FormNodeConfig)
	if err != nil {
		return nil, err
	}
	n := &nodeData{Config: DefaultConfig()}
	if err := n.Config.apply(fields, p.Limits.MaxItems); err != nil {
		return nil, stanza.NewError("not-acceptable", err.Error())
	}
	err = p.store.Update(ctx, iq.To.Bare().String(), func(tx storage.MapTx) error {
		if _, err := tx.Get(node); err == nil {
			return stanza.NewError("conflict", "the node exists")
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		all, err := tx.All()
		if err != nil {
			return err
		}
		if len(all) >= p.Limits.MaxNodes {
			return errTooManyNodes
		}
		enc, err := n.encode()
		if err != nil {
			return err
		}
		return tx.Set(node, enc)
	})
	return nil, err
}

// configure handles XEP-0060 §8.2.4 (configuration submission).
func (p *Pep) configure(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	x := op.Child(NSData, "x")
	if x == nil {
		return nil, stanza.NewError("bad-request", "a configuration form is required")
	}
	fields, err := formFields(op, FormNodeConfig)
	if err != nil {
		return nil, err
	}
	owner := iq.To.Bare()
	var cfg, old Config
	var subs, ids []string
	var notifyConfig bool
	err = p.store.Update(ctx, owner.String(), func(tx storage.MapTx) error {
		n, err := loadNode(tx, node)
		if err != nil {
			return err
		}
		old = n.Config
		old.RosterGroups = slices.Clone(n.Config.RosterGroups)
		if err := n.Config.apply(fields, p.Limits.MaxItems); err != nil {
			return stanza.NewError("not-acceptable", err.Error())
		}
		if !n.Config.PersistItems {
			n.Items = nil
		}
		if len(n.Items) > n.Config.MaxItems {
			n.Items = n.Items[len(n.Items)-n.Config.MaxItems:]
		}
		cfg, notifyConfig = n.Config, n.Config.NotifyConfig && len(fields) > 0
		subs, ids = n.Subs, nil
		for _, it := range n.Items {
			ids = append(ids, it.ID)
		}
		enc, err := n.encode()
		if err != nil {
			return err
		}
		return tx.Set(node, enc)
	})
	if err != nil {
		return nil, err
	}
	if notifyConfig && cfg.DeliverNotifications {
		ev := stanza.NewElement(NSEvent, "event")
		ev.AddChild(stanza.NewElement(NSEvent, "configuration", stanza.Attr{Name: "node", Value: node}))
		p.notify(ctx, owner, node, &cfg, ev, jid.JID{}, subs)
	}
	if old.AccessModel != cfg.AccessModel || !slices.Equal(old.RosterGroups, cfg.RosterGroups) {
		p.narrowed(ctx, owner, node, &old, &cfg, subs, ids)
	}
	return nil, nil
}

// deleteNode handles XEP-0060 §8.4.
func (p *Pep) deleteNode(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	owner := iq.To.Bare()
	var cfg Config
	var subs []string
	err := p.store.Update(ctx, owner.String(), func(tx storage.MapTx) error {
		n, err := loadNode(tx, node)
		if err != nil {
			return err
		}
		cfg, subs = n.Config, n.Subs
		return tx.Delete(node)
	})
	if err != nil {
		return nil, err
	}
	if cfg.NotifyDelete && cfg.DeliverNotifications {
		ev := stanza.NewElement(NSEvent, "event")
		ev.AddChild(stanza.NewElement(NSEvent, "delete", stanza.Attr{Name: "node", Value: node}))
		p.notify(ctx, owner, node, &cfg, ev, jid.JID{}, subs)
	}
	p.changed(ctx, owner, node)
	return nil, nil
}

// purge handles XEP-0060 §8.5.
func (p *Pep) purge(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	owner := iq.To.Bare()
	var cfg Config
	var subs []string
	err := p.store.Update(ctx, owner.String(), func(tx storage.MapTx) error {
		n, err := loadNode(tx, node)
		if err != nil {
			return err
		}
		cfg, subs = n.Config, n.Subs
		n.Items = nil
		enc, err := n.encode()
		if err != nil {
			return err
		}
		return tx.Set(node, enc)
	})
	if err != nil {
		return nil, err
	}
	if cfg.NotifyRetract && cfg.DeliverNotifications {
		ev := stanza.NewElement(NSEvent, "event")
		ev.AddChild(stanza.NewElement(NSEvent, "purge", stanza.Attr{Name: "node", Value: node}))
		p.notify(ctx, owner, node, &cfg, ev, jid.JID{}, subs)
	}
	p.changed(ctx, owner, node)
	return nil, nil
}

// items handles XEP-0060 §6.5: all items, the last max_items, or the items asked for by id.
func (p *Pep) items(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	node := op.Attr("node")
	if node == "" {
		return nil, errNodeRequired
	}
	owner := iq.To.Bare()
	n, err := p.load(ctx, owner.String(), node)
	if err != nil {
		return nil, err
	}
	if !isOwner(iq) {
		if err := p.access(ctx, owner, iq.From.Bare(), &n.Config); err != nil {
			return nil, err
		}
	}
	var want []string
	for c := range op.Elements() {
		if c.Space == NS && c.Local == "item" && c.Attr("id") != "" {
			want = append(want, c.Attr("id"))
		}
	}
	sel := n.Items
	if len(want) > 0 {
		sel = nil
		for _, id := range want {
			if i := n.find(id); i >= 0 {
				sel = append(sel, n.Items[i])
			}
		}
	} else if m := op.Attr("max_items"); m != "" {
		k, err := strconv.Atoi(m)
		if err != nil || k < 0 {
			return nil, stanza.NewError("bad-request", "max_items is not a count")
		}
		if k < len(sel) {
			sel = sel[len(sel)-k:]
		}
	}
	out := stanza.NewElement(NS, "pubsub")
	items := stanza.NewElement(NS, "items", stanza.Attr{Name: "node", Value: node})
	for i := range sel {
		items.AddChild(sel[i].element(NS, true))
	}
	out.AddChild(items)
	return out, nil
}

// affiliations handles XEP-0060 §5.7: the requester owns every node of its own account.
func (p *Pep) affiliations(ctx context.Context, iq *module.IQ, op *stanza.Element) (*stanza.Element, error) {
	out := stanza.NewElement(NS, "pubsub")
	affs := stanza.NewElement(NS, "affiliations")
	out.AddChild(affs)
	if !isOwner(iq) {
		return out, nil
	}
	names, err := p.Nodes(ctx, iq.To.Bare(), iq.From)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if want := op.Attr("node"); want != "" && want != name {
			continue
		}
		affs.AddChild(stanza.NewElement(NS, "affiliation", stanza.Attr{Name: "node", Value: name}, stanza.Attr{Name: "affiliation", Value: "owner"}))
	}
	return out, nil
}

// Nodes returns the names of owner's nodes that requester may see, for disco#items (XEP-0163
// §7): all of them for the owner, the ones whose access model admits requester for others.
func (p *Pep) Nodes(ctx context.Context, owner, requester jid.JID) ([]string, error) {
	all, err := p.store.All(ctx, owner.String())
	if err != nil {
		return nil, err
	}
	var out []string
	for name, b := range all {
		if !requester.Bare().Equal(owner.Bare()) {
			n, err := decodeNode(b)
			if err != nil || p.access(ctx, owner, requester.Bare(), &n.Config) != nil {
				continue
			}
		}
		out = append(out, name)
	}
	sortStrings(out)
	return out, nil
}

// Items returns the items of owner's node, oldest first, and its configuration; ok is false
// when the node does not exist.
func (p *Pep) Items(ctx context.Context, owner jid.JID, node string) (items []Item, cfg Config, ok bool, err error) {
	n, err := p.load(ctx, owner.Bare().String(), node)
	if errors.Is(err, errNoNode) {
		return nil, Config{}, false, nil
	}
	if err != nil {
		return nil, Config{}, false, err
	}
	for i := range n.Items {
		pl, err := n.Items[i].payload()
		if err != nil {
			return nil, Config{}, false, fmt.Errorf("pep: stored item %s: %w", n.Items[i].ID, err)
		}
		items = append(items, Item{ID: n.Items[i].ID, Payload: pl})
	}
	return items, n.Config, true, nil
}

// access says whether contact (a bare JID other than the owner) may retrieve items of a node
// with configuration cfg (XEP-0060 §6.5.9, §4.5).
func (p *Pep) access(ctx context.Context, owner, contact jid.JID, cfg *Config) error {
	switch cfg.AccessModel {
	case AccessOpen:
		return nil
	case AccessPresence, AccessRoster:
		it, ok, err := p.r.Store().Get(ctx, owner.String(), contact.String())
		if err != nil {
			return err
		}
		if cfg.AccessModel == AccessPresence {
			if ok && it.Listed() && it.HasFrom() {
				return nil
			}
			return errPresenceRequired
		}
		if ok && it.Listed() {
			for _, g := range it.Groups {
				for _, a := range cfg.RosterGroups {
					if g == a {
						return nil
					}
				}
			}
		}
		return errNotInRosterGroup
	}
	return errClosedNode
}
