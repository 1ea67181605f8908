// Package postgres is the PostgreSQL storage backend on jackc/pgx/v5's
// pgxpool. Importing it registers the driver "postgres"; its data source
// name is a libpq URL or keyword/value string, for example
// "postgres://impetus:secret@localhost/impetus?sslmode=disable". Extra
// parameters such as search_path are passed to the server, which lets
// several deployments (or test runs) share a database in separate schemas.
//
// Map writes take a transaction-scoped advisory lock on (map, user) before
// touching rows. That serialises Update with every other write of the same
// user's map, including inserts of keys that do not exist yet (which row
// locks such as SELECT … FOR UPDATE cannot cover), without needing
// SERIALIZABLE isolation and its retry loops. Unrelated users hash to
// different locks; a rare hash collision only makes two users wait for
// each other.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"impetus/internal/storage"
	"impetus/internal/storage/internal/common"
	"impetus/internal/storage/internal/migrate"
	"impetus/internal/storage/internal/sqlq"
)

func init() {
	storage.Register("postgres", func(ctx context.Context, dsn string) (storage.Backend, error) {
		return Open(ctx, dsn)
	})
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLock is the advisory lock key that serialises migrations of
// concurrently starting servers.
const migrationLock = 0x696d7065747573 // "impetus"

// Backend is a storage.Backend on a PostgreSQL connection pool.
type Backend struct {
	pool *pgxpool.Pool
}

// Open connects to dsn, applies pending migrations and returns the backend.
func Open(ctx context.Context, dsn string) (*Backend, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	b := &Backend{pool: pool}
	if err := b.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return b, nil
}

// Pool returns the underlying pool, for health checks and metrics.
func (b *Backend) Pool() *pgxpool.Pool { return b.pool }

// migrate applies pending migrations in one transaction under an advisory
// lock: PostgreSQL DDL is transactional, so a failed step leaves the schema
// as it was, and two servers starting together cannot both apply a step.
func (b *Backend) migrate(ctx context.Context) error {
	ms, err := migrate.Load(migrationFS, "migrations")
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrationLock)); err != nil {
			return fmt.Errorf("postgres: lock for migrations: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("postgres: create schema_migrations: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
			return fmt.Errorf("postgres: read schema version: %w", err)
		}
		if latest := migrate.Latest(ms); current > latest {
			return fmt.Errorf("postgres: database is at schema version %d, this program knows up to %d: %w", current, latest, storage.ErrSchemaTooNew)
		}
		for _, m := range ms[current:] {
			// No arguments: pgx then uses the simple protocol, which
			// accepts a file of several statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("postgres: migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
				return fmt.Errorf("postgres: record migration %s: %w", m.Name, err)
			}
		}
		return nil
	})
}

// Close closes the pool, waiting for connections in use to be released.
func (b *Backend) Close() error {
	b.pool.Close()
	return nil
}

// KV returns the single-value store called name.
func (b *Backend) KV(name string) storage.KV { return kvStore{b, name} }

// Map returns the keyed store called name.
func (b *Backend) Map(name string) storage.Map { return mapStore{b, name} }

// Archive returns the item store called name.
func (b *Backend) Archive(name string) storage.Archive { return archiveStore{b, name} }

// lockKey returns the SQL expression of the advisory lock key of one user's
// map, given SQL expressions for the store and the user. The unit separator
// keeps ("ab", "c") and ("a", "bc") apart before hashing.
func lockKey(store, user string) string {
	return "hashtextextended('storage_map' || chr(31) || " + store + " || chr(31) || " + user + ", 0)"
}

// DeleteUser removes user from every store in one transaction, first
// taking the map locks of that user so a concurrent Update cannot write
// entries back after they were deleted.
func (b *Backend) DeleteUser(ctx context.Context, user string) error {
	if err := common.User(user); err != nil {
		return err
	}
	return b.tx(ctx, "delete user", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock("+lockKey("s.store", "$1::text")+") FROM (SELECT DISTINCT store FROM storage_map WHERE username = $1 ORDER BY store) s", user); err != nil {
			return err
		}
		for _, table := range []string{"storage_kv", "storage_map", "storage_archive"} {
			if _, err := tx.Exec(ctx, "DELETE FROM "+table+" WHERE username = $1", user); err != nil {
				return err
			}
		}
		return nil
	})
}

// tx runs fn in a transaction and commits it unless fn fails or ctx ends
// first.
func (b *Backend) tx(ctx context.Context, what string, fn func(tx pgx.Tx) error) (err error) {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %s: %w", what, err)
	}
	defer func() {
		if err != nil {
			// The caller's ctx may be the reason for the failure; the
			// rollback must still reach the server.
			tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err := fn(tx); err != nil {
		return wrapKeep(what, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("postgres: %s: %w", what, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: %s: commit: %w", what, err)
	}
	return nil
}

// errFromFn marks errors returned by a caller's Update function so that tx
// passes them through unwrapped.
type errFromFn struct{ err error }

func (e errFromFn) Error() string { return e.err.Error() }
func (e errFromFn) Unwrap() error { return e.err }

func wrapKeep(what string, err error) error {
	var f errFromFn
	if errors.As(err, &f) {
		return f.err
	}
	return fmt.Errorf("postgres: %s: %w", what, err)
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("postgres: %s: %w", what, err)
}

type kvStore struct {
	b    *Backend
	name string
}

func getValue(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, what, query string, args ...any) ([]byte, error) {
	var v []byte
	err := q.QueryRow(ctx, query, args...).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, wrap(what, err)
	}
	return common.NonNil(v), nil
}

func (s kvStore) Get(ctx context.Context, user string) ([]byte, error) {
	if err := common.StoreUser("kv", s.name, user); err != nil {
		return nil, err
	}
	return getValue(ctx, s.b.pool, "kv get", "SELECT value FROM storage_kv WHERE store = $1 AND username = $2", s.name, user)
}

func (s kvStore) Set(ctx context.Context, user string, value []byte) error {
	if err := common.StoreUser("kv", s.name, user); err != nil {
		return err
	}
	_, err := s.b.pool.Exec(ctx, "INSERT INTO storage_kv (store, username, value) VALUES ($1, $2, $3) ON CONFLICT (store, username) DO UPDATE SET value = excluded.value",
		s.name, user, common.NonNil(value))
	return wrap("kv set", err)
}

func (s kvStore) Delete(ctx context.Context, user string) error {
	if err := common.StoreUser("kv", s.name, user); err != nil {
		return err
	}
	_, err := s.b.pool.Exec(ctx, "DELETE FROM storage_kv WHERE store = $1 AND username = $2", s.name, user)
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
	return getValue(ctx, s.b.pool, "map get", "SELECT value FROM storage_map WHERE store = $1 AND username = $2 AND key = $3", s.name, user, key)
}

func (s mapStore) All(ctx context.Context, user string) (map[string][]byte, error) {
	if err := common.StoreUser("map", s.name, user); err != nil {
		return nil, err
	}
	return allValues(ctx, s.b.pool, s.name, user)
}

func allValues(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, store, user string) (map[string][]byte, error) {
	rows, err := q.Query(ctx, "SELECT key, value FROM storage_map WHERE store = $1 AND username = $2", store, user)
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

// Set, Delete and DeleteAll go through the same locked transaction as
// Update: a blind write that slipped between an Update's read and its write
// would otherwise be overwritten.
func (s mapStore) Set(ctx context.Context, user, key string, value []byte) error {
	return s.Update(ctx, user, func(tx storage.MapTx) error { return tx.Set(key, value) })
}

func (s mapStore) Delete(ctx context.Context, user, key string) error {
	return s.Update(ctx, user, func(tx storage.MapTx) error { return tx.Delete(key) })
}

func (s mapStore) DeleteAll(ctx context.Context, user string) error {
	return s.Update(ctx, user, func(tx storage.MapTx) error {
		t := tx.(*mapTx)
		_, err := t.tx.Exec(t.ctx, "DELETE FROM storage_map WHERE store = $1 AND username = $2", s.name, user)
		return wrap("map delete all", err)
	})
}

// Update runs fn in a READ COMMITTED transaction holding the (map, user)
// advisory lock, which makes it serialisable with respect to every other
// write of that user's map.
func (s mapStore) Update(ctx context.Context, user string, fn func(tx storage.MapTx) error) error {
	if err := common.StoreUser("map", s.name, user); err != nil {
		return err
	}
	return s.b.tx(ctx, "map update", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock("+lockKey("$1::text", "$2::text")+")", s.name, user); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		mtx := &mapTx{ctx: ctx, store: s.name, user: user, tx: tx}
		defer func() { mtx.done = true }()
		if err := fn(mtx); err != nil {
			return errFromFn{err}
		}
		return nil
	})
}

type mapTx struct {
	ctx         context.Context
	store, user string
	tx          pgx.Tx
	done        bool
}

var errTxDone = errors.New("postgres: transaction used after Update returned")

func (t *mapTx) Get(key string) ([]byte, error) {
	if t.done {
		return nil, errTxDone
	}
	if err := common.Key(key); err != nil {
		return nil, err
	}
	return getValue(t.ctx, t.tx, "map tx get", "SELECT value FROM storage_map WHERE store = $1 AND username = $2 AND key = $3", t.store, t.user, key)
}

func (t *mapTx) Set(key string, value []byte) error {
	if t.done {
		return errTxDone
	}
	if err := common.Key(key); err != nil {
		return err
	}
	_, err := t.tx.Exec(t.ctx, "INSERT INTO storage_map (store, username, key, value) VALUES ($1, $2, $3, $4) ON CONFLICT (store, username, key) DO UPDATE SET value = excluded.value",
		t.store, t.user, key, common.NonNil(value))
	return wrap("map tx set", err)
}

func (t *mapTx) Delete(key string) error {
	if t.done {
		return errTxDone
	}
	if err := common.Key(key); err != nil {
		return err
	}
	_, err := t.tx.Exec(t.ctx, "DELETE FROM storage_map WHERE store = $1 AND username = $2 AND key = $3", t.store, t.user, key)
	return wrap("map tx delete", err)
}

func (t *mapTx) All() (map[string][]byte, error) {
	if t.done {
		return nil, errTxDone
	}
	return allValues(t.ctx, t.tx, t.store, t.user)
}

type archiveStore struct {
	b    *Backend
	name string
}

func (s archiveStore) Append(ctx context.Context, user string, item storage.Item) (string, error) {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return "", err
	}
	item, err := common.PrepareItem(item, time.Now())
	if err != nil {
		return "", err
	}
	tag, err := s.b.pool.Exec(ctx, "INSERT INTO storage_archive (store, username, id, peer, ts, data) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (store, username, id) DO NOTHING",
		s.name, user, item.ID, item.With, item.Time, item.Data)
	if err != nil {
		return "", wrap("archive append", err)
	}
	if tag.RowsAffected() == 0 {
		return "", fmt.Errorf("%w: %q", storage.ErrConflict, item.ID)
	}
	return item.ID, nil
}

// AppendMany sends the inserts as one pipelined batch inside one
// transaction: one round trip and one commit for the whole group.
func (s archiveStore) AppendMany(ctx context.Context, entries []storage.Entry) (int, error) {
	if err := common.PrepareEntries(s.name, entries, time.Now()); err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, nil
	}
	var n int64
	err := s.b.tx(ctx, "archive append many", func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		for _, e := range entries {
			batch.Queue("INSERT INTO storage_archive (store, username, id, peer, ts, data) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (store, username, id) DO NOTHING",
				s.name, e.User, e.Item.ID, e.Item.With, e.Item.Time, e.Item.Data)
		}
		br := tx.SendBatch(ctx, batch)
		for range entries {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return err
			}
			n += tag.RowsAffected()
		}
		return br.Close()
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
	err := s.b.pool.QueryRow(ctx, "SELECT peer, ts, data FROM storage_archive WHERE store = $1 AND username = $2 AND id = $3",
		s.name, user, id).Scan(&it.With, &it.Time, &it.Data)
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.Item{}, storage.ErrNotFound
	}
	if err != nil {
		return storage.Item{}, wrap("archive get", err)
	}
	it.Time = it.Time.UTC()
	it.Data = common.NonNil(it.Data)
	return it, nil
}

func (s archiveStore) cursor(ctx context.Context, user, id string) (*sqlq.Cursor, error) {
	var ts time.Time
	var seq int64
	err := s.b.pool.QueryRow(ctx, "SELECT ts, seq FROM storage_archive WHERE store = $1 AND username = $2 AND id = $3",
		s.name, user, id).Scan(&ts, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: cursor %q", storage.ErrNotFound, id)
	}
	if err != nil {
		return nil, wrap("archive cursor", err)
	}
	return &sqlq.Cursor{TS: ts, Seq: seq}, nil
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
	query, args, desc := sqlq.Archive("storage_archive", func(n int) string { return "$" + strconv.Itoa(n) },
		func(t time.Time) any { return t }, s.name, user, q, after, before)
	// pgx prepares and caches each distinct query text per connection.
	rows, err := s.b.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, storage.Page{}, wrap("archive query", err)
	}
	defer rows.Close()
	var items []storage.Item
	for rows.Next() {
		var it storage.Item
		if err := rows.Scan(&it.ID, &it.With, &it.Time, &it.Data); err != nil {
			return nil, storage.Page{}, wrap("archive query", err)
		}
		it.Time = it.Time.UTC()
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
	_, err := s.b.pool.Exec(ctx, "DELETE FROM storage_archive WHERE store = $1 AND username = $2 AND id = ANY($3)", s.name, user, ids)
	return wrap("archive delete", err)
}

func (s archiveStore) Count(ctx context.Context, user string) (int, error) {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return 0, err
	}
	var n int
	if err := s.b.pool.QueryRow(ctx, "SELECT COUNT(*) FROM storage_archive WHERE store = $1 AND username = $2", s.name, user).Scan(&n); err != nil {
		return 0, wrap("archive count", err)
	}
	return n, nil
}

func (s archiveStore) Purge(ctx context.Context, user string) error {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return err
	}
	_, err := s.b.pool.Exec(ctx, "DELETE FROM storage_archive WHERE store = $1 AND username = $2", s.name, user)
	return wrap("archive purge", err)
}

func (s archiveStore) DeleteOlder(ctx context.Context, before time.Time) (int64, error) {
	if err := common.Name("archive", s.name); err != nil {
		return 0, err
	}
	tag, err := s.b.pool.Exec(ctx, "DELETE FROM storage_archive WHERE store = $1 AND ts < $2", s.name, common.Time(before))
	if err != nil {
		return 0, wrap("archive delete older", err)
	}
	return tag.RowsAffected(), nil
}
