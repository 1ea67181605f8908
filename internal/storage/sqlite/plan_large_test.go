package sqlite_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"impetus/internal/storage"
	"impetus/internal/storage/internal/sqlq"
)

// TestArchivePlansOnLargeArchive builds every page query shape an archive query produces
// (XEP-0313 filters by peer and time, RSM cursors both ways, before-id as a forward bound) the
// way the backend builds it, and checks on a large, analyzed archive that SQLite answers each
// with a seek on one index and no sort: the cost of a page is then the index depth plus the
// page, whatever the archive's size.
func TestArchivePlansOnLargeArchive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "large.db")
	b := open(t, path)
	b.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// 200 000 items: 100 users with 2 000 each, 20 peers, in two stores.
	if _, err := db.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
		INSERT INTO storage_archive (store, username, id, peer, ts, data)
		SELECT CASE WHEN i % 10 = 0 THEN 'offline' ELSE 'mam' END, 'u' || (i % 100), 'id' || i, 'p' || (i % 20), 1700000000000000 + i * 1000000, x'00'
		FROM n`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("ANALYZE"); err != nil {
		t.Fatal(err)
	}
	cur := &sqlq.Cursor{TS: int64(1700000000000000 + 100000*1000000), Seq: 100000}
	start := time.UnixMicro(1700000000000000 + 50000*1000000)
	end := time.UnixMicro(1700000000000000 + 150000*1000000)
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
		query, args, _ := sqlq.Archive("storage_archive", func(n int) string { return fmt.Sprintf("?%d", n) },
			func(t time.Time) any { return t.UnixMicro() }, "mam", "u7", c.q, c.after, c.before)
		rows, err := db.Query("EXPLAIN QUERY PLAN "+query, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		s := strings.Join(plan, "; ")
		t.Logf("%s: %s", c.name, s)
		if !strings.Contains(s, "SEARCH storage_archive USING INDEX "+c.index+" ") || strings.Contains(s, "TEMP B-TREE") {
			t.Errorf("%s: plan for %s:\n%s\nwant a search of index %s without sorting", c.name, query, s, c.index)
		}
	}
}
