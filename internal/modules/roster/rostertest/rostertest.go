// Package rostertest runs the roster, presence and offline modules on a real core and router
// with recording client sessions, for the tests of those modules and of the Momentum import.
package rostertest

import (
	"context"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/core"
	"impetus/internal/module"
	"impetus/internal/modules/offline"
	"impetus/internal/modules/presence"
	"impetus/internal/modules/roster"
	"impetus/internal/router"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Config sets the module limits of a test server; zero values take the modules' defaults.
type Config struct {
	MaxItems     int
	MaxText      int
	OfflineLimit int
	// Now is the offline module's clock; the default is a fixed instant.
	Now func() time.Time
}

// Clock is the default clock of test servers.
var Clock = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// Server is a core with hosted domains and a record of what it sent to other domains.
type Server struct {
	t       testing.TB
	Core    *core.Core
	Router  *router.Local
	Storage storage.Backend
	Hosts   map[string]*module.Host
	Rosters map[string]*roster.Roster

	accounts *Accounts
	mu       sync.Mutex
	remote   []*stanza.Element
}

// Accounts is a fixed set of existing accounts; an empty set means every account exists.
type Accounts struct {
	mu   sync.Mutex
	bare map[string]bool
}

// Exists implements router.Accounts.
func (a *Accounts) Exists(_ context.Context, local, domain string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.bare) == 0 {
		return true, nil
	}
	return a.bare[local+"@"+domain], nil
}

// New returns a server hosting domains on backend.
func New(t testing.TB, backend storage.Backend, cfg Config, domains ...string) *Server {
	t.Helper()
	acc := &Accounts{bare: map[string]bool{}}
	r := router.NewLocal(acc)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := core.New(r, log)
	s := &Server{t: t, Core: c, Router: r, Storage: backend, Hosts: map[string]*module.Host{},
		Rosters: map[string]*roster.Roster{}, accounts: acc}
	c.Remote = func(_ context.Context, el *stanza.Element, _ jid.JID) error {
		s.mu.Lock()
		s.remote = append(s.remote, el)
		s.mu.Unlock()
		return nil
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return Clock }
	}
	for _, d := range domains {
		h := module.NewHost(d, r, c, backend, acc, log)
		ro := &roster.Roster{MaxItems: roster.DefaultMaxItems, MaxText: roster.DefaultMaxText}
		if cfg.MaxItems != 0 {
			ro.MaxItems = cfg.MaxItems
		}
		if cfg.MaxText != 0 {
			ro.MaxText = cfg.MaxText
		}
		off := &offline.Offline{Limit: offline.DefaultLimit, Now: cfg.Now}
		if cfg.OfflineLimit != 0 {
			off.Limit = cfg.OfflineLimit
		}
		for _, m := range []module.Module{ro, new(presence.Presence), off} {
			if err := m.Provision(h); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { _ = ro.Stop() })
		c.AddHost(h)
		s.Hosts[d] = h
		s.Rosters[d] = ro
	}
	return s
}

// AddAccount makes an account exist; once one is added, only added accounts exist.
func (s *Server) AddAccount(bare string) {
	s.accounts.mu.Lock()
	s.accounts.bare[bare] = true
	s.accounts.mu.Unlock()
}

// Remote returns and forgets the stanzas sent to other domains, serialized.
func (s *Server) Remote() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := serialize(s.remote)
	s.remote = nil
	return out
}

// Session is a bound client session that records what it is sent.
type Session struct {
	srv       *Server
	jid       jid.JID
	available atomic.Bool
	priority  atomic.Int32

	mu  sync.Mutex
	got []*stanza.Element
}

// Connect binds a session for the full JID.
func (s *Server) Connect(full string) *Session {
	s.t.Helper()
	j, err := jid.Parse(full)
	if err != nil {
		s.t.Fatal(err)
	}
	sess := &Session{srv: s, jid: j}
	s.Router.Bind(sess)
	if h := s.Hosts[j.Domainpart()]; h != nil {
		h.SessionBound(context.Background(), sess)
	}
	return sess
}

// Close ends the session the way the client stream does: unbind, unavailable, closed hooks.
func (sess *Session) Close() {
	sess.srv.Router.Unbind(sess)
	sess.available.Store(false)
	if h := sess.srv.Hosts[sess.jid.Domainpart()]; h != nil {
		h.SessionClosed(context.Background(), sess)
	}
}

// Input processes xml as if the client sent it: 'from' is stamped and broadcast presence updates
// availability and priority before the core sees it, as the client stream does.
func (sess *Session) Input(xml string) {
	sess.srv.t.Helper()
	el, err := Parse(xml)
	if err != nil {
		sess.srv.t.Fatalf("parse %s: %v", xml, err)
	}
	el.SetAttr("from", sess.jid.String())
	if el.Local == "presence" && el.Attr("to") == "" {
		switch el.Attr("type") {
		case "":
			prio := 0
			if p := el.Child(stanza.NSClient, "priority"); p != nil {
				prio, _ = strconv.Atoi(p.Text())
			}
			sess.priority.Store(int32(prio))
			sess.available.Store(true)
		case "unavailable":
			sess.available.Store(false)
		}
	}
	sess.srv.Core.FromClient(context.Background(), sess, el)
}

// JID implements router.Session.
func (sess *Session) JID() jid.JID { return sess.jid }

// Available implements router.Session.
func (sess *Session) Available() bool { return sess.available.Load() }

// Priority implements router.Session.
func (sess *Session) Priority() int { return int(sess.priority.Load()) }

// Deliver implements router.Session.
func (sess *Session) Deliver(el *stanza.Element) {
	sess.mu.Lock()
	sess.got = append(sess.got, el)
	sess.mu.Unlock()
}

// Send implements module.Session.
func (sess *Session) Send(el *stanza.Element) { sess.Deliver(el) }

// Replaced implements router.Session.
func (sess *Session) Replaced() {}

// Elements returns and forgets what the session received.
func (sess *Session) Elements() []*stanza.Element {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	out := sess.got
	sess.got = nil
	return out
}

// Take returns and forgets what the session received, serialized as the client stream writes
// it, with random ids and roster version epochs replaced by fixed text.
func (sess *Session) Take() []string { return serialize(sess.Elements()) }

var (
	pushID   = regexp.MustCompile(`id="push-[0-9a-f]+"`)
	verEpoch = regexp.MustCompile(`ver="[0-9a-f]+-([0-9]+)"`)
)

// Normalize replaces random ids and version epochs in serialized XML.
func Normalize(s string) string {
	s = pushID.ReplaceAllString(s, `id="push"`)
	return verEpoch.ReplaceAllString(s, `ver="v$1"`)
}

func serialize(els []*stanza.Element) []string {
	out := make([]string, 0, len(els))
	for _, el := range els {
		out = append(out, Normalize(string(el.AppendXML(nil, stanza.NSClient))))
	}
	return out
}

// Parse parses one element; elements without a namespace are in jabber:client.
func Parse(xml string) (*stanza.Element, error) {
	el, err := stanza.Parse([]byte("<wrap xmlns='jabber:client'>" + xml + "</wrap>"))
	if err != nil {
		return nil, err
	}
	return el.FirstElement(), nil
}
