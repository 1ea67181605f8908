// Package bookmarks implements the server side of XEP-0402: PEP Native Bookmarks with its
// compatibility with XEP-0048: Bookmarks kept in XEP-0049 private XML storage
// (urn:xmpp:bookmarks:1#compat) and with XEP-0048 bookmarks kept in the PEP node
// storage:bookmarks (urn:xmpp:bookmarks:1#compat-pep). The bookmarks themselves are items of
// the PEP node urn:xmpp:bookmarks:1, one per room, which the pep module stores; this module
// keeps the legacy <storage xmlns='storage:bookmarks'/> document, in private storage and as
// the item "current" of the PEP node storage:bookmarks, in step with them, every way
// (XEP-0402 §5):
//
//   - when a client publishes, retracts or purges bookmarks, the legacy document is rebuilt from
//     the node's items, keeping the URL bookmarks only XEP-0048 knows;
//   - when a legacy client stores the document (in private storage or by publishing it to
//     storage:bookmarks), each changed room is published to the node and each removed room
//     retracted, so modern clients get notifications for those only, and the other legacy
//     copy is rewritten.
//
// Retracting, purging or deleting the storage:bookmarks node changes nothing else: a client
// that drops the legacy node does not mean to drop its bookmarks.
package bookmarks

import (
	"bytes"
	"context"
	"errors"
	"slices"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/modules/pep"
	"impetus/internal/modules/private"
	"impetus/internal/stanza"
)

// Namespaces of XEP-0402 and XEP-0048.
const (
	NS       = "urn:xmpp:bookmarks:1"
	NSCompat = NS + "#compat"
	NSLegacy = "storage:bookmarks"
	// NSCompatPEP announces the unification with XEP-0048 bookmarks in PEP.
	NSCompatPEP = NS + "#compat-pep"
	// legacyItem is the id of the one item of the storage:bookmarks node (XEP-0048 §3.2).
	legacyItem = "current"
)

func init() { module.Register("bookmarks", func() module.Module { return new(Bookmarks) }) }

// Bookmarks is the bookmarks module of one hosted domain. It requires the pep and private
// modules.
type Bookmarks struct {
	h    *module.Host
	pep  *pep.Pep
	priv *private.Private
}

// Provision implements module.Module.
func (b *Bookmarks) Provision(h *module.Host) error {
	b.h = h
	b.pep = pep.ForHost(h)
	b.priv = private.ForHost(h)
	if b.pep == nil || b.priv == nil {
		return errors.New("bookmarks: the pep and private modules must be provisioned first")
	}
	h.AddAccountFeature(NSCompat)
	h.AddAccountFeature(NSCompatPEP)
	b.pep.OnChange(NS, b.fromPEP)
	b.pep.OnChange(NSLegacy, b.fromLegacyPEP)
	b.priv.OnSet(NSLegacy, "storage", b.fromLegacy)
	return nil
}

// publishOptions are the node settings XEP-0402 §3 asks for; the module uses them when it
// creates the node for a legacy client.
func publishOptions() map[string][]string {
	return map[string][]string{
		"pubsub#persist_items":            {"true"},
		"pubsub#max_items":                {"max"},
		"pubsub#send_last_published_item": {"never"},
		"pubsub#access_model":             {"whitelist"},
	}
}

// fromPEP rebuilds the legacy document after a client changed the bookmarks node.
func (b *Bookmarks) fromPEP(ctx context.Context, owner jid.JID, _ string) {
	if err := b.syncLegacy(ctx, owner); err != nil {
		b.h.Log.Error("bookmarks: updating private storage", "user", owner.String(), "err", err)
	}
}

func (b *Bookmarks) syncLegacy(ctx context.Context, owner jid.JID) error {
	items, _, _, err := b.pep.Items(ctx, owner, NS)
	if err != nil {
		return err
	}
	old, err := b.priv.Get(ctx, owner, NSLegacy, "storage")
	if err != nil {
		return err
	}
	doc := stanza.NewElement(NSLegacy, "storage")
	if old != nil {
		// URL bookmarks and anything else that is not a room have no place in XEP-0402.
		for c := range old.Elements() {
			if !(c.Space == NSLegacy && c.Local == "conference") {
				doc.AddChild(c)
			}
		}
	}
	for _, it := range items {
		if it.Payload == nil || it.Payload.Space != NS || it.Payload.Local != "conference" {
			continue
		}
		doc.AddChild(toLegacy(it.ID, it.Payload))
	}
	if err := b.priv.Put(ctx, owner, doc); err != nil {
		return err
	}
	return b.putLegacyPEP(ctx, owner, doc)
}

// legacyPublishOptions are the node settings XEP-0048 §3.2 asks for storage:bookmarks.
func legacyPublishOptions() map[string][]string {
	return map[string][]string{
		"pubsub#persist_items": {"true"},
		"pubsub#access_model":  {"whitelist"},
	}
}

// putLegacyPEP publishes doc as the item of the storage:bookmarks node unless it is already
// there, so clients that follow that node are notified of real changes only.
func (b *Bookmarks) putLegacyPEP(ctx context.Context, owner jid.JID, doc *stanza.Element) error {
	items, _, exists, err := b.pep.Items(ctx, owner, NSLegacy)
	if err != nil {
		return err
	}
	enc := doc.AppendXML(nil, "")
	for _, it := range items {
		if it.ID == legacyItem && it.Payload != nil && bytes.Equal(it.Payload.AppendXML(nil, ""), enc) {
			return nil
		}
	}
	var opts map[string][]string
	if !exists {
		opts = legacyPublishOptions()
	}
	return b.pep.Apply(ctx, owner, NSLegacy, opts, []pep.Item{{ID: legacyItem, Payload: doc}}, nil, owner)
}

// fromLegacyPEP takes a document a client published to the storage:bookmarks node into the
// XEP-0402 node and private storage.
func (b *Bookmarks) fromLegacyPEP(ctx context.Context, owner jid.JID, _ string) {
	items, _, _, err := b.pep.Items(ctx, owner, NSLegacy)
	if err != nil {
		b.h.Log.Error("bookmarks: reading storage:bookmarks", "user", owner.String(), "err", err)
		return
	}
	if len(items) == 0 {
		return
	}
	doc := items[len(items)-1].Payload
	if doc == nil || doc.Space != NSLegacy || doc.Local != "storage" {
		return
	}
	if err := b.toNative(ctx, owner, doc); err != nil {
		b.h.Log.Error("bookmarks: updating the bookmarks node", "user", owner.String(), "err", err)
	}
	if err := b.priv.Put(ctx, owner, doc); err != nil {
		b.h.Log.Error("bookmarks: updating private storage", "user", owner.String(), "err", err)
	}
}

// fromLegacy takes a document a legacy client stored in private storage into the XEP-0402
// node and the storage:bookmarks node.
func (b *Bookmarks) fromLegacy(ctx context.Context, owner jid.JID, doc *stanza.Element) error {
	if err := b.toNative(ctx, owner, doc); err != nil {
		return err
	}
	// The PEP copy is a courtesy to other clients; failing to write it (the account at its
	// node limit) does not refuse the client's store.
	if err := b.putLegacyPEP(ctx, owner, doc); err != nil {
		b.h.Log.Error("bookmarks: updating storage:bookmarks", "user", owner.String(), "err", err)
	}
	return nil
}

// toNative publishes the rooms of a legacy document that differ from the XEP-0402 node's items
// and retracts the rooms it no longer lists.
func (b *Bookmarks) toNative(ctx context.Context, owner jid.JID, doc *stanza.Element) error {
	items, _, exists, err := b.pep.Items(ctx, owner, NS)
	if err != nil {
		return err
	}
	current := map[string][]byte{}
	for _, it := range items {
		if it.Payload != nil {
			current[it.ID] = it.Payload.AppendXML(nil, "")
		}
	}
	var publish []pep.Item
	listed := map[string]bool{}
	for c := range doc.Elements() {
		if c.Space != NSLegacy || c.Local != "conference" {
			continue
		}
		room, err := jid.Parse(c.Attr("jid"))
		if err != nil || room.Localpart() == "" || room.Resourcepart() != "" {
			continue
		}
		id := room.String()
		if listed[id] {
			continue
		}
		listed[id] = true
		pl := fromLegacyConference(c)
		if old, ok := current[id]; ok && bytes.Equal(old, pl.AppendXML(nil, "")) {
			continue
		}
		publish = append(publish, pep.Item{ID: id, Payload: pl})
	}
	var retract []string
	for _, it := range items {
		if !listed[it.ID] {
			retract = append(retract, it.ID)
		}
	}
	slices.Sort(retract)
	if len(publish) == 0 && len(retract) == 0 {
		return nil
	}
	var opts map[string][]string
	if !exists {
		opts = publishOptions()
	}
	return b.pep.Apply(ctx, owner, NS, opts, publish, retract, owner)
}

// toLegacy converts a XEP-0402 item into a XEP-0048 <conference/>.
func toLegacy(id string, c *stanza.Element) *stanza.Element {
	out := stanza.NewElement(NSLegacy, "conference", stanza.Attr{Name: "jid", Value: id})
	if n := c.Attr("name"); n != "" {
		out.SetAttr("name", n)
	}
	if a := c.Attr("autojoin"); a == "true" || a == "1" {
		out.SetAttr("autojoin", "true")
	} else {
		out.SetAttr("autojoin", "false")
	}
	for ch := range c.Elements() {
		switch {
		case ch.Space == NS && (ch.Local == "nick" || ch.Local == "password"):
			out.AddChild(stanza.NewElement(NSLegacy, ch.Local).AddText(ch.Text()))
		case ch.Space == NS && ch.Local == "extensions":
			for e := range ch.Elements() {
				out.AddChild(e)
			}
		}
	}
	return out
}

// fromLegacyConference converts a XEP-0048 <conference/> into a XEP-0402 payload; elements of
// other namespaces travel in <extensions/>.
func fromLegacyConference(c *stanza.Element) *stanza.Element {
	out := stanza.NewElement(NS, "conference")
	if n := c.Attr("name"); n != "" {
		out.SetAttr("name", n)
	}
	if a := c.Attr("autojoin"); a == "true" || a == "1" {
		out.SetAttr("autojoin", "true")
	}
	var ext *stanza.Element
	for ch := range c.Elements() {
		switch {
		case ch.Space == NSLegacy && (ch.Local == "nick" || ch.Local == "password"):
			out.AddChild(stanza.NewElement(NS, ch.Local).AddText(ch.Text()))
		case ch.Space != NSLegacy:
			if ext == nil {
				ext = stanza.NewElement(NS, "extensions")
			}
			ext.AddChild(ch)
		}
	}
	if ext != nil {
		out.AddChild(ext)
	}
	return out
}

var _ module.Module = (*Bookmarks)(nil)
