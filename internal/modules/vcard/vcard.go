// Package vcard implements XEP-0054: vcard-temp, with XEP-0153: vCard-Based Avatars and
// XEP-0398: User Avatar to vCard-Based Avatars Conversion. vCards are kept as XML in the KV
// store "vcard". The server stamps the hash of the stored photo into its users' available
// presence (XEP-0398 §4), copies avatars published with XEP-0084 into the vCard, and
// publishes a photo set in the vCard to the user's XEP-0084 nodes, when the PEP module runs.
package vcard

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/module"
	"impetus/internal/modules/pep"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Namespaces.
const (
	NS           = "vcard-temp"
	NSUpdate     = "vcard-temp:x:update"
	NSConversion = "urn:xmpp:pep-vcard-conversion:0"
	NSAvatarData = "urn:xmpp:avatar:data"
	NSAvatarMeta = "urn:xmpp:avatar:metadata"
)

// StoreName is the KV store holding vCards.
const StoreName = "vcard"

// Defaults of the vcard scope.
const (
	DefaultMaxSize   = 256 << 10
	DefaultMaxCached = 10000
)

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "vcard",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0054 vcard-temp and vCard-based avatars (Impetus)",
		Options: []config.OptionSpec{
			{Name: "max_size", Type: config.TypeSize, Default: "256k", Doc: "largest vCard a user may store, in bytes of XML (Impetus)"},
			{Name: "max_cached", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxCached), Doc: "users whose photo hash is kept in memory for stamping presence (Impetus)"},
			{Name: "pep_conversion", Type: config.TypeBool, Default: "true", Doc: "convert between XEP-0084 avatars and the vCard photo (XEP-0398) (Impetus)"},
		},
	})
	module.Register("vcard", func() module.Module { return New() })
}

// Config is the vcard scope, decoded.
type Config struct {
	MaxSize       int64 `conf:"max_size"`
	MaxCached     int   `conf:"max_cached"`
	PEPConversion bool  `conf:"pep_conversion"`
}

// VCard is the vcard module of one hosted domain.
type VCard struct {
	Config

	h     *module.Host
	store storage.KV
	pep   *pep.Pep

	mu     sync.Mutex
	hashes map[string]string // user → SHA-1 of the vCard photo, "" for none
}

// New returns a module with the default settings.
func New() *VCard {
	return &VCard{Config: Config{MaxSize: DefaultMaxSize, MaxCached: DefaultMaxCached, PEPConversion: true}}
}

// Provision implements module.Module.
func (v *VCard) Provision(h *module.Host) error {
	v.h = h
	if h.Config != nil && h.Config.Root != nil {
		if secs := h.Config.Sections("vcard"); len(secs) > 0 {
			if err := secs[0].Decode(&v.Config); err != nil {
				return fmt.Errorf("vcard: %w", err)
			}
		}
	}
	v.store = h.Storage.KV(StoreName)
	v.hashes = make(map[string]string)
	h.AddFeature(NS)
	h.AddAccountFeature(NS)
	h.HandleIQ(module.ToAccount, stanza.Get, NS, "vCard", v.get)
	h.HandleIQ(module.ToAccount, stanza.Set, NS, "vCard", v.set)
	// Before the presence module broadcasts it (priority 0).
	h.Hook(module.PresenceIn, 50, v.stamp)
	h.OnProvisioned(func() error {
		if !v.PEPConversion {
			return nil
		}
		// PEP may be provisioned after this module; it is looked up once all are.
		if v.pep = pep.ForHost(h); v.pep != nil {
			h.AddAccountFeature(NSConversion)
			v.pep.OnChange(NSAvatarMeta, v.avatarPublished)
		}
		return nil
	})
	return nil
}

// Load returns user's stored vCard, or nil when there is none.
func (v *VCard) Load(ctx context.Context, user string) (*stanza.Element, error) {
	b, err := v.store.Get(ctx, user)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	el, err := stanza.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("vcard: stored vCard of %s: %w", user, err)
	}
	return el, nil
}

func (v *VCard) save(ctx context.Context, user string, el *stanza.Element) error {
	data := el.AppendXML(nil, "")
	if v.MaxSize > 0 && int64(len(data)) > v.MaxSize {
		return stanza.NewError("not-acceptable", "the vCard is too large")
	}
	if err := v.store.Set(ctx, user, data); err != nil {
		return err
	}
	v.remember(user, PhotoHash(el))
	return nil
}

func (v *VCard) remember(user, hash string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.hashes[user]; !ok && v.MaxCached > 0 && len(v.hashes) >= v.MaxCached {
		for u := range v.hashes {
			delete(v.hashes, u)
			break
		}
	}
	v.hashes[user] = hash
}

// PhotoHash returns the hex SHA-1 of the vCard's PHOTO/BINVAL (XEP-0153 §4.1), or "" when the
// vCard has no embedded photo.
func PhotoHash(vc *stanza.Element) string {
	_, data := photo(vc)
	if data == nil {
		return ""
	}
	sum := sha1.Sum(data)
	return hex.EncodeToString(sum[:])
}

// photo returns the type and decoded data of the vCard's embedded photo.
func photo(vc *stanza.Element) (typ string, data []byte) {
	if vc == nil {
		return "", nil
	}
	p := vc.Child(NS, "PHOTO")
	if p == nil {
		return "", nil
	}
	bin := p.Child(NS, "BINVAL")
	if bin == nil {
		return "", nil
	}
	data, err := base64.StdEncoding.DecodeString(stripSpace(bin.Text()))
	if err != nil || len(data) == 0 {
		return "", nil
	}
	if t := p.Child(NS, "TYPE"); t != nil {
		typ = strings.TrimSpace(t.Text())
	}
	return typ, data
}

func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}

// Hash returns the photo hash of user's vCard and whether it could be read.
func (v *VCard) Hash(ctx context.Context, user string) (string, bool) {
	v.mu.Lock()
	h, ok := v.hashes[user]
	v.mu.Unlock()
	if ok {
		return h, true
	}
	vc, err := v.Load(ctx, user)
	if err != nil {
		v.h.Log.Error("vcard: reading vCard", "user", user, "err", err)
		return "", false
	}
	h = PhotoHash(vc)
	v.remember(user, h)
	return h, true
}

// get answers a vCard request (XEP-0054 §3.1, §3.3). One's own missing vCard is an empty one;
// another user's is item-not-found, and an account that does not exist service-unavailable.
func (v *VCard) get(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	owner := iq.To.Bare()
	own := owner.Equal(iq.From.Bare())
	if !own && v.h.Accounts != nil {
		ok, err := v.h.Accounts.Exists(ctx, owner.Localpart(), owner.Domainpart())
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, stanza.ErrServiceUnavailable
		}
	}
	vc, err := v.Load(ctx, owner.String())
	if err != nil {
		return nil, err
	}
	if vc == nil {
		if own {
			return stanza.NewElement(NS, "vCard"), nil
		}
		return nil, stanza.ErrItemNotFound
	}
	return vc, nil
}

// set stores the user's own vCard (XEP-0054 §3.2); nobody may set another's.
func (v *VCard) set(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	owner := iq.To.Bare()
	if !owner.Equal(iq.From.Bare()) {
		return nil, stanza.ErrForbidden
	}
	before, _ := v.Hash(ctx, owner.String())
	vc := iq.Payload.Copy()
	if err := v.save(ctx, owner.String(), vc); err != nil {
		return nil, err
	}
	if v.pep != nil {
		if h := PhotoHash(vc); h != before {
			v.toPEP(ctx, owner, iq.From, vc, h)
		}
	}
	return nil, nil
}

// stamp puts the user's photo hash into available presence (XEP-0398 §4, XEP-0153 §4.2):
// presence without an update element, or with one that has no photo, gets the stored hash;
// a photo the client set itself is left alone.
func (v *VCard) stamp(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	if st.Session == nil || st.El.Attr("type") != "" {
		return module.Continue, nil
	}
	x := st.El.Child(NSUpdate, "x")
	if x != nil && x.Child(NSUpdate, "photo") != nil {
		return module.Continue, nil
	}
	hash, ok := v.Hash(ctx, st.From.Bare().String())
	if !ok {
		return module.Continue, nil
	}
	ph := stanza.NewElement(NSUpdate, "photo")
	if hash != "" {
		ph.AddText(hash)
	}
	if x != nil {
		x.AddChild(ph)
	} else {
		st.El.AddChild(stanza.NewElement(NSUpdate, "x").AddChild(ph))
	}
	return module.Continue, nil
}

// avatarPublished copies a XEP-0084 avatar into the vCard (XEP-0398 §3.1): the info element
// without a url names the data item, whose SHA-1 must match its id.
func (v *VCard) avatarPublished(ctx context.Context, owner jid.JID, _ string) {
	user := owner.Bare().String()
	items, _, ok, err := v.pep.Items(ctx, owner, NSAvatarMeta)
	if err != nil || !ok || len(items) == 0 {
		return
	}
	meta := items[len(items)-1].Payload
	var id, typ string
	found := false
	if meta != nil {
		for info := range meta.Elements() {
			if info.Local == "info" && info.Attr("url") == "" {
				id, typ, found = info.Attr("id"), info.Attr("type"), true
				break
			}
		}
	}
	var data []byte
	if found {
		dItems, _, ok, err := v.pep.Items(ctx, owner, NSAvatarData)
		if err != nil || !ok {
			return
		}
		for _, it := range dItems {
			if it.ID == id && it.Payload != nil {
				data, err = base64.StdEncoding.DecodeString(stripSpace(it.Payload.Text()))
				if err != nil {
					return
				}
			}
		}
		sum := sha1.Sum(data)
		if data == nil || hex.EncodeToString(sum[:]) != strings.ToLower(id) {
			v.h.Log.Debug("vcard: avatar data does not match its id", "user", user, "id", id)
			return
		}
	}
	vc, err := v.Load(ctx, user)
	if err != nil {
		v.h.Log.Error("vcard: reading vCard", "user", user, "err", err)
		return
	}
	if vc == nil {
		vc = stanza.NewElement(NS, "vCard")
	}
	// Replace the photo, keeping the rest of the vCard.
	kept := vc.Children[:0:0]
	for _, c := range vc.Children {
		if c.Elem != nil && c.Elem.Space == NS && c.Elem.Local == "PHOTO" {
			continue
		}
		kept = append(kept, c)
	}
	vc.Children = kept
	if data != nil {
		p := stanza.NewElement(NS, "PHOTO")
		if typ != "" {
			p.AddChild(stanza.NewElement(NS, "TYPE").AddText(typ))
		}
		p.AddChild(stanza.NewElement(NS, "BINVAL").AddText(base64.StdEncoding.EncodeToString(data)))
		vc.AddChild(p)
	}
	if err := v.save(ctx, user, vc); err != nil {
		v.h.Log.Info("vcard: storing converted avatar", "user", user, "err", err)
	}
}

// toPEP publishes a photo set through the vCard as a XEP-0084 avatar (XEP-0398 §3.2): the
// data item first, then metadata naming it; a vCard without photo publishes empty metadata,
// which XEP-0084 §4.4 defines as "no avatar".
func (v *VCard) toPEP(ctx context.Context, owner, publisher jid.JID, vc *stanza.Element, hash string) {
	typ, data := photo(vc)
	meta := stanza.NewElement(NSAvatarMeta, "metadata")
	if data != nil {
		if typ == "" {
			typ = "image/png"
		}
		d := stanza.NewElement(NSAvatarData, "data").AddText(base64.StdEncoding.EncodeToString(data))
		if err := v.pep.Apply(ctx, owner, NSAvatarData, nil, []pep.Item{{ID: hash, Payload: d}}, nil, publisher); err != nil {
			v.h.Log.Info("vcard: publishing avatar data", "user", owner.String(), "err", err)
			return
		}
		meta.AddChild(stanza.NewElement(NSAvatarMeta, "info", stanza.Attr{Name: "id", Value: hash},
			stanza.Attr{Name: "bytes", Value: fmt.Sprint(len(data))}, stanza.Attr{Name: "type", Value: typ}))
	} else if _, _, ok, err := v.pep.Items(ctx, owner, NSAvatarMeta); err != nil || !ok {
		return
	}
	id := hash
	if id == "" {
		id = "current"
	}
	if err := v.pep.Apply(ctx, owner, NSAvatarMeta, nil, []pep.Item{{ID: id, Payload: meta}}, nil, publisher); err != nil {
		v.h.Log.Info("vcard: publishing avatar metadata", "user", owner.String(), "err", err)
	}
}

var _ module.Module = (*VCard)(nil)
