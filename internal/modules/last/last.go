// Package last implements XEP-0012: Last Activity. Asked at the domain, the server answers
// with its uptime; asked at an account's bare JID, it answers on the account's behalf with the
// seconds since the user's last session ended and the status of that session's unavailable
// presence (§3), to the user and to contacts subscribed to the user's presence only. The last
// logout is kept in the KV store "last".
package last

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"impetus/internal/module"
	"impetus/internal/modules/roster"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// NS is the namespace of XEP-0012.
const NS = "jabber:iq:last"

// StoreName is the KV store holding each user's last logout.
const StoreName = "last"

func init() { module.Register("last", func() module.Module { return new(Last) }) }

// Record is what is stored at logout.
type Record struct {
	Time   time.Time `json:"t"`
	Status string    `json:"s,omitempty"`
}

// Last is the last activity module of one hosted domain.
type Last struct {
	// Now is the clock; the zero value means time.Now.
	Now func() time.Time

	h       *module.Host
	store   storage.KV
	started time.Time

	mu sync.Mutex
	// status holds the status text of each session's last unavailable presence.
	status map[router.Session]string
}

// Provision implements module.Module.
func (l *Last) Provision(h *module.Host) error {
	l.h = h
	if l.Now == nil {
		l.Now = time.Now
	}
	l.started = l.Now()
	l.store = h.Storage.KV(StoreName)
	l.status = make(map[router.Session]string)
	h.AddFeature(NS)
	h.HandleIQ(module.ToServer, stanza.Get, NS, "query", l.uptime)
	h.HandleIQ(module.ToAccount, stanza.Get, NS, "query", l.account)
	h.Hook(module.PresenceIn, 10, l.presence)
	h.OnSessionClosed(l.closed)
	return nil
}

func seconds(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return strconv.FormatInt(int64(d/time.Second), 10)
}

// uptime answers for the server (§5).
func (l *Last) uptime(_ context.Context, _ *module.IQ) (*stanza.Element, error) {
	return stanza.NewElement(NS, "query", stanza.Attr{Name: "seconds", Value: seconds(l.Now().Sub(l.started))}), nil
}

// account answers for a bare JID (§3): forbidden to whoever may not see the user's presence,
// seconds='0' while a resource is available, else the time since the last logout.
func (l *Last) account(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	owner := iq.To.Bare()
	if !owner.Equal(iq.From.Bare()) {
		if l.h.Accounts != nil {
			ok, err := l.h.Accounts.Exists(ctx, owner.Localpart(), owner.Domainpart())
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, stanza.ErrServiceUnavailable
			}
		}
		r := roster.ForHost(l.h)
		if r == nil {
			return nil, stanza.ErrForbidden
		}
		it, found, err := r.Store().Get(ctx, owner.String(), iq.From.Bare().String())
		if err != nil {
			return nil, err
		}
		if !found || !it.HasFrom() {
			return nil, stanza.ErrForbidden
		}
	}
	for _, s := range l.h.Router.Sessions(owner) {
		if s.Available() {
			return stanza.NewElement(NS, "query", stanza.Attr{Name: "seconds", Value: "0"}), nil
		}
	}
	b, err := l.store.Get(ctx, owner.String())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, stanza.ErrItemNotFound
	}
	if err != nil {
		return nil, err
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	q := stanza.NewElement(NS, "query", stanza.Attr{Name: "seconds", Value: seconds(l.Now().Sub(rec.Time))})
	if rec.Status != "" {
		q.AddText(rec.Status)
	}
	return q, nil
}

// presence remembers the status of a session's broadcast unavailable presence.
func (l *Last) presence(_ context.Context, st *module.Stanza) (module.Verdict, error) {
	if st.Session == nil || st.To.Domainpart() != "" || st.El.Attr("type") != "unavailable" {
		return module.Continue, nil
	}
	status := ""
	if s := st.El.Child(stanza.NSClient, "status"); s != nil {
		status = s.Text()
	}
	l.mu.Lock()
	l.status[st.Session] = status
	l.mu.Unlock()
	return module.Continue, nil
}

// closed records the logout when the user's last session ends.
func (l *Last) closed(ctx context.Context, s module.Session) {
	l.mu.Lock()
	status := l.status[s]
	delete(l.status, s)
	l.mu.Unlock()
	if module.IsHandover(ctx) {
		// The session goes on on another node of a cluster: the user did not log out.
		return
	}
	bare := s.JID().Bare()
	for _, o := range l.h.Router.Sessions(bare) {
		if o != router.Session(s) {
			return
		}
	}
	b, err := json.Marshal(Record{Time: l.Now().UTC(), Status: status})
	if err == nil {
		err = l.store.Set(ctx, bare.String(), b)
	}
	if err != nil {
		l.h.Log.Error("last: storing logout", "user", bare.String(), "err", err)
	}
}

var _ module.Module = (*Last)(nil)
