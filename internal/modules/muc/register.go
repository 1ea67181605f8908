package muc

import (
	"context"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// nickHolder returns the bare JID that reserved nick, or "". The reservations are bounded by
// the room's affiliations (MaxAffiliations), so a scan is cheap next to a join's broadcast.
func (r *Room) nickHolder(nick string) string {
	for bare, n := range r.nicks {
		if n == nick {
			return bare
		}
	}
	return ""
}

// nickInUse reports whether an occupant other than the user with the bare JID holds nick.
func (r *Room) nickInUse(nick, bare string) bool {
	o := r.occupants[nick]
	return o != nil && o.Bare.String() != bare
}

// mayRegister applies the registration policy (XEP-0045 §7.10): the service must allow it,
// outcasts may not, and in a members-only room only users already affiliated may (to reserve
// a nickname), since registering would otherwise make anyone a member.
func (r *Room) mayRegister(aff Affiliation) error {
	if !r.svc.Opts.Registration {
		return stanza.ErrServiceUnavailable
	}
	if aff == Outcast || (r.cfg.MembersOnly && aff < Member) {
		return stanza.NewError("not-allowed", "you may not register with this room")
	}
	return nil
}

// register handles a jabber:iq:register request to the room (§7.10); r.mu is held.
func (r *Room) register(ctx context.Context, req *stanza.Element, from jid.JID, q *stanza.Element) error {
	bare := from.Bare().String()
	aff := r.affOf(from.Bare())
	if err := r.mayRegister(aff); err != nil {
		return err
	}
	if req.Attr("type") == stanza.Get {
		res := stanza.NewElement(NSRegister, "query")
		if nick := r.nicks[bare]; nick != "" {
			res.AddChild(stanza.NewElement(NSRegister, "registered"))
			res.AddChild(stanza.NewElement(NSRegister, "username").AddText(nick))
			r.reply(req, res)
			return nil
		}
		res.AddChild(stanza.NewElement(NSRegister, "instructions").AddText("Choose the nickname to reserve in " + r.jid.String() + "."))
		form := buildForm("form", "Registration with "+r.jid.String(), []field{
			{Var: "FORM_TYPE", Type: "hidden", Values: []string{NSRegForm}},
			{Var: "muc#register_roomnick", Type: "text-single", Label: "Desired nickname"},
		})
		for f := range form.Elements() {
			if f.Attr("var") == "muc#register_roomnick" {
				f.AddChild(stanza.NewElement(NSData, "required"))
			}
		}
		r.reply(req, res.AddChild(form))
		return nil
	}
	if q.Child(NSRegister, "remove") != nil {
		// Cancelling the registration (XEP-0077 §3.2) gives up the nickname, and the
		// membership it brought; admins and owners keep their affiliation.
		if r.nicks[bare] == "" && aff != Member {
			return stanza.NewError("item-not-found", "you are not registered with this room")
		}
		delete(r.nicks, bare)
		if aff == Member {
			r.setAffiliation(ctx, bare, AffNone, itemInfo{}, false)
		}
		r.save(ctx)
		r.reply(req, nil)
		return nil
	}
	x := q.Child(NSData, "x")
	if x == nil {
		return stanza.NewError("bad-request", "a registration form is required")
	}
	switch x.Attr("type") {
	case "cancel":
		r.reply(req, nil)
		return nil
	case "submit":
	default:
		return stanza.NewError("bad-request", "expected a submitted form")
	}
	f := parseForm(x)
	if ft := first(f["FORM_TYPE"]); ft != "" && ft != NSRegForm {
		return stanza.NewError("bad-request", "not a room registration form")
	}
	nick := first(f["muc#register_roomnick"])
	if nick == "" {
		return stanza.NewError("bad-request", "muc#register_roomnick is required")
	}
	if err := r.checkReservable(nick, bare); err != nil {
		return err
	}
	if aff == AffNone {
		if err := r.roomForAffiliation(); err != nil {
			return err
		}
	}
	r.nicks[bare] = nick
	if aff == AffNone {
		r.setAffiliation(ctx, bare, Member, itemInfo{}, false)
	}
	r.save(ctx)
	r.reply(req, nil)
	return nil
}

// checkReservable checks that the user with the bare JID may reserve nick: a valid nickname
// that nobody else reserved or uses in the room.
func (r *Room) checkReservable(nick, bare string) error {
	if j, err := jid.New("x", "x", nick); err != nil || j.Resourcepart() != nick {
		return stanza.NewError("not-acceptable", "invalid nickname")
	}
	if err := r.validNick(nick); err != nil {
		return err
	}
	if holder := r.nickHolder(nick); (holder != "" && holder != bare) || r.nickInUse(nick, bare) {
		return stanza.NewError("conflict", "that nickname is reserved or in use")
	}
	return nil
}

// reservedNick answers the disco#info request on node x-roomuser-item (§7.12): the
// requester's reserved nickname as an identity, or an empty query.
func (r *Room) reservedNick(bare string) *stanza.Element {
	res := stanza.NewElement(NSDiscoInfo, "query", stanza.Attr{Name: "node", Value: "x-roomuser-item"})
	if nick := r.nicks[bare]; nick != "" {
		res.AddChild(identity("conference", "text", nick))
	}
	return res
}
