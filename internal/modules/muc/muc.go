// Package muc implements XEP-0045: Multi-User Chat, as the service of a hosted domain
// configured with XMPP_Service "muc", together with XEP-0249 direct invitations (which the
// rooms accept like any join), XEP-0410 MUC self-ping, a XEP-0313 archive per room and
// XEP-0425 message moderation.
//
// Every room lives in memory while it exists; persistent rooms keep their configuration,
// affiliations and subject in the Map store "muc_rooms" (user: the service domain, key: the
// room's localpart) and are loaded at start-up. A room's archive is the Archive store
// "muc_archive" under the room's bare JID. In a cluster (cluster.go) each room lives on one
// owner node at a time, the other nodes forward its stanzas there, and persistent rooms are
// loaded by the node that takes them rather than at start-up.
//
// A room serializes its state changes with one mutex. Stanzas a change produces are queued
// under that mutex and sent after it is released, in queue order, by whichever goroutine
// finds the queue idle, so every occupant sees the same order and a bounce that comes back
// to the room while it sends cannot deadlock.
package muc

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/module"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Namespaces of the protocols the service speaks.
const (
	NSMUC       = "http://jabber.org/protocol/muc"
	NSUser      = "http://jabber.org/protocol/muc#user"
	NSAdmin     = "http://jabber.org/protocol/muc#admin"
	NSOwner     = "http://jabber.org/protocol/muc#owner"
	NSRoomInfo  = "http://jabber.org/protocol/muc#roominfo"
	NSRoomConf  = "http://jabber.org/protocol/muc#roomconfig"
	NSRequest   = "http://jabber.org/protocol/muc#request"
	NSSelfPing  = "http://jabber.org/protocol/muc#self-ping-optimization"
	NSStable    = "http://jabber.org/protocol/muc#stable_id"
	NSDiscoInfo = "http://jabber.org/protocol/disco#info"
	NSDiscoItem = "http://jabber.org/protocol/disco#items"
	NSData      = "jabber:x:data"
	NSConfInv   = "jabber:x:conference"
	NSSID       = "urn:xmpp:sid:0"
	NSPing      = "urn:xmpp:ping"
	NSVCard     = "vcard-temp"
	NSFasten    = "urn:xmpp:fasten:0"
	NSModerate0 = "urn:xmpp:message-moderate:0"
	NSRetract0  = "urn:xmpp:message-retract:0"
	NSModerate1 = "urn:xmpp:message-moderate:1"
	NSRetract1  = "urn:xmpp:message-retract:1"
	NSOccupant  = "urn:xmpp:occupant-id:0"
	NSRegister  = "jabber:iq:register"
	NSRegForm   = "http://jabber.org/protocol/muc#register"
)

// Store names.
const (
	RoomStore    = "muc_rooms"
	ArchiveStore = "muc_archive"
	// SecretStore keeps each service's key for XEP-0421 occupant ids (user: the domain).
	SecretStore = "muc_secret"
)

// Room creation policies (muc_room_creation).
const (
	CreateAnyone = "anyone"
	CreateLocal  = "local"
	CreateAdmins = "admins"
)

// Options are the service's policy and bounds; docs/muc.md describes each.
type Options struct {
	// RoomCreation is CreateAnyone, CreateLocal or CreateAdmins.
	RoomCreation string
	// Admins are bare JIDs that own every room and may always create rooms.
	Admins []string
	// LocalDomains are the domains whose accounts count as local for CreateLocal.
	LocalDomains []string
	// MaxRooms bounds the rooms held at once; 0 means no bound.
	MaxRooms int
	// MaxOccupants bounds one room's occupants and caps its maxusers; 0 means no bound.
	MaxOccupants int
	// HistoryLength is how many messages a room keeps for the history sent on join.
	HistoryLength int
	// MaxNickLength bounds a nickname in bytes.
	MaxNickLength int
	// MaxAffiliations bounds the affiliations one room holds; 0 means no bound.
	MaxAffiliations int
	// MaxPending bounds the iq requests one room relays to occupants and waits on.
	MaxPending int
	// ArchivePageSize and ArchiveMaxPage are the default and largest XEP-0313 page.
	ArchivePageSize, ArchiveMaxPage int
	// ArchiveExpiry is how long room archives keep a message; 0 keeps it until the room goes.
	ArchiveExpiry time.Duration
	// Registration lets users register with rooms (XEP-0045 §7.10): become members and
	// reserve a nickname.
	Registration bool
	// Defaults is the configuration of a new room.
	Defaults RoomConfig
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultOptions returns the options of a service without configuration.
func DefaultOptions() Options {
	return Options{
		RoomCreation:    CreateLocal,
		MaxRooms:        10000,
		MaxOccupants:    200,
		HistoryLength:   20,
		MaxNickLength:   64,
		MaxAffiliations: 1000,
		MaxPending:      256,
		ArchivePageSize: 50,
		ArchiveMaxPage:  250,
		Registration:    true,
		Defaults: RoomConfig{
			Public:   true,
			MaxUsers: 100,
			Whois:    WhoisModerators,
			AllowPM:  PMAnyone,
			Archive:  true,
		},
	}
}

// optionsFrom reads the options of a domain scope.
func optionsFrom(c *config.Config, domain string) Options {
	o := DefaultOptions()
	if c == nil {
		return o
	}
	for _, d := range c.Domains {
		if d.Role == config.RoleServer && d.Service == "" {
			o.LocalDomains = append(o.LocalDomains, d.Name)
		}
	}
	dom := c.Domain(domain)
	if dom == nil || dom.MUC == nil {
		return o
	}
	m := dom.MUC
	o.RoomCreation = strings.ToLower(m.RoomCreation)
	o.Admins = m.Admins
	o.MaxRooms, o.MaxOccupants, o.HistoryLength = m.MaxRooms, m.MaxOccupants, m.HistoryLength
	o.MaxNickLength, o.MaxAffiliations = m.MaxNickLength, m.MaxAffiliations
	o.MaxPending, o.ArchivePageSize, o.ArchiveMaxPage = m.MaxRelayedIQ, m.ArchivePageSize, m.ArchiveMaxPage
	o.ArchiveExpiry = m.ArchiveExpiry
	o.Registration = m.Registration
	o.Defaults = RoomConfig{
		Persistent:    m.DefaultPersistent,
		Public:        m.DefaultPublic,
		MembersOnly:   m.DefaultMembersOnly,
		Moderated:     m.DefaultModerated,
		Whois:         strings.ToLower(m.DefaultWhois),
		MaxUsers:      m.DefaultMaxUsers,
		ChangeSubject: m.DefaultChangeSubject,
		AllowInvites:  m.DefaultAllowInvites,
		AllowPM:       strings.ToLower(m.DefaultAllowPM),
		Archive:       m.DefaultArchive,
	}
	return o
}

func init() { module.Register("muc", func() module.Module { return new(Service) }) }

// Service is the multi-user chat service of one domain.
type Service struct {
	// Opts is used as given when preset by New; otherwise Provision reads the configuration.
	Opts   Options
	preset bool

	host    *module.Host
	domain  string
	store   storage.Map
	archive storage.Archive
	admins  map[string]bool
	// secret keys the occupant ids, so they stay the same across restarts and cannot be
	// reversed into real JIDs.
	secret []byte

	mu    sync.Mutex
	rooms map[string]*Room // by localpart
	// cluster, when set, gives each room one owner node (cluster.go); remote tracks the local
	// sessions in rooms other nodes own, by room localpart and real full JID.
	cluster Cluster
	remote  map[string]map[string]remoteOccupant

	// stop ends the archive expiry sweep; done is closed when it has ended.
	stop, done chan struct{}
}

// New returns a service with the given options, for tests and embedding.
func New(o Options) *Service { return &Service{Opts: o, preset: true} }

// Provision implements module.Module.
func (s *Service) Provision(h *module.Host) error {
	if !s.preset {
		s.Opts = optionsFrom(h.Config, h.Domain)
	}
	if s.Opts.Now == nil {
		s.Opts.Now = time.Now
	}
	if s.Opts.MaxPending <= 0 {
		s.Opts.MaxPending = 256
	}
	if s.Opts.ArchivePageSize <= 0 {
		s.Opts.ArchivePageSize = 50
	}
	if s.Opts.ArchiveMaxPage < s.Opts.ArchivePageSize {
		s.Opts.ArchiveMaxPage = s.Opts.ArchivePageSize
	}
	s.Opts.Defaults.normalize(s.Opts.MaxOccupants)
	s.host, s.domain = h, h.Domain
	s.store = h.Storage.Map(RoomStore)
	s.archive = h.Storage.Archive(ArchiveStore)
	s.rooms = make(map[string]*Room)
	s.admins = make(map[string]bool)
	for _, a := range s.Opts.Admins {
		j, err := jid.Parse(a)
		if err != nil {
			return errors.New("muc: invalid muc_admins entry " + a)
		}
		s.admins[j.Bare().String()] = true
	}
	h.SetService(s.serve)
	h.AddIdentity(module.Identity{Category: "conference", Type: "text", Name: "Chatrooms"})
	for _, f := range []string{NSDiscoInfo, NSDiscoItem, NSMUC, NSSelfPing, NSOccupant} {
		h.AddFeature(f)
	}
	h.HandleIQ(module.ToServer, stanza.Get, NSDiscoInfo, "query", s.serviceInfo)
	h.HandleIQ(module.ToServer, stanza.Get, NSDiscoItem, "query", s.serviceItems)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.loadSecret(ctx); err != nil {
		return err
	}
	if err := s.load(ctx); err != nil {
		return err
	}
	if s.Opts.ArchiveExpiry > 0 {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.sweepLoop()
	}
	servicesMu.Lock()
	services[h] = s
	servicesMu.Unlock()
	return nil
}

// Stop implements module.Stopper: it ends the archive expiry sweep.
func (s *Service) Stop() error {
	if s.stop != nil {
		close(s.stop)
		<-s.done
		s.stop = nil
	}
	servicesMu.Lock()
	delete(services, s.host)
	servicesMu.Unlock()
	return nil
}

// serviceInfo answers disco#info on the service domain (XEP-0045 §6.1).
func (s *Service) serviceInfo(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if iq.Payload.Attr("node") != "" {
		return nil, stanza.ErrItemNotFound
	}
	q := stanza.NewElement(NSDiscoInfo, "query")
	for _, id := range s.host.Identities() {
		q.AddChild(identity(id.Category, id.Type, id.Name))
	}
	for _, f := range s.host.Features() {
		q.AddChild(feature(f))
	}
	return q, nil
}

// serviceItems lists the public rooms (XEP-0045 §6.3); locked and hidden rooms stay out.
func (s *Service) serviceItems(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if iq.Payload.Attr("node") != "" {
		return nil, stanza.ErrItemNotFound
	}
	s.mu.Lock()
	rooms := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	type entry struct{ jid, name string }
	var list []entry
	for _, r := range rooms {
		r.mu.Lock()
		if r.cfg.Public && !r.locked && !r.gone {
			list = append(list, entry{r.jid.String(), r.cfg.Name})
		}
		r.mu.Unlock()
	}
	if s.cluster != nil {
		// Rooms held by other nodes, or by none until someone enters, are listed from storage.
		seen := make(map[string]bool, len(list))
		for _, e := range list {
			seen[e.jid] = true
		}
		for j, name := range s.storedPublicRooms(ctx) {
			if !seen[j] {
				list = append(list, entry{j, name})
			}
		}
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.jid, b.jid) })
	q := stanza.NewElement(NSDiscoItem, "query")
	for _, e := range list {
		it := stanza.NewElement(NSDiscoItem, "item", stanza.Attr{Name: "jid", Value: e.jid})
		if e.name != "" {
			it.SetAttr("name", e.name)
		}
		q.AddChild(it)
	}
	return q, nil
}

func identity(cat, typ, name string) *stanza.Element {
	el := stanza.NewElement(NSDiscoInfo, "identity", stanza.Attr{Name: "category", Value: cat}, stanza.Attr{Name: "type", Value: typ})
	if name != "" {
		el.SetAttr("name", name)
	}
	return el
}

func feature(v string) *stanza.Element {
	return stanza.NewElement(NSDiscoInfo, "feature", stanza.Attr{Name: "var", Value: v})
}

// serve is the module.ServiceFunc: it takes every stanza for a room or an occupant.
func (s *Service) serve(ctx context.Context, st *module.Stanza) error {
	if s.cluster != nil {
		if done, err := s.clustered(ctx, st); done || err != nil {
			return err
		}
	}
	name := st.To.Localpart()
	typ := st.El.Attr("type")
	if st.El.Local == "presence" && (typ == "" || typ == "unavailable") {
		if st.To.Resourcepart() == "" {
			if typ == "" {
				// Entering needs a nickname (XEP-0045 §7.2.1).
				return stanza.NewError("jid-malformed", "a room nickname is required")
			}
			return nil
		}
		return s.presence(ctx, st)
	}
	r := s.room(name)
	if r == nil {
		if typ == "error" || typ == "result" || st.El.Local == "presence" {
			return nil
		}
		return stanza.NewError("item-not-found", "no such room")
	}
	r.mu.Lock()
	var err error
	if r.gone {
		err = stanza.NewError("item-not-found", "no such room")
		if typ == "error" || typ == "result" || st.El.Local == "presence" {
			err = nil
		}
	} else {
		switch st.El.Local {
		case "message":
			err = r.message(ctx, st)
		case "iq":
			err = r.iq(ctx, st)
		case "presence":
			err = r.otherPresence(st)
		}
	}
	gone := r.gone
	r.mu.Unlock()
	r.flush(ctx)
	if gone {
		s.forget(r)
	}
	return err
}

// room returns the live room called name, or nil.
func (s *Service) room(name string) *Room {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rooms[name]
}

// presence handles available and unavailable presence to an occupant JID: joins, updates,
// nick changes and exits. A join to a room that does not exist creates it.
func (s *Service) presence(ctx context.Context, st *module.Stanza) error {
	name := st.To.Localpart()
	for {
		created := false
		s.mu.Lock()
		r := s.rooms[name]
		if r == nil {
			if st.El.Attr("type") == "unavailable" {
				s.mu.Unlock()
				return nil
			}
			var err error
			if r, err = s.create(st); err != nil {
				s.mu.Unlock()
				return err
			}
			created = true
		}
		s.mu.Unlock()
		r.mu.Lock()
		if r.gone {
			// Destroyed between the lookup and the lock: look again, which may create it anew.
			r.mu.Unlock()
			s.forget(r)
			continue
		}
		err := r.presence(ctx, st, created)
		gone := r.gone
		r.mu.Unlock()
		r.flush(ctx)
		if gone {
			s.forget(r)
		}
		return err
	}
}

// create makes a room for a join request; s.mu is held.
func (s *Service) create(st *module.Stanza) (*Room, error) {
	if s.Opts.MaxRooms > 0 && len(s.rooms) >= s.Opts.MaxRooms {
		return nil, stanza.NewError("resource-constraint", "the service holds as many rooms as it may")
	}
	creator := st.From.Bare()
	if !s.mayCreate(creator) {
		return nil, stanza.NewError("not-allowed", "room creation is restricted")
	}
	r := newRoom(s, st.To.Bare(), s.Opts.Defaults)
	r.aff[creator.String()] = Owner
	// A client that speaks MUC gets a locked room it must configure or accept (XEP-0045
	// §10.1); an older groupchat client gets an instant room.
	r.locked = st.El.Child(NSMUC, "x") != nil
	s.rooms[st.To.Localpart()] = r
	return r, nil
}

func (s *Service) mayCreate(creator jid.JID) bool {
	if s.admins[creator.String()] {
		return true
	}
	switch s.Opts.RoomCreation {
	case CreateAnyone:
		return true
	case CreateLocal:
		return slices.ContainsFunc(s.Opts.LocalDomains, func(d string) bool { return strings.EqualFold(d, creator.Domainpart()) })
	}
	return false
}

// forget removes a destroyed room from the service.
func (s *Service) forget(r *Room) {
	s.mu.Lock()
	mine := s.rooms[r.jid.Localpart()] == r
	if mine {
		delete(s.rooms, r.jid.Localpart())
	}
	c := s.cluster
	s.mu.Unlock()
	if mine && c != nil {
		// A fresh room of the same name may be created on any node.
		c.Release(context.Background(), r.jid)
	}
}

// isAdmin reports whether a bare JID is a service administrator.
func (s *Service) isAdmin(bare string) bool { return s.admins[bare] }

// send routes a stanza the service sends on a room's behalf.
func (s *Service) send(ctx context.Context, el *stanza.Element) {
	if err := s.host.Send(ctx, el); err != nil {
		s.host.Log.Debug("muc: stanza not routable", "to", el.Attr("to"), "err", err)
	}
}

// loadSecret reads the service's occupant-id key, creating it on first start.
func (s *Service) loadSecret(ctx context.Context) error {
	kv := s.host.Storage.KV(SecretStore)
	key, err := kv.Get(ctx, s.domain)
	if err == nil && len(key) >= 32 {
		s.secret = key
		return nil
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("muc: reading the occupant-id key of %s: %w", s.domain, err)
	}
	key = make([]byte, 32)
	_, _ = rand.Read(key)
	if err := kv.Set(ctx, s.domain, key); err != nil {
		return fmt.Errorf("muc: storing the occupant-id key of %s: %w", s.domain, err)
	}
	s.secret = key
	return nil
}

// occupantID is a user's XEP-0421 occupant id in a room: stable for the pair, opaque to
// everyone else.
func (s *Service) occupantID(room, bare string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(room))
	m.Write([]byte{0})
	m.Write([]byte(bare))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// newID returns a random identifier for stanza ids and archive items.
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var _ module.Module = (*Service)(nil)
