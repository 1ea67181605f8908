// Package auth provides the credential stores that back SASL authentication.
//
// A store is opened from the URI of Momentum's AuthPlainParameters or
// AuthDigestMD5Parameters (`file:///path`, `digest:///path`, or the name of a
// scheme registered later, such as an auth_ds SQL scheme). Every store answers
// one question, the credentials of a (username, domain) pair, and reports what
// kind of credentials it holds so that the stream layer advertises only the
// SASL mechanisms it can actually serve.
//
// Usernames are prepared with the PRECIS UsernameCaseMapped profile and
// passwords with the OpaqueString profile (RFC 8265), both when a store loads
// its data and when a client's input is looked up, so the two always compare
// in the same form.
//
// htdigest hashes are always computed over the prepared localpart, also for
// `localpart@domain` lines, because an XMPP client authenticates with its
// simple username (the localpart, RFC 6120 §6.3.8) and hashes exactly that.
package auth

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrNotFound is returned by Store.Lookup when the user does not exist.
var ErrNotFound = errors.New("auth: user not found")

// ErrNoSuchUser is another name for ErrNotFound, kept for callers that use it.
var ErrNoSuchUser = ErrNotFound

// Hash names used in Capabilities.SCRAM and Credentials.SCRAM.
const (
	SHA1   = "SHA-1"
	SHA256 = "SHA-256"
	SHA512 = "SHA-512"
)

// Store looks up credentials. Implementations must be safe for concurrent use.
type Store interface {
	// Lookup returns the credentials of username at domain. Both are prepared
	// by the store, so callers may pass them as received. A missing user
	// yields ErrNotFound; any other error is a temporary failure.
	Lookup(ctx context.Context, username, domain string) (*Credentials, error)
	// Capabilities reports what kind of credentials Lookup can return.
	Capabilities() Capabilities
	// Close releases the store's resources.
	Close() error
}

// Reloader is implemented by stores that can re-read their backing data on
// demand (for example on SIGHUP).
type Reloader interface {
	Reload() error
}

// Capabilities describes what a store can serve, which decides the SASL
// mechanisms worth advertising.
type Capabilities struct {
	// Cleartext means Lookup returns clear-text passwords, which serve every
	// mechanism (SCRAM keys and DIGEST-MD5 hashes are derived on demand).
	Cleartext bool
	// Verify means a password offered in clear (PLAIN) can be checked, even
	// when it cannot be recovered (for example against an htdigest hash).
	Verify bool
	// DigestRealms lists the realms for which stored DIGEST-MD5 H(A1) values
	// exist.
	DigestRealms []string
	// SCRAM lists the hash names (SHA1, SHA256, SHA512) with stored SCRAM keys.
	SCRAM []string
}

// CanPlain reports whether the store can check a clear-text password.
func (c Capabilities) CanPlain() bool { return c.Cleartext || c.Verify }

// CanDigest reports whether the store can serve DIGEST-MD5 in realm; an empty
// realm asks whether it can serve DIGEST-MD5 in any realm.
func (c Capabilities) CanDigest(realm string) bool {
	if c.Cleartext {
		return true
	}
	if realm == "" {
		return len(c.DigestRealms) > 0
	}
	return slices.Contains(c.DigestRealms, realm)
}

// CanSCRAM reports whether the store can serve SCRAM with the named hash.
func (c Capabilities) CanSCRAM(hash string) bool {
	return c.Cleartext || slices.Contains(c.SCRAM, hash)
}

// SCRAMKeys are the stored SCRAM credentials of one user for one hash
// (RFC 5802 §3).
type SCRAMKeys struct {
	Salt       []byte
	Iterations int
	StoredKey  []byte
	ServerKey  []byte
}

// Credentials are what a store knows about one user.
type Credentials struct {
	// Username is the prepared localpart and Domain the domain it was found for.
	Username string
	Domain   string
	// Password is the prepared clear-text password; it is meaningful only
	// when HasPassword is true.
	Password    string
	HasPassword bool
	// HA1 maps a realm to the lowercase hex MD5 of "localpart:realm:password".
	HA1 map[string]string
	// SCRAM maps a hash name to stored SCRAM keys.
	SCRAM map[string]SCRAMKeys
	// Generation changes whenever the store reloads its data, so caches of
	// values derived from these credentials know when to drop them.
	Generation uint64
}

// CheckPassword reports whether password (as offered by a client, it is
// prepared here) matches the credentials. The comparison is constant-time.
func (c *Credentials) CheckPassword(password string) bool {
	if c == nil {
		return false
	}
	pw, err := PreparePassword(password)
	if err != nil {
		return false
	}
	if c.HasPassword {
		// Comparing digests keeps the comparison independent of the lengths.
		a, b := sha256.Sum256([]byte(pw)), sha256.Sum256([]byte(c.Password))
		return subtle.ConstantTimeCompare(a[:], b[:]) == 1
	}
	if len(c.SCRAM) > 0 {
		return checkSCRAM(c.SCRAM, pw)
	}
	ok := 0
	for realm, stored := range c.HA1 {
		want, err := hex.DecodeString(stored)
		if err != nil {
			continue
		}
		got := DigestHA1(c.Username, realm, pw)
		ok |= subtle.ConstantTimeCompare(got[:], want)
	}
	return ok == 1
}

// DigestHA1 returns MD5("username:realm:password"), the htdigest value and the
// RFC 2831 H(A1) base. Following RFC 2831 §2.1.2.1 for charset=utf-8, each of
// username and password is converted to ISO 8859-1 first when all of its
// characters fit, so the value matches what DIGEST-MD5 clients compute.
func DigestHA1(username, realm, password string) [md5.Size]byte {
	h := md5.New()
	h.Write(Latin1IfPossible(username))
	h.Write([]byte{':'})
	h.Write(Latin1IfPossible(realm))
	h.Write([]byte{':'})
	h.Write(Latin1IfPossible(password))
	var sum [md5.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// Latin1IfPossible returns s in ISO 8859-1 when every character of s fits,
// and the UTF-8 bytes of s otherwise (RFC 2831 §2.1.2.1).
func Latin1IfPossible(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF || r == '\uFFFD' {
			return []byte(s)
		}
		out = append(out, byte(r))
	}
	return out
}

// Options configure a store opened with Open.
type Options struct {
	// Realm is the DIGEST-MD5 realm of the listener ("" means the domain).
	Realm string
	// StoredCleartext makes a digest:// store read the third field as the
	// clear-text password (Momentum's stored_cleartext).
	StoredCleartext bool
	// Domains lists the hosted domains; lookups for other domains fail and
	// localpart@domain lines for other domains are reported.
	Domains []string
	// Logger receives reload and line errors; nil means slog.Default().
	Logger *slog.Logger
	// PollInterval is how often a file store checks its file for changes;
	// zero means two seconds and a negative value disables polling.
	PollInterval time.Duration
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Opener opens a store for a parsed URI.
type Opener func(u *url.URL, opts Options) (Store, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Opener{}
)

// Register makes a store scheme available to Open. Scheme names are
// case-insensitive; registering a name twice replaces the earlier opener, and
// a nil opener removes the scheme.
func Register(scheme string, open Opener) {
	registryMu.Lock()
	defer registryMu.Unlock()
	scheme = strings.ToLower(scheme)
	if open == nil {
		delete(registry, scheme)
		return
	}
	registry[scheme] = open
}

// Schemes returns the registered scheme names, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for name := range registry {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Open opens the store named by uri, such as "file:///opt/msys/etc/passwd"
// or "digest:///opt/msys/etc/digest".
func Open(uri string, opts Options) (Store, error) {
	u, err := url.Parse(strings.TrimSpace(uri))
	if err != nil {
		return nil, fmt.Errorf("auth: invalid uri %q: %w", uri, err)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("auth: uri %q has no scheme (want file://, digest:// or a registered scheme)", uri)
	}
	registryMu.RLock()
	open := registry[strings.ToLower(u.Scheme)]
	registryMu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("auth: unknown uri scheme %q", u.Scheme)
	}
	return open(u, opts)
}

func init() {
	Register("file", func(u *url.URL, opts Options) (Store, error) {
		return openFileURL(u, formatPlain, opts)
	})
	Register("digest", func(u *url.URL, opts Options) (Store, error) {
		return openFileURL(u, formatDigest, opts)
	})
}
