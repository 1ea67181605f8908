package memory_test

import (
	"testing"

	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return memory.New() })
}

func TestRegistered(t *testing.T) {
	b, err := storage.Open("memory", "")
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
}
