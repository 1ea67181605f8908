package muc

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"mellium.im/xmpp/jid"
)

// storedRoom is a persistent room as kept in the room store, JSON-encoded.
type storedRoom struct {
	Config       RoomConfig        `json:"config"`
	Affiliations map[string]string `json:"affiliations,omitempty"` // bare JID → owner, admin, member, outcast
	Nicks        map[string]string `json:"nicks,omitempty"`        // bare JID → reserved nickname
	Subject      string            `json:"subject,omitempty"`
	SubjectBy    string            `json:"subject_by,omitempty"`
	SubjectAt    time.Time         `json:"subject_at,omitzero"`
}

// save writes a persistent room's configuration, affiliations and subject; r.mu is held.
// A failure is logged: the room goes on in memory and the next change writes it again.
func (r *Room) save(ctx context.Context) {
	if !r.cfg.Persistent || r.locked || r.gone {
		return
	}
	sr := storedRoom{Config: r.cfg, Subject: r.subject, SubjectBy: r.subjectBy, SubjectAt: r.subjectAt}
	if len(r.aff) > 0 {
		sr.Affiliations = make(map[string]string, len(r.aff))
		for k, a := range r.aff {
			sr.Affiliations[k] = a.String()
		}
	}
	if len(r.nicks) > 0 {
		sr.Nicks = r.nicks
	}
	data, err := json.Marshal(sr)
	if err == nil {
		err = r.svc.store.Set(ctx, r.svc.domain, r.jid.Localpart(), data)
	}
	if err != nil {
		r.svc.host.Log.Error("muc: saving a room failed", "room", r.jid.String(), "err", err)
	}
}

// unsave removes a room from the store.
func (r *Room) unsave(ctx context.Context) {
	if err := r.svc.store.Delete(ctx, r.svc.domain, r.jid.Localpart()); err != nil {
		r.svc.host.Log.Error("muc: deleting a stored room failed", "room", r.jid.String(), "err", err)
	}
}

// load brings back the persistent rooms, with their recent history from the archive.
func (s *Service) load(ctx context.Context) error {
	all, err := s.store.All(ctx, s.domain)
	if err != nil {
		return fmt.Errorf("muc: loading rooms of %s: %w", s.domain, err)
	}
	for name, data := range all {
		if r := s.restore(ctx, name, data); r != nil {
			s.rooms[name] = r
		}
	}
	return nil
}

// restore rebuilds a stored room, or returns nil for a damaged entry.
func (s *Service) restore(ctx context.Context, name string, data []byte) *Room {
	var sr storedRoom
	if err := json.Unmarshal(data, &sr); err != nil {
		s.host.Log.Error("muc: skipping a damaged stored room", "room", name, "err", err)
		return nil
	}
	bare, err := jid.New(name, s.domain, "")
	if err != nil {
		s.host.Log.Error("muc: skipping a stored room with an invalid name", "room", name, "err", err)
		return nil
	}
	sr.Config.normalize(s.Opts.MaxOccupants)
	r := newRoom(s, bare, sr.Config)
	for k, v := range sr.Affiliations {
		if a, ok := parseAffiliation(v); ok && a != AffNone {
			r.aff[k] = a
		}
	}
	for k, n := range sr.Nicks {
		if r.aff[k] >= Member && n != "" {
			r.nicks[k] = n
		}
	}
	r.subject, r.subjectBy, r.subjectAt = sr.Subject, sr.SubjectBy, sr.SubjectAt
	r.loadHistory(ctx)
	return r
}
