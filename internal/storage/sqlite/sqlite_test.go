package sqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"impetus/internal/storage"
	"impetus/internal/storage/sqlite"
	"impetus/internal/storage/storagetest"
)

func open(t testing.TB, path string) *sqlite.Backend {
	t.Helper()
	b, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		return open(t, t.TempDir())
	})
}

func TestOpenViaRegistry(t *testing.T) {
	dir := t.TempDir()
	b, err := storage.Open("sqlite", dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.KV("k").Set(t.Context(), "a@b", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("database file mode %v is accessible to others", fi.Mode())
	}
}

func TestPersistenceAndMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.db")
	b := open(t, path)
	if err := b.Map("roster").Set(t.Context(), "a@b", "c@d", []byte("item")); err != nil {
		t.Fatal(err)
	}
	b.Close()

	// Reopening applies nothing twice and keeps the data.
	b = open(t, path)
	v, err := b.Map("roster").Get(t.Context(), "a@b", "c@d")
	if err != nil || string(v) != "item" {
		t.Fatalf("after reopen: %q, %v", v, err)
	}
	b.Close()

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, max int
	if err := db.QueryRow("SELECT COUNT(*), MAX(version) FROM schema_migrations").Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != max || n < 1 {
		t.Fatalf("schema_migrations has %d rows, max version %d", n, max)
	}
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}

	// A database migrated by a newer program must be refused.
	if _, err := db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future.sql', 'x')", max+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := sqlite.Open(t.Context(), path); !errors.Is(err, storage.ErrSchemaTooNew) {
		t.Fatalf("opening a newer schema: %v, want ErrSchemaTooNew", err)
	}
}

// TestQueryPlans checks that archive pages are index range scans with no
// sort step and no full scan, which is what keeps them O(log n + page).
func TestQueryPlans(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	b := open(t, path)
	b.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, c := range []struct{ q, index string }{
		{"SELECT id, peer, ts, data FROM storage_archive WHERE store = ?1 AND username = ?2 AND ts >= ?3 AND ts <= ?4 ORDER BY ts, seq LIMIT ?5", "storage_archive_time"},
		{"SELECT id, peer, ts, data FROM storage_archive WHERE store = ?1 AND username = ?2 AND peer = ?3 AND ts >= ?4 ORDER BY ts DESC, seq DESC LIMIT ?5", "storage_archive_peer"},
		{"SELECT id, peer, ts, data FROM storage_archive WHERE store = ?1 AND username = ?2 AND ts >= ?3 AND (ts > ?3 OR seq > ?4) ORDER BY ts, seq LIMIT ?5", "storage_archive_time"},
		{"SELECT id, peer, ts, data FROM storage_archive WHERE store = ?1 AND username = ?2 AND peer = ?3 AND ts <= ?4 AND (ts < ?4 OR seq < ?5) ORDER BY ts DESC, seq DESC LIMIT ?6", "storage_archive_peer"},
		{"SELECT ts, seq FROM storage_archive WHERE store = ?1 AND username = ?2 AND id = ?3", "storage_archive_id"},
		{"DELETE FROM storage_archive WHERE store = ?1 AND ts < ?2", "storage_archive_age"},
	} {
		q := c.q
		rows, err := db.Query("EXPLAIN QUERY PLAN "+q, "s", "u", "p", 1, 2, 3)
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
		if !strings.Contains(s, "SEARCH storage_archive USING INDEX "+c.index+" ") || strings.Contains(s, "TEMP B-TREE") {
			t.Errorf("plan for %s:\n%s\nwant a search of index %s without sorting", q, s, c.index)
		}
	}
}

// TestKill9 checks that every write acknowledged before the process is
// killed with SIGKILL is present afterwards.
func TestKill9(t *testing.T) {
	if os.Getenv("IMPETUS_SQLITE_CHILD") != "" {
		child()
		return
	}
	if testing.Short() {
		t.Skip("spawns a process")
	}
	path := filepath.Join(t.TempDir(), "k.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$")
	cmd.Env = append(os.Environ(), "IMPETUS_SQLITE_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := 0
	for sc.Scan() && acked < 200 {
		if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "ack ")); err == nil {
			acked = n
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if acked == 0 {
		t.Fatal("child acknowledged nothing")
	}
	b := open(t, path)
	defer b.Close()
	n, err := b.Archive("offline").Count(t.Context(), "a@b")
	if err != nil {
		t.Fatal(err)
	}
	v, err := b.Map("roster").Get(t.Context(), "a@b", "")
	if err != nil {
		t.Fatal(err)
	}
	ver, _ := strconv.Atoi(string(v))
	if n < acked || ver < acked {
		t.Fatalf("acknowledged %d writes, found %d items and version %d", acked, n, ver)
	}
}

func child() {
	b, err := sqlite.Open(context.Background(), os.Getenv("IMPETUS_SQLITE_CHILD"))
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	for i := 1; ; i++ {
		ctx := context.Background()
		if _, err := b.Archive("offline").Append(ctx, "a@b", storage.Item{Data: []byte("m")}); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		if err := b.Map("roster").Update(ctx, "a@b", func(tx storage.MapTx) error {
			return tx.Set("", []byte(strconv.Itoa(i)))
		}); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Printf("ack %d\n", i)
	}
}

func BenchmarkArchiveAppend(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	a := s.Archive("mam")
	ctx := context.Background()
	data := []byte("<message xmlns='jabber:client' type='chat'><body>hello</body></message>")
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := a.Append(ctx, "alice@example.com", storage.Item{With: "bob@example.com", Time: now.Add(time.Duration(i) * time.Millisecond), Data: data}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMapSet(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	m := s.Map("roster")
	ctx := context.Background()
	value := []byte("<item jid='bob@example.com' subscription='both'><group>Friends</group></item>")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if err := m.Set(ctx, "alice@example.com", "contact"+strconv.Itoa(i%500)+"@example.com", value); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkArchiveAppendMany measures the group-commit write: one op is one archived message
// copy, written in batches of 256 or 4096 spread over 1000 users, as a busy server's archive writer
// sees them. The archive starts with 100,000 items so that index pages do not all fit the
// cache, as on a server that has run for a while.
func BenchmarkArchiveAppendMany(b *testing.B) {
	for _, size := range []int{256, 4096} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) { benchmarkAppendMany(b, size) })
	}
}

func benchmarkAppendMany(b *testing.B, size int) {
	ctx := context.Background()
	be := open(b, b.TempDir())
	defer be.Close()
	a := be.Archive("mam")
	data := []byte(strings.Repeat("x", 400))
	batch := make([]storage.Entry, 0, size)
	fill := func(n int) {
		for i := range n {
			batch = append(batch, storage.Entry{User: fmt.Sprintf("user%d@example.com", i%1000),
				Item: storage.Item{With: fmt.Sprintf("user%d@example.com", (i+1)%1000), Data: data}})
			if len(batch) == cap(batch) || i == n-1 {
				if _, err := a.AppendMany(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	fill(100000)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	fill(b.N)
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time: a write that waits for the disk costs
// wall time but little CPU, and the server's figure of merit is messages per CPU-second.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
