package s2s

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
)

// Key returns the dialback key XEP-0185 recommends:
//
//	HMAC-SHA256(SHA256(secret), receiving + ' ' + originating + ' ' + streamID)
//
// in lower-case hex, where SHA256(secret) is itself hex encoded before it keys the HMAC, as in
// the XEP's worked example. Only the originating domain's authoritative server computes it, so
// nothing but the secret needs to be shared between the servers of a cluster.
func Key(secret []byte, receiving, originating, streamID string) string {
	sum := sha256.Sum256(secret)
	var hexKey [2 * sha256.Size]byte
	hex.Encode(hexKey[:], sum[:])
	mac := hmac.New(sha256.New, hexKey[:])
	mac.Write([]byte(receiving))
	mac.Write([]byte{' '})
	mac.Write([]byte(originating))
	mac.Write([]byte{' '})
	mac.Write([]byte(streamID))
	return hex.EncodeToString(mac.Sum(nil))
}

// keyEqual compares a received key with the expected one in constant time, so the comparison
// does not tell an attacker how much of a guess was right.
func keyEqual(got, want string) bool {
	return len(got) == len(want) && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// randomSecret is the dialback secret of domains that configure none. It lives as long as the
// process: keys handed out before a restart then fail to verify, which only makes the peer
// redo dialback.
func randomSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

// newStreamID returns an unpredictable stream id (RFC 6120 §4.7.3). Dialback keys cover it, so
// a guessable id would let an attacker precompute keys.
func newStreamID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
