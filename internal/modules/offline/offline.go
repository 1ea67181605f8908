// Package offline implements XEP-0160: Best Practices for Handling Offline Messages, the storage
// option of RFC 6121 §8.5.2.2.1: a chat or normal message for an existing account with no
// available resource is kept, stamped with XEP-0203 delayed delivery, and delivered when the
// user next sends available presence with a non-negative priority.
package offline

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// StoreName is the storage.Archive holding the messages.
const StoreName = "offline"

// NS is the disco feature of XEP-0160.
const NS = "msgoffline"

// DefaultLimit is the number of messages kept per user by default.
const DefaultLimit = 100

func init() {
	module.Register("offline", func() module.Module { return &Offline{Limit: DefaultLimit} })
}

// Offline is the offline storage module of one hosted domain.
type Offline struct {
	// Limit bounds the messages stored per user; zero or less means no bound.
	Limit int
	// Now returns the current time; tests replace it.
	Now func() time.Time

	h    *module.Host
	arch storage.Archive

	// locks serialize the count-then-append of one user so the limit holds under concurrency.
	seed  maphash.Seed
	locks [32]sync.Mutex

	mu sync.Mutex
	// flushed holds the sessions that already received the stored messages.
	flushed map[router.Session]bool
}

// Provision implements module.Module.
func (o *Offline) Provision(h *module.Host) error {
	o.h = h
	if x := h.XMPP(); x != nil {
		o.Limit = x.MaxOfflineMessages
	}
	o.arch = h.Storage.Archive(StoreName)
	o.seed = maphash.MakeSeed()
	o.flushed = make(map[router.Session]bool)
	if o.Now == nil {
		o.Now = time.Now
	}
	h.AddFeature(NS)
	h.Hook(module.MessageOffline, 0, o.store)
	// Below the presence module, which lets available presence continue: the user's presence
	// goes out before the backlog comes in.
	h.Hook(module.PresenceIn, -10, o.presence)
	h.OnSessionClosed(func(_ context.Context, s module.Session) {
		o.mu.Lock()
		delete(o.flushed, s)
		o.mu.Unlock()
	})
	return nil
}

func (o *Offline) lock(user string) *sync.Mutex {
	return &o.locks[maphash.String(o.seed, user)%uint64(len(o.locks))]
}

// store keeps a message for a user with no available resource.
func (o *Offline) store(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	switch st.El.Attr("type") {
	case "", "normal", "chat":
	default:
		// Headlines, groupchat and errors are never stored (XEP-0160 §3).
		return module.Continue, nil
	}
	if !worthStoring(st.El) {
		// A chat state or receipt with nobody to read it means nothing later (XEP-0085 §5.6);
		// dropping it also keeps such traffic from filling the user's quota.
		return module.Handled, nil
	}
	user := st.To.Bare().String()
	mu := o.lock(user)
	mu.Lock()
	defer mu.Unlock()
	if o.Limit > 0 {
		n, err := o.arch.Count(ctx, user)
		if err != nil {
			return module.Handled, err
		}
		if n >= o.Limit {
			// XEP-0160 §3: a full store answers like an unavailable service, which also keeps
			// it from telling anything about the account.
			return module.Handled, stanza.NewError("service-unavailable", "offline storage is full")
		}
	}
	now := o.Now().UTC()
	el := st.El.Copy()
	el.Space = stanza.NSClient
	el.AddChild(stanza.NewElement(stanza.NSDelay, "delay",
		stanza.Attr{Name: "from", Value: o.h.Domain},
		stanza.Attr{Name: "stamp", Value: now.Format("2006-01-02T15:04:05Z")}))
	data := el.AppendXML(nil, "")
	if _, err := o.arch.Append(ctx, user, storage.Item{With: st.From.Bare().String(), Time: now, Data: data}); err != nil {
		return module.Handled, err
	}
	return module.Handled, nil
}

// presence delivers the stored messages whenever a session becomes eligible for delivery:
// available with a non-negative priority (XEP-0160 §4). A session that goes unavailable or
// negative while staying connected becomes eligible again later, and messages stored meanwhile
// must reach it then.
func (o *Offline) presence(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	s := st.Session
	if s == nil || st.To.Domainpart() != "" {
		return module.Continue, nil
	}
	if typ := st.El.Attr("type"); typ == "unavailable" || (typ == "" && s.Priority() < 0) {
		o.mu.Lock()
		delete(o.flushed, s)
		o.mu.Unlock()
		return module.Continue, nil
	}
	if st.El.Attr("type") != "" || !s.Available() {
		return module.Continue, nil
	}
	o.mu.Lock()
	done := o.flushed[s]
	o.flushed[s] = true
	o.mu.Unlock()
	if done {
		return module.Continue, nil
	}
	o.flush(ctx, s)
	return module.Continue, nil
}

// flush delivers a user's stored messages to s and deletes them once s has them queued.
func (o *Offline) flush(ctx context.Context, s module.Session) {
	user := s.JID().Bare().String()
	mu := o.lock(user)
	mu.Lock()
	defer mu.Unlock()
	items, _, err := o.arch.Query(ctx, user, storage.Query{})
	if err != nil {
		o.h.Log.Error("offline: reading messages", "user", user, "err", err)
		return
	}
	if len(items) == 0 {
		return
	}
	ids := make([]string, 0, len(items))
	for _, it := range items {
		el, err := stanza.Parse(it.Data)
		if err != nil {
			o.h.Log.Error("offline: dropping unreadable message", "user", user, "id", it.ID, "err", err)
		} else {
			s.Deliver(el)
		}
		ids = append(ids, it.ID)
	}
	if err := o.arch.Delete(ctx, user, ids...); err != nil {
		o.h.Log.Error("offline: deleting delivered messages", "user", user, "err", err)
	}
}

var _ module.Module = (*Offline)(nil)

// nsHints is XEP-0334 Message Processing Hints.
const nsHints = "urn:xmpp:hints"

// worthStoring reports whether a message should wait for its recipient: it has a body or an
// explicit store hint, and no hint against storage (XEP-0334).
func worthStoring(el *stanza.Element) bool {
	if el.Child(nsHints, "no-store") != nil || el.Child(nsHints, "no-permanent-store") != nil {
		return false
	}
	return el.Child("", "body") != nil || el.Child(nsHints, "store") != nil
}
