package muc

import (
	"context"
	"strconv"

	"impetus/internal/mamquery"
	"impetus/internal/module"
	"impetus/internal/stanza"
)

// iq handles an iq to the room or to an occupant; r.mu is held.
func (r *Room) iq(ctx context.Context, st *module.Stanza) error {
	el := st.El
	typ := el.Attr("type")
	nick := st.To.Resourcepart()
	if typ == stanza.Result || typ == stanza.ErrorType {
		if nick != "" {
			r.relayResponse(st)
		}
		return nil
	}
	payload := el.FirstElement()
	if nick != "" {
		return r.occupantIQ(st, nick, payload)
	}
	o := r.sessions[st.From.String()]
	aff := r.affOf(st.From.Bare())
	if r.locked && aff != Owner {
		return stanza.NewError("item-not-found", "no such room")
	}
	get := typ == stanza.Get
	switch payload.Space {
	case NSDiscoInfo:
		if get && payload.Local == "query" {
			if payload.Attr("node") == "x-roomuser-item" {
				r.reply(el, r.reservedNick(st.From.Bare().String()))
				return nil
			}
			r.reply(el, r.discoInfo(payload))
			return nil
		}
	case NSDiscoItem:
		if get && payload.Local == "query" {
			r.reply(el, r.discoItems(o, payload))
			return nil
		}
	case NSRegister:
		if payload.Local == "query" {
			return r.register(ctx, el, st.From, payload)
		}
	case NSPing:
		if get && payload.Local == "ping" {
			r.reply(el, nil)
			return nil
		}
	case NSAdmin:
		if payload.Local != "query" {
			break
		}
		if get {
			res, err := r.adminGet(o, aff, payload)
			if err != nil {
				return err
			}
			r.reply(el, res)
			return nil
		}
		if err := r.adminSet(ctx, o, aff, payload); err != nil {
			return err
		}
		r.reply(el, nil)
		return nil
	case NSOwner:
		if payload.Local != "query" {
			break
		}
		if aff != Owner {
			return stanza.NewError("forbidden", "only owners may configure the room")
		}
		if get {
			r.reply(el, stanza.NewElement(NSOwner, "query").AddChild(r.configForm()))
			return nil
		}
		if d := payload.Child(NSOwner, "destroy"); d != nil {
			r.reply(el, nil)
			r.destroy(ctx, d)
			return nil
		}
		x := payload.Child(NSData, "x")
		if x == nil {
			return stanza.NewError("bad-request", "expected a form or destroy")
		}
		switch x.Attr("type") {
		case "cancel":
			r.reply(el, nil)
			if r.locked {
				// Cancelling the initial configuration destroys the new room (§10.1.3).
				r.destroy(ctx, nil)
			}
			return nil
		case "submit":
			if err := r.applyConfig(ctx, o, x); err != nil {
				return err
			}
			r.reply(el, nil)
			return nil
		}
		return stanza.NewError("bad-request", "expected a submitted or cancelled form")
	case NSMAM:
		if payload.Local == "query" {
			return r.mamQuery(ctx, st, o, aff, payload)
		}
		if get && payload.Local == "metadata" {
			return r.mamMetadata(ctx, st, o, aff)
		}
	case NSFasten:
		if !get && payload.Local == "apply-to" {
			if m := payload.Child(NSModerate0, "moderate"); m != nil {
				return r.moderate(ctx, st, o, payload.Attr("id"), m, 0)
			}
		}
	case NSModerate1:
		if !get && payload.Local == "moderate" {
			return r.moderate(ctx, st, o, payload.Attr("id"), payload, 1)
		}
	}
	return stanza.ErrServiceUnavailable
}

// reply queues the result of an iq request; r.mu is held.
func (r *Room) reply(req *stanza.Element, payload *stanza.Element) {
	r.queue(stanza.ResultReply(req, payload))
}

// discoInfo answers disco#info on the room (§6.4); the reserved-nick query (§7.12) is
// answered by reservedNick.
func (r *Room) discoInfo(q *stanza.Element) *stanza.Element {
	res := stanza.NewElement(NSDiscoInfo, "query")
	if q.Attr("node") != "" {
		return res
	}
	c := r.cfg
	name := c.Name
	if name == "" {
		name = r.jid.Localpart()
	}
	res.AddChild(identity("conference", "text", name))
	features := []string{NSDiscoInfo, NSDiscoItem, NSMUC, NSStable, NSSelfPing, NSPing, NSOccupant}
	pick := func(b bool, yes, no string) {
		if b {
			features = append(features, yes)
		} else {
			features = append(features, no)
		}
	}
	pick(c.Persistent, "muc_persistent", "muc_temporary")
	pick(c.Public, "muc_public", "muc_hidden")
	pick(c.MembersOnly, "muc_membersonly", "muc_open")
	pick(c.Moderated, "muc_moderated", "muc_unmoderated")
	pick(c.Whois == WhoisAnyone, "muc_nonanonymous", "muc_semianonymous")
	pick(c.PasswordOn, "muc_passwordprotected", "muc_unsecured")
	if r.svc.Opts.Registration {
		features = append(features, NSRegister)
	}
	if c.Archive {
		features = append(features, NSMAM, mamquery.NSExtended, NSSID, NSModerate0, NSModerate1)
	}
	for _, f := range features {
		res.AddChild(feature(f))
	}
	res.AddChild(buildForm("result", "", []field{
		{Var: "FORM_TYPE", Type: "hidden", Values: []string{NSRoomInfo}},
		{Var: "muc#roomconfig_roomname", Label: "Name", Values: []string{c.Name}},
		{Var: "muc#roominfo_description", Label: "Description", Values: []string{c.Description}},
		{Var: "muc#roominfo_subject", Label: "Subject", Values: []string{r.subject}},
		{Var: "muc#roominfo_occupants", Label: "Number of occupants", Values: []string{strconv.Itoa(len(r.occupants))}},
		{Var: "muc#roominfo_lang", Label: "Language of discussion", Values: []string{c.Language}},
		{Var: "muc#roomconfig_changesubject", Type: "boolean", Label: "Occupants may change the subject", Values: []string{boolValue(c.ChangeSubject)}},
		{Var: "muc#roomconfig_allowinvites", Type: "boolean", Label: "Occupants may invite others", Values: []string{boolValue(c.AllowInvites)}},
		{Var: "muc#maxhistoryfetch", Label: "Most history messages sent on join", Values: []string{strconv.Itoa(r.maxHistory())}},
	}))
	return res
}

// discoItems lists the occupants' room JIDs to occupants (§6.5); others get no list, so a
// semi-anonymous room does not reveal who is in it.
func (r *Room) discoItems(o *Occupant, q *stanza.Element) *stanza.Element {
	res := stanza.NewElement(NSDiscoItem, "query")
	if o == nil || q.Attr("node") != "" {
		return res
	}
	for n := range r.occupants {
		res.AddChild(stanza.NewElement(NSDiscoItem, "item", stanza.Attr{Name: "jid", Value: r.occJID(n)}, stanza.Attr{Name: "name", Value: n}))
	}
	return res
}

// occupantIQ handles an iq to room/nick: a self-ping is answered here (XEP-0410), anything
// else is relayed to the occupant (§7.5 business rules), a vCard request to its bare JID.
func (r *Room) occupantIQ(st *module.Stanza, nick string, payload *stanza.Element) error {
	from := r.sessions[st.From.String()]
	if from == nil {
		return stanza.NewError("not-acceptable", "you are not an occupant of this room")
	}
	if from.Nick == nick && payload.Space == NSPing && payload.Local == "ping" && st.El.Attr("type") == stanza.Get {
		r.reply(st.El, nil)
		return nil
	}
	target := r.occupants[nick]
	if target == nil {
		return stanza.NewError("item-not-found", "no occupant has that nickname")
	}
	to := target.Sessions[len(target.Sessions)-1].String()
	if payload.Space == NSVCard {
		to = target.Bare.String()
	}
	id := newID()
	r.track(id, pending{requester: st.From, id: st.El.Attr("id"), from: r.occJID(nick), responder: to})
	out := &stanza.Element{Space: st.El.Space, Local: "iq", Children: st.El.Children}
	out.Attrs = []stanza.Attr{{Name: "type", Value: st.El.Attr("type")}, {Name: "id", Value: id},
		{Name: "from", Value: r.occJID(from.Nick)}, {Name: "to", Value: to}}
	r.queue(out)
	return nil
}

// relayResponse forwards an occupant's response to a relayed iq to the requester.
func (r *Room) relayResponse(st *module.Stanza) {
	p, ok := r.pendings[st.El.Attr("id")]
	if !ok || (st.From.String() != p.responder && st.From.Bare().String() != p.responder) {
		return
	}
	delete(r.pendings, st.El.Attr("id"))
	out := &stanza.Element{Space: st.El.Space, Local: "iq", Children: st.El.Children}
	out.Attrs = []stanza.Attr{{Name: "type", Value: st.El.Attr("type")}, {Name: "id", Value: p.id},
		{Name: "from", Value: p.from}, {Name: "to", Value: p.requester.String()}}
	r.queue(out)
}

// track remembers a relayed request. Past the bound the oldest is forgotten: its response,
// if one ever comes, is dropped.
func (r *Room) track(id string, p pending) {
	bound := max(r.svc.Opts.MaxPending, 1)
	for len(r.pendings) >= bound && len(r.pendingOrder) > 0 {
		delete(r.pendings, r.pendingOrder[0])
		r.pendingOrder = r.pendingOrder[1:]
	}
	if len(r.pendingOrder) > 2*bound {
		// Answered requests leave their ids behind; keep only the live ones.
		live := make([]string, 0, len(r.pendings))
		for _, k := range r.pendingOrder {
			if _, ok := r.pendings[k]; ok {
				live = append(live, k)
			}
		}
		r.pendingOrder = live
	}
	r.pendings[id] = p
	r.pendingOrder = append(r.pendingOrder, id)
}
