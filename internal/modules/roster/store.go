package roster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sort"
	"strconv"
	"strings"

	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// StoreName is the storage.Map holding rosters: one entry per contact keyed by the contact's
// JID, and the roster version under the empty key, which no JID can collide with.
const StoreName = "roster"

// versionKey is where the roster version lives.
const versionKey = ""

// initialVersion is the version of a roster that was never written. A never-written roster is
// empty, so every client that cached this version holds the right (empty) roster; the first
// change starts a fresh random epoch, so versions of a deleted and recreated account never
// repeat those its clients may have cached.
const initialVersion = "0"

// ErrFull is returned when a change would add an entry to a roster at its size limit.
var ErrFull = stanza.NewError("not-allowed", "the roster has reached its maximum size")

// Store reads and writes rosters in a storage.Backend.
type Store struct {
	m storage.Map
	// MaxItems bounds the entries of one roster, hidden ones included; zero or less means no bound.
	MaxItems int
}

// NewStore returns the roster store of b.
func NewStore(b storage.Backend) *Store { return &Store{m: b.Map(StoreName)} }

// Change describes what an Update did to the roster as clients see it.
type Change struct {
	// Item is the entry after the update.
	Item Item
	// Pushed reports that the item changed as the user sees it: the version moved and the
	// item is to be pushed (with subscription 'remove' when it left the roster).
	Pushed bool
	// Removed reports that the item left the roster.
	Removed bool
	// Version is the roster version after the update.
	Version string
}

// Get returns the entry for contact, with ok false when there is none.
func (s *Store) Get(ctx context.Context, owner, contact string) (it Item, ok bool, err error) {
	data, err := s.m.Get(ctx, owner, contact)
	if errors.Is(err, storage.ErrNotFound) {
		return Item{JID: contact, Subscription: None}, false, nil
	}
	if err != nil {
		return Item{}, false, err
	}
	it, err = Decode(contact, data)
	return it, err == nil, err
}

// All returns every entry of owner's roster, hidden ones included, sorted by JID, and the version.
func (s *Store) All(ctx context.Context, owner string) ([]Item, string, error) {
	all, err := s.m.All(ctx, owner)
	if err != nil {
		return nil, "", err
	}
	return decodeAll(all)
}

func decodeAll(all map[string][]byte) ([]Item, string, error) {
	ver := initialVersion
	items := make([]Item, 0, len(all))
	for k, v := range all {
		if k == versionKey {
			ver = string(v)
			continue
		}
		it, err := Decode(k, v)
		if err != nil {
			return nil, "", err
		}
		items = append(items, it)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].JID < items[j].JID })
	return items, ver, nil
}

// Version returns the current version of owner's roster.
func (s *Store) Version(ctx context.Context, owner string) (string, error) {
	v, err := s.m.Get(ctx, owner, versionKey)
	if errors.Is(err, storage.ErrNotFound) {
		return initialVersion, nil
	}
	return string(v), err
}

// Update changes the entry for contact in one transaction. fn gets the current entry (a hidden,
// subscription-less one when there is none, with exists false) and edits it in place; an error
// from fn aborts the transaction. Entries left with nothing to remember are deleted. When the
// item changed as clients see it, the version moves in the same transaction.
func (s *Store) Update(ctx context.Context, owner, contact string, fn func(it *Item, exists bool) error) (Change, error) {
	var ch Change
	err := s.m.Update(ctx, owner, func(tx storage.MapTx) error {
		ch = Change{}
		old := Item{JID: contact, Subscription: None, Hidden: true}
		exists := true
		data, err := tx.Get(contact)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			exists = false
		case err != nil:
			return err
		default:
			if old, err = Decode(contact, data); err != nil {
				return err
			}
		}
		it := old
		it.Groups = append([]string(nil), old.Groups...)
		if err := fn(&it, exists); err != nil {
			return err
		}
		it.JID = contact
		del := it.empty()
		if !exists && !del && s.MaxItems > 0 {
			all, err := tx.All()
			if err != nil {
				return err
			}
			n := len(all)
			if _, ok := all[versionKey]; ok {
				n--
			}
			if n >= s.MaxItems {
				return ErrFull
			}
		}
		if del {
			if exists {
				if err := tx.Delete(contact); err != nil {
					return err
				}
			}
		} else {
			enc, err := Encode(it)
			if err != nil {
				return err
			}
			if err := tx.Set(contact, enc); err != nil {
				return err
			}
		}
		wasListed := exists && old.Listed()
		isListed := !del && it.Listed()
		ch.Item = it
		ch.Removed = wasListed && !isListed
		ch.Pushed = ch.Removed || (isListed && (!wasListed || !it.visible(&old)))
		if ch.Pushed {
			v, err := bump(tx)
			if err != nil {
				return err
			}
			ch.Version = v
		}
		return nil
	})
	if err != nil {
		return Change{}, err
	}
	if !ch.Pushed {
		if ch.Version, err = s.Version(ctx, owner); err != nil {
			return Change{}, err
		}
	}
	return ch, nil
}

// Import writes items into owner's roster in one transaction, replacing the entries of the same
// contacts and keeping the others, and moves the version so that clients refetch the roster. It
// is the one writer outside the protocol (used by the Momentum import) and ignores MaxItems:
// an imported roster is kept whole.
func (s *Store) Import(ctx context.Context, owner string, items []Item) error {
	return s.m.Update(ctx, owner, func(tx storage.MapTx) error {
		for _, it := range items {
			if it.JID == "" {
				return errors.New("roster: import: item without JID")
			}
			enc, err := Encode(it)
			if err != nil {
				return err
			}
			if err := tx.Set(it.JID, enc); err != nil {
				return err
			}
		}
		_, err := bump(tx)
		return err
	})
}

// bump moves the version: a counter behind a random epoch chosen when the roster is first
// written, so that every change yields a version never seen before for this account.
func bump(tx storage.MapTx) (string, error) {
	cur, err := tx.Get(versionKey)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	epoch, n := "", uint64(0)
	if e, c, ok := strings.Cut(string(cur), "-"); ok {
		if v, perr := strconv.ParseUint(c, 10, 64); perr == nil {
			epoch, n = e, v
		}
	}
	if epoch == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		epoch = hex.EncodeToString(b[:])
	}
	v := epoch + "-" + strconv.FormatUint(n+1, 10)
	return v, tx.Set(versionKey, []byte(v))
}
