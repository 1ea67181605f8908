// Package sqlq builds the archive page query shared by the SQL backends, so
// that SQLite and PostgreSQL page through archives by exactly the same rules.
package sqlq

import (
	"fmt"
	"strings"
	"time"

	"impetus/internal/storage"
)

// Cursor is the position of an archive item: its time, in the backend's
// column representation, and its insertion sequence number.
type Cursor struct {
	TS  any
	Seq int64
}

// Archive builds the page query for q over table. ph renders the nth
// (1-based) placeholder; ts converts a query time to the column
// representation. The selected columns are id, peer, ts, data. The query
// asks for one row more than Limit so the caller can tell whether the page
// is complete. When desc is true the rows come newest first and the caller
// must reverse them.
//
// Every condition is a range on the (store, username[, peer], ts, seq)
// index: cursors are expressed as "ts >= t AND (ts > t OR seq > s)" rather
// than as row-value comparisons so that both planners can seek on ts and
// only filter rows that share the cursor's timestamp. LIMIT then stops the
// index scan, so a page costs O(log n + page size) with no OFFSET.
func Archive(table string, ph func(int) string, ts func(time.Time) any, store, user string, q storage.Query, after, before *Cursor) (query string, args []any, desc bool) {
	var b strings.Builder
	arg := func(v any) string {
		args = append(args, v)
		return ph(len(args))
	}
	fmt.Fprintf(&b, "SELECT id, peer, ts, data FROM %s WHERE store = %s AND username = %s", table, arg(store), arg(user))
	if q.With != "" {
		fmt.Fprintf(&b, " AND peer = %s", arg(q.With))
	}
	if !q.Start.IsZero() {
		fmt.Fprintf(&b, " AND ts >= %s", arg(ts(q.Start)))
	}
	if !q.End.IsZero() {
		fmt.Fprintf(&b, " AND ts <= %s", arg(ts(q.End)))
	}
	if after != nil {
		t := arg(after.TS)
		fmt.Fprintf(&b, " AND ts >= %s AND (ts > %s OR seq > %s)", t, t, arg(after.Seq))
	}
	if before != nil {
		t := arg(before.TS)
		fmt.Fprintf(&b, " AND ts <= %s AND (ts < %s OR seq < %s)", t, t, arg(before.Seq))
	}
	desc = q.Last || (q.Before != "" && !q.Forward)
	if desc {
		b.WriteString(" ORDER BY ts DESC, seq DESC")
	} else {
		b.WriteString(" ORDER BY ts, seq")
	}
	if q.Limit > 0 {
		fmt.Fprintf(&b, " LIMIT %s", arg(int64(q.Limit)+1))
	}
	return b.String(), args, desc
}

// Finish trims the one-row look-ahead, restores chronological order and
// computes the page description.
func Finish(items []storage.Item, q storage.Query, desc bool) ([]storage.Item, storage.Page) {
	page := storage.Page{Complete: true}
	if q.Limit > 0 && len(items) > q.Limit {
		page.Complete = false
		items = items[:q.Limit]
	}
	if desc {
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
	}
	if len(items) > 0 {
		page.First, page.Last = items[0].ID, items[len(items)-1].ID
	}
	if items == nil {
		items = []storage.Item{}
	}
	return items, page
}
