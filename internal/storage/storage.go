// Package storage is the persistence seam of the server.
//
// Features do not share one large repository interface. Instead a Backend
// hands out a small number of generic, typed stores by name, the way
// Prosody's open_store does: the roster code asks for Map("roster"), offline
// delivery for Archive("offline"), vCard for KV("vcard"), and so on. A new
// XEP therefore adds no method to a central interface and no code to every
// backend; it only picks a store name and a shape:
//
//   - KV holds one value per user (a vCard, a blocklist document).
//   - Map holds (user, key) → value entries (roster items, private XML,
//     PEP nodes) and offers Update, a read-modify-write transaction.
//   - Archive holds append-only, time-ordered items per user with stable ids
//     (offline messages, message archive), queried by time range, peer and
//     id cursors with LIMIT paging.
//
// Users are bare JID strings that the caller has already normalised
// ("alice@example.com"). Values are opaque bytes; callers choose the
// serialisation (XML or JSON). Store names, users, map keys, archive ids and
// peers must be valid UTF-8 without NUL bytes, because that is what every
// SQL backend can store as text; a violation yields ErrInvalid. Map keys may
// be empty, which gives callers a key that no JID can collide with (the
// roster keeps its version there, so Update commits an item change and the
// version bump together).
//
// Transactions are deliberately narrow: Map.Update covers one user's
// entries in one map. That is the unit rosters, PEP nodes and private
// storage need, and keeping it that small lets each backend serialise it
// with a single lock (SQLite's one writer connection, a PostgreSQL advisory
// lock on (map, user), a mutex in memory) with no cross-store deadlocks and
// no retry loops. Data that must change atomically therefore belongs in one
// Map, which is why the roster keeps its version beside its items.
//
// Times are stored in UTC with microsecond precision, the precision of a
// PostgreSQL timestamp, and every backend truncates the same way so that
// behaviour does not depend on the driver.
//
// Backends register themselves with Register from an init function; a
// program selects them by importing the implementation package for its side
// effects and calling Open:
//
//	import _ "impetus/internal/storage/sqlite"
//	b, err := storage.Open("sqlite", "/var/lib/impetus")
//
// The conformance suite in package storagetest pins down the behaviour that
// every backend (memory, sqlite, postgres) shares.
package storage

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when a value, map entry, archive item or paging
// cursor does not exist.
var ErrNotFound = errors.New("storage: not found")

// ErrInvalid is returned when a store name, user, key, id or peer cannot be
// stored (empty where a value is required, invalid UTF-8 or a NUL byte).
var ErrInvalid = errors.New("storage: invalid argument")

// ErrConflict is returned by Archive.Append when the caller supplies an item
// id that already exists in that user's archive.
var ErrConflict = errors.New("storage: id already exists")

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer version of the server than the running one; continuing could corrupt
// data whose layout this code does not know.
var ErrSchemaTooNew = errors.New("storage: database schema is newer than this program")

// Backend opens typed stores by name. Store handles are cheap and safe for
// concurrent use; callers may open them once and keep them or open them per
// request.
type Backend interface {
	// KV returns the single-value store called name.
	KV(name string) KV
	// Map returns the keyed store called name.
	Map(name string) Map
	// Archive returns the append-only item store called name.
	Archive(name string) Archive
	// DeleteUser removes everything stored for user in every store, as
	// needed when an account is deleted. It is atomic on SQL backends.
	DeleteUser(ctx context.Context, user string) error
	// Close releases the backend's resources. Stores obtained from it must
	// not be used afterwards.
	Close() error
}

// KV stores at most one value per user.
type KV interface {
	// Get returns the user's value or ErrNotFound.
	Get(ctx context.Context, user string) ([]byte, error)
	// Set stores value for user, replacing any previous value.
	Set(ctx context.Context, user string, value []byte) error
	// Delete removes the user's value; deleting a missing value is not an
	// error.
	Delete(ctx context.Context, user string) error
}

// Map stores (user, key) → value entries.
type Map interface {
	// Get returns the value under key or ErrNotFound.
	Get(ctx context.Context, user, key string) ([]byte, error)
	// Set stores value under key, replacing any previous value.
	Set(ctx context.Context, user, key string, value []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, user, key string) error
	// All returns every entry of user; the map is empty, not nil, when
	// the user has none.
	All(ctx context.Context, user string) (map[string][]byte, error)
	// DeleteAll removes every entry of user.
	DeleteAll(ctx context.Context, user string) error
	// Update runs fn as one atomic, isolated transaction over user's entries
	// in this map. Updates of the same (map, user) are serialised against
	// each other and against Set, Delete and DeleteAll, so a
	// read-modify-write through Update never loses a concurrent change. If
	// fn returns an error, or ctx ends before the commit, nothing is
	// written and the error is returned. fn runs exactly once; it must do
	// its storage work through tx only (calling other storage methods from
	// fn can deadlock on single-writer backends) and should be quick,
	// because it holds a write lock.
	Update(ctx context.Context, user string, fn func(tx MapTx) error) error
}

// MapTx is the view of one user's entries inside Map.Update. It reads its
// own writes. It must not be used after fn returns.
type MapTx interface {
	// Get returns the value under key or ErrNotFound.
	Get(key string) ([]byte, error)
	// Set stores value under key.
	Set(key string, value []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(key string) error
	// All returns every entry of the user.
	All() (map[string][]byte, error)
}

// Item is one archived entry.
type Item struct {
	// ID identifies the item within the user's archive. Append generates
	// a random one when it is empty.
	ID string
	// With is the peer's bare JID; it may be empty.
	With string
	// Time orders the archive. Append uses the current time when it is
	// zero; it is stored in UTC at microsecond precision.
	Time time.Time
	// Data is the serialised payload, usually a stanza.
	Data []byte
}

// Entry is one item of AppendMany with the user whose archive receives it.
type Entry struct {
	User string
	Item Item
}

// Query selects a page of a user's archive. The zero Query selects every
// item in chronological order.
type Query struct {
	// With, when set, restricts the result to items exchanged with this
	// peer.
	With string
	// Start and End, when non-zero, restrict the result to items whose
	// time is at or after Start and at or before End (both inclusive, as
	// in XEP-0313).
	Start, End time.Time
	// After and Before, when set, restrict the result to items strictly
	// after or before the item with that id (RSM cursors). An unknown id
	// yields ErrNotFound.
	After, Before string
	// Limit bounds the number of items returned; zero or less means no
	// limit.
	Limit int
	// Last selects the last Limit items of the range instead of the first,
	// like an empty RSM <before/>. Setting Before implies Last unless
	// Forward is set.
	Last bool
	// Forward makes Before a plain upper bound of the range (XEP-0313's
	// before-id) instead of a backward paging cursor: the first Limit
	// items before it are selected. It has no effect when Last is set.
	Forward bool
}

// Page describes the page returned by Archive.Query.
type Page struct {
	// First and Last are the ids of the first and last items of the page,
	// empty when the page is empty.
	First, Last string
	// Complete reports that no further items of the range lie beyond the
	// page in the paging direction: after it for forward paging, before it
	// when Last is set or Before is set without Forward.
	Complete bool
}

// Archive stores append-only, time-ordered items per user. Items are ordered
// by time and, for equal times, by insertion order.
type Archive interface {
	// Append stores item for user and returns its id.
	Append(ctx context.Context, user string, item Item) (string, error)
	// AppendMany stores the entries, possibly of several users, in one
	// transaction: all of them or, on error, none. It is the write of a
	// group commit (package storage/batch), which pays one commit and one
	// fsync for many senders' appends. Like Append it generates empty ids
	// and sets zero times to the current time, and it does so in entries
	// itself, so the caller learns the ids. An entry whose id already
	// exists in its user's archive is skipped instead of failing the
	// batch, so a batch retried after an ambiguous commit error is not
	// written twice. It returns how many entries were written.
	AppendMany(ctx context.Context, entries []Entry) (int, error)
	// Get returns the item with id or ErrNotFound.
	Get(ctx context.Context, user, id string) (Item, error)
	// Query returns the page of user's archive selected by q, always in
	// chronological order.
	Query(ctx context.Context, user string, q Query) ([]Item, Page, error)
	// Delete removes the items with the given ids; unknown ids are ignored.
	Delete(ctx context.Context, user string, ids ...string) error
	// Count returns the number of items in user's archive.
	Count(ctx context.Context, user string) (int, error)
	// Purge removes every item of user.
	Purge(ctx context.Context, user string) error
	// DeleteOlder removes the items of every user whose time is before
	// the given time and returns how many were removed; it implements
	// retention policies.
	DeleteOlder(ctx context.Context, before time.Time) (int64, error)
}
