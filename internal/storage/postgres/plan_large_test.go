package postgres_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"impetus/internal/storage"
	"impetus/internal/storage/internal/sqlq"
	"impetus/internal/storage/postgres"
)

// TestArchivePlansOnLargeArchive builds every page query shape an archive query produces
// (XEP-0313 filters by peer and time, RSM cursors both ways, before-id as a forward bound) the
// way the backend builds it, with its parameters, and checks on a large, analyzed archive that
// the planner, free to choose a sequential scan, answers each with an index scan and no sort:
// the cost of a page is then the index depth plus the page, whatever the archive's size.
func TestArchivePlansOnLargeArchive(t *testing.T) {
	d := schemaDSN(t, dsn(t))
	ctx := t.Context()
	b, err := postgres.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// 200 000 items: 100 users with 2 000 each, 20 peers, in two stores.
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := b.Pool().Exec(ctx, `INSERT INTO storage_archive (store, username, id, peer, ts, data)
		SELECT CASE WHEN i % 10 = 0 THEN 'offline' ELSE 'mam' END, 'u' || (i % 100), 'id' || i, 'p' || (i % 20), $1::timestamptz + i * interval '1 second', '\x00'::bytea
		FROM generate_series(1, 200000) i`, base); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Pool().Exec(ctx, "ANALYZE storage_archive"); err != nil {
		t.Fatal(err)
	}
	cur := &sqlq.Cursor{TS: base.Add(100000 * time.Second), Seq: 100000}
	start, end := base.Add(50000*time.Second), base.Add(150000*time.Second)
	for _, c := range []struct {
		name          string
		q             storage.Query
		after, before *sqlq.Cursor
		index         string
	}{
		{"first page", storage.Query{Limit: 50}, nil, nil, "storage_archive_time"},
		{"last page", storage.Query{Limit: 50, Last: true}, nil, nil, "storage_archive_time"},
		{"after", storage.Query{Limit: 50, After: "x"}, cur, nil, "storage_archive_time"},
		{"before", storage.Query{Limit: 50, Before: "x"}, nil, cur, "storage_archive_time"},
		{"before-id forward", storage.Query{Limit: 50, Before: "x", Forward: true}, nil, cur, "storage_archive_time"},
		{"between forward", storage.Query{Limit: 50, After: "x", Before: "y", Forward: true}, cur, cur, "storage_archive_time"},
		{"time range", storage.Query{Limit: 50, Start: start, End: end}, nil, nil, "storage_archive_time"},
		{"time range last", storage.Query{Limit: 50, Start: start, End: end, Last: true}, nil, nil, "storage_archive_time"},
		{"with", storage.Query{Limit: 50, With: "p3"}, nil, nil, "storage_archive_peer"},
		{"with last", storage.Query{Limit: 50, With: "p3", Last: true}, nil, nil, "storage_archive_peer"},
		{"with after", storage.Query{Limit: 50, With: "p3", After: "x"}, cur, nil, "storage_archive_peer"},
		{"with before", storage.Query{Limit: 50, With: "p3", Before: "x"}, nil, cur, "storage_archive_peer"},
		{"with time range", storage.Query{Limit: 50, With: "p3", Start: start, End: end}, nil, nil, "storage_archive_peer"},
	} {
		query, args, _ := sqlq.Archive("storage_archive", func(n int) string { return "$" + strconv.Itoa(n) },
			func(t time.Time) any { return t }, "mam", "u7", c.q, c.after, c.before)
		rows, err := b.Pool().Query(ctx, "EXPLAIN "+query, args...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		rows.Close()
		s := strings.Join(plan, "\n")
		t.Logf("%s:\n%s", c.name, s)
		if !strings.Contains(s, "Index Scan") || !strings.Contains(s, c.index) || strings.Contains(s, "Sort") || strings.Contains(s, "Seq Scan") {
			t.Errorf("%s: plan for %s:\n%s\nwant an index scan of %s without sorting", c.name, query, s, c.index)
		}
	}
}
