// Package memory is an in-memory storage backend for unit tests of other
// packages. It passes the same conformance suite as the SQL backends but
// keeps nothing across restarts. It registers itself as driver "memory"; the
// data source name is ignored.
package memory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"impetus/internal/storage"
	"impetus/internal/storage/internal/common"
)

func init() {
	storage.Register("memory", func(ctx context.Context, dsn string) (storage.Backend, error) {
		return New(), nil
	})
}

// errClosed is returned by every operation after Close.
var errClosed = errors.New("memory: backend closed")

type entry struct {
	seq  int64
	item storage.Item
}

// Backend is an in-memory storage.Backend. One mutex guards everything:
// simplicity matters more than throughput here, and it makes Map.Update
// trivially serialisable.
type Backend struct {
	mu       sync.RWMutex
	closed   bool
	seq      int64
	kv       map[string]map[string][]byte            // store → user → value
	maps     map[string]map[string]map[string][]byte // store → user → key → value
	archives map[string]map[string][]entry           // store → user → items in (time, seq) order
}

// New returns an empty backend.
func New() *Backend {
	return &Backend{
		kv:       map[string]map[string][]byte{},
		maps:     map[string]map[string]map[string][]byte{},
		archives: map[string]map[string][]entry{},
	}
}

// KV returns the single-value store called name.
func (b *Backend) KV(name string) storage.KV { return kvStore{b, name} }

// Map returns the keyed store called name.
func (b *Backend) Map(name string) storage.Map { return mapStore{b, name} }

// Archive returns the item store called name.
func (b *Backend) Archive(name string) storage.Archive { return archiveStore{b, name} }

// Close discards all data.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.kv, b.maps, b.archives = nil, nil, nil
	return nil
}

// DeleteUser removes user from every store.
func (b *Backend) DeleteUser(ctx context.Context, user string) error {
	if err := common.User(user); err != nil {
		return err
	}
	unlock, err := b.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	for _, m := range b.kv {
		delete(m, user)
	}
	for _, m := range b.maps {
		delete(m, user)
	}
	for _, m := range b.archives {
		delete(m, user)
	}
	return nil
}

func (b *Backend) lock(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errClosed
	}
	return b.mu.Unlock, nil
}

func (b *Backend) rlock(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return nil, errClosed
	}
	return b.mu.RUnlock, nil
}

// lockUser checks that user may have data in the store kind/name, then takes the
// backend's lock: exclusive when write is set, shared otherwise. The caller defers the
// returned unlock.
func (b *Backend) lockUser(ctx context.Context, write bool, kind, name, user string) (func(), error) {
	if err := common.StoreUser(kind, name, user); err != nil {
		return nil, err
	}
	if write {
		return b.lock(ctx)
	}
	return b.rlock(ctx)
}

type kvStore struct {
	b    *Backend
	name string
}

func (s kvStore) Get(ctx context.Context, user string) ([]byte, error) {
	unlock, err := s.b.lockUser(ctx, false, "kv", s.name, user)
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, ok := s.b.kv[s.name][user]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return slices.Clone(common.NonNil(v)), nil
}

func (s kvStore) Set(ctx context.Context, user string, value []byte) error {
	unlock, err := s.b.lockUser(ctx, true, "kv", s.name, user)
	if err != nil {
		return err
	}
	defer unlock()
	m := s.b.kv[s.name]
	if m == nil {
		m = map[string][]byte{}
		s.b.kv[s.name] = m
	}
	m[user] = slices.Clone(common.NonNil(value))
	return nil
}

func (s kvStore) Delete(ctx context.Context, user string) error {
	unlock, err := s.b.lockUser(ctx, true, "kv", s.name, user)
	if err != nil {
		return err
	}
	defer unlock()
	delete(s.b.kv[s.name], user)
	return nil
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
	unlock, err := s.b.rlock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, ok := s.b.maps[s.name][user][key]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return slices.Clone(common.NonNil(v)), nil
}

func (s mapStore) Set(ctx context.Context, user, key string, value []byte) error {
	return s.Update(ctx, user, func(tx storage.MapTx) error { return tx.Set(key, value) })
}

func (s mapStore) Delete(ctx context.Context, user, key string) error {
	return s.Update(ctx, user, func(tx storage.MapTx) error { return tx.Delete(key) })
}

func (s mapStore) All(ctx context.Context, user string) (map[string][]byte, error) {
	unlock, err := s.b.lockUser(ctx, false, "map", s.name, user)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return cloneMap(s.b.maps[s.name][user]), nil
}

func (s mapStore) DeleteAll(ctx context.Context, user string) error {
	unlock, err := s.b.lockUser(ctx, true, "map", s.name, user)
	if err != nil {
		return err
	}
	defer unlock()
	delete(s.b.maps[s.name], user)
	return nil
}

// Update stages fn's writes in an overlay and applies them only when fn
// succeeds and ctx is still live, so a failing fn leaves no trace.
func (s mapStore) Update(ctx context.Context, user string, fn func(tx storage.MapTx) error) error {
	unlock, err := s.b.lockUser(ctx, true, "map", s.name, user)
	if err != nil {
		return err
	}
	defer unlock()
	tx := &mapTx{base: s.b.maps[s.name][user], changes: map[string][]byte{}}
	err = fn(tx)
	tx.done = true
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	if len(tx.changes) == 0 {
		return nil
	}
	users := s.b.maps[s.name]
	if users == nil {
		users = map[string]map[string][]byte{}
		s.b.maps[s.name] = users
	}
	m := users[user]
	if m == nil {
		m = map[string][]byte{}
		users[user] = m
	}
	for k, v := range tx.changes {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	if len(m) == 0 {
		delete(users, user)
	}
	return nil
}

// mapTx records changes; a nil value in changes marks a deletion.
type mapTx struct {
	base    map[string][]byte
	changes map[string][]byte
	done    bool
}

var errTxDone = errors.New("memory: transaction used after Update returned")

func (tx *mapTx) Get(key string) ([]byte, error) {
	if tx.done {
		return nil, errTxDone
	}
	if err := common.Key(key); err != nil {
		return nil, err
	}
	v, changed := tx.changes[key]
	if !changed {
		var ok bool
		if v, ok = tx.base[key]; !ok {
			return nil, storage.ErrNotFound
		}
	} else if v == nil {
		return nil, storage.ErrNotFound
	}
	return slices.Clone(common.NonNil(v)), nil
}

func (tx *mapTx) Set(key string, value []byte) error {
	if tx.done {
		return errTxDone
	}
	if err := common.Key(key); err != nil {
		return err
	}
	tx.changes[key] = slices.Clone(common.NonNil(value))
	return nil
}

func (tx *mapTx) Delete(key string) error {
	if tx.done {
		return errTxDone
	}
	if err := common.Key(key); err != nil {
		return err
	}
	tx.changes[key] = nil
	return nil
}

func (tx *mapTx) All() (map[string][]byte, error) {
	if tx.done {
		return nil, errTxDone
	}
	out := cloneMap(tx.base)
	for k, v := range tx.changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = slices.Clone(v)
		}
	}
	return out, nil
}

func cloneMap(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = slices.Clone(common.NonNil(v))
	}
	return out
}

type archiveStore struct {
	b    *Backend
	name string
}

func cloneItem(it storage.Item) storage.Item {
	it.Data = slices.Clone(common.NonNil(it.Data))
	return it
}

func less(a, b entry) int {
	if c := a.item.Time.Compare(b.item.Time); c != 0 {
		return c
	}
	switch {
	case a.seq < b.seq:
		return -1
	case a.seq > b.seq:
		return 1
	}
	return 0
}

func (s archiveStore) Append(ctx context.Context, user string, item storage.Item) (string, error) {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return "", err
	}
	item, err := common.PrepareItem(item, time.Now())
	if err != nil {
		return "", err
	}
	unlock, err := s.b.lock(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	users := s.b.archives[s.name]
	if users == nil {
		users = map[string][]entry{}
		s.b.archives[s.name] = users
	}
	list := users[user]
	if slices.ContainsFunc(list, func(e entry) bool { return e.item.ID == item.ID }) {
		return "", fmt.Errorf("%w: %q", storage.ErrConflict, item.ID)
	}
	s.b.seq++
	e := entry{seq: s.b.seq, item: cloneItem(item)}
	i, _ := slices.BinarySearchFunc(list, e, less)
	users[user] = slices.Insert(list, i, e)
	return item.ID, nil
}

// AppendMany inserts every entry under one hold of the backend's lock, so
// readers see all of them or none.
func (s archiveStore) AppendMany(ctx context.Context, entries []storage.Entry) (int, error) {
	if err := common.PrepareEntries(s.name, entries, time.Now()); err != nil {
		return 0, err
	}
	unlock, err := s.b.lock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	users := s.b.archives[s.name]
	if users == nil {
		users = map[string][]entry{}
		s.b.archives[s.name] = users
	}
	n := 0
	for _, en := range entries {
		list := users[en.User]
		if slices.ContainsFunc(list, func(e entry) bool { return e.item.ID == en.Item.ID }) {
			continue
		}
		s.b.seq++
		e := entry{seq: s.b.seq, item: cloneItem(en.Item)}
		i, _ := slices.BinarySearchFunc(list, e, less)
		users[en.User] = slices.Insert(list, i, e)
		n++
	}
	return n, nil
}

func (s archiveStore) Get(ctx context.Context, user, id string) (storage.Item, error) {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return storage.Item{}, err
	}
	if err := common.ID(id); err != nil {
		return storage.Item{}, err
	}
	unlock, err := s.b.rlock(ctx)
	if err != nil {
		return storage.Item{}, err
	}
	defer unlock()
	list := s.b.archives[s.name][user]
	i := slices.IndexFunc(list, func(e entry) bool { return e.item.ID == id })
	if i < 0 {
		return storage.Item{}, storage.ErrNotFound
	}
	return cloneItem(list[i].item), nil
}

func (s archiveStore) Query(ctx context.Context, user string, q storage.Query) ([]storage.Item, storage.Page, error) {
	if err := common.StoreUser("archive", s.name, user); err != nil {
		return nil, storage.Page{}, err
	}
	if err := common.CheckQuery(q); err != nil {
		return nil, storage.Page{}, err
	}
	unlock, err := s.b.rlock(ctx)
	if err != nil {
		return nil, storage.Page{}, err
	}
	defer unlock()
	list := s.b.archives[s.name][user]
	cursor := func(id string) (entry, error) {
		i := slices.IndexFunc(list, func(e entry) bool { return e.item.ID == id })
		if i < 0 {
			return entry{}, fmt.Errorf("%w: cursor %q", storage.ErrNotFound, id)
		}
		return list[i], nil
	}
	var after, before *entry
	if q.After != "" {
		e, err := cursor(q.After)
		if err != nil {
			return nil, storage.Page{}, err
		}
		after = &e
	}
	if q.Before != "" {
		e, err := cursor(q.Before)
		if err != nil {
			return nil, storage.Page{}, err
		}
		before = &e
	}
	start, end := common.Time(q.Start), common.Time(q.End)
	var match []entry
	for _, e := range list {
		switch {
		case q.With != "" && e.item.With != q.With,
			!q.Start.IsZero() && e.item.Time.Before(start),
			!q.End.IsZero() && e.item.Time.After(end),
			after != nil && less(e, *after) <= 0,
			before != nil && less(e, *before) >= 0:
			continue
		}
		match = append(match, e)
	}
	page := storage.Page{Complete: true}
	if q.Limit > 0 && len(match) > q.Limit {
		page.Complete = false
		if q.Last || (q.Before != "" && !q.Forward) {
			match = match[len(match)-q.Limit:]
		} else {
			match = match[:q.Limit]
		}
	}
	items := make([]storage.Item, len(match))
	for i, e := range match {
		items[i] = cloneItem(e.item)
	}
	if len(items) > 0 {
		page.First, page.Last = items[0].ID, items[len(items)-1].ID
	}
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
	unlock, err := s.b.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	users := s.b.archives[s.name]
	if users == nil {
		return nil
	}
	users[user] = slices.DeleteFunc(users[user], func(e entry) bool { return slices.Contains(ids, e.item.ID) })
	if len(users[user]) == 0 {
		delete(users, user)
	}
	return nil
}

func (s archiveStore) Count(ctx context.Context, user string) (int, error) {
	unlock, err := s.b.lockUser(ctx, false, "archive", s.name, user)
	if err != nil {
		return 0, err
	}
	defer unlock()
	return len(s.b.archives[s.name][user]), nil
}

func (s archiveStore) Purge(ctx context.Context, user string) error {
	unlock, err := s.b.lockUser(ctx, true, "archive", s.name, user)
	if err != nil {
		return err
	}
	defer unlock()
	delete(s.b.archives[s.name], user)
	return nil
}

func (s archiveStore) DeleteOlder(ctx context.Context, before time.Time) (int64, error) {
	if err := common.Name("archive", s.name); err != nil {
		return 0, err
	}
	unlock, err := s.b.lock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	before = common.Time(before)
	var n int64
	users := s.b.archives[s.name]
	for _, u := range slices.Collect(maps.Keys(users)) {
		kept := slices.DeleteFunc(users[u], func(e entry) bool {
			if e.item.Time.Before(before) {
				n++
				return true
			}
			return false
		})
		if len(kept) == 0 {
			delete(users, u)
		} else {
			users[u] = kept
		}
	}
	return n, nil
}
