// Package caps implements XEP-0115: Entity Capabilities. It advertises the server's own
// capabilities in the stream features, and keeps a cache of what other entities announce in
// their presence: the (hash, ver) pairs are resolved with a disco#info query the server sends
// (§6.3), verified against the hash before they are cached (§5.4), and offered to other
// modules through ForHost(h).Features, which is how PEP filters +notify subscribers.
package caps

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Node is the software URI the server puts in its own caps (XEP-0115 §4).
const Node = "urn:impetus:server"

// VerifiedStore is the storage of verified (hash, ver) pairs: "hash ver" → features, one per
// line. A pair's features never change (the ver is their hash), so entries are never updated.
const VerifiedStore = "caps"

// Defaults of the caps scope.
const (
	DefaultMaxVersions = 10000
	DefaultMaxEntities = 100000
	DefaultMaxPending  = 1000
	DefaultQueryTime   = 60 * time.Second
)

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "caps",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0115 entity capabilities cache (Impetus)",
		Options: []config.OptionSpec{
			{Name: "max_versions", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxVersions), Doc: "verified (hash, ver) pairs kept in memory (Impetus)"},
			{Name: "max_entities", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxEntities), Doc: "available full JIDs whose announced caps are remembered (Impetus)"},
			{Name: "max_pending", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxPending), Doc: "disco#info queries outstanding at once (Impetus)"},
			{Name: "query_timeout", Type: config.TypeDuration, Default: "60", Doc: "seconds after which an unanswered disco#info query is forgotten and may be sent again (Impetus)"},
		},
	})
	module.Register("caps", func() module.Module { return New() })
}

// Config is the caps scope, decoded.
type Config struct {
	MaxVersions  int           `conf:"max_versions"`
	MaxEntities  int           `conf:"max_entities"`
	MaxPending   int           `conf:"max_pending"`
	QueryTimeout time.Duration `conf:"query_timeout"`
}

type key struct{ hash, ver string }

type pending struct {
	key     key
	node    string
	asked   jid.JID
	expires time.Time
}

// Caps is the capabilities module of one hosted domain.
type Caps struct {
	Config
	// Now is the clock; tests replace it.
	Now func() time.Time

	h      *module.Host
	selfEl *stanza.Element
	self   *Info
	ver    string

	mu       sync.Mutex
	versions map[key][]string    // verified (hash, ver) → sorted features
	order    []key               // insertion order of versions, oldest first, for eviction
	entities map[string]key      // full JID → announced caps
	pending  map[string]*pending // query id → query
	asking   map[key]string      // (hash, ver) → id of the query resolving it
	// shared keeps verified (hash, ver) pairs in the server's storage, where the other nodes
	// of a cluster find the caps of sessions whose presence only their own node saw.
	shared storage.KV
	known  []func(ctx context.Context, full jid.JID, features []string)
}

// New returns a module with the default limits.
func New() *Caps {
	return &Caps{Config: Config{MaxVersions: DefaultMaxVersions, MaxEntities: DefaultMaxEntities,
		MaxPending: DefaultMaxPending, QueryTimeout: DefaultQueryTime}, Now: time.Now}
}

var (
	hostsMu sync.Mutex
	hosts   = map[*module.Host]*Caps{}
)

// ForHost returns the caps module provisioned on h, or nil.
func ForHost(h *module.Host) *Caps {
	hostsMu.Lock()
	defer hostsMu.Unlock()
	return hosts[h]
}

// Decode reads the caps scope of cfg into c's settings.
func (c *Caps) decode(cfg *config.Config) error {
	if cfg == nil || cfg.Root == nil {
		return nil
	}
	secs := cfg.Sections("caps")
	if len(secs) == 0 {
		return nil
	}
	if err := secs[0].Decode(&c.Config); err != nil {
		return fmt.Errorf("caps: %w", err)
	}
	return nil
}

// Provision implements module.Module.
func (c *Caps) Provision(h *module.Host) error {
	c.h = h
	if err := c.decode(h.Config); err != nil {
		return err
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.versions = make(map[key][]string)
	c.entities = make(map[string]key)
	c.pending = make(map[string]*pending)
	c.asking = make(map[key]string)
	if h.Storage != nil {
		c.shared = h.Storage.KV(VerifiedStore)
	}
	h.AddFeature(NS)
	c.selfEl = stanza.NewElement(NS, "c", stanza.Attr{Name: "hash", Value: "sha-1"}, stanza.Attr{Name: "node", Value: Node})
	h.AddStreamFeature(c.selfEl)
	h.OnProvisioned(c.computeSelf)
	h.Hook(module.PresenceIn, 100, c.presence)
	h.Hook(module.PresenceDeliver, 100, c.presence)
	h.Hook(module.IQResult, 100, c.result)
	h.OnSessionClosed(func(_ context.Context, s module.Session) { c.forget(s.JID()) })
	hostsMu.Lock()
	hosts[h] = c
	hostsMu.Unlock()
	return nil
}

// Stop implements module.Stopper.
func (c *Caps) Stop() error {
	hostsMu.Lock()
	delete(hosts, c.h)
	hostsMu.Unlock()
	return nil
}

// computeSelf hashes the server's identities and features once every module registered them.
func (c *Caps) computeSelf() error {
	info := &Info{}
	for _, id := range c.h.Identities() {
		info.Identities = append(info.Identities, Identity{Category: id.Category, Type: id.Type, Name: id.Name})
	}
	info.Features = c.h.Features()
	info.Forms = c.h.InfoForms()
	ver, err := info.Ver("sha-1")
	if err != nil {
		return err
	}
	c.self, c.ver = info, ver
	c.selfEl.SetAttr("ver", ver)
	return nil
}

// Ver returns the verification string of the server's own capabilities.
func (c *Caps) Ver() string { return c.ver }

// ServerNode returns the node#ver a client queries to resolve the server's caps (§6.2).
func (c *Caps) ServerNode() string { return Node + "#" + c.ver }

// OnKnown registers fn to run when the features of an available entity become known: at once
// when its announced caps are cached, or when the disco#info query resolving them is verified.
// PEP sends the last published items to new +notify subscribers from here.
func (c *Caps) OnKnown(fn func(ctx context.Context, full jid.JID, features []string)) {
	c.known = append(c.known, fn)
}

// Features returns the features the entity at full announced in its presence, or nil when it
// announced none or they are not verified yet. The slice is shared: do not modify it.
func (c *Caps) Features(full jid.JID) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.entities[full.String()]
	if !ok {
		return nil
	}
	return c.versions[k]
}

// FeaturesOf is Features for a session, which in a cluster may be on another node: this node
// never saw that session's presence, so its caps are read from the presence its node keeps in
// the session registry (LastPresence) and resolved through the verified pairs, those of this
// node or, failing that, those its node verified and stored (VerifiedStore).
func (c *Caps) FeaturesOf(ctx context.Context, s router.Session) []string {
	r, remote := s.(interface {
		Node() string
		LastPresence() *stanza.Element
	})
	if !remote {
		return c.Features(s.JID())
	}
	pres := r.LastPresence()
	if pres == nil {
		return nil
	}
	el := pres.Child(NS, "c")
	if el == nil {
		return nil
	}
	k := key{el.Attr("hash"), el.Attr("ver")}
	if k.hash == "" || k.ver == "" || !Supported(k.hash) {
		return nil
	}
	c.mu.Lock()
	features, cached := c.versions[k]
	c.mu.Unlock()
	if cached || c.shared == nil {
		return features
	}
	// The session's own node verified the pair when its presence arrived there; an answer to a
	// query from this node would reach that node, not this one.
	b, err := c.shared.Get(ctx, k.hash+" "+k.ver)
	if err != nil {
		return nil
	}
	features = strings.Split(string(b), "\n")
	c.mu.Lock()
	c.addVersionLocked(k, features)
	c.mu.Unlock()
	return features
}

// Has reports whether the entity at full announced feature.
func (c *Caps) Has(full jid.JID, feature string) bool {
	_, ok := slices.BinarySearch(c.Features(full), feature)
	return ok
}

// Lookup returns the verified features cached for (hash, ver).
func (c *Caps) Lookup(hash, ver string) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.versions[key{hash, ver}]
	return f, ok
}

func (c *Caps) forget(full jid.JID) {
	c.mu.Lock()
	delete(c.entities, full.String())
	c.mu.Unlock()
}

// presence records the caps an entity announces in available presence (§6.3) and forgets them
// when it goes unavailable.
func (c *Caps) presence(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	from := st.From
	if from.Resourcepart() == "" {
		return module.Continue, nil
	}
	switch st.El.Attr("type") {
	case "unavailable":
		c.forget(from)
		return module.Continue, nil
	case "":
	default:
		return module.Continue, nil
	}
	el := st.El.Child(NS, "c")
	if el == nil {
		return module.Continue, nil
	}
	k := key{el.Attr("hash"), el.Attr("ver")}
	node := el.Attr("node")
	if k.hash == "" || k.ver == "" || !Supported(k.hash) {
		// Legacy caps (no hash, §1.2) and unknown functions cannot be verified.
		return module.Continue, nil
	}
	full := from.String()
	c.mu.Lock()
	if old, ok := c.entities[full]; ok && old == k {
		c.mu.Unlock()
		return module.Continue, nil
	}
	if _, ok := c.entities[full]; !ok && c.MaxEntities > 0 && len(c.entities) >= c.MaxEntities {
		// Entities whose unavailable presence never arrived leave room for new ones.
		for j := range c.entities {
			delete(c.entities, j)
			break
		}
	}
	c.entities[full] = k
	features, cached := c.versions[k]
	var q *stanza.Element
	if !cached {
		q = c.ask(k, node, from)
	}
	c.mu.Unlock()
	if cached {
		c.notify(ctx, from, features)
	} else if q != nil {
		if err := c.h.Send(ctx, q); err != nil {
			c.h.Log.Debug("caps: query not routable", "to", full, "err", err)
		}
	}
	return module.Continue, nil
}

// ask records a query resolving k from the entity at to and returns it, or nil when one is
// already outstanding or too many are. c.mu is held.
func (c *Caps) ask(k key, node string, to jid.JID) *stanza.Element {
	now := c.Now()
	for id, p := range c.pending {
		if now.After(p.expires) {
			delete(c.pending, id)
			delete(c.asking, p.key)
		}
	}
	if _, ok := c.asking[k]; ok {
		return nil
	}
	if c.MaxPending > 0 && len(c.pending) >= c.MaxPending {
		return nil
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "caps-" + hex.EncodeToString(b[:])
	qnode := node + "#" + k.ver
	c.pending[id] = &pending{key: k, node: qnode, asked: to, expires: now.Add(c.QueryTimeout)}
	c.asking[k] = id
	q := stanza.NewElement(NSInfo, "query", stanza.Attr{Name: "node", Value: qnode})
	iq := stanza.NewElement(stanza.NSClient, "iq", stanza.Attr{Name: "type", Value: stanza.Get},
		stanza.Attr{Name: "id", Value: id}, stanza.Attr{Name: "from", Value: c.h.Domain},
		stanza.Attr{Name: "to", Value: to.String()})
	return iq.AddChild(q)
}

// result takes the answer to a query the module sent: a result whose hash matches is cached
// (§5.4); anything else only releases the query, so the next announcement asks again.
func (c *Caps) result(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	id := st.El.Attr("id")
	if st.To.Localpart() != "" || id == "" {
		return module.Continue, nil
	}
	c.mu.Lock()
	p := c.pending[id]
	if p == nil || !p.asked.Equal(st.From) {
		c.mu.Unlock()
		return module.Continue, nil
	}
	delete(c.pending, id)
	delete(c.asking, p.key)
	c.mu.Unlock()
	if st.El.Attr("type") != stanza.Result {
		return module.Handled, nil
	}
	q := st.El.Child(NSInfo, "query")
	if q == nil {
		return module.Handled, nil
	}
	info, err := ParseInfo(q)
	if err != nil {
		c.h.Log.Debug("caps: refusing disco#info", "from", st.From.String(), "err", err)
		return module.Handled, nil
	}
	ver, err := info.Ver(p.key.hash)
	if err != nil || ver != p.key.ver {
		c.h.Log.Debug("caps: verification string mismatch", "from", st.From.String(), "announced", p.key.ver, "computed", ver)
		return module.Handled, nil
	}
	features := slices.Clone(info.Features)
	slices.Sort(features)
	if c.shared != nil {
		if err := c.shared.Set(ctx, p.key.hash+" "+p.key.ver, []byte(strings.Join(features, "\n"))); err != nil {
			c.h.Log.Debug("caps: storing verified caps", "err", err)
		}
	}
	c.mu.Lock()
	c.addVersionLocked(p.key, features)
	// Every entity that announced the same caps learns its features now.
	var waiting []jid.JID
	if len(c.known) > 0 {
		for j, k := range c.entities {
			if k == p.key {
				if fj, err := jid.Parse(j); err == nil {
					waiting = append(waiting, fj)
				}
			}
		}
	}
	c.mu.Unlock()
	for _, j := range waiting {
		c.notify(ctx, j, features)
	}
	return module.Handled, nil
}

// addVersionLocked caches verified features, evicting the oldest pair beyond MaxVersions.
// c.mu is held.
func (c *Caps) addVersionLocked(k key, features []string) {
	if _, ok := c.versions[k]; ok {
		return
	}
	if c.MaxVersions > 0 && len(c.order) >= c.MaxVersions {
		delete(c.versions, c.order[0])
		c.order = c.order[1:]
	}
	c.versions[k] = features
	c.order = append(c.order, k)
}

func (c *Caps) notify(ctx context.Context, full jid.JID, features []string) {
	for _, fn := range c.known {
		fn(ctx, full, features)
	}
}

var _ module.Module = (*Caps)(nil)
