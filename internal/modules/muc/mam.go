package muc

import (
	"context"
	"errors"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/mamquery"
	"impetus/internal/module"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// NSMAM is XEP-0313 Message Archive Management.
const NSMAM = mamquery.NS

// archiveMessage stores a broadcast message in the room's archive under its stanza-id. The
// stored copy carries the sender's real JID in a muc#user item, which queries strip for
// requesters who may not see it (XEP-0313 §7.1.2). Its With column is the occupant JID, so a
// 'with' filter names an occupant.
func (r *Room) archiveMessage(ctx context.Context, sid string, o *Occupant, out *stanza.Element, at time.Time) error {
	stored := &stanza.Element{Space: out.Space, Local: out.Local, Attrs: out.Attrs}
	stored.Children = append(stored.Children, out.Children...)
	if o != nil && len(o.Sessions) > 0 {
		stored.AddChild(stanza.NewElement(NSUser, "x").AddChild(stanza.NewElement(NSUser, "item",
			stanza.Attr{Name: "jid", Value: o.Sessions[0].String()})))
	}
	with := r.jid.String()
	if o != nil {
		with = r.occJID(o.Nick)
	}
	_, err := r.svc.archive.Append(ctx, r.jid.String(), storage.Item{ID: sid, With: with, Time: at, Data: stored.AppendXML(nil, "")})
	if err != nil {
		r.svc.host.Log.Error("muc: archiving a message failed", "room", r.jid.String(), "err", err)
		return stanza.ErrInternalServerError
	}
	return nil
}

// mayReadArchive applies XEP-0313 §7.1.2: whoever may enter the room may read its archive.
func (r *Room) mayReadArchive(o *Occupant, aff Affiliation) bool {
	if aff == Outcast {
		return false
	}
	if o != nil || aff >= Member {
		return true
	}
	return !r.cfg.MembersOnly && !r.cfg.PasswordOn
}

// archiveQuerier is the shared XEP-0313 query engine over the room archives. The With column
// holds occupant JIDs, matched exactly.
func (s *Service) archiveQuerier() *mamquery.Archive {
	return &mamquery.Archive{
		Store:  s.archive,
		Limits: mamquery.Limits{DefaultMax: s.Opts.ArchivePageSize, MaxMax: s.Opts.ArchiveMaxPage},
		Peer:   func(with jid.JID) (string, func(storage.Item) bool) { return with.String(), nil },
	}
}

// mamQuery answers a XEP-0313 query or form request on the room; r.mu is held.
func (r *Room) mamQuery(ctx context.Context, st *module.Stanza, o *Occupant, aff Affiliation, q *stanza.Element) error {
	if !r.cfg.Archive {
		return stanza.ErrServiceUnavailable
	}
	if !r.mayReadArchive(o, aff) {
		return stanza.NewError("forbidden", "you may not read this room's archive")
	}
	if st.El.Attr("type") == stanza.Get {
		r.reply(st.El, mamquery.Form())
		return nil
	}
	req, err := mamquery.Parse(q, mamquery.Limits{DefaultMax: r.svc.Opts.ArchivePageSize, MaxMax: r.svc.Opts.ArchiveMaxPage})
	if err != nil {
		return err
	}
	page, err := r.svc.archiveQuerier().Query(ctx, r.jid.String(), req)
	if err != nil {
		return err
	}
	seesJIDs := r.cfg.Whois == WhoisAnyone || (o != nil && o.Role == Moderator) || aff >= Admin
	to := st.From.String()
	for _, it := range page.Items {
		m, err := mamquery.ResultMessage(r.jid.String(), to, req.QueryID, it)
		if err != nil {
			continue
		}
		if !seesJIDs {
			if fwd := m.FirstElement().FirstElement(); fwd != nil {
				if orig := fwd.Child(stanza.NSClient, "message"); orig != nil {
					stripUserX(orig)
				}
			}
		}
		m.SetAttr("id", newID())
		r.queue(m)
	}
	r.reply(st.El, mamquery.Fin(page))
	return nil
}

// mamMetadata answers XEP-0313's archive metadata request on the room; r.mu is held.
func (r *Room) mamMetadata(ctx context.Context, st *module.Stanza, o *Occupant, aff Affiliation) error {
	if !r.cfg.Archive {
		return stanza.ErrServiceUnavailable
	}
	if !r.mayReadArchive(o, aff) {
		return stanza.NewError("forbidden", "you may not read this room's archive")
	}
	md, err := r.svc.archiveQuerier().Metadata(ctx, r.jid.String())
	if err != nil {
		return err
	}
	r.reply(st.El, md)
	return nil
}

// stripUserX removes muc#user payloads from a message.
func stripUserX(m *stanza.Element) {
	kept := m.Children[:0:0]
	for _, n := range m.Children {
		if n.Elem != nil && n.Elem.Space == NSUser && n.Elem.Local == "x" {
			continue
		}
		kept = append(kept, n)
	}
	m.Children = kept
}

// loadHistory fills the join history from the archive of a room loaded at start-up.
func (r *Room) loadHistory(ctx context.Context) {
	n := r.svc.Opts.HistoryLength
	if n <= 0 || !r.cfg.Archive {
		return
	}
	items, _, err := r.svc.archive.Query(ctx, r.jid.String(), storage.Query{Limit: n, Last: true})
	if err != nil {
		r.svc.host.Log.Error("muc: loading room history failed", "room", r.jid.String(), "err", err)
		return
	}
	for _, it := range items {
		el, err := stanza.Parse(it.Data)
		if err != nil || el.Child(stanza.NSClient, "body") == nil {
			continue
		}
		el.Space = stanza.NSClient
		stripUserX(el)
		r.remember(el, it.ID, it.Time)
	}
}

// moderate retracts an archived message on a moderator's request (XEP-0425): the archive keeps
// a tombstone, the history forgets the message and every occupant is told. version 0 is the
// apply-to form of XEP-0425 0.2, version 1 the moderate form of 0.3.
func (r *Room) moderate(ctx context.Context, st *module.Stanza, o *Occupant, id string, m *stanza.Element, version int) error {
	if o == nil || o.Role != Moderator {
		return stanza.NewError("forbidden", "only moderators may moderate messages")
	}
	retract := NSRetract0
	if version == 1 {
		retract = NSRetract1
	}
	if m.Child(retract, "retract") == nil {
		return stanza.NewError("feature-not-implemented", "only retraction is supported")
	}
	if id == "" || !r.cfg.Archive {
		return stanza.NewError("item-not-found", "no such message")
	}
	var reason string
	if rs := m.Child("", "reason"); rs != nil {
		reason = rs.Text()
	}
	room := r.jid.String()
	item, err := r.svc.archive.Get(ctx, room, id)
	if errors.Is(err, storage.ErrNotFound) {
		return stanza.NewError("item-not-found", "no such message")
	}
	if err != nil {
		return err
	}
	orig, err := stanza.Parse(item.Data)
	if err != nil {
		return err
	}
	by := r.occJID(o.Nick)
	now := r.svc.Opts.Now()
	// The tombstone keeps the envelope and the ids, and says who retracted it and when.
	tomb := &stanza.Element{Space: stanza.NSClient, Local: "message", Attrs: orig.Attrs}
	for c := range orig.Elements() {
		if c.Space == NSSID || c.Space == NSOccupant || (c.Space == NSUser && c.Local == "x") {
			tomb.AddChild(c)
		}
	}
	stamp := mamquery.Stamp(now)
	mod0 := stanza.NewElement(NSModerate0, "moderated", stanza.Attr{Name: "by", Value: by})
	mod0.AddChild(occupantIDElement(o.ID))
	mod0.AddChild(stanza.NewElement(NSRetract0, "retracted", stanza.Attr{Name: "stamp", Value: stamp}))
	if reason != "" {
		mod0.AddChild(stanza.NewElement(NSModerate0, "reason").AddText(reason))
	}
	ret1 := stanza.NewElement(NSRetract1, "retracted", stanza.Attr{Name: "stamp", Value: stamp})
	ret1.AddChild(stanza.NewElement(NSModerate1, "moderated", stanza.Attr{Name: "by", Value: by}).AddChild(occupantIDElement(o.ID)))
	if reason != "" {
		ret1.AddChild(stanza.NewElement(NSRetract1, "reason").AddText(reason))
	}
	tomb.AddChild(mod0).AddChild(ret1)
	// The archive has no update: the tombstone replaces the item under the same id and time.
	if err := r.svc.archive.Delete(ctx, room, id); err != nil {
		return err
	}
	item.Data = tomb.AppendXML(nil, "")
	if _, err := r.svc.archive.Append(ctx, room, item); err != nil {
		return err
	}
	for i, h := range r.history {
		if h.id == id {
			r.history = append(r.history[:i:i], r.history[i+1:]...)
			break
		}
	}
	// One notice in both versions' forms, archived too so that catching-up clients apply it.
	notice := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: room}, stanza.Attr{Name: "type", Value: "groupchat"},
		stanza.Attr{Name: "id", Value: newID()})
	apply := stanza.NewElement(NSFasten, "apply-to", stanza.Attr{Name: "id", Value: id})
	n0 := stanza.NewElement(NSModerate0, "moderated", stanza.Attr{Name: "by", Value: by})
	n0.AddChild(occupantIDElement(o.ID))
	n0.AddChild(stanza.NewElement(NSRetract0, "retract"))
	if reason != "" {
		n0.AddChild(stanza.NewElement(NSModerate0, "reason").AddText(reason))
	}
	notice.AddChild(apply.AddChild(n0))
	n1 := stanza.NewElement(NSRetract1, "retract", stanza.Attr{Name: "id", Value: id})
	n1.AddChild(stanza.NewElement(NSModerate1, "moderated", stanza.Attr{Name: "by", Value: by}).AddChild(occupantIDElement(o.ID)))
	if reason != "" {
		n1.AddChild(stanza.NewElement(NSRetract1, "reason").AddText(reason))
	}
	notice.AddChild(n1)
	sid := newID()
	notice.AddChild(mamquery.StanzaID(room, sid))
	if err := r.archiveMessage(ctx, sid, nil, notice, now); err != nil {
		return err
	}
	r.reply(st.El, nil)
	r.broadcast(notice)
	return nil
}

// sweepBatch bounds the items one storage call of the expiry sweep deletes.
const sweepBatch = 500

// sweepLoop removes expired messages from the room archives, once at start and then at a
// tenth of the expiry, at least every minute and at most every hour.
func (s *Service) sweepLoop() {
	defer close(s.done)
	every := min(max(s.Opts.ArchiveExpiry/10, time.Minute), time.Hour)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.Sweep(context.Background())
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// Sweep removes the archived messages older than the archive expiry from every room, and from
// the history rooms send on join. Rooms are swept one by one in batches, so a large archive
// never holds a room's lock or one transaction for long.
func (s *Service) Sweep(ctx context.Context) {
	if s.Opts.ArchiveExpiry <= 0 {
		return
	}
	cutoff := s.Opts.Now().Add(-s.Opts.ArchiveExpiry)
	s.mu.Lock()
	rooms := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	for _, r := range rooms {
		r.mu.Lock()
		r.history = since(r.history, cutoff)
		room := r.jid.String()
		r.mu.Unlock()
		for {
			// The range end is inclusive; a message exactly at the cutoff goes one sweep later.
			items, _, err := s.archive.Query(ctx, room, storage.Query{End: cutoff.Add(-time.Microsecond), Limit: sweepBatch})
			if err != nil {
				s.host.Log.Error("muc: archive expiry failed", "room", room, "err", err)
				break
			}
			if len(items) == 0 {
				break
			}
			ids := make([]string, len(items))
			for i, it := range items {
				ids[i] = it.ID
			}
			if err := s.archive.Delete(ctx, room, ids...); err != nil {
				s.host.Log.Error("muc: archive expiry failed", "room", room, "err", err)
				break
			}
			if len(items) < sweepBatch {
				break
			}
		}
	}
}
