package auth

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrExists is returned by Writer.Create when the account already exists.
var ErrExists = errors.New("auth: user already exists")

// ErrReadOnly is returned by writes to a store that cannot change its data.
var ErrReadOnly = errors.New("auth: store is read-only")

// Writer is implemented by stores that accounts can be created in, have their password changed
// in and be removed from at run time (XEP-0077 in-band registration). file:// and digest://
// stores implement it by rewriting their file atomically, as the passwd tool does; a store
// opened from a scheme that does not implement it is read-only.
type Writer interface {
	// Create adds username at domain with password; an existing account yields ErrExists.
	Create(ctx context.Context, username, domain, password string) error
	// SetPassword changes the password of an existing account, else ErrNotFound.
	SetPassword(ctx context.Context, username, domain, password string) error
	// Delete removes the account, else ErrNotFound.
	Delete(ctx context.Context, username, domain string) error
}

// Create implements Writer. The line written names localpart@domain, so the account exists
// for that domain only.
func (s *fileStore) Create(ctx context.Context, username, domain, password string) error {
	return s.edit(ctx, "add", username, domain, password)
}

// SetPassword implements Writer. It changes the line the account logs in with: the
// localpart@domain line, else a plain localpart line, which serves every hosted domain.
func (s *fileStore) SetPassword(ctx context.Context, username, domain, password string) error {
	return s.edit(ctx, "set", username, domain, password)
}

// Delete implements Writer. It removes the line the account logs in with, like SetPassword.
func (s *fileStore) Delete(ctx context.Context, username, domain string) error {
	return s.edit(ctx, "delete", username, domain, "")
}

// edit rewrites the password file for one account and reloads it, so that the change is
// visible to the next lookup. Writers are serialized with reloads by s.mu; another process
// editing the file at the same moment (impetus passwd) may lose one of the two changes, as
// with two concurrent passwd runs.
func (s *fileStore) edit(ctx context.Context, op, username, domain, password string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	local, err := PrepareUsername(username)
	if err != nil {
		return fmt.Errorf("auth: username: %w", err)
	}
	if strings.ContainsAny(local, ":#") {
		return fmt.Errorf("auth: username %q: ':' and '#' cannot be stored in a password file", local)
	}
	dom, err := NormalizeDomain(domain)
	if err != nil {
		return fmt.Errorf("auth: domain: %w", err)
	}
	if op != "delete" {
		if password, err = PreparePassword(password); err != nil {
			return fmt.Errorf("auth: password: %w", err)
		}
		if password == "" || strings.ContainsAny(password, "\r\n") {
			return errors.New("auth: password must not be empty or contain line breaks")
		}
	}
	realm := s.opts.Realm
	if realm == "" {
		realm = dom
	}
	s.mu.Lock()
	err = s.editLocked(op, local, dom, realm, password)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.reload(false)
}

func (s *fileStore) editLocked(op, local, dom, realm, password string) error {
	f, err := readPasswdFile(s.path, op == "add")
	if err != nil {
		return fmt.Errorf("auth: reading %s: %w", s.path, err)
	}
	// The account's own line wins over a plain localpart line, as in Lookup.
	own, plain := -1, -1
	for i, l := range f.lines {
		user, lrealm, ok := splitLine(l, s.format)
		if !ok {
			continue
		}
		if s.format == formatDigest && !s.opts.StoredCleartext && lrealm != realm {
			continue
		}
		ll, ld, err := ParseUser(user)
		if err != nil || ll != local {
			continue
		}
		switch ld {
		case dom:
			own = i
		case "":
			plain = i
		}
	}
	match := own
	if match < 0 {
		match = plain
	}
	var newLine string
	if op != "delete" {
		userField := local + "@" + dom
		if op == "set" && own < 0 {
			userField = local
		}
		switch {
		case s.format == formatPlain && s.cur.Load().scramOnly:
			// A file that keeps SCRAM keys gets keys for new passwords too.
			keys, err := FormatSCRAM(password, 4096, DefaultSCRAMHashes...)
			if err != nil {
				return err
			}
			newLine = userField + ":" + keys
		case s.format == formatPlain && isSCRAMField(password):
			return fmt.Errorf("auth: a password cannot begin with %q in a file:// file", scramPrefix)
		case s.format == formatPlain:
			newLine = userField + ":" + password
		case s.opts.StoredCleartext:
			newLine = userField + ":" + realm + ":" + password
		default:
			sum := DigestHA1(local, realm, password)
			newLine = userField + ":" + realm + ":" + hex.EncodeToString(sum[:])
		}
		newLine += f.eol
	}
	var out []string
	switch op {
	case "add":
		if match >= 0 {
			return ErrExists
		}
		out = f.lines
		if n := len(out); n > 0 && !strings.HasSuffix(out[n-1], "\n") {
			out[n-1] += f.eol
		}
		out = append(out, newLine)
	default:
		if match < 0 {
			return ErrNotFound
		}
		for i, l := range f.lines {
			switch {
			case i != match:
				out = append(out, l)
			case op == "set":
				out = append(out, newLine)
			}
		}
	}
	return writeFileAtomic(s.path, []byte(strings.Join(out, "")), f.mode)
}

var _ Writer = (*fileStore)(nil)
