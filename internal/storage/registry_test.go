package storage_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"impetus/internal/storage"
)

func TestRegistry(t *testing.T) {
	errOpen := errors.New("boom")
	var gotDSN string
	storage.Register("test-registry", func(ctx context.Context, dsn string) (storage.Backend, error) {
		gotDSN = dsn
		return nil, errOpen
	})
	if !slices.Contains(storage.Drivers(), "test-registry") {
		t.Fatalf("Drivers() = %v", storage.Drivers())
	}
	if _, err := storage.Open("test-registry", "x=1"); !errors.Is(err, errOpen) || gotDSN != "x=1" {
		t.Fatalf("Open: %v, dsn %q", err, gotDSN)
	}
	if _, err := storage.Open("no-such-driver", ""); err == nil || !strings.HasPrefix(err.Error(), "storage: ") {
		t.Fatalf("Open of unknown driver: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering a driver twice did not panic")
		}
	}()
	storage.Register("test-registry", func(context.Context, string) (storage.Backend, error) { return nil, nil })
}
