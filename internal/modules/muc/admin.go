package muc

import (
	"context"
	"slices"
	"strings"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// change is one item of a muc#admin set, resolved and checked.
type change struct {
	occ    *Occupant // for role changes, and affiliation changes of a present user
	bare   string    // for affiliation changes
	role   Role
	aff    Affiliation
	isRole bool
	reason string
	// nick is the nickname to reserve for the user, or "" to release it, when setNick.
	nick    string
	setNick bool
}

// adminSet applies a muc#admin request (§8, §9, §10): all items are checked before any is
// applied, so a refused request changes nothing.
func (r *Room) adminSet(ctx context.Context, actor *Occupant, actorAff Affiliation, q *stanza.Element) error {
	var changes []change
	claimed := map[string]string{} // nick → bare JID reserving it in this request
	for item := range q.Elements() {
		if item.Space != NSAdmin || item.Local != "item" {
			continue
		}
		var reason string
		if rs := item.Child(NSAdmin, "reason"); rs != nil {
			reason = rs.Text()
		}
		switch {
		case item.Attr("role") != "":
			role, ok := parseRole(item.Attr("role"))
			if !ok {
				return stanza.NewError("bad-request", "unknown role")
			}
			target := r.occupants[item.Attr("nick")]
			if target == nil {
				return stanza.NewError("item-not-found", "no occupant has that nickname")
			}
			if err := r.mayChangeRole(actor, actorAff, target, role); err != nil {
				return err
			}
			changes = append(changes, change{occ: target, role: role, isRole: true, reason: reason})
		case item.Attr("affiliation") != "":
			aff, ok := parseAffiliation(item.Attr("affiliation"))
			if !ok {
				return stanza.NewError("bad-request", "unknown affiliation")
			}
			var bare string
			if v := item.Attr("jid"); v != "" {
				j, err := jid.Parse(v)
				if err != nil {
					return stanza.NewError("jid-malformed", "invalid JID")
				}
				bare = j.Bare().String()
			} else if o := r.occupants[item.Attr("nick")]; o != nil {
				bare = o.Bare.String()
			} else {
				return stanza.NewError("bad-request", "an affiliation change needs a jid")
			}
			if err := r.mayChangeAffiliation(actorAff, bare, aff); err != nil {
				return err
			}
			c := change{bare: bare, aff: aff, reason: reason}
			// With a jid, a nick attribute sets the user's reserved nickname and an empty
			// one releases it (§9.5); outcasts and unaffiliated users hold none.
			if item.Attr("jid") != "" && item.HasAttr("nick") && aff >= Member {
				c.nick, c.setNick = item.Attr("nick"), true
				if c.nick != "" {
					if err := r.checkReservable(c.nick, bare); err != nil {
						return err
					}
					if other, ok := claimed[c.nick]; ok && other != bare {
						return stanza.NewError("conflict", "two users cannot reserve one nickname")
					}
					claimed[c.nick] = bare
				}
			}
			changes = append(changes, c)
		default:
			return stanza.NewError("bad-request", "an item needs a role or an affiliation")
		}
	}
	if len(changes) == 0 {
		return stanza.NewError("bad-request", "no items")
	}
	// The room must keep an owner (§10.5, §10.6).
	next := make(map[string]Affiliation, len(r.aff))
	for k, a := range r.aff {
		next[k] = a
	}
	for _, c := range changes {
		if !c.isRole {
			if c.aff == AffNone {
				delete(next, c.bare)
			} else {
				next[c.bare] = c.aff
			}
		}
	}
	if !slices.Contains(mapsValues(next), Owner) {
		return stanza.NewError("conflict", "a room needs an owner")
	}
	if m := r.svc.Opts.MaxAffiliations; m > 0 && len(next) > m && len(next) > len(r.aff) {
		return stanza.NewError("resource-constraint", "too many affiliations")
	}
	info := itemInfo{}
	if actor != nil {
		info.actor = actor.Nick
	}
	affChanged := false
	for _, c := range changes {
		info.reason = c.reason
		if c.isRole {
			if r.occupants[c.occ.Nick] != c.occ {
				continue // already removed by an earlier item
			}
			if c.role == RoleNone {
				r.remove(ctx, c.occ, []int{307}, info)
				continue
			}
			c.occ.Role = c.role
			r.broadcastPresence(c.occ, "", nil, nil, info, nil)
			continue
		}
		affChanged = true
		r.setAffiliation(ctx, c.bare, c.aff, info, true)
		if c.setNick && c.nick == "" {
			delete(r.nicks, c.bare)
		} else if c.setNick {
			r.nicks[c.bare] = c.nick
		}
	}
	if affChanged {
		r.save(ctx)
	}
	return nil
}

func mapsValues(m map[string]Affiliation) []Affiliation {
	out := make([]Affiliation, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// mayChangeRole applies the rules of §8.4, §8.5, §9.6 and §9.7.
func (r *Room) mayChangeRole(actor *Occupant, actorAff Affiliation, target *Occupant, role Role) error {
	if actor == nil || actor.Role != Moderator {
		if actorAff < Admin {
			return stanza.NewError("forbidden", "only moderators may change roles")
		}
	}
	targetAff := r.affOf(target.Bare)
	switch role {
	case Moderator:
		if actorAff < Admin {
			return stanza.NewError("forbidden", "only admins may grant moderation")
		}
	case RoleNone, Visitor, Participant:
		if targetAff >= Admin || (target.Role == Moderator && actorAff < Admin) {
			return stanza.NewError("not-allowed", "that occupant's role cannot be lowered by you")
		}
		if targetAff > actorAff {
			return stanza.NewError("not-allowed", "that occupant ranks above you")
		}
	}
	return nil
}

// mayChangeAffiliation applies the rules of §9 and §10: admins manage members and outcasts
// below them; owners manage everything.
func (r *Room) mayChangeAffiliation(actorAff Affiliation, bare string, aff Affiliation) error {
	if actorAff < Admin {
		return stanza.NewError("forbidden", "only admins and owners may change affiliations")
	}
	current := AffNone
	if a, ok := r.aff[bare]; ok {
		current = a
	}
	if actorAff == Owner {
		return nil
	}
	if aff >= Admin || current >= Admin {
		return stanza.NewError("not-allowed", "only owners may change admins and owners")
	}
	return nil
}

// setAffiliation records a new affiliation and applies it to the user's occupant, if present.
// A user not in the room is told of a change by a message with status 101 when notify is
// set (§17.1); a user who asked for the change (registration) is not.
func (r *Room) setAffiliation(ctx context.Context, bare string, aff Affiliation, info itemInfo, notify bool) {
	prev, had := r.aff[bare]
	if !had {
		prev = AffNone
	}
	if aff == AffNone {
		delete(r.aff, bare)
	} else {
		r.aff[bare] = aff
	}
	if aff < Member {
		// Banned and unaffiliated users keep no reserved nickname (§9.1).
		delete(r.nicks, bare)
	}
	var o *Occupant
	for _, occ := range r.occupants {
		if occ.Bare.String() == bare {
			o = occ
			break
		}
	}
	if o == nil {
		if notify && prev != aff {
			r.notifyAbsent(bare, aff, info)
		}
		return
	}
	switch {
	case aff == Outcast:
		r.remove(ctx, o, []int{301}, info)
	case r.cfg.MembersOnly && aff < Member:
		r.remove(ctx, o, []int{321}, info)
	default:
		o.Role = r.defaultRole(aff)
		r.broadcastPresence(o, "", nil, nil, info, nil)
	}
}

// setAffiliations replaces the affiliation table (from a configuration form) and applies
// the differences.
func (r *Room) setAffiliations(ctx context.Context, actor *Occupant, next map[string]Affiliation) {
	info := itemInfo{}
	if actor != nil {
		info.actor = actor.Nick
	}
	for k, a := range r.aff {
		if _, ok := next[k]; !ok {
			r.setAffiliation(ctx, k, AffNone, info, true)
		} else if next[k] != a {
			r.setAffiliation(ctx, k, next[k], info, true)
		}
	}
	for k, a := range next {
		if _, ok := r.aff[k]; !ok {
			r.setAffiliation(ctx, k, a, info, true)
		}
	}
}

// notifyAbsent tells a user who is not in the room that their affiliation changed: a
// message from the room to the bare JID with status 101 (§17.1).
func (r *Room) notifyAbsent(bare string, aff Affiliation, info itemInfo) {
	msg := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: r.jid.String()}, stanza.Attr{Name: "to", Value: bare},
		stanza.Attr{Name: "id", Value: newID()})
	msg.AddChild(stanza.NewElement(stanza.NSClient, "body").AddText("Your affiliation with " + r.jid.String() + " is now " + aff.String() + "."))
	item := stanza.NewElement(NSUser, "item", stanza.Attr{Name: "affiliation", Value: aff.String()}, stanza.Attr{Name: "jid", Value: bare})
	if info.actor != "" {
		item.AddChild(stanza.NewElement(NSUser, "actor", stanza.Attr{Name: "nick", Value: info.actor}))
	}
	if info.reason != "" {
		item.AddChild(stanza.NewElement(NSUser, "reason").AddText(info.reason))
	}
	msg.AddChild(stanza.NewElement(NSUser, "x").AddChild(item).AddChild(statusCode(101)))
	r.queue(msg)
}

// roomForAffiliation refuses a new affiliation past the service's bound.
func (r *Room) roomForAffiliation() error {
	if m := r.svc.Opts.MaxAffiliations; m > 0 && len(r.aff) >= m {
		return stanza.NewError("resource-constraint", "too many affiliations")
	}
	return nil
}

// adminGet lists the users with an affiliation or the occupants with a role (§9.5, §8.5,
// §10.5).
func (r *Room) adminGet(actor *Occupant, actorAff Affiliation, q *stanza.Element) (*stanza.Element, error) {
	item := q.Child(NSAdmin, "item")
	if item == nil {
		return nil, stanza.NewError("bad-request", "an item is required")
	}
	res := stanza.NewElement(NSAdmin, "query")
	if v := item.Attr("affiliation"); v != "" {
		aff, ok := parseAffiliation(v)
		if !ok || aff == AffNone {
			return nil, stanza.NewError("bad-request", "unknown affiliation")
		}
		if actorAff < Admin && !(aff == Member && actorAff == Member && r.cfg.MembersOnly) {
			return nil, stanza.NewError("forbidden", "only admins and owners may list affiliations")
		}
		var list []string
		for k, a := range r.aff {
			if a == aff {
				list = append(list, k)
			}
		}
		slices.Sort(list)
		for _, k := range list {
			// Affiliation results carry the reserved nickname and no role (§17.1).
			it := stanza.NewElement(NSAdmin, "item", stanza.Attr{Name: "affiliation", Value: aff.String()}, stanza.Attr{Name: "jid", Value: k})
			if n := r.nicks[k]; n != "" {
				it.SetAttr("nick", n)
			}
			res.AddChild(it)
		}
		return res, nil
	}
	role, ok := parseRole(item.Attr("role"))
	if !ok || role == RoleNone {
		return nil, stanza.NewError("bad-request", "an item needs a role or an affiliation")
	}
	if actor == nil || actor.Role != Moderator {
		return nil, stanza.NewError("forbidden", "only moderators may list roles")
	}
	var nicks []string
	for n, o := range r.occupants {
		if o.Role == role {
			nicks = append(nicks, n)
		}
	}
	slices.SortFunc(nicks, strings.Compare)
	for _, n := range nicks {
		o := r.occupants[n]
		res.AddChild(stanza.NewElement(NSAdmin, "item",
			stanza.Attr{Name: "role", Value: role.String()}, stanza.Attr{Name: "nick", Value: n},
			stanza.Attr{Name: "affiliation", Value: r.affOf(o.Bare).String()},
			stanza.Attr{Name: "jid", Value: o.Sessions[0].String()}))
	}
	return res, nil
}

// destroy ends the room (§10.9): each occupant gets one unavailable presence, its own,
// carrying the destroy element; the stored room and its archive go.
func (r *Room) destroy(ctx context.Context, d *stanza.Element) {
	extra := stanza.NewElement(NSUser, "destroy")
	if d != nil {
		if alt := d.Attr("jid"); alt != "" {
			extra.SetAttr("jid", alt)
		}
		if rs := d.Child(NSOwner, "reason"); rs != nil {
			extra.AddChild(stanza.NewElement(NSUser, "reason").AddText(rs.Text()))
		}
		if pw := d.Child(NSOwner, "password"); pw != nil {
			extra.AddChild(stanza.NewElement(NSUser, "password").AddText(pw.Text()))
		}
	}
	for _, o := range r.occupants {
		sessions := o.Sessions
		o.Role = RoleNone
		p := r.presenceOf(o, "unavailable", false, nil, itemInfo{}, extra)
		for _, s := range sessions {
			r.queue(addressed(p, s.String()))
		}
	}
	r.occupants = map[string]*Occupant{}
	r.sessions = map[string]*Occupant{}
	r.gone = true
	r.history = nil
	r.unsave(ctx)
	if err := r.svc.archive.Purge(ctx, r.jid.String()); err != nil {
		r.svc.host.Log.Error("muc: purging a destroyed room's archive failed", "room", r.jid.String(), "err", err)
	}
}
