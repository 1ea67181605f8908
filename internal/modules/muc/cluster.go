package muc

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Cluster shares the rooms of a service among the nodes of a cluster: every room has exactly
// one owner node at a time, which holds it in memory; the other nodes forward the stanzas
// for it there. The service knows nothing of how ownership is kept or stanzas travel;
// internal/cluster implements this on NATS.
type Cluster interface {
	// Owner returns the node owning room and whether that is this node. When no live node
	// owns it (never taken, released, or its owner was lost or fenced), this node takes it if
	// take is set, and otherwise node is "". fresh reports that the room was taken over from
	// another owner: whatever instance of it this node still holds in memory is stale, and the
	// room must be loaded from storage.
	Owner(ctx context.Context, room jid.JID, take bool) (node string, local, fresh bool, err error)
	// Forward hands el, addressed to room or one of its occupants, to the service of node.
	// Stanzas forwarded by one node arrive in the order they were forwarded. An error means
	// node did not take el (it is gone or no longer owns the room); the caller asks Owner
	// again.
	Forward(ctx context.Context, room jid.JID, node string, el *stanza.Element) error
	// Release gives up this node's ownership of a room that no longer exists.
	Release(ctx context.Context, room jid.JID)
	// NodeOf names the node hosting the session of a full JID of an account of the cluster,
	// or "" when no node hosts it.
	NodeOf(full jid.JID) string
	// Serve registers the service of a domain: handle takes the stanzas other nodes forward
	// to it, one at a time in arrival order; lost is called when a node was lost, with self
	// true when it is this node, which lost its lease and may no longer act as an owner.
	Serve(domain string, handle func(ctx context.Context, el *stanza.Element), lost func(node string, self bool))
}

// services maps hosts to their MUC service, for the server to attach a cluster.
var (
	servicesMu sync.Mutex
	services   = map[*module.Host]*Service{}
)

// ForHost returns the MUC service provisioned on h, or nil.
func ForHost(h *module.Host) *Service {
	servicesMu.Lock()
	defer servicesMu.Unlock()
	return services[h]
}

// remoteOccupant is a session of this node that entered a room owned by another node.
type remoteOccupant struct {
	nick string
	node string // the room's owner when the session last sent presence to it
}

// hopKey marks a context in which a stanza forwarded by another node is handled: it is not
// forwarded again, so two nodes that disagree about an owner cannot pass a stanza back and
// forth.
type hopKey struct{}

// SetCluster makes the service share its rooms with the other nodes through c. It is called
// once after provisioning and before any stanza arrives. The rooms loaded at provisioning
// are dropped: in a cluster a room is loaded by the node that takes it, when a stanza for it
// arrives.
func (s *Service) SetCluster(c Cluster) {
	s.mu.Lock()
	s.cluster = c
	s.rooms = make(map[string]*Room)
	s.remote = make(map[string]map[string]remoteOccupant)
	s.mu.Unlock()
	c.Serve(s.domain, s.serveForwarded, s.nodeLost)
}

// clustered sends st to the owner of its room when that is another node; it reports whether
// st was dealt with there. When this node owns the room, the room is in memory on return.
func (s *Service) clustered(ctx context.Context, st *module.Stanza) (bool, error) {
	room := st.To.Bare()
	// Only an entry creates a room, and a room exists without a holder only in storage (or
	// in this node's memory, when the ownership was lost with the bucket): anything else to a
	// room nobody holds is answered here as for a room that does not exist, without leaving an
	// ownership behind.
	entry := st.El.Local == "presence" && st.El.Attr("type") == "" && st.To.Resourcepart() != ""
	take := entry || s.room(room.Localpart()) != nil
	for attempt := 0; ; attempt++ {
		node, local, fresh, err := s.cluster.Owner(ctx, room, take)
		if err == nil && node == "" && !take {
			if take, err = s.stored(ctx, room.Localpart()); err == nil && take {
				node, local, fresh, err = s.cluster.Owner(ctx, room, true)
			}
		}
		if err != nil {
			s.host.Log.Warn("muc: finding the owner of a room", "room", room.String(), "err", err)
			return true, stanza.NewError("recipient-unavailable", "the room cannot be reached at the moment; try again")
		}
		if node == "" {
			return false, nil
		}
		if local {
			return false, s.adopt(ctx, room.Localpart(), fresh)
		}
		if ctx.Value(hopKey{}) != nil || attempt == 2 {
			return true, stanza.NewError("recipient-unavailable", "the room cannot be reached at the moment; try again")
		}
		s.track(st, node)
		err = s.cluster.Forward(ctx, room, node, st.El)
		if err == nil {
			return true, nil
		}
		// Owner reads the ownership again: the node may have been replaced or have let go.
		s.host.Log.Debug("muc: forwarding to the owner of a room", "room", room.String(), "node", node, "err", err)
	}
}

// track remembers which local sessions entered rooms of other nodes, and under which nick, so
// that they can be told when the room's node is lost (nodeLost).
func (s *Service) track(st *module.Stanza, node string) {
	if st.El.Local != "presence" || st.To.Resourcepart() == "" {
		return
	}
	room, full := st.To.Localpart(), st.From.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st.El.Attr("type") {
	case "":
		if st.Session == nil {
			// Only sessions of this node are tracked; the presence module's unavailable
			// presence for a closed session comes without one and still ends the tracking.
			return
		}
		m := s.remote[room]
		if m == nil {
			m = make(map[string]remoteOccupant)
			s.remote[room] = m
		}
		m[full] = remoteOccupant{nick: st.To.Resourcepart(), node: node}
	case "unavailable":
		delete(s.remote[room], full)
		if len(s.remote[room]) == 0 {
			delete(s.remote, room)
		}
	}
}

// adopt makes sure a room this node owns is in memory: a fresh ownership replaces whatever
// stale instance was left from an earlier ownership, and a persistent room is loaded from
// storage with its configuration, affiliations, subject and recent history.
func (s *Service) adopt(ctx context.Context, name string, fresh bool) error {
	s.mu.Lock()
	r := s.rooms[name]
	if r != nil && !fresh {
		s.mu.Unlock()
		return nil
	}
	if r != nil {
		delete(s.rooms, name)
	}
	s.mu.Unlock()
	if r != nil {
		r.mu.Lock()
		r.gone = true
		r.mu.Unlock()
	}
	data, err := s.store.Get(ctx, s.domain, name)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		s.host.Log.Error("muc: loading a room", "room", name, "err", err)
		return stanza.ErrInternalServerError
	}
	loaded := s.restore(ctx, name, data)
	if loaded == nil {
		return nil
	}
	s.mu.Lock()
	if s.rooms[name] == nil {
		s.rooms[name] = loaded
	}
	s.mu.Unlock()
	return nil
}

// stored reports whether a persistent room of that name is in storage.
func (s *Service) stored(ctx context.Context, name string) (bool, error) {
	_, err := s.store.Get(ctx, s.domain, name)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// serveForwarded handles a stanza another node forwarded to this node as the room's owner;
// errors go back to the sender as the core would send them.
func (s *Service) serveForwarded(ctx context.Context, el *stanza.Element) {
	to, err := jid.Parse(el.Attr("to"))
	if err != nil {
		return
	}
	from, _ := jid.Parse(el.Attr("from"))
	ctx = context.WithValue(ctx, hopKey{}, true)
	err = s.serve(ctx, &module.Stanza{El: el, From: from, To: to})
	if err == nil || el.Attr("type") == "error" || el.Attr("type") == stanza.Result || el.Attr("from") == "" {
		return
	}
	var serr *stanza.Error
	if !errors.As(err, &serr) {
		s.host.Log.Error("muc: handling a forwarded stanza", "kind", el.Local, "err", err)
		serr = stanza.ErrInternalServerError
	}
	s.send(ctx, stanza.ErrorReply(el, serr))
}

// nodeLost reacts to the loss of a node. When it is this node, every room in memory is stale
// (another node takes each over with the next stanza for it) and is dropped. Otherwise the
// local sessions in rooms the lost node owned are told the room is gone (XEP-0045 status 332,
// removed because of a system shutdown) and may enter again, which makes a live node take the
// room; and the rooms this node owns drop the occupants that were connected through the lost
// node (status 333), so the others see them leave.
func (s *Service) nodeLost(node string, self bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.mu.Lock()
	if self {
		rooms := s.rooms
		s.rooms = make(map[string]*Room)
		s.remote = make(map[string]map[string]remoteOccupant)
		s.mu.Unlock()
		for _, r := range rooms {
			r.mu.Lock()
			r.gone = true
			r.mu.Unlock()
		}
		return
	}
	type notice struct{ room, full, nick string }
	var notices []notice
	for room, m := range s.remote {
		for full, ro := range m {
			if ro.node == node {
				notices = append(notices, notice{room, full, ro.nick})
				delete(m, full)
			}
		}
		if len(m) == 0 {
			delete(s.remote, room)
		}
	}
	rooms := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	batch, done := router.Batch(ctx, s.host.Router)
	for _, n := range notices {
		s.send(batch, shutdownPresence(n.room+"@"+s.domain+"/"+n.nick, n.full))
	}
	done()
	for _, r := range rooms {
		r.mu.Lock()
		if r.gone {
			r.mu.Unlock()
			continue
		}
		for full, o := range r.sessions {
			j, err := jid.Parse(full)
			if err != nil || !s.lostWith(j, node) {
				continue
			}
			if len(o.Sessions) > 1 {
				r.dropSession(o, j)
				continue
			}
			r.remove(ctx, o, []int{333}, itemInfo{})
		}
		gone := r.gone
		r.mu.Unlock()
		r.flush(ctx)
		if gone {
			s.forget(r)
		}
	}
}

// lostWith reports whether a session was connected through the lost node: the registry still
// names that node, or it no longer knows a session of an account of the cluster at all.
func (s *Service) lostWith(full jid.JID, node string) bool {
	at := s.cluster.NodeOf(full)
	if at == node {
		return true
	}
	return at == "" && slices.ContainsFunc(s.Opts.LocalDomains, func(d string) bool { return strings.EqualFold(d, full.Domainpart()) })
}

// shutdownPresence is the unavailable presence telling an occupant that it was removed from a
// room because of a system shutdown (XEP-0045 status 332); its affiliation is not known here.
func shutdownPresence(occupant, to string) *stanza.Element {
	x := stanza.NewElement(NSUser, "x")
	x.AddChild(stanza.NewElement(NSUser, "item",
		stanza.Attr{Name: "affiliation", Value: AffNone.String()},
		stanza.Attr{Name: "role", Value: RoleNone.String()}))
	x.AddChild(statusCode(110))
	x.AddChild(statusCode(332))
	return stanza.NewElement(stanza.NSClient, "presence",
		stanza.Attr{Name: "from", Value: occupant},
		stanza.Attr{Name: "to", Value: to},
		stanza.Attr{Name: "type", Value: "unavailable"}).AddChild(x)
}

// storedPublicRooms lists the persistent public rooms from storage, for the service's disco
// items in a cluster, where most rooms are held by other nodes or by none.
func (s *Service) storedPublicRooms(ctx context.Context) map[string]string {
	all, err := s.store.All(ctx, s.domain)
	if err != nil {
		s.host.Log.Error("muc: listing stored rooms", "err", err)
		return nil
	}
	out := make(map[string]string, len(all))
	for name, data := range all {
		var sr storedRoom
		if json.Unmarshal(data, &sr) != nil || !sr.Config.Public {
			continue
		}
		if j, err := jid.New(name, s.domain, ""); err == nil {
			out[j.String()] = sr.Config.Name
		}
	}
	return out
}
