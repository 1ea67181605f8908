package rostertest

import (
	"testing"

	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

// ForEachBackend runs fn as a subtest on each storage backend that needs no
// outside service: a fresh memory store and a fresh SQLite database in a
// temporary directory, closed when the subtest ends.
func ForEachBackend(t *testing.T, fn func(t *testing.T, b storage.Backend)) {
	t.Helper()
	t.Run("memory", func(t *testing.T) { fn(t, memory.New()) })
	t.Run("sqlite", func(t *testing.T) {
		b, err := sqlite.Open(t.Context(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		fn(t, b)
	})
}
