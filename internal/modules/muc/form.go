package muc

import (
	"context"
	"slices"
	"strconv"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

// field is one XEP-0004 data form field.
type field struct {
	Var, Type, Label string
	Values           []string
	Options          []string
}

// buildForm returns a jabber:x:data form of type typ.
func buildForm(typ, title string, fields []field) *stanza.Element {
	x := stanza.NewElement(NSData, "x", stanza.Attr{Name: "type", Value: typ})
	if title != "" {
		x.AddChild(stanza.NewElement(NSData, "title").AddText(title))
	}
	for _, f := range fields {
		fe := stanza.NewElement(NSData, "field", stanza.Attr{Name: "var", Value: f.Var})
		if f.Type != "" {
			fe.SetAttr("type", f.Type)
		}
		if f.Label != "" {
			fe.SetAttr("label", f.Label)
		}
		for _, v := range f.Values {
			fe.AddChild(stanza.NewElement(NSData, "value").AddText(v))
		}
		for _, o := range f.Options {
			fe.AddChild(stanza.NewElement(NSData, "option", stanza.Attr{Name: "label", Value: o}).
				AddChild(stanza.NewElement(NSData, "value").AddText(o)))
		}
		x.AddChild(fe)
	}
	return x
}

// parseForm returns a submitted form's values by field name.
func parseForm(x *stanza.Element) map[string][]string {
	out := make(map[string][]string)
	for f := range x.Elements() {
		if f.Space != NSData || f.Local != "field" || f.Attr("var") == "" {
			continue
		}
		vals := []string{}
		for v := range f.Elements() {
			if v.Space == NSData && v.Local == "value" {
				vals = append(vals, v.Text())
			}
		}
		out[f.Attr("var")] = vals
	}
	return out
}

// formType returns a form's FORM_TYPE.
func formType(x *stanza.Element) string { return first(parseForm(x)["FORM_TYPE"]) }

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func formBool(s string) bool { return s == "1" || s == "true" }

func boolValue(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// configForm returns the room configuration form (§10.2, §15.5.3).
func (r *Room) configForm() *stanza.Element {
	c := r.cfg
	var owners, admins []string
	for j, a := range r.aff {
		switch a {
		case Owner:
			owners = append(owners, j)
		case Admin:
			admins = append(admins, j)
		}
	}
	slices.Sort(owners)
	slices.Sort(admins)
	maxUsers := []string{"10", "20", "30", "50", "100", "200", "500", "1000"}
	if m := r.svc.Opts.MaxOccupants; m > 0 {
		maxUsers = slices.DeleteFunc(maxUsers, func(v string) bool { n, _ := strconv.Atoi(v); return n > m })
	}
	return buildForm("form", "Configuration of "+r.jid.String(), []field{
		{Var: "FORM_TYPE", Type: "hidden", Values: []string{NSRoomConf}},
		{Var: "muc#roomconfig_roomname", Type: "text-single", Label: "Room name", Values: []string{c.Name}},
		{Var: "muc#roomconfig_roomdesc", Type: "text-single", Label: "Description", Values: []string{c.Description}},
		{Var: "muc#roomconfig_lang", Type: "text-single", Label: "Language of discussion", Values: []string{c.Language}},
		{Var: "muc#roomconfig_persistentroom", Type: "boolean", Label: "Keep the room when it is empty", Values: []string{boolValue(c.Persistent)}},
		{Var: "muc#roomconfig_publicroom", Type: "boolean", Label: "List the room publicly", Values: []string{boolValue(c.Public)}},
		{Var: "muc#roomconfig_membersonly", Type: "boolean", Label: "Members only", Values: []string{boolValue(c.MembersOnly)}},
		{Var: "muc#roomconfig_moderatedroom", Type: "boolean", Label: "Moderated: only participants speak", Values: []string{boolValue(c.Moderated)}},
		{Var: "muc#roomconfig_passwordprotectedroom", Type: "boolean", Label: "Password required to enter", Values: []string{boolValue(c.PasswordOn)}},
		{Var: "muc#roomconfig_roomsecret", Type: "text-private", Label: "Password", Values: []string{c.Password}},
		{Var: "muc#roomconfig_whois", Type: "list-single", Label: "Who may discover real JIDs", Values: []string{c.Whois}, Options: []string{WhoisModerators, WhoisAnyone}},
		{Var: "muc#roomconfig_maxusers", Type: "list-single", Label: "Maximum number of occupants", Values: []string{strconv.Itoa(c.MaxUsers)}, Options: maxUsers},
		{Var: "muc#roomconfig_changesubject", Type: "boolean", Label: "Participants may change the subject", Values: []string{boolValue(c.ChangeSubject)}},
		{Var: "muc#roomconfig_allowinvites", Type: "boolean", Label: "Participants may invite others", Values: []string{boolValue(c.AllowInvites)}},
		{Var: "muc#roomconfig_allowpm", Type: "list-single", Label: "Who may send private messages", Values: []string{c.AllowPM}, Options: []string{PMAnyone, PMParticipants, PMModerators, PMNone}},
		{Var: "muc#roomconfig_enablearchiving", Type: "boolean", Label: "Archive messages (XEP-0313)", Values: []string{boolValue(c.Archive)}},
		{Var: "muc#roomconfig_enablelogging", Type: "boolean", Label: "Log discussions", Values: []string{boolValue(c.Archive)}},
		{Var: "muc#maxhistoryfetch", Type: "text-single", Label: "Most history messages sent on join", Values: []string{strconv.Itoa(r.maxHistory())}},
		{Var: "muc#roomconfig_presencebroadcast", Type: "list-multi", Label: "Roles whose presence is broadcast", Values: c.broadcastRoles(), Options: []string{"moderator", "participant", "visitor"}},
		{Var: "muc#roomconfig_roomowners", Type: "jid-multi", Label: "Room owners", Values: owners},
		{Var: "muc#roomconfig_roomadmins", Type: "jid-multi", Label: "Room admins", Values: admins},
	})
}

// broadcastRoles lists the roles whose presence is broadcast (muc#roomconfig_presencebroadcast).
func (c *RoomConfig) broadcastRoles() []string {
	var out []string
	for _, role := range []Role{Moderator, Participant, Visitor} {
		if c.broadcasts(role) {
			out = append(out, role.String())
		}
	}
	return out
}

// maxHistory is the history a join gets at most.
func (r *Room) maxHistory() int {
	if r.cfg.MaxHistory > 0 && r.cfg.MaxHistory < r.svc.Opts.HistoryLength {
		return r.cfg.MaxHistory
	}
	return r.svc.Opts.HistoryLength
}

// applyConfig applies a submitted configuration form (§10.2) and tells the occupants what
// changed (§10.2.1).
func (r *Room) applyConfig(ctx context.Context, actor *Occupant, x *stanza.Element) error {
	f := parseForm(x)
	if ft := first(f["FORM_TYPE"]); ft != "" && ft != NSRoomConf {
		return stanza.NewError("bad-request", "not a room configuration form")
	}
	c := r.cfg
	str := func(name string, dst *string) {
		if v, ok := f[name]; ok {
			*dst = first(v)
		}
	}
	boolean := func(name string, dst *bool) {
		if v, ok := f[name]; ok {
			*dst = formBool(first(v))
		}
	}
	str("muc#roomconfig_roomname", &c.Name)
	str("muc#roomconfig_roomdesc", &c.Description)
	str("muc#roomconfig_lang", &c.Language)
	boolean("muc#roomconfig_persistentroom", &c.Persistent)
	boolean("muc#roomconfig_publicroom", &c.Public)
	boolean("muc#roomconfig_membersonly", &c.MembersOnly)
	boolean("muc#roomconfig_moderatedroom", &c.Moderated)
	boolean("muc#roomconfig_passwordprotectedroom", &c.PasswordOn)
	str("muc#roomconfig_roomsecret", &c.Password)
	boolean("muc#roomconfig_changesubject", &c.ChangeSubject)
	boolean("muc#roomconfig_allowinvites", &c.AllowInvites)
	boolean("muc#roomconfig_enablelogging", &c.Archive)
	boolean("muc#roomconfig_enablearchiving", &c.Archive)
	if v, ok := f["muc#roomconfig_whois"]; ok {
		switch first(v) {
		case WhoisModerators, WhoisAnyone:
			c.Whois = first(v)
		default:
			return stanza.NewError("not-acceptable", "whois must be moderators or anyone")
		}
	}
	if v, ok := f["muc#roomconfig_allowpm"]; ok {
		switch first(v) {
		case PMAnyone, PMParticipants, PMModerators, PMNone:
			c.AllowPM = first(v)
		default:
			return stanza.NewError("not-acceptable", "invalid allowpm value")
		}
	}
	if v, ok := f["muc#roomconfig_maxusers"]; ok && first(v) != "" {
		n, err := strconv.Atoi(first(v))
		if err != nil || n < 0 {
			return stanza.NewError("not-acceptable", "maxusers must be a number")
		}
		if m := r.svc.Opts.MaxOccupants; n == 0 || (m > 0 && n > m) {
			n = m
		}
		c.MaxUsers = n
	}
	if v, ok := f["muc#maxhistoryfetch"]; ok && first(v) != "" {
		n, err := strconv.Atoi(first(v))
		if err != nil || n < 0 {
			return stanza.NewError("not-acceptable", "maxhistoryfetch must be a number")
		}
		c.MaxHistory = n
	}
	if v, ok := f["muc#roomconfig_presencebroadcast"]; ok {
		quiet := []string{"moderator", "participant", "visitor"}
		for _, s := range v {
			if role, ok := parseRole(s); !ok || role == RoleNone {
				return stanza.NewError("not-acceptable", "presencebroadcast takes moderator, participant and visitor")
			}
			quiet = slices.DeleteFunc(quiet, func(q string) bool { return q == s })
		}
		c.QuietRoles = quiet
		if len(quiet) == 0 {
			c.QuietRoles = nil
		}
	}
	if c.PasswordOn && c.Password == "" {
		return stanza.NewError("not-acceptable", "a password-protected room needs a password")
	}
	// Owner and admin lists in the form replace the current ones.
	newAff := make(map[string]Affiliation, len(r.aff))
	for k, a := range r.aff {
		newAff[k] = a
	}
	for name, aff := range map[string]Affiliation{"muc#roomconfig_roomowners": Owner, "muc#roomconfig_roomadmins": Admin} {
		v, ok := f[name]
		if !ok {
			continue
		}
		listed := map[string]bool{}
		for _, s := range v {
			j, err := jid.Parse(s)
			if err != nil {
				return stanza.NewError("jid-malformed", "invalid JID in "+name)
			}
			listed[j.Bare().String()] = true
		}
		for k, a := range newAff {
			if a == aff && !listed[k] {
				delete(newAff, k)
			}
		}
		for k := range listed {
			if newAff[k] != Owner || aff == Owner {
				newAff[k] = aff
			}
		}
	}
	hasOwner := false
	for _, a := range newAff {
		hasOwner = hasOwner || a == Owner
	}
	if !hasOwner {
		return stanza.NewError("conflict", "a room needs an owner")
	}
	if m := r.svc.Opts.MaxAffiliations; m > 0 && len(newAff) > m {
		return stanza.NewError("resource-constraint", "too many affiliations")
	}
	old := r.cfg
	r.cfg = c
	r.locked = false
	r.setAffiliations(ctx, actor, newAff)
	if !c.Persistent && old.Persistent {
		r.unsave(ctx)
	}
	r.save(ctx)
	r.announceConfig(ctx, old)
	if len(r.occupants) == 0 {
		r.afterExit(ctx)
	}
	return nil
}

// announceConfig sends the status codes of §10.2.1 and applies a switch to members-only.
func (r *Room) announceConfig(ctx context.Context, old RoomConfig) {
	c := r.cfg
	codes := []int{104}
	if c.Archive != old.Archive {
		if c.Archive {
			codes = append(codes, 170)
		} else {
			codes = append(codes, 171)
		}
	}
	if c.Whois != old.Whois {
		if c.Whois == WhoisAnyone {
			codes = append(codes, 172)
		} else {
			codes = append(codes, 173)
		}
	}
	msg := stanza.NewElement(stanza.NSClient, "message",
		stanza.Attr{Name: "from", Value: r.jid.String()}, stanza.Attr{Name: "type", Value: "groupchat"},
		stanza.Attr{Name: "id", Value: newID()})
	x := stanza.NewElement(NSUser, "x")
	for _, code := range codes {
		x.AddChild(statusCode(code))
	}
	msg.AddChild(x)
	r.broadcast(msg)
	// Occupants whose role's broadcast was switched on or off appear or vanish for the others.
	for _, o := range r.occupants {
		if o.shown != c.broadcasts(o.Role) {
			r.broadcastPresence(o, "", nil, nil, itemInfo{}, nil)
		}
	}
	if c.MembersOnly && !old.MembersOnly {
		for _, o := range r.occupants {
			if r.affOf(o.Bare) < Member {
				r.remove(ctx, o, []int{322}, itemInfo{})
			}
		}
	}
}
