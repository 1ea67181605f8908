// Package storagetest is the conformance suite that every storage backend
// must pass. Each backend's tests call Run with a function that opens a
// fresh, empty backend.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"impetus/internal/storage"
)

// Run exercises every method of the backend returned by open. open must
// return an empty backend; Run closes it when the test ends.
func Run(t *testing.T, open func(t *testing.T) storage.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Backend)
	}{
		{"KV", testKV},
		{"KVIsolation", testKVIsolation},
		{"Map", testMap},
		{"MapIsolation", testMapIsolation},
		{"MapUpdate", testMapUpdate},
		{"MapUpdateRollback", testMapUpdateRollback},
		{"MapUpdateConcurrent", testMapUpdateConcurrent},
		{"MapUpdateAgainstSet", testMapUpdateAgainstSet},
		{"ArchiveBasics", testArchiveBasics},
		{"ArchiveOrder", testArchiveOrder},
		{"ArchivePaging", testArchivePaging},
		{"ArchiveFilters", testArchiveFilters},
		{"ArchiveIsolation", testArchiveIsolation},
		{"ArchiveDelete", testArchiveDelete},
		{"ArchiveAppendMany", testArchiveAppendMany},
		{"DeleteUser", testDeleteUser},
		{"LargeValues", testLargeValues},
		{"Unicode", testUnicode},
		{"Invalid", testInvalid},
		{"Context", testContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t)
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, b)
		})
	}
}

const (
	alice = "alice@example.com"
	bob   = "bob@example.com"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("%s: got error %v, want ErrNotFound", what, err)
	}
}

func wantValue(t *testing.T, what string, got []byte, err error, want string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if string(got) != want {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

func testKV(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	kv := b.KV("vcard")
	_, err := kv.Get(ctx, alice)
	wantNotFound(t, "Get on empty store", err)
	must(t, kv.Delete(ctx, alice)) // deleting nothing is fine

	must(t, kv.Set(ctx, alice, []byte("one")))
	v, err := kv.Get(ctx, alice)
	wantValue(t, "Get", v, err, "one")
	v[0] = 'X' // the caller owns the returned slice
	v, err = kv.Get(ctx, alice)
	wantValue(t, "Get after mutating result", v, err, "one")

	in := []byte("two")
	must(t, kv.Set(ctx, alice, in))
	in[0] = 'X' // the store must not alias the caller's slice
	v, err = kv.Get(ctx, alice)
	wantValue(t, "Get after overwrite", v, err, "two")

	must(t, kv.Set(ctx, alice, nil))
	v, err = kv.Get(ctx, alice)
	wantValue(t, "Get of empty value", v, err, "")

	must(t, kv.Delete(ctx, alice))
	_, err = kv.Get(ctx, alice)
	wantNotFound(t, "Get after Delete", err)
}

func testKVIsolation(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	a, c := b.KV("vcard"), b.KV("blocklist")
	must(t, a.Set(ctx, alice, []byte("a-alice")))
	must(t, a.Set(ctx, bob, []byte("a-bob")))
	must(t, c.Set(ctx, alice, []byte("c-alice")))
	v, err := a.Get(ctx, alice)
	wantValue(t, "vcard alice", v, err, "a-alice")
	v, err = a.Get(ctx, bob)
	wantValue(t, "vcard bob", v, err, "a-bob")
	v, err = c.Get(ctx, alice)
	wantValue(t, "blocklist alice", v, err, "c-alice")
	_, err = c.Get(ctx, bob)
	wantNotFound(t, "blocklist bob", err)
	_, err = b.Map("vcard").Get(ctx, alice, "")
	wantNotFound(t, "map with a KV's name", err)
	must(t, a.Delete(ctx, alice))
	v, err = c.Get(ctx, alice)
	wantValue(t, "blocklist alice after deleting vcard", v, err, "c-alice")
	v, err = a.Get(ctx, bob)
	wantValue(t, "vcard bob after deleting alice", v, err, "a-bob")
}

func testMap(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	m := b.Map("roster")
	_, err := m.Get(ctx, alice, "bob@example.com")
	wantNotFound(t, "Get on empty map", err)
	all, err := m.All(ctx, alice)
	must(t, err)
	if all == nil || len(all) != 0 {
		t.Fatalf("All on empty map = %#v, want empty non-nil map", all)
	}
	must(t, m.Delete(ctx, alice, "nobody"))
	must(t, m.DeleteAll(ctx, alice))

	must(t, m.Set(ctx, alice, "bob@example.com", []byte("<item/>")))
	must(t, m.Set(ctx, alice, "carol@example.com", []byte("<item name='c'/>")))
	must(t, m.Set(ctx, alice, "", []byte("ver1"))) // the empty key is valid
	must(t, m.Set(ctx, alice, "bob@example.com", []byte("<item name='b'/>")))
	v, err := m.Get(ctx, alice, "bob@example.com")
	wantValue(t, "Get", v, err, "<item name='b'/>")
	v, err = m.Get(ctx, alice, "")
	wantValue(t, "Get of empty key", v, err, "ver1")

	all, err = m.All(ctx, alice)
	must(t, err)
	want := map[string][]byte{
		"":                  []byte("ver1"),
		"bob@example.com":   []byte("<item name='b'/>"),
		"carol@example.com": []byte("<item name='c'/>"),
	}
	if !maps.EqualFunc(all, want, bytes.Equal) {
		t.Fatalf("All = %q, want %q", all, want)
	}

	must(t, m.Delete(ctx, alice, "bob@example.com"))
	_, err = m.Get(ctx, alice, "bob@example.com")
	wantNotFound(t, "Get after Delete", err)
	all, err = m.All(ctx, alice)
	must(t, err)
	if len(all) != 2 {
		t.Fatalf("All after Delete has %d entries, want 2", len(all))
	}

	must(t, m.Set(ctx, alice, "empty", nil))
	v, err = m.Get(ctx, alice, "empty")
	wantValue(t, "Get of empty value", v, err, "")

	must(t, m.DeleteAll(ctx, alice))
	all, err = m.All(ctx, alice)
	must(t, err)
	if len(all) != 0 {
		t.Fatalf("All after DeleteAll = %q", all)
	}
}

func testMapIsolation(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	r, p := b.Map("roster"), b.Map("private")
	must(t, r.Set(ctx, alice, "k", []byte("roster-alice")))
	must(t, r.Set(ctx, bob, "k", []byte("roster-bob")))
	must(t, p.Set(ctx, alice, "k", []byte("private-alice")))
	v, err := r.Get(ctx, alice, "k")
	wantValue(t, "roster alice", v, err, "roster-alice")
	v, err = r.Get(ctx, bob, "k")
	wantValue(t, "roster bob", v, err, "roster-bob")
	v, err = p.Get(ctx, alice, "k")
	wantValue(t, "private alice", v, err, "private-alice")

	must(t, r.DeleteAll(ctx, alice))
	v, err = r.Get(ctx, bob, "k")
	wantValue(t, "roster bob after DeleteAll(alice)", v, err, "roster-bob")
	v, err = p.Get(ctx, alice, "k")
	wantValue(t, "private alice after roster DeleteAll(alice)", v, err, "private-alice")
	all, err := r.All(ctx, bob)
	must(t, err)
	if len(all) != 1 {
		t.Fatalf("roster All(bob) = %q", all)
	}
	// Updating one user's map must not see or touch another's.
	must(t, r.Update(ctx, alice, func(tx storage.MapTx) error {
		all, err := tx.All()
		if err != nil {
			return err
		}
		if len(all) != 0 {
			return fmt.Errorf("tx.All sees %q", all)
		}
		return tx.Set("k", []byte("new"))
	}))
	v, err = r.Get(ctx, bob, "k")
	wantValue(t, "roster bob after Update(alice)", v, err, "roster-bob")
}

func testMapUpdate(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	m := b.Map("roster")
	must(t, m.Set(ctx, alice, "", []byte("1")))
	must(t, m.Set(ctx, alice, "old@example.com", []byte("old")))
	err := m.Update(ctx, alice, func(tx storage.MapTx) error {
		_, err := tx.Get("bob@example.com")
		if !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("tx.Get of missing key: %v", err)
		}
		ver, err := tx.Get("")
		if err != nil {
			return err
		}
		n, _ := strconv.Atoi(string(ver))
		if err := tx.Set("bob@example.com", []byte("bob")); err != nil {
			return err
		}
		if err := tx.Delete("old@example.com"); err != nil {
			return err
		}
		if err := tx.Set("", []byte(strconv.Itoa(n+1))); err != nil {
			return err
		}
		// The transaction reads its own writes.
		v, err := tx.Get("bob@example.com")
		if err != nil || string(v) != "bob" {
			return fmt.Errorf("tx.Get after tx.Set = %q, %v", v, err)
		}
		if _, err := tx.Get("old@example.com"); !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("tx.Get after tx.Delete: %v", err)
		}
		all, err := tx.All()
		if err != nil {
			return err
		}
		want := map[string][]byte{"": []byte("2"), "bob@example.com": []byte("bob")}
		if !maps.EqualFunc(all, want, bytes.Equal) {
			return fmt.Errorf("tx.All = %q, want %q", all, want)
		}
		return nil
	})
	must(t, err)
	all, err := m.All(ctx, alice)
	must(t, err)
	want := map[string][]byte{"": []byte("2"), "bob@example.com": []byte("bob")}
	if !maps.EqualFunc(all, want, bytes.Equal) {
		t.Fatalf("All after Update = %q, want %q", all, want)
	}
	// An Update that writes nothing is fine.
	must(t, m.Update(ctx, bob, func(tx storage.MapTx) error { return nil }))
}

func testMapUpdateRollback(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	m := b.Map("roster")
	must(t, m.Set(ctx, alice, "", []byte("1")))
	must(t, m.Set(ctx, alice, "keep", []byte("keep")))
	errBoom := errors.New("boom")
	err := m.Update(ctx, alice, func(tx storage.MapTx) error {
		must(t, tx.Set("", []byte("2")))
		must(t, tx.Set("new", []byte("new")))
		must(t, tx.Delete("keep"))
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	all, err := m.All(ctx, alice)
	must(t, err)
	want := map[string][]byte{"": []byte("1"), "keep": []byte("keep")}
	if !maps.EqualFunc(all, want, bytes.Equal) {
		t.Fatalf("All after failed Update = %q, want %q", all, want)
	}

	// A context cancelled while fn runs must prevent the commit.
	cctx, cancel := context.WithCancel(ctx)
	err = m.Update(cctx, alice, func(tx storage.MapTx) error {
		if err := tx.Set("", []byte("3")); err != nil {
			return err
		}
		cancel()
		return nil
	})
	if err == nil {
		t.Fatal("Update with context cancelled before commit succeeded")
	}
	v, err := m.Get(ctx, alice, "")
	wantValue(t, "version after cancelled Update", v, err, "1")
}

// testMapUpdateConcurrent checks that read-modify-write through Update loses
// no increment when many goroutines race on the same (map, user).
func testMapUpdateConcurrent(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	m := b.Map("counter")
	const workers, rounds = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for range rounds {
				err := m.Update(ctx, alice, func(tx storage.MapTx) error {
					n := 0
					v, err := tx.Get("n")
					switch {
					case err == nil:
						if n, err = strconv.Atoi(string(v)); err != nil {
							return err
						}
					case !errors.Is(err, storage.ErrNotFound):
						return err
					}
					// Each worker also writes its own key, as two resources
					// adding different roster items would.
					if err := tx.Set("w"+strconv.Itoa(w), []byte(strconv.Itoa(n))); err != nil {
						return err
					}
					return tx.Set("n", []byte(strconv.Itoa(n+1)))
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v, err := m.Get(ctx, alice, "n")
	wantValue(t, "counter", v, err, strconv.Itoa(workers*rounds))
	all, err := m.All(ctx, alice)
	must(t, err)
	if len(all) != workers+1 {
		t.Fatalf("All has %d entries, want %d", len(all), workers+1)
	}
}

// testMapUpdateAgainstSet checks that a plain Set is serialised with Update:
// an Update that read a value never overwrites a Set that committed after
// that read.
func testMapUpdateAgainstSet(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	m := b.Map("counter")
	must(t, m.Set(ctx, alice, "n", []byte("0")))
	const rounds = 50
	var wg sync.WaitGroup
	var updErr, setErr error
	wg.Go(func() {
		for range rounds {
			updErr = m.Update(ctx, alice, func(tx storage.MapTx) error {
				v, err := tx.Get("n")
				if err != nil {
					return err
				}
				n, err := strconv.Atoi(string(v))
				if err != nil {
					return err
				}
				return tx.Set("n", []byte(strconv.Itoa(n+1)))
			})
			if updErr != nil {
				return
			}
		}
	})
	wg.Go(func() {
		for i := range rounds {
			if setErr = m.Set(ctx, alice, "other", []byte(strconv.Itoa(i))); setErr != nil {
				return
			}
		}
	})
	wg.Wait()
	must(t, updErr)
	must(t, setErr)
	v, err := m.Get(ctx, alice, "n")
	wantValue(t, "counter", v, err, strconv.Itoa(rounds))
	v, err = m.Get(ctx, alice, "other")
	wantValue(t, "other", v, err, strconv.Itoa(rounds-1))
}

var base = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

func ids(items []storage.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

func testArchiveBasics(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	a := b.Archive("offline")
	n, err := a.Count(ctx, alice)
	must(t, err)
	if n != 0 {
		t.Fatalf("Count on empty archive = %d", n)
	}
	items, page, err := a.Query(ctx, alice, storage.Query{})
	must(t, err)
	if len(items) != 0 || !page.Complete || page.First != "" || page.Last != "" {
		t.Fatalf("Query on empty archive = %v, %+v", items, page)
	}
	_, err = a.Get(ctx, alice, "nope")
	wantNotFound(t, "Get of unknown id", err)

	// Time with nanoseconds and a non-UTC zone comes back as UTC µs.
	tm := time.Date(2024, 3, 1, 13, 0, 0, 123456789, time.FixedZone("X", 3600))
	id, err := a.Append(ctx, alice, storage.Item{With: bob, Time: tm, Data: []byte("<message/>")})
	must(t, err)
	if id == "" {
		t.Fatal("Append returned an empty id")
	}
	got, err := a.Get(ctx, alice, id)
	must(t, err)
	want := storage.Item{ID: id, With: bob, Time: time.Date(2024, 3, 1, 12, 0, 0, 123456000, time.UTC), Data: []byte("<message/>")}
	if got.ID != want.ID || got.With != want.With || !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("Get = %+v, want %+v", got, want)
	}

	// Caller-chosen ids are kept and must be unique per user.
	id2, err := a.Append(ctx, alice, storage.Item{ID: "custom-1", Data: nil})
	must(t, err)
	if id2 != "custom-1" {
		t.Fatalf("Append with id returned %q", id2)
	}
	got, err = a.Get(ctx, alice, "custom-1")
	must(t, err)
	if got.With != "" || len(got.Data) != 0 || got.Time.IsZero() {
		t.Fatalf("Get of defaulted item = %+v", got)
	}
	if time.Since(got.Time) > time.Minute || time.Since(got.Time) < -time.Minute {
		t.Fatalf("zero Time was not replaced by the current time: %v", got.Time)
	}
	_, err = a.Append(ctx, alice, storage.Item{ID: "custom-1"})
	if !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("Append of duplicate id: %v, want ErrConflict", err)
	}
	_, err = a.Append(ctx, bob, storage.Item{ID: "custom-1"})
	must(t, err) // ids are scoped to the user

	// Generated ids are unique.
	seen := map[string]bool{id: true}
	for range 50 {
		id, err := a.Append(ctx, alice, storage.Item{Time: at(0)})
		must(t, err)
		if seen[id] {
			t.Fatalf("duplicate generated id %q", id)
		}
		seen[id] = true
	}
	n, err = a.Count(ctx, alice)
	must(t, err)
	if n != 52 {
		t.Fatalf("Count = %d, want 52", n)
	}
}

// testArchiveOrder checks ordering by time, then by insertion for equal
// times, regardless of the order of appends.
func testArchiveOrder(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	a := b.Archive("mam")
	for _, it := range []storage.Item{
		{ID: "c", Time: at(30)},
		{ID: "a", Time: at(10)},
		{ID: "b1", Time: at(20)},
		{ID: "b2", Time: at(20)},
		{ID: "b3", Time: at(20)},
		{ID: "d", Time: at(40)},
	} {
		_, err := a.Append(ctx, alice, it)
		must(t, err)
	}
	items, page, err := a.Query(ctx, alice, storage.Query{})
	must(t, err)
	want := []string{"a", "b1", "b2", "b3", "c", "d"}
	if !slices.Equal(ids(items), want) {
		t.Fatalf("order = %v, want %v", ids(items), want)
	}
	if !page.Complete || page.First != "a" || page.Last != "d" {
		t.Fatalf("page = %+v", page)
	}
	// Cursors inside a run of equal times must not skip or repeat items.
	items, _, err = a.Query(ctx, alice, storage.Query{After: "b1", Limit: 2})
	must(t, err)
	if got := ids(items); !slices.Equal(got, []string{"b2", "b3"}) {
		t.Fatalf("after b1 = %v", got)
	}
	items, _, err = a.Query(ctx, alice, storage.Query{Before: "b3", Limit: 2})
	must(t, err)
	if got := ids(items); !slices.Equal(got, []string{"b1", "b2"}) {
		t.Fatalf("before b3 = %v", got)
	}
}

func appendSeries(t *testing.T, a storage.Archive, user string, n int) []string {
	t.Helper()
	var out []string
	for i := range n {
		with := bob
		if i%3 == 0 {
			with = "carol@example.com"
		}
		id, err := a.Append(t.Context(), user, storage.Item{
			ID:   fmt.Sprintf("m%02d", i),
			With: with,
			Time: at(i * 10),
			Data: []byte(fmt.Sprintf("<message id='%d'/>", i)),
		})
		must(t, err)
		out = append(out, id)
	}
	return out
}

func testArchivePaging(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	a := b.Archive("mam")
	all := appendSeries(t, a, alice, 25)

	// Forward paging with after, as a MAM client walks the archive.
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("forward paging does not terminate")
		}
		items, page, err := a.Query(ctx, alice, storage.Query{After: after, Limit: 10})
		must(t, err)
		got = append(got, ids(items)...)
		if len(items) > 0 && (page.First != items[0].ID || page.Last != items[len(items)-1].ID) {
			t.Fatalf("page %+v does not match items %v", page, ids(items))
		}
		if wantComplete := len(got) == len(all); page.Complete != wantComplete {
			t.Fatalf("after %q: Complete = %v with %d of %d items", after, page.Complete, len(got), len(all))
		}
		if page.Complete {
			break
		}
		after = page.Last
	}
	if !slices.Equal(got, all) {
		t.Fatalf("forward paging = %v, want %v", got, all)
	}

	// Backward paging from the end (empty <before/>), pages stay chronological.
	var back [][]string
	q := storage.Query{Last: true, Limit: 10}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("backward paging does not terminate")
		}
		items, page, err := a.Query(ctx, alice, q)
		must(t, err)
		back = append(back, ids(items))
		if page.Complete {
			break
		}
		q.Before = page.First
	}
	want := [][]string{all[15:], all[5:15], all[:5]}
	if !slices.EqualFunc(back, want, slices.Equal) {
		t.Fatalf("backward paging = %v, want %v", back, want)
	}

	// Exact fit: a page ending on the last item is complete only when
	// nothing lies beyond it.
	items, page, err := a.Query(ctx, alice, storage.Query{Limit: 25})
	must(t, err)
	if len(items) != 25 || !page.Complete {
		t.Fatalf("limit 25 of 25: %d items, complete %v", len(items), page.Complete)
	}
	items, page, err = a.Query(ctx, alice, storage.Query{Limit: 24})
	must(t, err)
	if len(items) != 24 || page.Complete {
		t.Fatalf("limit 24 of 25: %d items, complete %v", len(items), page.Complete)
	}
	items, page, err = a.Query(ctx, alice, storage.Query{After: all[24]})
	must(t, err)
	if len(items) != 0 || !page.Complete || page.First != "" {
		t.Fatalf("after the last item: %v, %+v", ids(items), page)
	}

	// After and Before together select the items strictly between them.
	items, page, err = a.Query(ctx, alice, storage.Query{After: all[3], Before: all[9]})
	must(t, err)
	if got := ids(items); !slices.Equal(got, all[4:9]) || !page.Complete {
		t.Fatalf("between = %v, %+v, want %v", got, page, all[4:9])
	}
	items, page, err = a.Query(ctx, alice, storage.Query{After: all[3], Before: all[9], Limit: 2})
	must(t, err)
	if got := ids(items); !slices.Equal(got, all[7:9]) || page.Complete {
		t.Fatalf("between with limit = %v, %+v, want %v", got, page, all[7:9])
	}
	// Forward turns Before into an upper bound paged from its start
	// (XEP-0313 before-id with forward RSM paging).
	items, page, err = a.Query(ctx, alice, storage.Query{Before: all[9], Forward: true, Limit: 4})
	must(t, err)
	if got := ids(items); !slices.Equal(got, all[0:4]) || page.Complete {
		t.Fatalf("forward before = %v, %+v, want %v incomplete", got, page, all[0:4])
	}
	items, page, err = a.Query(ctx, alice, storage.Query{After: all[4], Before: all[9], Forward: true, Limit: 4})
	must(t, err)
	if got := ids(items); !slices.Equal(got, all[5:9]) || !page.Complete {
		t.Fatalf("forward between = %v, %+v, want %v complete", got, page, all[5:9])
	}
	items, page, err = a.Query(ctx, alice, storage.Query{Before: all[9], Forward: true, Last: true, Limit: 2})
	must(t, err)
	if got := ids(items); !slices.Equal(got, all[7:9]) || page.Complete {
		t.Fatalf("forward before with last = %v, %+v, want %v", got, page, all[7:9])
	}

	_, _, err = a.Query(ctx, alice, storage.Query{After: "unknown"})
	wantNotFound(t, "after unknown id", err)
	_, _, err = a.Query(ctx, alice, storage.Query{Before: "unknown"})
	wantNotFound(t, "before unknown id", err)
	// A cursor from another user's archive is unknown here.
	_, err = a.Append(ctx, bob, storage.Item{ID: "bobs"})
	must(t, err)
	_, _, err = a.Query(ctx, alice, storage.Query{After: "bobs"})
	wantNotFound(t, "after another user's id", err)

	// Data round-trips.
	items, _, err = a.Query(ctx, alice, storage.Query{After: all[6], Limit: 1})
	must(t, err)
	if len(items) != 1 || string(items[0].Data) != "<message id='7'/>" || !items[0].Time.Equal(at(70)) || items[0].With != bob {
		t.Fatalf("item 7 = %+v", items)
	}
}

func testArchiveFilters(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	a := b.Archive("mam")
	all := appendSeries(t, a, alice, 30) // times 0..290s; carol at i%3 == 0

	var carol, bobs []string
	for i, id := range all {
		if i%3 == 0 {
			carol = append(carol, id)
		} else {
			bobs = append(bobs, id)
		}
	}
	items, page, err := a.Query(ctx, alice, storage.Query{With: "carol@example.com"})
	must(t, err)
	if got := ids(items); !slices.Equal(got, carol) || !page.Complete {
		t.Fatalf("with carol = %v, want %v", got, carol)
	}
	// with + paging
	items, page, err = a.Query(ctx, alice, storage.Query{With: bob, Limit: 5})
	must(t, err)
	if got := ids(items); !slices.Equal(got, bobs[:5]) || page.Complete {
		t.Fatalf("with bob limit 5 = %v %+v", got, page)
	}
	items, page, err = a.Query(ctx, alice, storage.Query{With: bob, After: page.Last, Limit: 100})
	must(t, err)
	if got := ids(items); !slices.Equal(got, bobs[5:]) || !page.Complete {
		t.Fatalf("with bob second page = %v %+v", got, page)
	}
	items, _, err = a.Query(ctx, alice, storage.Query{With: "nobody@example.com"})
	must(t, err)
	if len(items) != 0 {
		t.Fatalf("with nobody = %v", ids(items))
	}

	// Start and End are inclusive.
	items, _, err = a.Query(ctx, alice, storage.Query{Start: at(50), End: at(100)})
	must(t, err)
	if got := ids(items); !slices.Equal(got, all[5:11]) {
		t.Fatalf("time range = %v, want %v", got, all[5:11])
	}
	items, _, err = a.Query(ctx, alice, storage.Query{Start: at(55)})
	must(t, err)
	if got := ids(items); !slices.Equal(got, all[6:]) {
		t.Fatalf("start only = %v", got)
	}
	items, _, err = a.Query(ctx, alice, storage.Query{End: at(15)})
	must(t, err)
	if got := ids(items); !slices.Equal(got, all[:2]) {
		t.Fatalf("end only = %v", got)
	}
	// Time range given in another zone.
	items, _, err = a.Query(ctx, alice, storage.Query{Start: at(50).In(time.FixedZone("Y", -5*3600)), End: at(60).In(time.FixedZone("Z", 7200))})
	must(t, err)
	if got := ids(items); !slices.Equal(got, all[5:7]) {
		t.Fatalf("zoned range = %v", got)
	}

	// Everything combined, paging backwards.
	q := storage.Query{With: bob, Start: at(100), End: at(250), Limit: 3, Last: true}
	items, page, err = a.Query(ctx, alice, q)
	must(t, err)
	// bob items with time in [100,250]: i in 10..25, i%3 != 0 → 10,11,13,14,16,17,19,20,22,23,25
	if got := ids(items); !slices.Equal(got, []string{"m22", "m23", "m25"}) || page.Complete {
		t.Fatalf("combined last page = %v %+v", got, page)
	}
	q.Before = page.First
	items, page, err = a.Query(ctx, alice, q)
	must(t, err)
	if got := ids(items); !slices.Equal(got, []string{"m17", "m19", "m20"}) || page.Complete {
		t.Fatalf("combined previous page = %v %+v", got, page)
	}
	q.Before, q.Last, q.After, q.Limit = "", false, "m19", 4
	items, page, err = a.Query(ctx, alice, q)
	must(t, err)
	if got := ids(items); !slices.Equal(got, []string{"m20", "m22", "m23", "m25"}) || !page.Complete {
		t.Fatalf("combined after m19 = %v %+v", got, page)
	}
	// An empty range is complete.
	items, page, err = a.Query(ctx, alice, storage.Query{Start: at(1000), Limit: 5})
	must(t, err)
	if len(items) != 0 || !page.Complete {
		t.Fatalf("empty range = %v %+v", ids(items), page)
	}
}

func testArchiveIsolation(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	off, mam := b.Archive("offline"), b.Archive("mam")
	appendSeries(t, off, alice, 3)
	appendSeries(t, off, bob, 4)
	appendSeries(t, mam, alice, 5)
	for _, c := range []struct {
		a    storage.Archive
		user string
		n    int
	}{{off, alice, 3}, {off, bob, 4}, {mam, alice, 5}, {mam, bob, 0}} {
		n, err := c.a.Count(ctx, c.user)
		must(t, err)
		items, _, err := c.a.Query(ctx, c.user, storage.Query{})
		must(t, err)
		if n != c.n || len(items) != c.n {
			t.Fatalf("%s: Count %d, Query %d items, want %d", c.user, n, len(items), c.n)
		}
	}
	must(t, off.Purge(ctx, alice))
	n, err := off.Count(ctx, alice)
	must(t, err)
	if n != 0 {
		t.Fatalf("Count after Purge = %d", n)
	}
	for _, c := range []struct {
		a    storage.Archive
		user string
		n    int
	}{{off, bob, 4}, {mam, alice, 5}} {
		n, err := c.a.Count(ctx, c.user)
		must(t, err)
		if n != c.n {
			t.Fatalf("Count(%s) after Purge of another = %d, want %d", c.user, n, c.n)
		}
	}
	// Deleting alice's id from bob's archive must not touch bob's item.
	must(t, off.Delete(ctx, alice, "m00"))
	if _, err := off.Get(ctx, bob, "m00"); err != nil {
		t.Fatalf("bob's m00 after deleting alice's: %v", err)
	}
}

func testArchiveDelete(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	a := b.Archive("offline")
	all := appendSeries(t, a, alice, 10)
	appendSeries(t, a, bob, 10)
	other := b.Archive("mam")
	appendSeries(t, other, alice, 10)

	must(t, a.Delete(ctx, alice, all[0], all[5], "unknown"))
	must(t, a.Delete(ctx, alice)) // no ids is a no-op
	items, _, err := a.Query(ctx, alice, storage.Query{})
	must(t, err)
	want := slices.Concat(all[1:5], all[6:])
	if got := ids(items); !slices.Equal(got, want) {
		t.Fatalf("after Delete = %v, want %v", got, want)
	}
	_, err = a.Get(ctx, alice, all[0])
	wantNotFound(t, "Get of deleted item", err)

	// DeleteOlder works on every user of this archive only; times before
	// at(40) are items 0..3.
	n, err := a.DeleteOlder(ctx, at(40))
	must(t, err)
	if n != 3+4 { // alice lost item 0 already
		t.Fatalf("DeleteOlder removed %d, want 7", n)
	}
	items, _, err = a.Query(ctx, alice, storage.Query{})
	must(t, err)
	if got := ids(items); !slices.Equal(got, []string{"m04", "m06", "m07", "m08", "m09"}) {
		t.Fatalf("alice after DeleteOlder = %v", got)
	}
	if c, _ := a.Count(ctx, bob); c != 6 {
		t.Fatalf("bob after DeleteOlder has %d", c)
	}
	if c, _ := other.Count(ctx, alice); c != 10 {
		t.Fatalf("other archive after DeleteOlder has %d", c)
	}
}

// testArchiveAppendMany covers the group-commit write: several users in one
// call, generated ids and times filled in place, insertion order for equal
// times, existing ids skipped, and an invalid entry rejecting the batch.
func testArchiveAppendMany(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	a := b.Archive("mam")
	if _, err := a.Append(ctx, alice, storage.Item{ID: "old", Time: at(0), Data: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	if n, err := a.AppendMany(ctx, nil); err != nil || n != 0 {
		t.Fatalf("AppendMany(nil) = %d, %v", n, err)
	}
	before := time.Now().Add(-time.Second)
	entries := []storage.Entry{
		{User: alice, Item: storage.Item{ID: "a1", With: bob, Time: at(10), Data: []byte("1")}},
		{User: bob, Item: storage.Item{With: alice, Time: at(10), Data: []byte("b")}},
		{User: alice, Item: storage.Item{ID: "a2", With: bob, Time: at(10), Data: []byte("2")}},
		{User: alice, Item: storage.Item{ID: "old", Time: at(20), Data: []byte("dup")}},
		{User: alice, Item: storage.Item{With: "carol@example.com", Data: []byte("now")}},
	}
	n, err := a.AppendMany(ctx, entries)
	must(t, err)
	if n != 4 {
		t.Fatalf("AppendMany wrote %d entries, want 4 (one id existed)", n)
	}
	if entries[1].Item.ID == "" || entries[4].Item.ID == "" {
		t.Fatalf("AppendMany did not fill in generated ids: %+v", entries)
	}
	if entries[4].Item.Time.Before(before) {
		t.Fatalf("AppendMany did not set the time of an item without one: %v", entries[4].Item.Time)
	}
	items, page, err := a.Query(ctx, alice, storage.Query{})
	must(t, err)
	if got, want := ids(items), []string{"old", "a1", "a2", entries[4].Item.ID}; !slices.Equal(got, want) {
		t.Fatalf("alice's archive = %v, want %v", got, want)
	}
	if !page.Complete || string(items[0].Data) != "old" || string(items[3].Data) != "now" {
		t.Fatalf("alice's archive: page %+v, first %q, last %q", page, items[0].Data, items[3].Data)
	}
	got, err := a.Get(ctx, bob, entries[1].Item.ID)
	must(t, err)
	if got.With != alice || string(got.Data) != "b" || !got.Time.Equal(at(10)) {
		t.Fatalf("bob's item = %+v", got)
	}

	// Writing the same batch again (a retry after an unclear commit) adds nothing.
	n, err = a.AppendMany(ctx, entries)
	must(t, err)
	if c, _ := a.Count(ctx, alice); n != 0 || c != 4 {
		t.Fatalf("repeated AppendMany wrote %d, alice has %d items", n, c)
	}

	// One invalid entry rejects the whole batch before anything is written.
	bad := []storage.Entry{
		{User: alice, Item: storage.Item{ID: "fine"}},
		{User: "a\x00b", Item: storage.Item{ID: "x"}},
	}
	if _, err := a.AppendMany(ctx, bad); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("AppendMany with an invalid user: %v, want ErrInvalid", err)
	}
	bad = []storage.Entry{{User: alice, Item: storage.Item{ID: "fine2"}}, {User: alice, Item: storage.Item{With: "\xff"}}}
	if _, err := a.AppendMany(ctx, bad); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("AppendMany with an invalid peer: %v, want ErrInvalid", err)
	}
	if c, _ := a.Count(ctx, alice); c != 4 {
		t.Fatalf("rejected batches stored items: alice has %d", c)
	}
	if _, err := b.Archive("").AppendMany(ctx, []storage.Entry{{User: alice}}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("AppendMany on an unnamed archive: %v, want ErrInvalid", err)
	}

	// A large batch commits as one.
	var many []storage.Entry
	for i := range 1000 {
		many = append(many, storage.Entry{User: fmt.Sprintf("u%d@example.com", i%7), Item: storage.Item{Time: at(100 + i), Data: []byte(strconv.Itoa(i))}})
	}
	n, err = a.AppendMany(ctx, many)
	must(t, err)
	if n != 1000 {
		t.Fatalf("large AppendMany wrote %d", n)
	}
	items, _, err = a.Query(ctx, "u3@example.com", storage.Query{})
	must(t, err)
	if len(items) != 143 || string(items[0].Data) != "3" || string(items[1].Data) != "10" {
		t.Fatalf("u3 has %d items, first %q", len(items), items[0].Data)
	}
}

func testDeleteUser(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	for _, u := range []string{alice, bob} {
		must(t, b.KV("vcard").Set(ctx, u, []byte("v")))
		must(t, b.Map("roster").Set(ctx, u, "k", []byte("v")))
		must(t, b.Map("private").Set(ctx, u, "k", []byte("v")))
		_, err := b.Archive("offline").Append(ctx, u, storage.Item{})
		must(t, err)
	}
	must(t, b.DeleteUser(ctx, alice))
	_, err := b.KV("vcard").Get(ctx, alice)
	wantNotFound(t, "vcard", err)
	for _, name := range []string{"roster", "private"} {
		all, err := b.Map(name).All(ctx, alice)
		must(t, err)
		if len(all) != 0 {
			t.Fatalf("%s after DeleteUser = %q", name, all)
		}
	}
	if n, _ := b.Archive("offline").Count(ctx, alice); n != 0 {
		t.Fatalf("offline after DeleteUser has %d", n)
	}
	v, err := b.KV("vcard").Get(ctx, bob)
	wantValue(t, "bob's vcard", v, err, "v")
	v, err = b.Map("private").Get(ctx, bob, "k")
	wantValue(t, "bob's private", v, err, "v")
	if n, _ := b.Archive("offline").Count(ctx, bob); n != 1 {
		t.Fatalf("bob's offline has %d", n)
	}
	must(t, b.DeleteUser(ctx, "nobody@example.com"))
}

func testLargeValues(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>9) // every byte value, including NUL
	}
	must(t, b.KV("vcard").Set(ctx, alice, big))
	v, err := b.KV("vcard").Get(ctx, alice)
	must(t, err)
	if !bytes.Equal(v, big) {
		t.Fatal("large KV value corrupted")
	}
	must(t, b.Map("pep").Set(ctx, alice, "urn:xmpp:avatar:data", big))
	v, err = b.Map("pep").Get(ctx, alice, "urn:xmpp:avatar:data")
	must(t, err)
	if !bytes.Equal(v, big) {
		t.Fatal("large Map value corrupted")
	}
	id, err := b.Archive("mam").Append(ctx, alice, storage.Item{Data: big})
	must(t, err)
	it, err := b.Archive("mam").Get(ctx, alice, id)
	must(t, err)
	if !bytes.Equal(it.Data, big) {
		t.Fatal("large archive item corrupted")
	}
	long := strings.Repeat("k", 3000)
	must(t, b.Map("pep").Set(ctx, alice, long, []byte("x")))
	v, err = b.Map("pep").Get(ctx, alice, long)
	wantValue(t, "long key", v, err, "x")
}

func testUnicode(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	user := "ñandú@例え.jp"
	keys := []string{"ключ", "鍵", "🔑", "ｋｅｙ", "key", "KEY", "ke y", "k'e\"y;--", "%_*"}
	m := b.Map("roster")
	for i, k := range keys {
		must(t, m.Set(ctx, user, k, []byte(strconv.Itoa(i))))
	}
	all, err := m.All(ctx, user)
	must(t, err)
	if len(all) != len(keys) {
		t.Fatalf("All has %d keys, want %d: %q", len(all), len(keys), all)
	}
	for i, k := range keys {
		v, err := m.Get(ctx, user, k)
		wantValue(t, "key "+k, v, err, strconv.Itoa(i))
		if string(all[k]) != strconv.Itoa(i) {
			t.Fatalf("All[%q] = %q", k, all[k])
		}
	}
	must(t, b.KV("vcard").Set(ctx, user, []byte("é")))
	v, err := b.KV("vcard").Get(ctx, user)
	wantValue(t, "unicode user", v, err, "é")
	_, err = b.Archive("mam").Append(ctx, user, storage.Item{ID: "идент", With: "😀@example.com", Time: at(1)})
	must(t, err)
	items, _, err := b.Archive("mam").Query(ctx, user, storage.Query{With: "😀@example.com", After: "", Limit: 1})
	must(t, err)
	if len(items) != 1 || items[0].ID != "идент" {
		t.Fatalf("unicode archive = %+v", items)
	}
	// Users differing only in case are different users: the caller
	// normalises JIDs, storage compares bytes.
	_, err = b.KV("vcard").Get(ctx, "Ñandú@例え.jp")
	wantNotFound(t, "case-different user", err)
}

func testInvalid(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	bad := []string{"", "a\x00b", "\xff\xfe"}
	for _, u := range bad {
		if err := b.KV("vcard").Set(ctx, u, nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("KV.Set(user %q): %v, want ErrInvalid", u, err)
		}
		if err := b.Map(u).Set(ctx, alice, "k", nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("Map(%q).Set: %v, want ErrInvalid", u, err)
		}
		if _, _, err := b.Archive("mam").Query(ctx, u, storage.Query{}); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("Archive.Query(user %q): %v, want ErrInvalid", u, err)
		}
	}
	for _, k := range bad[1:] {
		if err := b.Map("roster").Set(ctx, alice, k, nil); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("Map.Set(key %q): %v, want ErrInvalid", k, err)
		}
		if _, err := b.Archive("mam").Append(ctx, alice, storage.Item{ID: k}); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("Append(id %q): %v, want ErrInvalid", k, err)
		}
		if _, err := b.Archive("mam").Append(ctx, alice, storage.Item{With: k}); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("Append(with %q): %v, want ErrInvalid", k, err)
		}
	}
	if n, _ := b.Archive("mam").Count(ctx, alice); n != 0 {
		t.Errorf("invalid appends stored %d items", n)
	}
}

func testContext(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	must(t, b.KV("vcard").Set(ctx, alice, []byte("v")))
	_, err := b.Archive("mam").Append(ctx, alice, storage.Item{ID: "x"})
	must(t, err)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel2()
	for _, c := range []struct {
		ctx  context.Context
		want error
	}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		kv, m, a := b.KV("vcard"), b.Map("roster"), b.Archive("mam")
		ops := map[string]func() error{
			"KV.Get":    func() error { _, err := kv.Get(c.ctx, alice); return err },
			"KV.Set":    func() error { return kv.Set(c.ctx, alice, []byte("new")) },
			"KV.Delete": func() error { return kv.Delete(c.ctx, alice) },
			"Map.Get":   func() error { _, err := m.Get(c.ctx, alice, "k"); return err },
			"Map.Set":   func() error { return m.Set(c.ctx, alice, "k", []byte("v")) },
			"Map.All":   func() error { _, err := m.All(c.ctx, alice); return err },
			"Map.Update": func() error {
				return m.Update(c.ctx, alice, func(tx storage.MapTx) error { return tx.Set("k", []byte("v")) })
			},
			"Archive.Append": func() error { _, err := a.Append(c.ctx, alice, storage.Item{}); return err },
			"Archive.Query":  func() error { _, _, err := a.Query(c.ctx, alice, storage.Query{}); return err },
			"Archive.AppendMany": func() error {
				_, err := a.AppendMany(c.ctx, []storage.Entry{{User: alice, Item: storage.Item{ID: "y"}}})
				return err
			},
			"Archive.Count":  func() error { _, err := a.Count(c.ctx, alice); return err },
			"Archive.Delete": func() error { return a.Delete(c.ctx, alice, "x") },
			"DeleteUser":     func() error { return b.DeleteUser(c.ctx, alice) },
		}
		for name, op := range ops {
			if err := op(); !errors.Is(err, c.want) {
				t.Errorf("%s with %v context: %v, want %v", name, c.want, err, c.want)
			}
		}
	}
	// Nothing was changed by the failed calls.
	v, err := b.KV("vcard").Get(ctx, alice)
	wantValue(t, "vcard after cancelled calls", v, err, "v")
	if n, _ := b.Archive("mam").Count(ctx, alice); n != 1 {
		t.Fatalf("archive after cancelled calls has %d items", n)
	}
	if all, _ := b.Map("roster").All(ctx, alice); len(all) != 0 {
		t.Fatalf("map after cancelled calls = %q", all)
	}
}
