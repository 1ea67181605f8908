package muc

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/router"
	"impetus/internal/stanza"
)

// Whois and private-message settings (muc#roomconfig_whois, muc#roomconfig_allowpm).
const (
	WhoisModerators = "moderators"
	WhoisAnyone     = "anyone"

	PMAnyone       = "anyone"
	PMParticipants = "participants"
	PMModerators   = "moderators"
	PMNone         = "none"
)

// RoomConfig is a room's configuration (XEP-0045 §15.5.3, muc#roomconfig).
type RoomConfig struct {
	Name          string `json:"name,omitempty"`
	Description   string `json:"description,omitempty"`
	Language      string `json:"lang,omitempty"`
	Persistent    bool   `json:"persistent,omitempty"`
	Public        bool   `json:"public,omitempty"`
	MembersOnly   bool   `json:"members_only,omitempty"`
	Moderated     bool   `json:"moderated,omitempty"`
	Password      string `json:"password,omitempty"`
	PasswordOn    bool   `json:"password_protected,omitempty"`
	Whois         string `json:"whois,omitempty"`
	MaxUsers      int    `json:"max_users,omitempty"`
	ChangeSubject bool   `json:"change_subject,omitempty"`
	AllowInvites  bool   `json:"allow_invites,omitempty"`
	AllowPM       string `json:"allow_pm,omitempty"`
	Archive       bool   `json:"archive,omitempty"`
	// MaxHistory bounds the history sent on join (muc#maxhistoryfetch); 0 means the service's.
	MaxHistory int `json:"max_history,omitempty"`
	// QuietRoles are the roles whose presence is not broadcast to the other occupants
	// (the complement of muc#roomconfig_presencebroadcast), so that the zero value, and a
	// room stored before the setting existed, broadcast every role.
	QuietRoles []string `json:"quiet_roles,omitempty"`
}

// broadcasts reports whether the presence of an occupant with the role goes to the others.
func (c *RoomConfig) broadcasts(role Role) bool { return !slices.Contains(c.QuietRoles, role.String()) }

// normalize replaces unknown values with safe ones and caps maxusers at the service bound.
func (c *RoomConfig) normalize(maxOccupants int) {
	if c.Whois != WhoisAnyone {
		c.Whois = WhoisModerators
	}
	switch c.AllowPM {
	case PMAnyone, PMParticipants, PMModerators, PMNone:
	default:
		c.AllowPM = PMAnyone
	}
	if c.MaxUsers <= 0 || (maxOccupants > 0 && c.MaxUsers > maxOccupants) {
		c.MaxUsers = maxOccupants
	}
	if c.MaxHistory < 0 {
		c.MaxHistory = 0
	}
	c.QuietRoles = slices.DeleteFunc(c.QuietRoles, func(s string) bool {
		r, ok := parseRole(s)
		return !ok || r == RoleNone
	})
}

// Role is an occupant's role in the room (XEP-0045 §5.1).
type Role int

// Roles, least privileged first.
const (
	RoleNone Role = iota
	Visitor
	Participant
	Moderator
)

var roleNames = [...]string{"none", "visitor", "participant", "moderator"}

func (r Role) String() string { return roleNames[r] }

func parseRole(s string) (Role, bool) {
	for i, n := range roleNames {
		if n == s {
			return Role(i), true
		}
	}
	return RoleNone, false
}

// Affiliation is a user's long-lived standing with the room (XEP-0045 §5.2).
type Affiliation int

// Affiliations, least privileged first.
const (
	Outcast Affiliation = iota
	AffNone
	Member
	Admin
	Owner
)

var affNames = [...]string{"outcast", "none", "member", "admin", "owner"}

func (a Affiliation) String() string { return affNames[a] }

func parseAffiliation(s string) (Affiliation, bool) {
	for i, n := range affNames {
		if n == s {
			return Affiliation(i), true
		}
	}
	return AffNone, false
}

// Occupant is one nickname in the room, held by one user from one or more sessions.
type Occupant struct {
	Nick string
	// Bare is the user's real bare JID; Sessions are the full JIDs that joined with this nick.
	Bare     jid.JID
	Sessions []jid.JID
	Role     Role
	// ID is the XEP-0421 occupant id.
	ID string
	// shown is whether the other occupants were last sent an available presence of it:
	// false while its role's presence is not broadcast (muc#roomconfig_presencebroadcast).
	shown bool
	// pres holds the children of the user's last presence to the room other than MUC
	// payloads (show, status, priority, caps), shared by every broadcast of it.
	pres []stanza.Node
}

// histItem is a message kept for the discussion history.
type histItem struct {
	el    *stanza.Element // as broadcast, without 'to'
	at    time.Time
	id    string // its stanza-id, when archived
	chars int    // its serialized length, for maxchars
}

// pending is an iq the room relays to an occupant and whose response it forwards back.
type pending struct {
	requester jid.JID
	id        string
	from      string // the target occupant's room JID, the response's 'from'
	responder string // the real JID the request went to
}

// Room is one chat room.
type Room struct {
	svc *Service
	jid jid.JID // the room's bare JID

	// mu guards everything below.
	mu  sync.Mutex
	cfg RoomConfig
	aff map[string]Affiliation // real bare JID → affiliation other than none
	// nicks are the reserved nicknames (XEP-0045 §7.10, §9.3) of affiliated users, by bare
	// JID; only members, admins and owners hold one.
	nicks     map[string]string
	subject   string
	subjectBy string // the occupant JID that set it
	subjectAt time.Time
	occupants map[string]*Occupant // nick → occupant
	sessions  map[string]*Occupant // real full JID → occupant
	history   []histItem
	pendings  map[string]pending
	// pendingOrder holds relayed request ids oldest first, to forget the oldest past the bound.
	pendingOrder []string
	locked       bool // created, not yet configured (XEP-0045 §10.1)
	gone         bool // destroyed; stanzas find no room
	out          []*stanza.Element
	draining     bool
}

func newRoom(s *Service, bare jid.JID, cfg RoomConfig) *Room {
	return &Room{
		svc:       s,
		jid:       bare,
		cfg:       cfg,
		aff:       make(map[string]Affiliation),
		nicks:     make(map[string]string),
		occupants: make(map[string]*Occupant),
		sessions:  make(map[string]*Occupant),
		pendings:  make(map[string]pending),
	}
}

// affOf returns a user's affiliation; service administrators own every room.
func (r *Room) affOf(bare jid.JID) Affiliation {
	k := bare.String()
	if r.svc.isAdmin(k) {
		return Owner
	}
	if a, ok := r.aff[k]; ok {
		return a
	}
	return AffNone
}

// defaultRole is the role an affiliation gets on entering (XEP-0045 §5.1.2).
func (r *Room) defaultRole(a Affiliation) Role {
	switch {
	case a >= Admin:
		return Moderator
	case a == Member || !r.cfg.Moderated:
		return Participant
	}
	return Visitor
}

// occJID is an occupant's room JID.
func (r *Room) occJID(nick string) string { return r.jid.String() + "/" + nick }

// queue adds a stanza to send once the room's mutex is released; r.mu is held.
func (r *Room) queue(el *stanza.Element) { r.out = append(r.out, el) }

// flush sends the queued stanzas in order. A goroutine that finds another one sending leaves
// its stanzas to it, so the room's output keeps one order and sending never holds r.mu: a
// stanza that bounces back to the room while it is sent is handled like any other.
func (r *Room) flush(ctx context.Context) {
	r.mu.Lock()
	if r.draining {
		r.mu.Unlock()
		return
	}
	r.draining = true
	// Presence for occupants on another node of a cluster travels as one transfer per node;
	// a message in the queue sends the presence collected before it first, keeping the order.
	ctx, done := router.Batch(ctx, r.svc.host.Router)
	for len(r.out) > 0 {
		batch := r.out
		r.out = nil
		r.mu.Unlock()
		for _, el := range batch {
			r.svc.send(ctx, el)
		}
		done()
		r.mu.Lock()
	}
	r.draining = false
	r.mu.Unlock()
}

// addressed returns el sent to 'to': attributes copied, children shared, so one built variant
// of a broadcast serves every recipient. The children slice is capped so that a later append
// by anyone copies it instead of writing into the shared array.
func addressed(el *stanza.Element, to string) *stanza.Element {
	c := &stanza.Element{Space: el.Space, Local: el.Local, Children: el.Children[:len(el.Children):len(el.Children)]}
	c.Attrs = make([]stanza.Attr, len(el.Attrs), len(el.Attrs)+1)
	copy(c.Attrs, el.Attrs)
	c.SetAttr("to", to)
	return c
}

// sendTo queues el to every session of o.
func (r *Room) sendTo(o *Occupant, el *stanza.Element) {
	for _, s := range o.Sessions {
		r.queue(addressed(el, s.String()))
	}
}

// seesJIDs reports whether an occupant may see other occupants' real JIDs.
func (r *Room) seesJIDs(o *Occupant) bool {
	return r.cfg.Whois == WhoisAnyone || o.Role == Moderator
}

// itemInfo is what a presence's muc#user item says beyond affiliation, role and JID.
type itemInfo struct {
	nick   string // the new nick of a 303
	actor  string // the nick of the moderator who acted
	reason string
}

// presenceOf builds o's presence as occupants see it. withJID adds the real JID; codes are
// the status codes; typ is "" or "unavailable".
func (r *Room) presenceOf(o *Occupant, typ string, withJID bool, codes []int, info itemInfo, extra *stanza.Element) *stanza.Element {
	p := stanza.NewElement(stanza.NSClient, "presence", stanza.Attr{Name: "from", Value: r.occJID(o.Nick)})
	if typ != "" {
		p.SetAttr("type", typ)
	}
	p.Children = make([]stanza.Node, 0, len(o.pres)+2)
	p.Children = append(p.Children, o.pres...)
	p.AddChild(occupantIDElement(o.ID))
	x := stanza.NewElement(NSUser, "x")
	item := stanza.NewElement(NSUser, "item",
		stanza.Attr{Name: "affiliation", Value: r.affOf(o.Bare).String()},
		stanza.Attr{Name: "role", Value: o.Role.String()})
	if typ == "unavailable" && info.nick == "" {
		item.SetAttr("role", RoleNone.String())
	}
	if withJID && len(o.Sessions) > 0 {
		item.SetAttr("jid", o.Sessions[0].String())
	}
	if info.nick != "" {
		item.SetAttr("nick", info.nick)
	}
	if info.actor != "" {
		item.AddChild(stanza.NewElement(NSUser, "actor", stanza.Attr{Name: "nick", Value: info.actor}))
	}
	if info.reason != "" {
		item.AddChild(stanza.NewElement(NSUser, "reason").AddText(info.reason))
	}
	x.AddChild(item)
	if extra != nil {
		x.AddChild(extra)
	}
	for _, c := range codes {
		x.AddChild(statusCode(c))
	}
	return p.AddChild(x)
}

func statusCode(c int) *stanza.Element {
	return stanza.NewElement(NSUser, "status", stanza.Attr{Name: "code", Value: strconv.Itoa(c)})
}

// broadcastPresence sends o's presence to every occupant, o included: at most three variants
// are built (with and without the real JID, and o's own with status 110 and selfCodes).
// gone lists sessions that left and still get the self-presence.
//
// The others get it only while o's role is broadcast (muc#roomconfig_presencebroadcast): an
// occupant whose role stops being broadcast is seen to leave, and one whose role starts being
// broadcast is seen to arrive.
func (r *Room) broadcastPresence(o *Occupant, typ string, codes, selfCodes []int, info itemInfo, extra *stanza.Element, gone ...jid.JID) {
	othersTyp, toOthers := typ, o.shown
	switch {
	case typ == "" && r.cfg.broadcasts(o.Role):
		toOthers, o.shown = true, true
	case typ == "" && o.shown:
		othersTyp, o.shown = "unavailable", false
	case typ == "":
		toOthers = false
	case info.nick == "":
		// Gone for good; a nick change (303) is followed by the presence under the new nick.
		o.shown = false
	}
	var withJID, anon *stanza.Element
	for _, other := range r.occupants {
		if other == o || !toOthers {
			continue
		}
		var v *stanza.Element
		if r.seesJIDs(other) {
			if withJID == nil {
				withJID = r.presenceOf(o, othersTyp, true, codes, info, extra)
			}
			v = withJID
		} else {
			if anon == nil {
				anon = r.presenceOf(o, othersTyp, false, codes, info, extra)
			}
			v = anon
		}
		r.sendTo(other, v)
	}
	self := r.presenceOf(o, typ, true, append(append([]int{110}, codes...), selfCodes...), info, extra)
	r.sendTo(o, self)
	for _, s := range gone {
		r.queue(addressed(self, s.String()))
	}
}

func occupantIDElement(id string) *stanza.Element {
	return stanza.NewElement(NSOccupant, "occupant-id", stanza.Attr{Name: "id", Value: id})
}
