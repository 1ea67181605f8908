package auth

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fileFormat tells the two Momentum password-file formats apart.
type fileFormat int

const (
	formatPlain  fileFormat = iota // user:password
	formatDigest                   // user:realm:md5hex (or clear text)
)

func (f fileFormat) String() string {
	if f == formatDigest {
		return "digest"
	}
	return "file"
}

// generations hands out store generations; a process-wide counter keeps them
// unique across stores, so a cache shared by several stores cannot confuse them.
var generations atomic.Uint64

// userKey indexes a table; domain is "" for lines valid in every domain.
type userKey struct {
	domain, local string
}

type entry struct {
	password    string
	hasPassword bool
	ha1         map[string]string
	scram       map[string]SCRAMKeys // stored SCRAM keys instead of the password (scramkeys.go)
}

// table is one immutable snapshot of a password file.
type table struct {
	users      map[userKey]*entry
	realms     []string
	generation uint64
	// scramOnly is set when some users have only SCRAM keys; scramHashes are the hashes all
	// of them have, which is what the store can offer.
	scramOnly   bool
	scramHashes []string
}

// fileStat identifies a version of the file on disk, to detect changes
// cheaply without a file-notification dependency.
type fileStat struct {
	info os.FileInfo
}

func (s fileStat) changed(fi os.FileInfo) bool {
	if s.info == nil || fi == nil {
		return s.info != fi
	}
	return !os.SameFile(s.info, fi) || !s.info.ModTime().Equal(fi.ModTime()) || s.info.Size() != fi.Size()
}

// fileStore serves a file:// or digest:// password file.
type fileStore struct {
	path    string
	format  fileFormat
	opts    Options
	log     *slog.Logger
	domains map[string]bool

	cur atomic.Pointer[table]

	mu   sync.Mutex // serialises reloads and guards stat
	stat fileStat

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func openFileURL(u *url.URL, format fileFormat, opts Options) (Store, error) {
	path := u.Path
	if u.Opaque != "" {
		path = u.Opaque
	}
	if u.Host != "" && u.Host != "localhost" {
		// "file://passwd" has no third slash; treat it as a relative path.
		path = u.Host + path
	}
	if path == "" {
		return nil, fmt.Errorf("auth: %s uri %q has no path", format, u.String())
	}
	return openFile(path, format, opts)
}

func openFile(path string, format fileFormat, opts Options) (*fileStore, error) {
	s := &fileStore{
		path:    path,
		format:  format,
		opts:    opts,
		log:     opts.logger(),
		domains: map[string]bool{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	for _, d := range opts.Domains {
		nd, err := NormalizeDomain(d)
		if err != nil {
			return nil, err
		}
		s.domains[nd] = true
	}
	if err := s.reload(true); err != nil {
		return nil, err
	}
	interval := opts.PollInterval
	if interval == 0 {
		interval = 2 * time.Second
	}
	if interval > 0 {
		go s.poll(interval)
	} else {
		close(s.done)
	}
	return s, nil
}

func (s *fileStore) poll(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// Errors are logged by reload and the old contents stay in use.
			_ = s.reload(false)
		}
	}
}

// Reload re-reads the file if it changed since the last load. A file that
// cannot be read leaves the previous contents in use.
func (s *fileStore) Reload() error {
	return s.reload(false)
}

func (s *fileStore) reload(initial bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path)
	if err != nil {
		return s.reloadFailed(initial, err)
	}
	if !initial && !s.stat.changed(fi) {
		return nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return s.reloadFailed(initial, err)
	}
	t, problems := parseTable(s.path, data, s.format, s.opts.StoredCleartext, s.domains)
	for _, p := range problems {
		s.log.Warn("auth: skipping password file line", "err", p.Error())
	}
	if s.format == formatDigest && !s.opts.StoredCleartext && s.opts.Realm != "" && !slices.Contains(t.realms, s.opts.Realm) {
		s.log.Warn("auth: digest file has no entries for the configured realm; DIGEST-MD5 will fail",
			"file", s.path, "realm", s.opts.Realm)
	}
	t.generation = generations.Add(1)
	s.cur.Store(t)
	s.stat = fileStat{info: fi}
	if !initial {
		s.log.Info("auth: reloaded password file", "file", s.path, "users", len(t.users))
	}
	return nil
}

func (s *fileStore) reloadFailed(initial bool, err error) error {
	err = fmt.Errorf("auth: reading %s: %w", s.path, err)
	if !initial {
		s.log.Error("auth: reload failed, keeping previous contents", "err", err.Error())
	}
	return err
}

// parseTable parses a password file. Lines that fail are returned as
// problems (with file:line) and skipped; the rest are kept.
func parseTable(path string, data []byte, format fileFormat, cleartext bool, domains map[string]bool) (*table, []error) {
	t := &table{users: map[userKey]*entry{}}
	var problems []error
	realms := map[string]bool{}
	bad := func(n int, format string, args ...any) {
		problems = append(problems, fmt.Errorf("auth: %s:%d: %s", path, n, fmt.Sprintf(format, args...)))
	}
	for i, raw := range bytes.Split(data, []byte{'\n'}) {
		n := i + 1
		line := strings.TrimSuffix(string(raw), "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		userField, rest, ok := strings.Cut(line, ":")
		if !ok {
			bad(n, "missing ':' separator")
			continue
		}
		local, domain, err := ParseUser(userField)
		if err != nil {
			bad(n, "%v", err)
			continue
		}
		if domain != "" && len(domains) > 0 && !domains[domain] {
			// Kept anyway: the line is harmless, but the operator probably
			// meant a hosted domain.
			bad(n, "domain %q is not hosted (line kept)", domain)
		}
		key := userKey{domain: domain, local: local}
		e := t.users[key]
		if e == nil {
			e = &entry{}
		}
		switch {
		case format == formatPlain || cleartext:
			pwField := rest
			if format == formatDigest {
				// The realm field is not needed: DIGEST-MD5 hashes are
				// computed with the listener's realm.
				_, pwField, ok = strings.Cut(rest, ":")
				if !ok {
					bad(n, "missing realm field")
					continue
				}
			}
			if format == formatPlain && isSCRAMField(pwField) {
				keys, err := parseSCRAMField(pwField)
				if err != nil {
					bad(n, "%v", err)
					continue
				}
				if e.hasPassword || e.scram != nil {
					bad(n, "duplicate user %q, this line replaces the earlier one", userField)
				}
				e.scram, e.password, e.hasPassword = keys, "", false
				t.users[key] = e
				continue
			}
			pw, err := PreparePassword(pwField)
			if err != nil {
				bad(n, "%v", err)
				continue
			}
			if e.hasPassword || e.scram != nil {
				bad(n, "duplicate user %q, this line replaces the earlier one", userField)
			}
			e.password, e.hasPassword, e.scram = pw, true, nil
		default:
			realm, hash, ok := strings.Cut(rest, ":")
			if !ok {
				bad(n, "missing realm field")
				continue
			}
			hash = strings.ToLower(strings.TrimSpace(hash))
			if b, err := hex.DecodeString(hash); err != nil || len(b) != 16 {
				bad(n, "hash is not 32 hex digits")
				continue
			}
			if e.ha1 == nil {
				e.ha1 = map[string]string{}
			}
			if _, dup := e.ha1[realm]; dup {
				bad(n, "duplicate user %q in realm %q, this line replaces the earlier one", userField, realm)
			}
			e.ha1[realm] = hash
			realms[realm] = true
		}
		t.users[key] = e
	}
	t.realms = slices.Sorted(maps.Keys(realms))
	var sets []map[string]SCRAMKeys
	for _, e := range t.users {
		if e.scram != nil {
			sets = append(sets, e.scram)
		}
	}
	if len(sets) > 0 {
		t.scramOnly, t.scramHashes = true, commonHashes(sets)
	}
	return t, problems
}

// Lookup implements Store.
func (s *fileStore) Lookup(ctx context.Context, username, domain string) (*Credentials, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	local, err := PrepareUsername(username)
	if err != nil {
		return nil, ErrNotFound
	}
	dom := ""
	if domain != "" {
		if dom, err = NormalizeDomain(domain); err != nil {
			return nil, ErrNotFound
		}
	}
	if len(s.domains) > 0 && !s.domains[dom] {
		return nil, ErrNotFound
	}
	t := s.cur.Load()
	e := t.users[userKey{domain: dom, local: local}]
	if e == nil {
		e = t.users[userKey{local: local}]
	}
	if e == nil {
		return nil, ErrNotFound
	}
	c := &Credentials{
		Username:    local,
		Domain:      dom,
		Password:    e.password,
		HasPassword: e.hasPassword,
		Generation:  t.generation,
	}
	if e.ha1 != nil {
		c.HA1 = maps.Clone(e.ha1)
	}
	if e.scram != nil {
		c.SCRAM = maps.Clone(e.scram)
	}
	return c, nil
}

// Capabilities implements Store.
func (s *fileStore) Capabilities() Capabilities {
	if t := s.cur.Load(); s.format == formatPlain && t.scramOnly {
		// Users with keys only can log in with PLAIN (checked against the keys) and with
		// SCRAM for the hashes they all have; DIGEST-MD5 needs the password.
		return Capabilities{Verify: true, SCRAM: slices.Clone(t.scramHashes)}
	}
	if s.format == formatPlain || s.opts.StoredCleartext {
		return Capabilities{Cleartext: true, Verify: true}
	}
	return Capabilities{Verify: true, DigestRealms: slices.Clone(s.cur.Load().realms)}
}

// Close stops the change poller.
func (s *fileStore) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return nil
}

var _ Reloader = (*fileStore)(nil)
