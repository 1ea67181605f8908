// Package sqlite is the SQLite storage backend, built on the pure-Go
// modernc.org/sqlite driver so the server stays a static, cgo-free binary.
// Importing it registers the driver "sqlite"; its data source name is the
// path of the database file, or of a directory in which impetus.db is used.
//
// Durability: the database runs in WAL mode with synchronous=FULL. With
// NORMAL, WAL commits are written to the operating system but fsynced only
// at checkpoints; that survives a kill -9 of the process (the kernel still
// holds the pages) but not a power cut, kernel panic or a host killing the
// VM, after which the last acknowledged transactions can silently roll
// back. An XMPP server acknowledges stanzas (offline storage, roster pushes,
// MAM) to clients, so FULL fsyncs the WAL on every commit: once a call
// returns nil, the write survives any crash. The price is one fsync per
// write transaction, which Map.Update amortises over several changes.
//
// Concurrency: SQLite admits one writer at a time, so the backend holds
// exactly one writer connection and a small pool of read-only connections.
// Funnelling every write through one connection makes writers queue inside
// database/sql, where waits honour context deadlines, instead of sleeping
// in busy_timeout and risking SQLITE_BUSY when two deferred transactions
// both try to upgrade to writing. Write transactions start with BEGIN
// IMMEDIATE so they hold the write lock from their first read, which is
// what makes Map.Update a serialisable read-modify-write. Readers run in
// parallel with the writer thanks to WAL and are opened query_only so that
// a mistaken write on them fails loudly. busy_timeout still matters for
// other processes touching the file (backups, the sqlite3 shell).
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the database/sql driver "sqlite"

	"impetus/internal/storage"
	"impetus/internal/storage/internal/common"
	"impetus/internal/storage/internal/migrate"
	"impetus/internal/storage/internal/sqlq"
)

func init() {
	storage.Register("sqlite", func(ctx context.Context, dsn string) (storage.Backend, error) {
		return Open(ctx, dsn)
	})
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// FileName is the database file used when the data source name is a
// directory.
const FileName = "impetus.db"

// readers is the size of the read pool; reads are short, so a few
// connections per core are enough.
const readers = 4

// writerCacheKiB is the page cache of the writer connection. Archive inserts of many users
// touch a leaf page per user in each per-user index; with SQLite's default 2 MiB cache those
// pages are read back from the file for every batch once an archive has grown.
const writerCacheKiB = 32 << 10

// walAutocheckpoint is the WAL size, in pages, that triggers a checkpoint. Between two
// checkpoints a page changed by many commits is copied into the database file once, so a
// larger WAL (16 MiB at 4 KiB pages, against SQLite's default 4 MiB) copies hot index pages
// less often; a reader's search of the WAL index stays cheap at that size.
const walAutocheckpoint = 4096

// Backend is a storage.Backend on one SQLite database file.
type Backend struct {
	path string
	w    *sql.DB // exactly one connection: every write goes through it
	r    *sql.DB // read-only pool

	// Prepared statements on the writer and on the reader pool.
	kvGet, kvSet, kvDelete                       *sql.Stmt
	mapGet, mapAll, mapSet, mapDelete, mapDelAll *sql.Stmt
	mapGetW, mapAllW                             *sql.Stmt
	arInsert, arGet, arCursor, arCount, arDelete *sql.Stmt
	arPurge, arDelOlder                          *sql.Stmt
	delUserKV, delUserMap, delUserArchive        *sql.Stmt

	// pageStmts caches the prepared archive page queries; there are only a
	// few dozen shapes, depending on which filters are set.
	pageStmts sync.Map // string → *sql.Stmt
}

// Open opens or creates the database at path (a file, or a directory that
// gets FileName), applies pending migrations and prepares statements.
func Open(ctx context.Context, path string) (*Backend, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	if fi, err := os.Stat(path); (err == nil && fi.IsDir()) || strings.HasSuffix(path, string(os.PathSeparator)) {
		path = filepath.Join(path, FileName)
	}
	if strings.ContainsAny(path, "?#") {
		// The driver splits its data source name at '?'.
		return nil, fmt.Errorf("sqlite: database path %q must not contain '?' or '#'", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	// Create the file ourselves so that user data is not world-readable;
	// SQLite gives the -wal and -shm files the same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	f.Close()

	b := &Backend{path: path}
	wq := url.Values{}
	wq.Set("_busy_timeout", "10000")
	wq.Set("_journal_mode", "WAL")
	wq.Set("_synchronous", "FULL")
	wq.Set("_txlock", "immediate")
	wq.Add("_pragma", "foreign_keys(1)")
	wq.Add("_pragma", fmt.Sprintf("cache_size(%d)", -writerCacheKiB))
	wq.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", walAutocheckpoint))
	if b.w, err = sql.Open("sqlite", path+"?"+wq.Encode()); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	b.w.SetMaxOpenConns(1)
	b.w.SetMaxIdleConns(1)
	b.w.SetConnMaxLifetime(0)
	b.w.SetConnMaxIdleTime(0)

	rq := url.Values{}
	rq.Set("_busy_timeout", "10000")
	rq.Set("_query_only", "1")
	if b.r, err = sql.Open("sqlite", path+"?"+rq.Encode()); err != nil {
		b.w.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	b.r.SetMaxOpenConns(readers)
	b.r.SetMaxIdleConns(readers)

	if err := b.init(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Backend) init(ctx context.Context) error {
	// Check the mode actually in force: journal_mode=WAL can silently stay
	// "delete" on file systems without shared memory support.
	var mode string
	if err := b.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("sqlite: %s: %w", b.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlite: %s: journal mode is %q, want wal", b.path, mode)
	}
	// Likewise confirm synchronous=FULL (2): durability must not depend on
	// the driver honouring a DSN key.
	var sync int
	if err := b.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return fmt.Errorf("sqlite: %s: %w", b.path, err)
	}
	if sync != 2 {
		return fmt.Errorf("sqlite: %s: synchronous is %d, want 2 (FULL)", b.path, sync)
	}
	if err := b.migrate(ctx); err != nil {
		return err
	}
	return b.prepare(ctx)
}

// migrate applies pending migrations in one IMMEDIATE transaction, so two
// processes opening the same new file cannot both apply them and a failed
// step leaves the schema untouched.
func (b *Backend) migrate(ctx context.Context) error {
	ms, err := migrate.Load(migrationFS, "migrations")
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	tx, err := b.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin migration: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at TEXT NOT NULL
	)`); err != nil {
		return fmt.Errorf("sqlite: create schema_migrations: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("sqlite: read schema version: %w", err)
	}
	if latest := migrate.Latest(ms); current > latest {
		return fmt.Errorf("sqlite: %s is at schema version %d, this program knows up to %d: %w", b.path, current, latest, storage.ErrSchemaTooNew)
	}
	for _, m := range ms[current:] {
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			m.Version, m.Name, time.Now().UTC().Format(time.RFC3339)); err != nil {
			return fmt.Errorf("sqlite: record migration %s: %w", m.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit migrations: %w", err)
	}
	return nil
}

func (b *Backend) prepare(ctx context.Context) error {
	for _, s := range []struct {
		db    *sql.DB
		dst   **sql.Stmt
		query string
	}{
		{b.r, &b.kvGet, "SELECT value FROM storage_kv WHERE store = ?1 AND username = ?2"},
		{b.w, &b.kvSet, "INSERT INTO storage_kv (store, username, value) VALUES (?1, ?2, ?3) ON CONFLICT (store, username) DO UPDATE SET value = excluded.value"},
		{b.w, &b.kvDelete, "DELETE FROM storage_kv WHERE store = ?1 AND username = ?2"},
		{b.r, &b.mapGet, "SELECT value FROM storage_map WHERE store = ?1 AND username = ?2 AND key = ?3"},
		{b.r, &b.mapAll, "SELECT key, value FROM storage_map WHERE store = ?1 AND username = ?2"},
		{b.w, &b.mapGetW, "SELECT value FROM storage_map WHERE store = ?1 AND username = ?2 AND key = ?3"},
		{b.w, &b.mapAllW, "SELECT key, value FROM storage_map WHERE store = ?1 AND username = ?2"},
		{b.w, &b.mapSet, "INSERT INTO storage_map (store, username, key, value) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (store, username, key) DO UPDATE SET value = excluded.value"},
		{b.w, &b.mapDelete, "DELETE FROM storage_map WHERE store = ?1 AND username = ?2 AND key = ?3"},
		{b.w, &b.mapDelAll, "DELETE FROM storage_map WHERE store = ?1 AND username = ?2"},
		{b.w, &b.arInsert, "INSERT INTO storage_archive (store, username, id, peer, ts, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (store, username, id) DO NOTHING"},
		{b.r, &b.arGet, "SELECT peer, ts, data FROM storage_archive WHERE store = ?1 AND username = ?2 AND id = ?3"},
		{b.r, &b.arCursor, "SELECT ts, seq FROM storage_archive WHERE store = ?1 AND username = ?2 AND id = ?3"},
		{b.r, &b.arCount, "SELECT COUNT(*) FROM storage_archive WHERE store = ?1 AND username = ?2"},
		{b.w, &b.arDelete, "DELETE FROM storage_archive WHERE store = ?1 AND username = ?2 AND id = ?3"},
		{b.w, &b.arPurge, "DELETE FROM storage_archive WHERE store = ?1 AND username = ?2"},
		{b.w, &b.arDelOlder, "DELETE FROM storage_archive WHERE store = ?1 AND ts < ?2"},
		{b.w, &b.delUserKV, "DELETE FROM storage_kv WHERE username = ?1"},
		{b.w, &b.delUserMap, "DELETE FROM storage_map WHERE username = ?1"},
		{b.w, &b.delUserArchive, "DELETE FROM storage_archive WHERE username = ?1"},
	} {
		st, err := s.db.PrepareContext(ctx, s.query)
		if err != nil {
			return fmt.Errorf("sqlite: prepare %q: %w", s.query, err)
		}
		*s.dst = st
	}
	return nil
}

// Close closes both connection pools. The WAL is checkpointed by SQLite
// when the last connection closes.
func (b *Backend) Close() error {
	var errs []error
	if b.r != nil {
		errs = append(errs, b.r.Close())
	}
	if b.w != nil {
		errs = append(errs, b.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// KV returns the single-value store called name.
func (b *Backend) KV(name string) storage.KV { return kvStore{b, name} }

// Map returns the keyed store called name.
func (b *Backend) Map(name string) storage.Map { return mapStore{b, name} }

// Archive returns the item store called name.
func (b *Backend) Archive(name string) storage.Archive { return archiveStore{b, name} }

// DeleteUser removes user from every store in one transaction.
func (b *Backend) DeleteUser(ctx context.Context, user string) error {
	if err := common.User(user); err != nil {
		return err
	}
	return b.write(ctx, "delete user", func(tx *sql.Tx) error {
		for _, st := range []*sql.Stmt{b.delUserKV, b.delUserMap, b.delUserArchive} {
			if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, user); err != nil {
				return wrap("delete user", err)
			}
		}
		return nil
	})
}

// write runs fn in an IMMEDIATE transaction on the writer connection and
// commits it unless fn fails or ctx ends first.
func (b *Backend) write(ctx context.Context, what string, fn func(tx *sql.Tx) error) (err error) {
	tx, err := b.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: %s: %w", what, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: %s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: %s: commit: %w", what, err)
	}
	return nil
}

// wrap adds the package prefix and the operation to a driver error.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sqlite: %s: %w", what, err)
}

type kvStore struct {
	b    *Backend
	name string
}

func (s kvStore) Get(ctx context.Context, user string) ([]byte, error) {
	if err := common.StoreUser("kv", s.name, user); err != nil {
		return nil, err
	}
	var v []byte
	err := s.b.kvGet.QueryRowContext(ctx, s.name, user).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, wrap("kv get", err)
	}
	return common.NonNil(v), nil
}

func (s kvStore) Set(ctx context.Context, user string, value []byte) error {
	if err := common.StoreUser("kv", s.name, user); err != nil {
		return err
	}
	_, err := s.b.kvSet.ExecContext(ctx, s.name, user, common.NonNil(value))
	return wrap("kv set", err)
}

func (s kvStore) Delete(ctx context.Context, user string) error {
	if err := common.StoreUser("kv", s.name, user); err != nil {
		return err
	}
	_, err := s.b.kvDelete.ExecContext(ctx, s.name, user)
	return wrap("kv delete", err)
}

type mapStore struct {
	b    *Backend
	name string
}

func (s mapStore) check(user, key string) error {
	if err := common.StoreUser("map", s.name, user); err != nil {
		return err
	}
	return common.Key(key)
}

func (s mapStore) Get(ctx context.Context, user, key string) ([]byte, error) {
	if err := s.check(user, key); err != nil {
		return nil, err
	}
	return getValue(s.b.mapGet.QueryRowContext(ctx, s.name, user, key), "map get")
}

func getValue(row *sql.Row, what string) ([]byte, error) {
	var v []byte
	err := row.Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, wrap(what, err)
	}
	return common.NonNil(v), nil
}

func allValues(ctx context.Context, st *sql.Stmt, store, user string) (map[string][]byte, error) {
	rows, err := st.QueryContext(ctx, store, user)
	if err != nil {
		return nil, wrap("map all", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, wrap("map all", err)
		}
		out[k] = common.NonNil(v)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("map all", err)
	}
	return out, nil
}

// Set, Delete and DeleteAll are single statements on the one writer
// connection, so they are already serialised with Update.
func (s mapStore) Set(ctx context.Context, user, key string, value []byte) error {
	if err := s.check(user, key); err != nil {
		return err
	}
	_, err := s.b.mapSet.ExecContext(ctx, s.name, user, key, common.NonNil(value))
	return wrap("map set", err)
}

func (s mapStore) Delete(ctx context.Context, user, key string) error {
	if err := s.check(user, key); err != nil {
		return err
	}
	_, err := s.b.mapDelete.ExecContext(ctx, s.name, user, key)
	return wrap("map delete", err)
}

func (s mapStore) All(ctx context.Context, user string) (map[string][]byte, error) {
	if err := common.StoreUser("map", s.name, user); err != nil {
		return nil, err
	}
	return allValues(ctx, s.b.mapAll, s.name, user)
}

func (s mapStore) DeleteAll(ctx context.Context, user string) error {
	if err := common.StoreUser("map", s.name, user); err != nil {
		return err
	}
	_, err := s.b.mapDelAll.ExecContext(ctx, s.name, user)
	return wrap("map delete all", err)
}

// Update runs fn inside a BEGIN IMMEDIATE transaction on the writer
// connection: no other write can interleave between fn's reads and its
// writes.
func (s mapStore) Update(ctx context.Context, user string, fn func(tx storage.MapTx) error) error {
	if err := common.StoreUser("map", s.name, user); err != nil {
		return err
	}
	return s.b.write(ctx, "map update", func(tx *sql.Tx) error {
		mtx := &mapTx{ctx: ctx, s: s, user: user, tx: tx}
		defer func() { mtx.done = true }()
		return fn(mtx)
	})
}

type mapTx struct {
	ctx  context.Context
	s    mapStore
	user string
	tx   *sql.Tx
	done bool
}

var errTxDone = errors.New("sqlite: transaction used after Update returned")

func (t *mapTx) stmt(st *sql.Stmt) (*sql.Stmt, error) {
	if t.done {
		return nil, errTxDone
	}
	return t.tx.StmtContext(t.ctx, st), nil
}

func (t *mapTx) Get(key string) ([]byte, error) {
	if err := common.Key(key); err != nil {
		return nil, err
	}
	st, err := t.stmt(t.s.b.mapGetW)
	if err != nil {
		return nil, err
	}
	return getValue(st.QueryRowContext(t.ctx, t.s.name, t.user, key), "map tx get")
}

func (t *mapTx) Set(key string, value []byte) error {
	if err := common.Key(key); err != nil {
		return err
	}
	st, err := t.stmt(t.s.b.mapSet)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(t.ctx, t.s.name, t.user, key, common.NonNil(value))
	return wrap("map tx set", err)
}

func (t *mapTx) Delete(key string) error {
	if err := common.Key(key); err != nil {
		return err
	}
	st, err := t.stmt(t.s.b.mapDelete)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(t.ctx, t.s.name, t.user, key)
	return wrap("map tx delete", err)
}

func (t *mapTx) All() (map[string][]byte, error) {
	st, err := t.stmt(t.s.b.mapAllW)
	if err != nil {
		return nil, err
	}
	return allValues(t.ctx, st, t.s.name, t.user)
}

type archiveStore struct {
	b    *Backend
	name string
}

func micros(t time.Time) any { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func (s archiveStore) Append(ctx context.Context, user string, item storage.Item) (string, error) {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return "", err
	}
	item, err := common.PrepareItem(item, time.Now())
	if err != nil {
		return "", err
	}
	res, err := s.b.arInsert.ExecContext(ctx, s.name, user, item.ID, item.With, item.Time.UnixMicro(), item.Data)
	if err != nil {
		return "", wrap("archive append", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return "", wrap("archive append", err)
	} else if n == 0 {
		return "", fmt.Errorf("%w: %q", storage.ErrConflict, item.ID)
	}
	return item.ID, nil
}

// AppendMany inserts the entries in one IMMEDIATE transaction on the writer
// connection: one commit, and so one fsync of the WAL, for the whole batch.
func (s archiveStore) AppendMany(ctx context.Context, entries []storage.Entry) (int, error) {
	if err := common.PrepareEntries(s.name, entries, time.Now()); err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, nil
	}
	var n int64
	err := s.b.write(ctx, "archive append many", func(tx *sql.Tx) error {
		st := tx.StmtContext(ctx, s.b.arInsert)
		defer st.Close()
		for _, e := range entries {
			res, err := st.ExecContext(ctx, s.name, e.User, e.Item.ID, e.Item.With, e.Item.Time.UnixMicro(), e.Item.Data)
			if err != nil {
				return wrap("archive append many", err)
			}
			k, err := res.RowsAffected()
			if err != nil {
				return wrap("archive append many", err)
			}
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

func (s archiveStore) Get(ctx context.Context, user, id string) (storage.Item, error) {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return storage.Item{}, err
	}
	if err := common.ID(id); err != nil {
		return storage.Item{}, err
	}
	it := storage.Item{ID: id}
	var us int64
	err := s.b.arGet.QueryRowContext(ctx, s.name, user, id).Scan(&it.With, &us, &it.Data)
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Item{}, storage.ErrNotFound
	}
	if err != nil {
		return storage.Item{}, wrap("archive get", err)
	}
	it.Time = fromMicros(us)
	it.Data = common.NonNil(it.Data)
	return it, nil
}

func (s archiveStore) cursor(ctx context.Context, user, id string) (*sqlq.Cursor, error) {
	var us, seq int64
	err := s.b.arCursor.QueryRowContext(ctx, s.name, user, id).Scan(&us, &seq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: cursor %q", storage.ErrNotFound, id)
	}
	if err != nil {
		return nil, wrap("archive cursor", err)
	}
	return &sqlq.Cursor{TS: us, Seq: seq}, nil
}

func (s archiveStore) pageStmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.b.pageStmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.b.r.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.b.pageStmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

func (s archiveStore) Query(ctx context.Context, user string, q storage.Query) ([]storage.Item, storage.Page, error) {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return nil, storage.Page{}, err
	}
	if err := common.CheckQuery(q); err != nil {
		return nil, storage.Page{}, err
	}
	q.Start, q.End = common.Time(q.Start), common.Time(q.End)
	var after, before *sqlq.Cursor
	var err error
	if q.After != "" {
		if after, err = s.cursor(ctx, user, q.After); err != nil {
			return nil, storage.Page{}, err
		}
	}
	if q.Before != "" {
		if before, err = s.cursor(ctx, user, q.Before); err != nil {
			return nil, storage.Page{}, err
		}
	}
	query, args, desc := sqlq.Archive("storage_archive", func(n int) string { return fmt.Sprintf("?%d", n) }, micros, s.name, user, q, after, before)
	st, err := s.pageStmt(ctx, query)
	if err != nil {
		return nil, storage.Page{}, wrap("archive query", err)
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, storage.Page{}, wrap("archive query", err)
	}
	defer rows.Close()
	var items []storage.Item
	for rows.Next() {
		var it storage.Item
		var us int64
		if err := rows.Scan(&it.ID, &it.With, &us, &it.Data); err != nil {
			return nil, storage.Page{}, wrap("archive query", err)
		}
		it.Time = fromMicros(us)
		it.Data = common.NonNil(it.Data)
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, storage.Page{}, wrap("archive query", err)
	}
	items, page := sqlq.Finish(items, q, desc)
	return items, page, nil
}

func (s archiveStore) Delete(ctx context.Context, user string, ids ...string) error {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return err
	}
	for _, id := range ids {
		if err := common.ID(id); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return wrap("archive delete", err)
	}
	if len(ids) == 0 {
		return nil
	}
	return s.b.write(ctx, "archive delete", func(tx *sql.Tx) error {
		st := tx.StmtContext(ctx, s.b.arDelete)
		for _, id := range ids {
			if _, err := st.ExecContext(ctx, s.name, user, id); err != nil {
				return wrap("archive delete", err)
			}
		}
		return nil
	})
}

func (s archiveStore) Count(ctx context.Context, user string) (int, error) {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return 0, err
	}
	var n int
	if err := s.b.arCount.QueryRowContext(ctx, s.name, user).Scan(&n); err != nil {
		return 0, wrap("archive count", err)
	}
	return n, nil
}

func (s archiveStore) Purge(ctx context.Context, user string) error {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return err
	}
	_, err := s.b.arPurge.ExecContext(ctx, s.name, user)
	return wrap("archive purge", err)
}

func (s archiveStore) DeleteOlder(ctx context.Context, before time.Time) (int64, error) {
	if err := common.Name("archive", s.name); err != nil {
		return 0, err
	}
	res, err := s.b.arDelOlder.ExecContext(ctx, s.name, common.Time(before).UnixMicro())
	if err != nil {
		return 0, wrap("archive delete older", err)
	}
	n, err := res.RowsAffected()
	return n, wrap("archive delete older", err)
}
