// Package common holds the argument checks, id generation and time
// normalisation that every backend must apply identically, so that the
// conformance suite sees the same behaviour from each.
package common

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"impetus/internal/storage"
)

// text reports whether s can be stored as SQL text everywhere: PostgreSQL
// rejects NUL bytes and invalid UTF-8 in text columns.
func text(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// Name checks a store name.
func Name(kind, name string) error {
	if name == "" || !text(name) {
		return fmt.Errorf("%w: %s name %q", storage.ErrInvalid, kind, name)
	}
	return nil
}

// User checks a user.
func User(user string) error {
	if user == "" || !text(user) {
		return fmt.Errorf("%w: user %q", storage.ErrInvalid, user)
	}
	return nil
}

// StoreUser checks a store name and a user together, the prologue of almost
// every store method.
func StoreUser(kind, name, user string) error {
	if err := Name(kind, name); err != nil {
		return err
	}
	return User(user)
}

// Key checks a map key, which may be empty.
func Key(key string) error {
	if !text(key) {
		return fmt.Errorf("%w: key %q", storage.ErrInvalid, key)
	}
	return nil
}

// ID checks an archive item id, which must not be empty.
func ID(id string) error {
	if id == "" || !text(id) {
		return fmt.Errorf("%w: id %q", storage.ErrInvalid, id)
	}
	return nil
}

// Peer checks an archive peer, which may be empty.
func Peer(with string) error {
	if !text(with) {
		return fmt.Errorf("%w: with %q", storage.ErrInvalid, with)
	}
	return nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a random archive id. 120 random bits make collisions
// negligible and keep ids unguessable, which matters because MAM exposes
// them to clients as stanza-ids.
func NewID() string {
	var b [15]byte
	rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
	return idEncoding.EncodeToString(b[:])
}

// Time normalises t to what every backend stores: UTC at microsecond
// precision.
func Time(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

// PrepareItem validates item and fills in a missing id and time.
func PrepareItem(item storage.Item, now time.Time) (storage.Item, error) {
	if item.ID == "" {
		item.ID = NewID()
	} else if err := ID(item.ID); err != nil {
		return item, err
	}
	if err := Peer(item.With); err != nil {
		return item, err
	}
	if item.Time.IsZero() {
		item.Time = now
	}
	item.Time = Time(item.Time)
	if item.Data == nil {
		item.Data = []byte{}
	}
	return item, nil
}

// CheckQuery validates the strings of q.
func CheckQuery(q storage.Query) error {
	if err := Peer(q.With); err != nil {
		return err
	}
	for _, id := range []string{q.After, q.Before} {
		if id != "" {
			if err := ID(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// NonNil returns v, or an empty slice when v is nil, so that a stored empty
// value reads back as empty rather than as SQL NULL.
func NonNil(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

// PrepareEntries checks the entries of one AppendMany into the archive
// called name and prepares their items in place (PrepareItem), so that a
// backend validates the whole batch before it writes any of it.
func PrepareEntries(name string, entries []storage.Entry, now time.Time) error {
	if err := Name("archive", name); err != nil {
		return err
	}
	for i := range entries {
		e := &entries[i]
		if err := User(e.User); err != nil {
			return err
		}
		item, err := PrepareItem(e.Item, now)
		if err != nil {
			return err
		}
		e.Item = item
	}
	return nil
}
