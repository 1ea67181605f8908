package upload

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"time"
)

// token is what a slot's PUT URL is authorized by: the account, where the file goes and what it
// must be. It is signed, not stored, so a slot that is never used costs nothing.
type token struct {
	User    string `json:"u"`
	Path    string `json:"p"` // day/random, the slot's directory under the domain's
	Name    string `json:"n"`
	Size    int64  `json:"s"`
	Type    string `json:"t"`
	Expires int64  `json:"e"` // Unix seconds after which the PUT is refused
}

var errBadToken = errors.New("upload: invalid token")

// sign returns payload.mac, both base64url.
func (t token) sign(key []byte) string {
	b, _ := json.Marshal(t)
	p := base64.RawURLEncoding.EncodeToString(b)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(p))
	return p + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// parseToken verifies a signed token.
func parseToken(s string, key []byte) (token, error) {
	p, sig, ok := strings.Cut(s, ".")
	if !ok {
		return token{}, errBadToken
	}
	want, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return token{}, errBadToken
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(p))
	if !hmac.Equal(m.Sum(nil), want) {
		return token{}, errBadToken
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return token{}, errBadToken
	}
	var t token
	if err := json.Unmarshal(b, &t); err != nil {
		return token{}, errBadToken
	}
	return t, nil
}

var slotEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newSlotPath returns day/random: the day groups files for the expiry cleanup, and 128 random
// bits make the GET URL unguessable.
func newSlotPath(now time.Time) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format(dayLayout) + "/" + strings.ToLower(slotEncoding.EncodeToString(b[:]))
}

const dayLayout = "20060102"

// validSlotPath checks the day/random form, so that no request names another directory.
func validSlotPath(day, id string) bool {
	if _, err := time.Parse(dayLayout, day); err != nil || len(id) != 26 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

func escapeName(name string) string { return url.PathEscape(name) }

// record is a finished upload as stored in the account's map and beside the file.
type record struct {
	User    string    `json:"user"`
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	Type    string    `json:"type"`
	Created time.Time `json:"created"`
}

func (r record) encode() []byte {
	b, _ := json.Marshal(r)
	return b
}

func decodeRecord(b []byte) (record, error) {
	var r record
	err := json.Unmarshal(b, &r)
	return r, err
}
