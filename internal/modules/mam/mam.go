// Package mam implements XEP-0313: Message Archive Management for user accounts, with XEP-0359
// stanza ids on archived messages, XEP-0059 result set paging, archiving preferences and a
// retention period. The query side (form, paging, result formatting) lives in
// internal/mamquery, which room archives share.
//
// What is archived (XEP-0313 §5.1.1 and XEP-0334): messages of type chat or normal (or none)
// that carry a body, an end-to-end encrypted payload, a reaction, a retraction or a store hint,
// unless they carry a no-store or no-permanent-store hint. Errors, headlines and groupchat
// messages are not archived here (a room archives its own groupchat), nor chat states, receipts
// or markers alone, nor carbons and archive results, which are copies of messages archived
// already. A message between two local accounts lands in both archives; one to or from another
// server lands in the local account's archive. The recipient's copy is archived before it is
// routed, so a message that waits in offline storage is archived once, with the same
// <stanza-id/> it carries when it is finally delivered.
//
// Archive writes are group-committed (internal/storage/batch): a message's archive copies are
// queued, the message is delivered at once, and one writer per host commits everything queued
// meanwhile in one transaction. Queries wait for the copies queued before them, and Stop
// flushes the queue; docs/mam.md states the durability this gives.
package mam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/mamquery"
	"impetus/internal/module"
	"impetus/internal/modules/roster"
	"impetus/internal/stanza"
	"impetus/internal/storage"
	"impetus/internal/storage/batch"
)

// StoreName is the storage.Archive holding user archives.
const StoreName = "mam"

// PrefsStore is the storage.KV holding each user's archiving preferences.
const PrefsStore = "mam_prefs"

// Default archiving policies (XEP-0313 §5.1.1 <prefs default='…'/>).
const (
	Always = "always"
	Never  = "never"
	Roster = "roster"
)

// Hook priorities. Archiving runs after hooks that may refuse a message (blocking at 1000 on
// Outbound and MessageDeliver) and before those that copy it elsewhere (carbons at -100), so the
// copies carry the archive's <stanza-id/>: a received carbon the recipient's, a sent carbon the
// sender's (XEP-0313 §3.1). The sender's id is taken off the message again at OutStripPriority,
// because the recipient has no access to the sender's archive; a hook in between that keeps the
// message (a carbon) must keep a copy, not the message itself.
const (
	OutPriority      = -50
	OutStripPriority = -150
	DeliverPriority  = 50
)

// Defaults of the module's options.
const (
	DefaultPurgeInterval = time.Hour
	// maxPrefsJIDs bounds each of the always and never lists.
	maxPrefsJIDs = 1000
)

// hintsNS is XEP-0334 Message Processing Hints.
const hintsNS = "urn:xmpp:hints"

// Defaults of the mam scope, the archive writer's options.
const (
	DefaultWriteBatch        = batch.DefaultMaxBatch
	DefaultWriteQueue        = batch.DefaultMaxQueue
	DefaultWriteDelay        = batch.DefaultDelay
	DefaultWriteFlushTimeout = 30 * time.Second
	DefaultWriteQueueWait    = batch.DefaultMaxWait
)

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "mam",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0313 archive writer: group commit of archived messages (Impetus)",
		Options: []config.OptionSpec{
			{Name: "write_batch", Type: config.TypeInt, Default: fmt.Sprint(DefaultWriteBatch), Doc: "most archived messages written in one transaction (Impetus)"},
			{Name: "write_delay_ms", Type: config.TypeInt, Default: fmt.Sprint(DefaultWriteDelay.Milliseconds()), Doc: "milliseconds the writer waits for more messages before a commit (delivery does not wait); 0 commits at once (Impetus)"},
			{Name: "write_queue", Type: config.TypeInt, Default: fmt.Sprint(DefaultWriteQueue), Doc: "archived messages queued or being written; senders wait while it is full (Impetus)"},
			{Name: "write_queue_wait", Type: config.TypeDuration, Default: fmt.Sprint(int(DefaultWriteQueueWait / time.Second)), Doc: "seconds a sender waits for room in a full queue before its message goes unarchived (Impetus)"},
			{Name: "write_flush_timeout", Type: config.TypeDuration, Default: fmt.Sprint(int(DefaultWriteFlushTimeout / time.Second)), Doc: "seconds a shutdown waits for queued archive writes (Impetus)"},
		},
	})
	module.Register("mam", func() module.Module {
		return &MAM{Writer: WriterConfig{
			WriteBatch:        DefaultWriteBatch,
			WriteDelayMS:      int(DefaultWriteDelay.Milliseconds()),
			WriteQueue:        DefaultWriteQueue,
			WriteQueueWait:    DefaultWriteQueueWait,
			WriteFlushTimeout: DefaultWriteFlushTimeout,
		}}
	})
}

var (
	hostsMu sync.Mutex
	hosts   = map[*module.Host]*MAM{}
)

// ForHost returns the archive module provisioned on h, or nil. Code that deletes a user's
// rows (account removal) calls its Flush first, so that no queued copy lands afterwards.
func ForHost(h *module.Host) *MAM {
	hostsMu.Lock()
	defer hostsMu.Unlock()
	return hosts[h]
}

// WriterConfig is the mam scope, decoded: how archive writes are batched.
type WriterConfig struct {
	WriteBatch        int           `conf:"write_batch"`
	WriteDelayMS      int           `conf:"write_delay_ms"`
	WriteQueue        int           `conf:"write_queue"`
	WriteQueueWait    time.Duration `conf:"write_queue_wait"`
	WriteFlushTimeout time.Duration `conf:"write_flush_timeout"`
}

// MAM is the message archive module of one hosted domain.
type MAM struct {
	// Default is the policy of users without preferences: Always, Roster or Never.
	Default string
	// Retention is how long messages are kept; zero keeps them forever.
	Retention time.Duration
	// PurgeInterval is the time between retention purges.
	PurgeInterval time.Duration
	// Limits bound queries.
	Limits mamquery.Limits
	// Now returns the current time; tests replace it.
	Now func() time.Time
	// Writer tunes the group commit of archive writes. The registered module starts from the
	// mam scope's defaults; in a MAM built directly, zero fields mean the batch package's
	// defaults and no delay.
	Writer WriterConfig

	h       *module.Host
	writer  *batch.Writer
	store   storage.Archive // the archive seen through the writer
	prefs   storage.KV
	archive *mamquery.Archive

	// prefsCache keeps preferences read from storage: every archived message consults both
	// users' preferences, and reading them from the database each time cost more than the rest
	// of the message path together. Only this module writes them, so it keeps the cache exact.
	prefsMu    sync.RWMutex
	prefsCache map[prefsKey]Prefs

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// Provision implements module.Module.
func (m *MAM) Provision(h *module.Host) error {
	m.h = h
	if m.Default == "" {
		m.Default = Always
	}
	if m.PurgeInterval <= 0 {
		m.PurgeInterval = DefaultPurgeInterval
	}
	if x := h.XMPP(); x != nil {
		if x.MAMDefault != "" {
			m.Default = x.MAMDefault
		}
		m.Retention = time.Duration(x.MAMRetention) * 24 * time.Hour
		if x.MAMPurgeInterval > 0 {
			m.PurgeInterval = x.MAMPurgeInterval
		}
		m.Limits = mamquery.Limits{DefaultMax: x.MAMDefaultPage, MaxMax: x.MAMMaxPage, MaxScan: x.MAMMaxScan}
	}
	if m.Now == nil {
		m.Now = time.Now
	}
	if h.Config != nil && h.Config.Root != nil {
		if secs := h.Config.Sections("mam"); len(secs) > 0 {
			if err := secs[0].Decode(&m.Writer); err != nil {
				return fmt.Errorf("mam: %w", err)
			}
		}
	}
	if m.Writer.WriteDelayMS < 0 {
		m.Writer.WriteDelayMS = 0
	}
	if m.Writer.WriteFlushTimeout <= 0 {
		m.Writer.WriteFlushTimeout = DefaultWriteFlushTimeout
	}
	log := h.Log
	m.writer = batch.New(h.Storage.Archive(StoreName), batch.Options{
		MaxBatch: m.Writer.WriteBatch,
		MaxQueue: m.Writer.WriteQueue,
		MaxWait:  m.Writer.WriteQueueWait,
		Delay:    time.Duration(m.Writer.WriteDelayMS) * time.Millisecond,
		OnError: func(err error, lost int) {
			log.Error("mam: archived messages could not be written", "messages", lost, "err", err)
		},
	})
	m.store = m.writer.Archive()
	hostsMu.Lock()
	hosts[h] = m
	hostsMu.Unlock()
	m.prefs = h.Storage.KV(PrefsStore)
	m.archive = &mamquery.Archive{Store: m.store, Limits: m.Limits}

	h.AddAccountFeature(mamquery.NS)
	h.AddAccountFeature(mamquery.NSExtended)
	h.AddAccountFeature(mamquery.NSSID)
	h.HandleIQ(module.ToAccount, stanza.Get, mamquery.NS, "query", m.form)
	h.HandleIQ(module.ToAccount, stanza.Set, mamquery.NS, "query", m.query)
	h.HandleIQ(module.ToAccount, stanza.Get, mamquery.NS, "metadata", m.metadata)
	h.HandleIQ(module.ToAccount, stanza.Get, mamquery.NS, "prefs", m.getPrefs)
	h.HandleIQ(module.ToAccount, stanza.Set, mamquery.NS, "prefs", m.setPrefs)
	h.Hook(module.Outbound, OutPriority, m.outgoing)
	h.Hook(module.Outbound, OutStripPriority, m.unstamp)
	h.Hook(module.MessageDeliver, DeliverPriority, m.incoming)
	if m.Retention > 0 {
		m.startPurge()
	}
	return nil
}

// Stop implements module.Stopper. It writes the archive copies still queued, waiting at most
// the flush timeout; the server stops its hosts before it closes storage.
func (m *MAM) Stop() error {
	var err error
	m.stopOnce.Do(func() {
		hostsMu.Lock()
		if hosts[m.h] == m {
			delete(hosts, m.h)
		}
		hostsMu.Unlock()
		if m.stop != nil {
			close(m.stop)
			<-m.done
		}
		if m.writer != nil {
			ctx, cancel := context.WithTimeout(context.Background(), m.Writer.WriteFlushTimeout)
			defer cancel()
			if err = m.writer.Close(ctx); err != nil {
				err = fmt.Errorf("mam: flushing archive writes: %w", err)
			}
		}
	})
	return err
}

// Flush waits until the archive copies queued so far are committed, for callers that must
// see the archive complete in storage itself (account removal deletes the user's rows).
func (m *MAM) Flush(ctx context.Context) error { return m.writer.Flush(ctx) }

// Store returns the archive store, for other modules that read users' archives. Its reads
// wait for the archive copies queued before them.
func (m *MAM) Store() storage.Archive { return m.store }

// owner checks that the requester asks about its own archive: an account's archive is the
// account's business only.
func owner(iq *module.IQ) (string, error) {
	if !iq.From.Bare().Equal(iq.To.Bare()) {
		return "", stanza.NewError("forbidden", "only the account may use its archive")
	}
	return iq.To.Bare().String(), nil
}

func (m *MAM) form(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if _, err := owner(iq); err != nil {
		return nil, err
	}
	return mamquery.Form(), nil
}

func (m *MAM) query(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	user, err := owner(iq)
	if err != nil {
		return nil, err
	}
	req, err := mamquery.Parse(iq.Payload, m.Limits)
	if err != nil {
		return nil, err
	}
	send := func(el *stanza.Element) {
		if iq.Session != nil {
			iq.Session.Send(el)
			return
		}
		if err := m.h.Send(ctx, el); err != nil {
			m.h.Log.Debug("mam: result not routable", "err", err)
		}
	}
	// Results come from the account's bare JID, the archive's address (XEP-0313 §4.2).
	return m.archive.Serve(ctx, user, user, iq.From.String(), req, send)
}

func (m *MAM) metadata(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	user, err := owner(iq)
	if err != nil {
		return nil, err
	}
	return m.archive.Metadata(ctx, user)
}

// Prefs are a user's archiving preferences (XEP-0313 §5.1).
type Prefs struct {
	Default string   `json:"default"`
	Always  []string `json:"always,omitempty"`
	Never   []string `json:"never,omitempty"`
}

// maxCachedPrefs bounds the preferences cache; past it the cache starts over.
const maxCachedPrefs = 100000

// prefsKey keys the preferences cache by the parts of a bare JID, which a jid.JID hands out
// without building its string: the archive hooks look up both parties of every message.
type prefsKey struct{ local, domain string }

// keyOf splits a bare JID string; a bare JID's localpart cannot contain '@'.
func keyOf(user string) prefsKey {
	if l, d, ok := strings.Cut(user, "@"); ok {
		return prefsKey{l, d}
	}
	return prefsKey{"", user}
}

// Prefs returns user's preferences, or the server default when the user has set none. The
// result is shared: callers must not modify its lists.
func (m *MAM) Prefs(ctx context.Context, user string) (Prefs, error) {
	m.prefsMu.RLock()
	p, ok := m.prefsCache[keyOf(user)]
	m.prefsMu.RUnlock()
	if ok {
		return p, nil
	}
	return m.loadPrefs(ctx, user)
}

// prefsOf is Prefs for a bare JID, without building its string when the cache has it.
func (m *MAM) prefsOf(ctx context.Context, bare jid.JID) (Prefs, error) {
	m.prefsMu.RLock()
	p, ok := m.prefsCache[prefsKey{bare.Localpart(), bare.Domainpart()}]
	m.prefsMu.RUnlock()
	if ok {
		return p, nil
	}
	// String builds a new string, so the cached key does not keep a stanza's text alive.
	return m.loadPrefs(ctx, bare.String())
}

// loadPrefs reads user's preferences from storage and caches them. It is apart from Prefs so
// that the value Unmarshal fills does not make the cached path allocate.
func (m *MAM) loadPrefs(ctx context.Context, user string) (Prefs, error) {
	var p Prefs
	data, err := m.prefs.Get(ctx, user)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		p = Prefs{Default: m.Default}
	case err != nil:
		return Prefs{}, err
	default:
		if err := json.Unmarshal(data, &p); err != nil {
			return Prefs{}, err
		}
		if p.Default == "" {
			p.Default = m.Default
		}
	}
	m.cachePrefs(user, p)
	return p, nil
}

func (m *MAM) cachePrefs(user string, p Prefs) {
	m.prefsMu.Lock()
	if m.prefsCache == nil || len(m.prefsCache) >= maxCachedPrefs {
		m.prefsCache = make(map[prefsKey]Prefs)
	}
	m.prefsCache[keyOf(user)] = p
	m.prefsMu.Unlock()
}

// ForgetPrefs drops a user's cached preferences (after the account's data was deleted).
func (m *MAM) ForgetPrefs(user string) {
	m.prefsMu.Lock()
	delete(m.prefsCache, keyOf(user))
	m.prefsMu.Unlock()
}

func (p Prefs) element() *stanza.Element {
	el := stanza.NewElement(mamquery.NS, "prefs", stanza.Attr{Name: "default", Value: p.Default})
	for _, l := range []struct {
		name string
		jids []string
	}{{"always", p.Always}, {"never", p.Never}} {
		list := stanza.NewElement(mamquery.NS, l.name)
		for _, j := range l.jids {
			list.AddChild(stanza.NewElement(mamquery.NS, "jid").AddText(j))
		}
		el.AddChild(list)
	}
	return el
}

func (m *MAM) getPrefs(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	user, err := owner(iq)
	if err != nil {
		return nil, err
	}
	p, err := m.Prefs(ctx, user)
	if err != nil {
		return nil, err
	}
	return p.element(), nil
}

func (m *MAM) setPrefs(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	user, err := owner(iq)
	if err != nil {
		return nil, err
	}
	p := Prefs{Default: iq.Payload.Attr("default")}
	switch p.Default {
	case Always, Never, Roster:
	default:
		return nil, stanza.NewError("bad-request", "default must be always, never or roster")
	}
	for list := range iq.Payload.Elements() {
		if list.Space != mamquery.NS || (list.Local != "always" && list.Local != "never") {
			continue
		}
		for j := range list.Elements() {
			if j.Space != mamquery.NS || j.Local != "jid" {
				continue
			}
			parsed, err := jid.Parse(j.Text())
			if err != nil {
				return nil, stanza.NewError("jid-malformed", "invalid JID in preferences")
			}
			s := parsed.String()
			if list.Local == "always" {
				p.Always = appendUnique(p.Always, s)
			} else {
				p.Never = appendUnique(p.Never, s)
			}
		}
	}
	if len(p.Always) > maxPrefsJIDs || len(p.Never) > maxPrefsJIDs {
		return nil, stanza.NewError("policy-violation", "too many JIDs in preferences")
	}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if err := m.prefs.Set(ctx, user, data); err != nil {
		m.ForgetPrefs(user)
		return nil, err
	}
	if p.Default == "" {
		p.Default = m.Default
	}
	m.cachePrefs(user, p)
	return p.element(), nil
}

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// wants reports whether the preferences of user (a bare JID) archive messages exchanged with
// peer (a full or bare JID). The never list wins over the always list (XEP-0313 §5.1.1: a JID
// in both is treated as never).
func (m *MAM) wants(ctx context.Context, user jid.JID, peer jid.JID) (bool, error) {
	p, err := m.prefsOf(ctx, user)
	if err != nil {
		return false, err
	}
	if len(p.Never) > 0 || len(p.Always) > 0 {
		// Most users have no lists; building the peer's strings is then wasted on every message.
		full, bare := peer.String(), peer.Bare().String()
		listed := func(l []string) bool { return slices.Contains(l, full) || slices.Contains(l, bare) }
		switch {
		case listed(p.Never):
			return false, nil
		case listed(p.Always):
			return true, nil
		}
	}
	switch p.Default {
	case Always:
		return true, nil
	case Roster:
		r := roster.ForHost(m.h)
		if r == nil {
			return false, nil
		}
		it, ok, err := r.Store().Get(ctx, user.String(), peer.Bare().String())
		if err != nil {
			return false, err
		}
		return ok && it.Listed(), nil
	}
	return false, nil
}

// Archivable reports whether a message is one that archives keep (the rules in the package
// documentation). Other archives (carbons of room messages aside) can share the rule.
func Archivable(el *stanza.Element) bool {
	switch el.Attr("type") {
	case "", "normal", "chat":
	default:
		return false
	}
	if el.Child(hintsNS, "no-store") != nil || el.Child(hintsNS, "no-permanent-store") != nil {
		return false
	}
	keep := false
	for c := range el.Elements() {
		switch {
		case c.Space == "urn:xmpp:carbons:2" && (c.Local == "received" || c.Local == "sent"),
			c.Space == mamquery.NS && c.Local == "result":
			// Copies of messages that are archived where they were first exchanged.
			return false
		case c.Local == "body" && (c.Space == stanza.NSClient || c.Space == stanza.NSServer || c.Space == ""),
			c.Space == hintsNS && c.Local == "store",
			c.Space == "eu.siacs.conversations.axolotl" && c.Local == "encrypted",
			c.Space == "urn:xmpp:omemo:2" && c.Local == "encrypted",
			c.Space == "urn:xmpp:openpgp:0" && c.Local == "openpgp",
			c.Space == "jabber:x:encrypted" && c.Local == "x",
			c.Space == "urn:xmpp:reactions:0" && c.Local == "reactions",
			c.Space == "urn:xmpp:message-retract:1" && c.Local == "retract",
			c.Space == "urn:xmpp:jingle-message:0" && c.Local == "propose":
			keep = true
		}
	}
	return keep
}

// outgoing archives a message a local account sends, in the sender's archive, and stamps it
// with the sender's <stanza-id/> for the sent carbons. It runs on the Outbound hook, after the
// sender's block list has had its say: a message the blocking module bounces was never sent.
func (m *MAM) outgoing(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	if st.El.Local != "message" {
		return module.Continue, nil
	}
	from := st.From.Bare()
	if mamquery.HasStanzaID(st.El) {
		mamquery.StripStanzaIDs(st.El, from.String())
	}
	if st.To.Bare().Equal(from) || !Archivable(st.El) {
		// A note to oneself is archived once, on delivery.
		return module.Continue, nil
	}
	if !m.wantsLogged(ctx, from, st.To) {
		return module.Continue, nil
	}
	user := from.String()
	if id := m.archiveCopy(ctx, user, st.To, st.El); id != "" {
		st.El.AddChild(mamquery.StanzaID(user, id))
	}
	return module.Continue, nil
}

// unstamp takes the sender's <stanza-id/> off a message once the hooks that copy it have run.
func (m *MAM) unstamp(_ context.Context, st *module.Stanza) (module.Verdict, error) {
	if st.El.Local == "message" && mamquery.HasStanzaID(st.El) && !st.To.Bare().Equal(st.From.Bare()) {
		mamquery.StripStanzaIDs(st.El, st.From.Bare().String())
	}
	return module.Continue, nil
}

// incoming archives a message for a local account before it is routed, and stamps it with the
// archive's <stanza-id/> so that the delivered message, its carbons and its offline copy all
// carry the id a client later pages by.
func (m *MAM) incoming(ctx context.Context, st *module.Stanza) (module.Verdict, error) {
	bare := st.To.Bare()
	// Only the archive names its messages: drop ids a sender claims on the user's behalf,
	// whether or not this message is archived.
	if mamquery.HasStanzaID(st.El) {
		mamquery.StripStanzaIDs(st.El, bare.String())
	}
	if !Archivable(st.El) {
		return module.Continue, nil
	}
	// The router answers for accounts that do not exist; nothing is archived for them. The
	// account check asks the credential store, so when the user's preferences are cached (and
	// decline most messages when archiving is off) they are consulted first; otherwise the
	// account is checked before preferences are read, so that messages to made-up users do not
	// fill the cache.
	cached := m.prefsCached(bare)
	if !cached && !m.accountExists(ctx, bare) {
		return module.Continue, nil
	}
	if !m.wantsLogged(ctx, bare, st.From) {
		return module.Continue, nil
	}
	if cached && !m.accountExists(ctx, bare) {
		return module.Continue, nil
	}
	user := bare.String()
	if id := m.archiveCopy(ctx, user, st.From, st.El); id != "" {
		st.El.AddChild(mamquery.StanzaID(user, id))
	}
	return module.Continue, nil
}

// accountExists reports whether the local account bare exists; a failed check counts as no.
func (m *MAM) accountExists(ctx context.Context, bare jid.JID) bool {
	if m.h.Accounts == nil {
		return true
	}
	ok, err := m.h.Accounts.Exists(ctx, bare.Localpart(), bare.Domainpart())
	return err == nil && ok
}

// prefsCached reports whether bare's preferences are in the cache.
func (m *MAM) prefsCached(bare jid.JID) bool {
	m.prefsMu.RLock()
	_, ok := m.prefsCache[prefsKey{bare.Localpart(), bare.Domainpart()}]
	m.prefsMu.RUnlock()
	return ok
}

// wantsLogged is wants with a failure logged and taken as "do not archive".
func (m *MAM) wantsLogged(ctx context.Context, user jid.JID, peer jid.JID) bool {
	ok, err := m.wants(ctx, user, peer)
	if err != nil {
		m.h.Log.Error("mam: reading preferences", "user", user.String(), "err", err)
		return false
	}
	return ok
}

// archiveCopy queues el for user's archive and returns its id, or "" when that failed. The
// caller has checked the preferences. Archiving failures are logged, not bounced: the message
// itself can still be delivered.
func (m *MAM) archiveCopy(ctx context.Context, user string, peer jid.JID, el *stanza.Element) string {
	c := el
	if c.Space != stanza.NSClient {
		// A stanza from a server stream is stored as a client would receive it. Client
		// stanzas, nearly all of them, are serialised as they are, without a copy.
		c = el.Copy()
		c.Space = stanza.NSClient
	}
	// Queued, not yet committed: the message need not wait for the disk (docs/mam.md).
	id, err := m.writer.Enqueue(ctx, user, storage.Item{With: peer.Bare().String(), Time: m.Now(), Data: c.AppendXML(nil, "")})
	if err != nil {
		m.h.Log.Error("mam: archiving message", "user", user, "err", err)
		return ""
	}
	return id
}

// startPurge runs the retention purge every PurgeInterval. One goroutine per host: the store
// is shared by the hosts of one backend, so each purge covers every user, and a second host's
// purge finds little left to do.
func (m *MAM) startPurge() {
	m.stop = make(chan struct{})
	m.done = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Stop cancels a purge in progress rather than waiting for it.
		<-m.stop
		cancel()
	}()
	go func() {
		defer close(m.done)
		t := time.NewTicker(m.PurgeInterval)
		defer t.Stop()
		for {
			m.Purge(ctx)
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// Purge removes the messages older than the retention period and returns how many went. The
// first run after start catches up with whatever expired meanwhile; every later run removes
// only what expired during one PurgeInterval, an indexed range on (store, time).
func (m *MAM) Purge(ctx context.Context) int64 {
	if m.Retention <= 0 {
		return 0
	}
	n, err := m.store.DeleteOlder(ctx, m.Now().Add(-m.Retention))
	if err != nil {
		m.h.Log.Error("mam: retention purge", "err", err)
		return 0
	}
	if n > 0 {
		m.h.Log.Info("mam: retention purge", "removed", n)
	}
	return n
}

var (
	_ module.Module  = (*MAM)(nil)
	_ module.Stopper = (*MAM)(nil)
)
