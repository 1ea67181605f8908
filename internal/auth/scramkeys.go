package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
)

// A password field of a file:// store may hold SCRAM keys instead of the clear-text
// password (RFC 5802 §3: the salt, the iteration count, StoredKey and ServerKey), so that the
// file no longer reveals passwords and a SCRAM login costs no key derivation on the server,
// as with the stored SCRAM credentials of ejabberd and Prosody:
//
//	alice:{SCRAM-SHA-1}4096$<salt>$<StoredKey>$<ServerKey>,{SCRAM-SHA-256}4096$…
//
// each value in standard base64. A clear-text password beginning with "{SCRAM-" cannot be
// stored in such a file. The format is Impetus's; Momentum's files hold clear text only.

// DefaultSCRAMHashes are the hashes `impetus passwd --scram` stores keys for: the two every
// current client offers.
var DefaultSCRAMHashes = []string{SHA1, SHA256}

// scramPrefix starts a password field holding SCRAM keys.
const scramPrefix = "{SCRAM-"

var scramHashes = map[string]func() hash.Hash{SHA1: sha1.New, SHA256: sha256.New, SHA512: sha512.New}

// isSCRAMField reports whether a password field holds SCRAM keys.
func isSCRAMField(s string) bool { return strings.HasPrefix(s, scramPrefix) }

// parseSCRAMField reads the keys of a password field (see the package comment above).
func parseSCRAMField(s string) (map[string]SCRAMKeys, error) {
	out := map[string]SCRAMKeys{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		rest, ok := strings.CutPrefix(part, scramPrefix)
		if !ok {
			return nil, fmt.Errorf("SCRAM keys: %q does not start with %s", clipField(part), scramPrefix)
		}
		name, rest, ok := strings.Cut(rest, "}")
		if !ok {
			return nil, errors.New("SCRAM keys: missing '}' after the mechanism")
		}
		hashName := name // "SHA-1", "SHA-256", "SHA-512"
		newHash, known := scramHashes[hashName]
		if !known {
			return nil, fmt.Errorf("SCRAM keys: unknown hash %q", name)
		}
		if _, dup := out[hashName]; dup {
			return nil, fmt.Errorf("SCRAM keys: SCRAM-%s given twice", hashName)
		}
		fields := strings.Split(rest, "$")
		if len(fields) != 4 {
			return nil, fmt.Errorf("SCRAM-%s keys: want iterations$salt$storedkey$serverkey", hashName)
		}
		iter, err := strconv.Atoi(fields[0])
		if err != nil || iter < 1 {
			return nil, fmt.Errorf("SCRAM-%s keys: invalid iteration count %q", hashName, fields[0])
		}
		var k SCRAMKeys
		k.Iterations = iter
		size := newHash().Size()
		for i, dst := range []*[]byte{&k.Salt, &k.StoredKey, &k.ServerKey} {
			b, err := base64.StdEncoding.DecodeString(fields[i+1])
			if err != nil || len(b) == 0 || (i > 0 && len(b) != size) {
				return nil, fmt.Errorf("SCRAM-%s keys: field %d is not valid base64 of the right length", hashName, i+2)
			}
			*dst = b
		}
		out[hashName] = k
	}
	return out, nil
}

func clipField(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}

// FormatSCRAM derives the SCRAM keys of password for each hash, with a random salt and the
// given iteration count, in the password-field form a file:// store reads.
func FormatSCRAM(password string, iterations int, hashes ...string) (string, error) {
	if iterations < 4096 {
		// RFC 7677 §4 asks for at least 4096.
		return "", fmt.Errorf("auth: SCRAM iteration count %d is below 4096", iterations)
	}
	var parts []string
	for _, h := range hashes {
		newHash, ok := scramHashes[h]
		if !ok {
			return "", fmt.Errorf("auth: unknown SCRAM hash %q", h)
		}
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return "", err
		}
		stored, server, err := scramKeys(newHash, password, salt, iterations)
		if err != nil {
			return "", err
		}
		enc := base64.StdEncoding.EncodeToString
		parts = append(parts, fmt.Sprintf("{SCRAM-%s}%d$%s$%s$%s", h, iterations, enc(salt), enc(stored), enc(server)))
	}
	return strings.Join(parts, ","), nil
}

// scramKeys computes StoredKey and ServerKey (RFC 5802 §3).
func scramKeys(newHash func() hash.Hash, password string, salt []byte, iterations int) (stored, server []byte, err error) {
	salted, err := pbkdf2.Key(newHash, password, salt, iterations, newHash().Size())
	if err != nil {
		return nil, nil, err
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(newHash, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	h := newHash()
	h.Write(mac(salted, "Client Key"))
	return h.Sum(nil), mac(salted, "Server Key"), nil
}

// checkSCRAM reports whether password matches stored SCRAM keys, using the strongest hash
// stored: a PLAIN login against a file that keeps only keys.
func checkSCRAM(keys map[string]SCRAMKeys, password string) bool {
	for _, name := range []string{SHA512, SHA256, SHA1} {
		k, ok := keys[name]
		if !ok {
			continue
		}
		stored, _, err := scramKeys(scramHashes[name], password, k.Salt, k.Iterations)
		return err == nil && subtle.ConstantTimeCompare(stored, k.StoredKey) == 1
	}
	return false
}

// commonHashes returns the hashes present in every key set: what a store whose users all
// have keys can offer every one of them.
func commonHashes(sets []map[string]SCRAMKeys) []string {
	var out []string
	for _, name := range []string{SHA1, SHA256, SHA512} {
		all := len(sets) > 0
		for _, s := range sets {
			if _, ok := s[name]; !ok {
				all = false
				break
			}
		}
		if all {
			out = append(out, name)
		}
	}
	return slices.Clip(out)
}
