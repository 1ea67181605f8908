// Package module is how features plug into the server. A feature is one package that registers
// itself in init and, for every hosted domain, provisions a Host: it registers its iq handlers,
// message and presence hooks, session hooks and disco features there. The core never lists features.
//
// Adding an XEP means one new package under internal/modules and one import line in modules/all.
package module

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/auth"
	"impetus/internal/config"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Module is a feature provisioned once per hosted domain.
type Module interface {
	Provision(h *Host) error
}

// Stopper is implemented by modules that hold resources to release at shutdown.
type Stopper interface {
	Stop() error
}

var (
	regMu    sync.Mutex
	registry = map[string]func() Module{}
)

// Register makes a module available under name. It panics on a duplicate name, which is a
// programming error caught at start-up.
func Register(name string, factory func() Module) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("module: duplicate registration of " + name)
	}
	registry[name] = factory
}

// Names lists the registered modules in a stable order.
func Names() []string {
	regMu.Lock()
	defer regMu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New instantiates a registered module.
func New(name string) (Module, error) {
	regMu.Lock()
	f := registry[name]
	regMu.Unlock()
	if f == nil {
		return nil, fmt.Errorf("module: unknown module %q", name)
	}
	return f(), nil
}

// Target says to whom an iq is addressed on a hosted domain.
type Target uint8

const (
	// ToServer is an iq addressed to the domain itself.
	ToServer Target = iota
	// ToAccount is an iq addressed to an account's bare JID (or with no 'to', to the sender's own
	// account), which the server answers on the account's behalf.
	ToAccount
)

// Session is the local client session an iq or stanza came from.
type Session interface {
	router.Session
	// Send writes el to this session's client.
	Send(el *stanza.Element)
}

// IQ is an iq request handed to a handler.
type IQ struct {
	El      *stanza.Element // the whole iq, 'from' stamped
	Payload *stanza.Element
	From    jid.JID
	To      jid.JID // the addressed entity; the sender's bare JID when the client omitted 'to'
	// Session is the originating session when the iq came from a local client, else nil.
	Session Session
}

// IQHandler answers an iq get or set. It returns the result payload (nil for an empty result),
// or an error: a *stanza.Error becomes that error reply; any other error becomes internal-server-error.
type IQHandler func(ctx context.Context, iq *IQ) (*stanza.Element, error)

// Verdict is what a stanza hook decides.
type Verdict uint8

const (
	// Continue passes the stanza to the next hook and then to default processing.
	Continue Verdict = iota
	// Handled stops processing: the hook took care of the stanza.
	Handled
)

// Stanza is a message or presence handed to hooks.
type Stanza struct {
	El   *stanza.Element
	From jid.JID
	To   jid.JID
	// Session is the originating local session, or nil for stanzas from servers or modules.
	Session Session
}

// StanzaHook inspects a message or presence. Hooks run in priority order (higher first).
type StanzaHook func(ctx context.Context, st *Stanza) (Verdict, error)

// Identity is a XEP-0030 identity.
type Identity struct {
	Category, Type, Name string
}

type iqKey struct {
	target Target
	typ    string
	space  string
	local  string
}

type hook struct {
	prio int
	fn   StanzaHook
}

// Sender routes stanzas on behalf of modules; the core implements it.
type Sender interface {
	Route(ctx context.Context, el *stanza.Element) error
}

// Host is a hosted domain as modules see it. Modules register everything here, so the set of
// features and handlers is fixed once provisioning ends and needs no locking afterwards.
type Host struct {
	Domain string
	Router router.Router
	Log    *slog.Logger
	// Storage opens the feature stores (roster, offline, …).
	Storage storage.Backend
	// Accounts tells whether an account exists.
	Accounts router.Accounts
	// DataDir is the server's data directory, for features that keep files (file upload). It
	// is empty in tests that build hosts by hand.
	DataDir string
	// Config is the whole loaded configuration: the xmpp scope's limits, and sections that
	// modules decode themselves (config.RegisterScope). It is nil in tests that build hosts by
	// hand, where modules keep their defaults.
	Config *config.Config

	// Auth returns the credential store accounts log in with (it may change on reload);
	// in-band registration writes to it when it implements auth.Writer. Nil in tests that
	// build hosts by hand.
	Auth func() auth.Store

	sender          Sender
	iq              map[iqKey]IQHandler
	features        []string
	accountFeatures []string
	identities      []Identity
	accountIdents   []Identity
	messageIn       []hook // stanzas from local sessions, before routing
	messageDeliver  []hook // stanzas for local accounts, before delivery
	presenceIn      []hook
	presenceDeliver []hook
	messageOffline  []hook
	iqIn            []hook
	hibernated      []hook
	iqResult        []hook
	outbound        []hook
	iqDeliver       []hook
	streamFeatures  []*stanza.Element
	sessionBound    []func(ctx context.Context, s Session)
	sessionClosed   []func(ctx context.Context, s Session)
	modules         []Module
	service         ServiceFunc
	infoForms       []*stanza.Element
	provisioned     []func() error
	accountItems    []AccountItemsFunc
	itemsMu         sync.Mutex
	items           []Item
	preAuthIQ       map[[2]string]PreAuthFunc
	preAuthFeatures []*stanza.Element
}

// ServiceFunc takes a stanza addressed to an entity under a service domain (a JID with a
// localpart, such as a chat room or an occupant of one). It returns a *stanza.Error to bounce
// to the sender, or nil when it dealt with the stanza, replies included.
type ServiceFunc func(ctx context.Context, st *Stanza) error

// NewHost returns an empty host for domain.
func NewHost(domain string, r router.Router, sender Sender, st storage.Backend, accounts router.Accounts, log *slog.Logger) *Host {
	return &Host{Domain: domain, Router: r, sender: sender, Storage: st, Accounts: accounts, Log: log, iq: make(map[iqKey]IQHandler)}
}

// Provision instantiates and provisions the named modules in order.
func (h *Host) Provision(names []string) error {
	for _, n := range names {
		m, err := New(n)
		if err != nil {
			return err
		}
		if err := m.Provision(h); err != nil {
			return fmt.Errorf("module %s on %s: %w", n, h.Domain, err)
		}
		h.modules = append(h.modules, m)
	}
	for _, fn := range h.provisioned {
		if err := fn(); err != nil {
			return fmt.Errorf("module: after provisioning %s: %w", h.Domain, err)
		}
	}
	return nil
}

// OnProvisioned registers fn to run once every module of the host is provisioned, before the
// host serves anything: what depends on the whole feature set (the XEP-0115 hash of the
// server's own capabilities) is computed there.
func (h *Host) OnProvisioned(fn func() error) { h.provisioned = append(h.provisioned, fn) }

// Item is a XEP-0030 disco item: an entity, and optionally a node of it, that discovery of the
// server (or of an account) lists.
type Item struct {
	JID, Node, Name string
}

// AccountItemsFunc lists the disco items of an account, as requester may see them.
type AccountItemsFunc func(ctx context.Context, owner, requester jid.JID) []Item

// AddItem lists it in the disco items of the server (a hosted service, a component).
func (h *Host) AddItem(it Item) {
	h.itemsMu.Lock()
	defer h.itemsMu.Unlock()
	if !slices.Contains(h.items, it) {
		h.items = append(h.items, it)
	}
}

// RemoveItem stops listing it (a component that disconnected).
func (h *Host) RemoveItem(it Item) {
	h.itemsMu.Lock()
	defer h.itemsMu.Unlock()
	h.items = slices.DeleteFunc(h.items, func(o Item) bool { return o == it })
}

// Items returns the server's disco items. Unlike features, items may change while the server
// runs, because external components come and go.
func (h *Host) Items() []Item {
	h.itemsMu.Lock()
	defer h.itemsMu.Unlock()
	return slices.Clone(h.items)
}

// AddAccountItems registers fn to contribute to the disco items of every account (PEP nodes).
func (h *Host) AddAccountItems(fn AccountItemsFunc) { h.accountItems = append(h.accountItems, fn) }

// AccountItems returns the disco items of owner's account as requester may see them.
func (h *Host) AccountItems(ctx context.Context, owner, requester jid.JID) []Item {
	var out []Item
	for _, fn := range h.accountItems {
		out = append(out, fn(ctx, owner, requester)...)
	}
	return out
}

// Stop stops the host's modules in reverse order.
func (h *Host) Stop() {
	for i := len(h.modules) - 1; i >= 0; i-- {
		if s, ok := h.modules[i].(Stopper); ok {
			if err := s.Stop(); err != nil {
				h.Log.Error("module stop failed", "err", err)
			}
		}
	}
}

// HandleIQ registers fn for iq type typ ("get" or "set") with a payload {space}local addressed to target.
// A duplicate registration is a programming error and panics at start-up.
func (h *Host) HandleIQ(target Target, typ, space, local string, fn IQHandler) {
	k := iqKey{target, typ, space, local}
	if _, dup := h.iq[k]; dup {
		panic(fmt.Sprintf("module: duplicate iq handler for %s {%s}%s", typ, space, local))
	}
	h.iq[k] = fn
}

// SetService makes the domain a service domain: every message, presence and iq addressed to a
// JID with a localpart on it goes to fn instead of the hooks, iq handlers and router that serve
// accounts. Stanzas to the domain itself still reach the host's iq handlers. A second call is
// a programming error and panics at start-up.
func (h *Host) SetService(fn ServiceFunc) {
	if h.service != nil {
		panic("module: two services on " + h.Domain)
	}
	h.service = fn
}

// Service returns the domain's service function, or nil when the domain hosts accounts.
func (h *Host) Service() ServiceFunc { return h.service }

// IQHandler returns the handler for an iq, or nil.
func (h *Host) IQHandler(target Target, typ, space, local string) IQHandler {
	return h.iq[iqKey{target, typ, space, local}]
}

// AddFeature advertises a disco feature of the server (XEP-0030).
func (h *Host) AddFeature(ns string) {
	if !slices.Contains(h.features, ns) {
		h.features = append(h.features, ns)
	}
}

// AddAccountFeature advertises a disco feature of every account's bare JID (e.g. PEP).
func (h *Host) AddAccountFeature(ns string) {
	if !slices.Contains(h.accountFeatures, ns) {
		h.accountFeatures = append(h.accountFeatures, ns)
	}
}

// AddIdentity advertises a disco identity of the server.
func (h *Host) AddIdentity(id Identity) { h.identities = append(h.identities, id) }

// AddInfoForm adds a XEP-0128 extended information form (a jabber:x:data form of type result
// with a hidden FORM_TYPE) to the server's disco#info, such as XEP-0363's max-file-size.
func (h *Host) AddInfoForm(form *stanza.Element) { h.infoForms = append(h.infoForms, form) }

// InfoForms returns the extended information forms of the server's disco#info.
func (h *Host) InfoForms() []*stanza.Element { return h.infoForms }

// AddAccountIdentity advertises a disco identity of every account's bare JID, beside
// account/registered (PEP's pubsub/pep, XEP-0163 §6).
func (h *Host) AddAccountIdentity(id Identity) { h.accountIdents = append(h.accountIdents, id) }

// AccountIdentities returns the identities modules added to accounts.
func (h *Host) AccountIdentities() []Identity { return slices.Clone(h.accountIdents) }

// AddStreamFeature advertises el in the stream features a client sees after authentication
// (e.g. roster versioning). A second feature with the same name replaces nothing and is ignored.
func (h *Host) AddStreamFeature(el *stanza.Element) {
	for _, f := range h.streamFeatures {
		if f.Space == el.Space && f.Local == el.Local {
			return
		}
	}
	h.streamFeatures = append(h.streamFeatures, el)
}

// StreamFeatures returns the post-authentication stream features modules registered. The
// elements are shared: serialize them, never modify them.
func (h *Host) StreamFeatures() []*stanza.Element { return h.streamFeatures }

// Features returns the server's disco features, sorted.
func (h *Host) Features() []string { return sortedCopy(h.features) }

// AccountFeatures returns the accounts' disco features, sorted.
func (h *Host) AccountFeatures() []string { return sortedCopy(h.accountFeatures) }

// Identities returns the server's disco identities.
func (h *Host) Identities() []Identity { return slices.Clone(h.identities) }

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}

// XMPP returns the xmpp scope's settings, or nil when the host has no configuration.
func (h *Host) XMPP() *config.XMPP {
	if h.Config == nil {
		return nil
	}
	return h.Config.XMPP
}

// Hook points for messages and presence.
type Point uint8

const (
	// MessageIn runs for messages a local client sends, before routing.
	MessageIn Point = iota
	// MessageDeliver runs for messages to a local account, before the router delivers them.
	MessageDeliver
	// PresenceIn runs for presence a local client sends, before routing or broadcast.
	PresenceIn
	// PresenceDeliver runs for presence to a local account, before delivery.
	PresenceDeliver
	// MessageOffline runs for a chat or normal message to an existing local account with no
	// available resource (offline storage takes it here).
	MessageOffline
	// IQIn runs for iq stanzas a local client sends, before they are dispatched or routed.
	IQIn
	// MessageHibernated runs, after queueing, for a message delivered to a session whose
	// connection is gone while it waits for XEP-0198 resumption (push notifications hang here).
	MessageHibernated
	// IQResult runs for iq results and errors addressed to a hosted domain itself or to an
	// account's bare JID: answers to requests the server sent (XEP-0115 disco#info queries).
	IQResult
	// Outbound runs for messages and presence from a local account's JID, whoever produced them
	// (its client or a module broadcasting for it), before they are delivered or leave the
	// server; it runs on the sender's host.
	Outbound
	// IQDeliver runs for iq stanzas addressed to a local account (bare or full JID), from anyone,
	// before the server answers on the account's behalf or routes them to a resource.
	IQDeliver
)

// Hook registers fn at point p with priority prio (higher runs first).
func (h *Host) Hook(p Point, prio int, fn StanzaHook) {
	list := h.hookList(p)
	*list = append(*list, hook{prio, fn})
	slices.SortStableFunc(*list, func(a, b hook) int { return b.prio - a.prio })
}

func (h *Host) hookList(p Point) *[]hook {
	switch p {
	case MessageIn:
		return &h.messageIn
	case MessageDeliver:
		return &h.messageDeliver
	case PresenceIn:
		return &h.presenceIn
	case PresenceDeliver:
		return &h.presenceDeliver
	case IQIn:
		return &h.iqIn
	case MessageHibernated:
		return &h.hibernated
	case IQResult:
		return &h.iqResult
	case Outbound:
		return &h.outbound
	case IQDeliver:
		return &h.iqDeliver
	default:
		return &h.messageOffline
	}
}

// RunHooks runs the hooks at p until one handles the stanza.
func (h *Host) RunHooks(ctx context.Context, p Point, st *Stanza) (Verdict, error) {
	for _, hk := range *h.hookList(p) {
		v, err := hk.fn(ctx, st)
		if err != nil || v == Handled {
			return Handled, err
		}
	}
	return Continue, nil
}

// OnSessionBound registers fn to run when a client session binds a resource on this host.
func (h *Host) OnSessionBound(fn func(ctx context.Context, s Session)) {
	h.sessionBound = append(h.sessionBound, fn)
}

// OnSessionClosed registers fn to run when a bound session ends.
func (h *Host) OnSessionClosed(fn func(ctx context.Context, s Session)) {
	h.sessionClosed = append(h.sessionClosed, fn)
}

// SessionBound runs the bound hooks.
func (h *Host) SessionBound(ctx context.Context, s Session) {
	for _, fn := range h.sessionBound {
		fn(ctx, s)
	}
}

// SessionClosed runs the closed hooks.
func (h *Host) SessionClosed(ctx context.Context, s Session) {
	for _, fn := range h.sessionClosed {
		fn(ctx, s)
	}
}

// Send routes a stanza from a module (with 'from' already set) like any other stanza.
func (h *Host) Send(ctx context.Context, el *stanza.Element) error {
	return h.sender.Route(ctx, el)
}

// PreAuthFunc answers an iq a client sends before it authenticates (XEP-0077 registration).
// remote is the client's address (ip:port). It returns the result payload (nil for an empty
// result) or an error, as an IQHandler does.
type PreAuthFunc func(ctx context.Context, remote string, iq *stanza.Element) (*stanza.Element, error)

// HandlePreAuthIQ registers fn for iq requests with a payload {space}local on streams that have
// not authenticated yet; without a handler such a stanza ends the stream (RFC 6120 §6.4.1).
func (h *Host) HandlePreAuthIQ(space, local string, fn PreAuthFunc) {
	if h.preAuthIQ == nil {
		h.preAuthIQ = make(map[[2]string]PreAuthFunc)
	}
	h.preAuthIQ[[2]string{space, local}] = fn
}

// PreAuthIQ returns the handler for an iq payload before authentication, or nil.
func (h *Host) PreAuthIQ(space, local string) PreAuthFunc {
	return h.preAuthIQ[[2]string{space, local}]
}

// AddPreAuthFeature advertises el in the stream features offered before authentication, on
// streams that are encrypted or allowed to authenticate in clear.
func (h *Host) AddPreAuthFeature(el *stanza.Element) {
	h.preAuthFeatures = append(h.preAuthFeatures, el)
}

// PreAuthFeatures returns the features of AddPreAuthFeature. The elements are shared.
func (h *Host) PreAuthFeatures() []*stanza.Element { return h.preAuthFeatures }
