package muc

import (
	"context"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/mamquery"
	"impetus/internal/module"
	"impetus/internal/stanza"
)

// message handles a message to the room or to an occupant; r.mu is held.
func (r *Room) message(ctx context.Context, st *module.Stanza) error {
	el := st.El
	typ := el.Attr("type")
	if typ == "error" {
		if !r.occupantError(ctx, st) && st.To.Resourcepart() != "" {
			r.relayErrorToOccupant(st)
		}
		return nil
	}
	if r.locked {
		return stanza.NewError("item-not-found", "the room is locked until its owner configures it")
	}
	if nick := st.To.Resourcepart(); nick != "" {
		return r.private(st, nick)
	}
	o := r.sessions[st.From.String()]
	if typ == "groupchat" {
		if o == nil {
			return stanza.NewError("not-acceptable", "only occupants may send messages to the room")
		}
		return r.groupchat(ctx, o, el)
	}
	if x := el.Child(NSUser, "x"); x != nil {
		if x.Child(NSUser, "invite") != nil {
			return r.invite(ctx, st, o, x)
		}
		if d := x.Child(NSUser, "decline"); d != nil {
			return r.decline(st, d)
		}
	}
	if x := el.Child(NSData, "x"); x != nil && formType(x) == NSRequest {
		return r.voiceRequest(o, x)
	}
	return stanza.NewError("bad-request", "send groupchat messages to the room, or private messages to an occupant")
}

// groupchat broadcasts an occupant's message (§7.4) or subject change (§8.1).
func (r *Room) groupchat(ctx context.Context, o *Occupant, el *stanza.Element) error {
	if o.Role < Participant {
		return stanza.NewError("forbidden", "visitors have no voice in this room")
	}
	subject := el.Child(stanza.NSClient, "subject")
	isSubject := subject != nil && el.Child(stanza.NSClient, "body") == nil
	if isSubject && o.Role != Moderator && !r.cfg.ChangeSubject {
		return stanza.NewError("forbidden", "only moderators may change the subject")
	}
	out := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: r.occJID(o.Nick)}, stanza.Attr{Name: "type", Value: "groupchat"})
	if id := el.Attr("id"); id != "" {
		out.SetAttr("id", id)
	}
	if lang := el.Attr("xml:lang"); lang != "" {
		out.SetAttr("xml:lang", lang)
	}
	for c := range el.Elements() {
		// Ids and claims only the room may make are dropped so nobody can forge them.
		if (c.Space == NSSID && c.Local == "stanza-id" && c.Attr("by") == r.jid.String()) ||
			c.Space == NSModerate0 || c.Space == NSModerate1 || c.Space == NSOccupant || (c.Space == NSUser && c.Local == "x") {
			continue
		}
		out.AddChild(c)
	}
	out.AddChild(occupantIDElement(o.ID))
	now := r.svc.Opts.Now()
	hasBody := el.Child(stanza.NSClient, "body") != nil
	var sid string
	if r.cfg.Archive && (hasBody || isSubject) {
		// XEP-0313 §7.1.2: messages with a body and subject changes are archived.
		sid = newID()
		out.AddChild(mamquery.StanzaID(r.jid.String(), sid))
		if err := r.archiveMessage(ctx, sid, o, out, now); err != nil {
			return err
		}
	}
	if isSubject {
		r.subject = subject.Text()
		r.subjectBy = r.occJID(o.Nick)
		r.subjectAt = now
		r.save(ctx)
	} else if hasBody {
		r.remember(out, sid, now)
	}
	r.broadcast(out)
	return nil
}

// broadcast sends a groupchat message, built once, to every session of every occupant.
func (r *Room) broadcast(el *stanza.Element) {
	for _, o := range r.occupants {
		r.sendTo(o, el)
	}
}

// remember keeps a message for the history sent on join, within the service's bound.
func (r *Room) remember(el *stanza.Element, sid string, at time.Time) {
	n := r.svc.Opts.HistoryLength
	if n <= 0 {
		return
	}
	if len(r.history) >= n {
		r.history = append(r.history[:0:0], r.history[len(r.history)-n+1:]...)
	}
	r.history = append(r.history, histItem{el: el, at: at, id: sid, chars: len(el.AppendXML(nil, stanza.NSClient))})
}

// private relays a private message to an occupant (§7.5).
func (r *Room) private(st *module.Stanza, nick string) error {
	o := r.sessions[st.From.String()]
	if o == nil {
		return stanza.NewError("not-acceptable", "only occupants may send private messages")
	}
	if st.El.Attr("type") == "groupchat" {
		return stanza.NewError("bad-request", "a private message cannot be of type groupchat")
	}
	switch r.cfg.AllowPM {
	case PMNone:
		return stanza.NewError("forbidden", "private messages are disabled in this room")
	case PMModerators:
		if o.Role != Moderator {
			return stanza.NewError("forbidden", "only moderators may send private messages")
		}
	case PMParticipants:
		if o.Role < Participant {
			return stanza.NewError("forbidden", "visitors may not send private messages")
		}
	}
	target := r.occupants[nick]
	if target == nil {
		return stanza.NewError("item-not-found", "no occupant has that nickname")
	}
	out := &stanza.Element{Space: st.El.Space, Local: "message"}
	for _, a := range st.El.Attrs {
		if a.Name != "to" && a.Name != "from" {
			out.Attrs = append(out.Attrs, a)
		}
	}
	out.SetAttr("from", r.occJID(o.Nick))
	for c := range st.El.Elements() {
		if c.Space != NSUser && c.Space != NSOccupant {
			out.AddChild(c)
		}
	}
	out.AddChild(occupantIDElement(o.ID))
	// The muc#user marker tells the recipient's server and clients this came through a room.
	out.AddChild(stanza.NewElement(NSUser, "x"))
	r.sendTo(target, out)
	return nil
}

// relayErrorToOccupant forwards an error reply from an occupant to a private message back to
// the occupant that sent it.
func (r *Room) relayErrorToOccupant(st *module.Stanza) {
	sender := r.sessions[st.From.String()]
	target := r.occupants[st.To.Resourcepart()]
	if sender == nil || target == nil {
		return
	}
	out := st.El.Copy()
	out.SetAttr("from", r.occJID(sender.Nick))
	r.sendTo(target, out)
}

// invite relays mediated invitations (§7.8.2). In a members-only room an admin's or owner's
// invitation makes the invitee a member, so that the invitation can be used.
func (r *Room) invite(ctx context.Context, st *module.Stanza, o *Occupant, x *stanza.Element) error {
	if o == nil {
		return stanza.NewError("not-acceptable", "only occupants may invite")
	}
	aff := r.affOf(o.Bare)
	if !r.cfg.AllowInvites && o.Role != Moderator && aff < Admin {
		return stanza.NewError("forbidden", "only moderators may invite to this room")
	}
	if r.cfg.MembersOnly && !r.cfg.AllowInvites && aff < Admin {
		return stanza.NewError("forbidden", "only admins may invite to this members-only room")
	}
	type invitation struct {
		to     jid.JID
		reason string
	}
	var invs []invitation
	for inv := range x.Elements() {
		if inv.Space != NSUser || inv.Local != "invite" {
			continue
		}
		to, err := jid.Parse(inv.Attr("to"))
		if err != nil {
			return stanza.NewError("jid-malformed", "invalid invitee")
		}
		var reason string
		if rs := inv.Child(NSUser, "reason"); rs != nil {
			reason = rs.Text()
		}
		invs = append(invs, invitation{to, reason})
	}
	changed := false
	for _, inv := range invs {
		if r.cfg.MembersOnly && r.affOf(inv.to.Bare()) < Member {
			if err := r.roomForAffiliation(); err != nil {
				return err
			}
			r.aff[inv.to.Bare().String()] = Member
			changed = true
		}
		out := stanza.NewElement(stanza.NSClient, "message",
			stanza.Attr{Name: "from", Value: r.jid.String()}, stanza.Attr{Name: "to", Value: inv.to.String()},
			stanza.Attr{Name: "id", Value: newID()})
		ux := stanza.NewElement(NSUser, "x")
		ie := stanza.NewElement(NSUser, "invite", stanza.Attr{Name: "from", Value: st.From.Bare().String()})
		if inv.reason != "" {
			ie.AddChild(stanza.NewElement(NSUser, "reason").AddText(inv.reason))
		}
		ux.AddChild(ie)
		if r.cfg.PasswordOn {
			ux.AddChild(stanza.NewElement(NSUser, "password").AddText(r.cfg.Password))
		}
		out.AddChild(ux)
		r.queue(out)
	}
	if changed {
		r.save(ctx)
	}
	return nil
}

// decline relays an invitee's refusal to the inviter (§7.8.2).
func (r *Room) decline(st *module.Stanza, d *stanza.Element) error {
	to, err := jid.Parse(d.Attr("to"))
	if err != nil {
		return stanza.NewError("jid-malformed", "invalid decline addressee")
	}
	out := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: r.jid.String()}, stanza.Attr{Name: "to", Value: to.String()},
		stanza.Attr{Name: "id", Value: newID()})
	de := stanza.NewElement(NSUser, "decline", stanza.Attr{Name: "from", Value: st.From.Bare().String()})
	if rs := d.Child(NSUser, "reason"); rs != nil {
		de.AddChild(stanza.NewElement(NSUser, "reason").AddText(rs.Text()))
	}
	out.AddChild(stanza.NewElement(NSUser, "x").AddChild(de))
	r.queue(out)
	return nil
}

// voiceRequest forwards a visitor's request for voice to the moderators (§7.13), or applies a
// moderator's approval of one (§8.6).
func (r *Room) voiceRequest(o *Occupant, x *stanza.Element) error {
	if o == nil {
		return stanza.NewError("not-acceptable", "only occupants may request voice")
	}
	f := parseForm(x)
	if o.Role == Moderator && x.Attr("type") == "submit" && first(f["muc#request_allow"]) != "" {
		if !formBool(first(f["muc#request_allow"])) {
			return nil
		}
		target := r.occupants[first(f["muc#roomnick"])]
		if target == nil || target.Role != Visitor {
			return nil
		}
		target.Role = Participant
		r.broadcastPresence(target, "", nil, nil, itemInfo{actor: o.Nick}, nil)
		return nil
	}
	if o.Role != Visitor {
		return nil
	}
	form := buildForm("form", "Voice request", []field{
		{Var: "FORM_TYPE", Type: "hidden", Values: []string{NSRequest}},
		{Var: "muc#role", Type: "list-single", Label: "Requested role", Values: []string{"participant"}, Options: []string{"participant"}},
		{Var: "muc#jid", Type: "jid-single", Label: "User ID", Values: []string{o.Bare.String()}},
		{Var: "muc#roomnick", Type: "text-single", Label: "Room nickname", Values: []string{o.Nick}},
		{Var: "muc#request_allow", Type: "boolean", Label: "Grant voice to this person?", Values: []string{"false"}},
	})
	msg := stanza.NewElement(stanza.NSClient, "message", stanza.Attr{Name: "from", Value: r.jid.String()}, stanza.Attr{Name: "id", Value: newID()})
	msg.AddChild(form)
	for _, m := range r.occupants {
		if m.Role == Moderator {
			r.sendTo(m, msg)
		}
	}
	return nil
}
