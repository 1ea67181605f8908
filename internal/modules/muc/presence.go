package muc

import (
	"context"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/stanza"
)

// presence handles available or unavailable presence from a user to room/nick; r.mu is held.
func (r *Room) presence(ctx context.Context, st *module.Stanza, created bool) error {
	nick := st.To.Resourcepart()
	unavailable := st.El.Attr("type") == "unavailable"
	if o := r.sessions[st.From.String()]; o != nil {
		switch {
		case unavailable:
			r.leave(ctx, o, st.From, st.El)
		case o.Nick == nick:
			// A presence update: show and status change for everyone.
			o.pres = presencePayload(st.El)
			r.broadcastPresence(o, "", nil, nil, itemInfo{}, nil)
		default:
			return r.changeNick(o, st)
		}
		return nil
	}
	if unavailable {
		return nil
	}
	return r.join(ctx, st, nick, created)
}

// presencePayload keeps the parts of a user's presence occupants see.
func presencePayload(el *stanza.Element) []stanza.Node {
	var out []stanza.Node
	for _, n := range el.Children {
		if n.Elem == nil || n.Elem.Space == NSMUC || n.Elem.Space == NSUser || n.Elem.Space == NSOccupant {
			continue
		}
		out = append(out, n)
	}
	return out
}

// validNick checks a nickname; jid.Parse already applied the resourcepart profile to it.
func (r *Room) validNick(nick string) error {
	if nick == "" || strings.TrimSpace(nick) == "" {
		return stanza.NewError("jid-malformed", "a nickname is required")
	}
	if max := r.svc.Opts.MaxNickLength; max > 0 && len(nick) > max {
		return stanza.NewError("not-acceptable", "nickname longer than "+strconv.Itoa(max)+" bytes")
	}
	if !utf8.ValidString(nick) {
		return stanza.NewError("jid-malformed", "invalid nickname")
	}
	return nil
}

// join admits a user (XEP-0045 §7.2) or refuses with the error the section gives.
func (r *Room) join(ctx context.Context, st *module.Stanza, nick string, created bool) error {
	if err := r.validNick(nick); err != nil {
		return err
	}
	real := st.From
	bare := real.Bare()
	aff := r.affOf(bare)
	if r.locked && aff != Owner {
		return stanza.NewError("item-not-found", "the room is locked until its owner configures it")
	}
	if aff == Outcast {
		return stanza.NewError("forbidden", "you are banned from this room")
	}
	existing := r.occupants[nick]
	if existing != nil && !existing.Bare.Equal(bare) {
		return stanza.NewError("conflict", "that nickname is taken")
	}
	if holder := r.nickHolder(nick); holder != "" && holder != bare.String() {
		return stanza.NewError("conflict", "that nickname is reserved")
	}
	if r.cfg.MembersOnly && aff < Member {
		return stanza.NewError("registration-required", "the room is members-only")
	}
	if r.cfg.PasswordOn && aff < Admin {
		var given string
		if x := st.El.Child(NSMUC, "x"); x != nil {
			if p := x.Child(NSMUC, "password"); p != nil {
				given = p.Text()
			}
		}
		if given != r.cfg.Password {
			return stanza.NewError("not-authorized", "a password is required")
		}
	}
	if existing == nil && aff < Admin && r.cfg.MaxUsers > 0 && len(r.occupants) >= r.cfg.MaxUsers {
		return stanza.NewError("service-unavailable", "the room is full")
	}
	if existing == nil && aff >= Admin && r.svc.Opts.MaxOccupants > 0 && len(r.occupants) >= r.svc.Opts.MaxOccupants {
		return stanza.NewError("service-unavailable", "the room is full")
	}
	o := existing
	if o == nil {
		o = &Occupant{Nick: nick, Bare: bare, Role: r.defaultRole(aff), ID: r.svc.occupantID(r.jid.String(), bare.String())}
		r.occupants[nick] = o
	}
	o.Sessions = append(o.Sessions, real)
	r.sessions[real.String()] = o
	o.pres = presencePayload(st.El)
	to := real.String()

	// The occupants already there whose presence is broadcast, to the newcomer (§7.2.3).
	for _, other := range r.occupants {
		if other != o && other.shown {
			r.queue(addressed(r.presenceOf(other, "", r.seesJIDs(o), nil, itemInfo{}, nil), to))
		}
	}
	var selfCodes []int
	if r.cfg.Whois == WhoisAnyone {
		selfCodes = append(selfCodes, 100)
	}
	if r.cfg.Archive {
		selfCodes = append(selfCodes, 170)
	}
	if created {
		selfCodes = append(selfCodes, 201)
	}
	if existing == nil {
		r.broadcastPresence(o, "", nil, selfCodes, itemInfo{}, nil)
	} else {
		// Another session of the same occupant: only it learns anything new.
		r.queue(addressed(r.presenceOf(o, "", true, append([]int{110}, selfCodes...), itemInfo{}, nil), to))
	}
	if created && !r.locked {
		// An instant room from a client that does not speak MUC is ready at once.
		r.save(ctx)
	}
	r.sendHistory(st.El.Child(NSMUC, "x"), to)
	r.sendSubject(to)
	return nil
}

// sendHistory sends the discussion history the join asked for (§7.2.15).
func (r *Room) sendHistory(x *stanza.Element, to string) {
	items := r.history
	max := len(items)
	if r.cfg.MaxHistory > 0 && r.cfg.MaxHistory < max {
		items = items[max-r.cfg.MaxHistory:]
	}
	var h *stanza.Element
	if x != nil {
		h = x.Child(NSMUC, "history")
	}
	if h != nil {
		if v := h.Attr("maxstanzas"); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n < len(items) {
				items = items[len(items)-n:]
			}
		}
		if v := h.Attr("seconds"); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				items = since(items, r.svc.Opts.Now().Add(-time.Duration(n)*time.Second))
			}
		}
		if v := h.Attr("since"); v != "" {
			if t, err := time.Parse(time.RFC3339, v); err == nil {
				items = since(items, t)
			}
		}
		if v := h.Attr("maxchars"); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				total, i := 0, len(items)
				for i > 0 && total+items[i-1].chars <= n {
					total += items[i-1].chars
					i--
				}
				items = items[i:]
			}
		}
	}
	for _, it := range items {
		el := &stanza.Element{Space: it.el.Space, Local: it.el.Local, Attrs: it.el.Attrs}
		el.Children = make([]stanza.Node, 0, len(it.el.Children)+1)
		el.Children = append(el.Children, it.el.Children...)
		el.AddChild(stanza.NewElement(stanza.NSDelay, "delay",
			stanza.Attr{Name: "stamp", Value: it.at.UTC().Format("2006-01-02T15:04:05.000Z")},
			stanza.Attr{Name: "from", Value: r.jid.String()}))
		r.queue(addressed(el, to))
	}
}

func since(items []histItem, t time.Time) []histItem {
	for i, it := range items {
		if !it.at.Before(t) {
			return items[i:]
		}
	}
	return nil
}

// sendSubject sends the subject, empty when none was set, which ends the join (§7.2.16).
func (r *Room) sendSubject(to string) {
	from := r.jid.String()
	if r.subjectBy != "" {
		from = r.subjectBy
	}
	m := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: from}, stanza.Attr{Name: "to", Value: to},
		stanza.Attr{Name: "type", Value: "groupchat"}, stanza.Attr{Name: "id", Value: newID()})
	m.AddChild(stanza.NewElement(stanza.NSClient, "subject").AddText(r.subject))
	if !r.subjectAt.IsZero() {
		m.AddChild(stanza.NewElement(stanza.NSDelay, "delay",
			stanza.Attr{Name: "stamp", Value: r.subjectAt.UTC().Format("2006-01-02T15:04:05Z")},
			stanza.Attr{Name: "from", Value: r.jid.String()}))
	}
	r.queue(m)
}

// leave removes one session of o (§7.14); the occupant goes with its last session.
func (r *Room) leave(ctx context.Context, o *Occupant, session jid.JID, el *stanza.Element) {
	r.dropSession(o, session)
	var info itemInfo
	if el != nil {
		o.pres = presencePayload(el)
	}
	if len(o.Sessions) > 0 {
		self := r.presenceOf(o, "unavailable", true, []int{110}, info, nil)
		r.queue(addressed(self, session.String()))
		return
	}
	delete(r.occupants, o.Nick)
	r.broadcastPresence(o, "unavailable", nil, nil, info, nil, session)
	r.afterExit(ctx)
}

// dropSession forgets one session of o.
func (r *Room) dropSession(o *Occupant, session jid.JID) {
	delete(r.sessions, session.String())
	for i, s := range o.Sessions {
		if s.Equal(session) {
			o.Sessions = append(o.Sessions[:i:i], o.Sessions[i+1:]...)
			break
		}
	}
}

// afterExit destroys a temporary room its last occupant left (§10.1.3: a locked room too).
func (r *Room) afterExit(ctx context.Context) {
	if len(r.occupants) > 0 || (r.cfg.Persistent && !r.locked) {
		return
	}
	r.gone = true
	r.history = nil
	if r.cfg.Archive {
		if err := r.svc.archive.Purge(ctx, r.jid.String()); err != nil {
			r.svc.host.Log.Error("muc: purging a temporary room's archive failed", "room", r.jid.String(), "err", err)
		}
	}
}

// changeNick renames an occupant (§7.6): unavailable with 303 under the old nick, then
// available under the new one.
func (r *Room) changeNick(o *Occupant, st *module.Stanza) error {
	nick := st.To.Resourcepart()
	if err := r.validNick(nick); err != nil {
		return err
	}
	if other := r.occupants[nick]; other != nil && other != o {
		return stanza.NewError("conflict", "that nickname is taken")
	}
	if holder := r.nickHolder(nick); holder != "" && holder != o.Bare.String() {
		return stanza.NewError("conflict", "that nickname is reserved")
	}
	r.broadcastPresence(o, "unavailable", []int{303}, nil, itemInfo{nick: nick}, nil)
	delete(r.occupants, o.Nick)
	o.Nick = nick
	o.pres = presencePayload(st.El)
	r.occupants[nick] = o
	r.broadcastPresence(o, "", nil, nil, itemInfo{}, nil)
	return nil
}

// remove takes an occupant out of the room for a kick, ban or affiliation change: everyone,
// the occupant included, gets its unavailable presence with the codes.
func (r *Room) remove(ctx context.Context, o *Occupant, codes []int, info itemInfo) {
	sessions := o.Sessions
	for _, s := range sessions {
		delete(r.sessions, s.String())
	}
	delete(r.occupants, o.Nick)
	o.Role = RoleNone
	o.Sessions = nil
	r.broadcastPresence(o, "unavailable", codes, nil, info, nil, sessions...)
	r.afterExit(ctx)
}

// otherPresence handles presence of other types to the room: an error from an occupant's
// client means its session is gone (§7.2 business rules); the rest is ignored.
func (r *Room) otherPresence(st *module.Stanza) error {
	if st.El.Attr("type") == "error" {
		r.occupantError(context.Background(), st)
	}
	return nil
}

// kickableErrors are the conditions after which a session is taken to be gone from the room.
var kickableErrors = map[string]bool{
	"gone": true, "internal-server-error": true, "item-not-found": true, "jid-malformed": true,
	"recipient-unavailable": true, "redirect": true, "remote-server-not-found": true,
	"remote-server-timeout": true, "service-unavailable": true,
}

// occupantError handles an error an occupant's session sent to the room: a delivery failure
// removes the session (status 333); an error to a private message goes back to its sender.
func (r *Room) occupantError(ctx context.Context, st *module.Stanza) bool {
	o := r.sessions[st.From.String()]
	if o == nil {
		return false
	}
	e := stanza.ParseError(st.El)
	if e != nil && kickableErrors[e.Condition] {
		if len(o.Sessions) > 1 {
			r.dropSession(o, st.From)
			return true
		}
		r.remove(ctx, o, []int{333}, itemInfo{})
		return true
	}
	return false
}
