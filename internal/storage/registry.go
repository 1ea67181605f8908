package storage

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Driver opens a backend from a driver-specific data source name.
type Driver func(ctx context.Context, dsn string) (Backend, error)

var (
	driversMu sync.RWMutex
	drivers   = map[string]Driver{}
)

// Register makes a backend available to Open under name. It is meant to be
// called from the init function of the implementing package and panics if
// name is registered twice or d is nil, since either is a programming error.
func Register(name string, d Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if d == nil {
		panic("storage: Register driver is nil")
	}
	if _, dup := drivers[name]; dup {
		panic("storage: Register called twice for driver " + name)
	}
	drivers[name] = d
}

// Drivers returns the sorted names of the registered drivers.
func Drivers() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	names := make([]string, 0, len(drivers))
	for n := range drivers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Open opens the backend registered as driver with dsn, applying pending
// schema migrations.
func Open(driver, dsn string) (Backend, error) {
	return OpenContext(context.Background(), driver, dsn)
}

// OpenContext is Open with a context bounding connection set-up and
// migrations.
func OpenContext(ctx context.Context, driver, dsn string) (Backend, error) {
	driversMu.RLock()
	d, ok := drivers[driver]
	driversMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("storage: unknown driver %q (forgotten import?)", driver)
	}
	b, err := d(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", driver, err)
	}
	return b, nil
}
