package sasl

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"impetus/internal/auth"
)

// scramHash is one SCRAM hash function.
type scramHash struct {
	name string // as in auth.Capabilities.SCRAM
	new  func() hash.Hash
	size int
}

// scramHashes is keyed by the part of the mechanism name after "SCRAM-".
var scramHashes = map[string]*scramHash{
	auth.SHA1:   {name: auth.SHA1, new: sha1.New, size: sha1.Size},
	auth.SHA256: {name: auth.SHA256, new: sha256.New, size: sha256.Size},
	auth.SHA512: {name: auth.SHA512, new: sha512.New, size: sha512.Size},
}

func (h *scramHash) hmac(key []byte, parts ...string) []byte {
	m := hmac.New(h.new, key)
	for _, p := range parts {
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

func (h *scramHash) sum(b []byte) []byte {
	d := h.new()
	d.Write(b)
	return d.Sum(nil)
}

// keys derives StoredKey and ServerKey from a salted password (RFC 5802 §3).
func (h *scramHash) keys(salted []byte) (storedKey, serverKey []byte) {
	return h.sum(h.hmac(salted, "Client Key")), h.hmac(salted, "Server Key")
}

func randomNonce() string {
	b := make([]byte, 18)
	// crypto/rand.Read never returns an error on supported platforms.
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// scramServer implements the server side of SCRAM and SCRAM-PLUS.
type scramServer struct {
	cfg  Config
	hash *scramHash
	plus bool

	step int // 0 start, 1 waiting for client-first, 2 waiting for client-final, 3 finished

	cbindInput      []byte // gs2 header plus channel binding data, expected in c=
	clientFirstBare string
	serverFirst     string
	nonce           string
	storedKey       []byte
	serverKey       []byte
	known           bool // false when running against a fake user

	user, authzid string // candidates until the proof checks out
	username      string
	authzidOK     string
}

func (s *scramServer) Username() string { return s.username }
func (s *scramServer) Authzid() string  { return s.authzidOK }

func (s *scramServer) Step(ctx context.Context, response []byte) ([]byte, bool, error) {
	switch s.step {
	case 0:
		if response == nil {
			s.step = 1
			return []byte{}, false, nil
		}
		fallthrough
	case 1:
		s.step = 3 // any failure ends the exchange
		ch, err := s.clientFirst(ctx, response)
		if err != nil {
			return nil, false, err
		}
		s.step = 2
		return ch, false, nil
	case 2:
		s.step = 3
		data, err := s.clientFinal(response)
		if err != nil {
			return nil, false, err
		}
		return data, true, nil
	default:
		return nil, false, errDone()
	}
}

// parseGS2 splits a client-first-message into its gs2 header parts and the
// client-first-message-bare (RFC 5802 §7).
func parseGS2(msg string) (flag, cbType, authzid, header, bare string, f *Failure) {
	flagField, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return "", "", "", "", "", fail(MalformedRequest, "missing gs2 header")
	}
	authzField, bare, ok := strings.Cut(rest, ",")
	if !ok {
		return "", "", "", "", "", fail(MalformedRequest, "missing gs2 header")
	}
	switch {
	case flagField == "n" || flagField == "y":
		flag = flagField
	case strings.HasPrefix(flagField, "p="):
		flag, cbType = "p", flagField[2:]
		if cbType == "" || strings.IndexFunc(cbType, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-')
		}) >= 0 {
			return "", "", "", "", "", fail(MalformedRequest, "invalid channel binding name")
		}
	default:
		return "", "", "", "", "", fail(MalformedRequest, "invalid gs2 channel binding flag")
	}
	if authzField != "" {
		v, ok := strings.CutPrefix(authzField, "a=")
		if !ok || v == "" {
			return "", "", "", "", "", fail(MalformedRequest, "invalid gs2 authzid")
		}
		if authzid, ok = decodeSaslname(v); !ok {
			return "", "", "", "", "", fail(MalformedRequest, "invalid gs2 authzid encoding")
		}
	}
	return flag, cbType, authzid, msg[:len(flagField)+1+len(authzField)+1], bare, nil
}

// decodeSaslname undoes the "=2C" / "=3D" escaping of RFC 5802 §5.1; any
// other '=' is an error.
func decodeSaslname(s string) (string, bool) {
	if !strings.Contains(s, "=") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

func validNonce(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < 0x21 || n[i] > 0x7E || n[i] == ',' {
			return false
		}
	}
	return true
}

func (s *scramServer) clientFirst(ctx context.Context, msg []byte) ([]byte, error) {
	if len(msg) > maxMessage {
		return nil, fail(MalformedRequest, "message too long")
	}
	if !utf8.Valid(msg) {
		return nil, fail(MalformedRequest, "message is not UTF-8")
	}
	flag, cbType, authzid, header, bare, f := parseGS2(string(msg))
	if f != nil {
		return nil, f
	}
	s.cbindInput = []byte(header)
	switch flag {
	case "n":
		if s.plus {
			return nil, fail(MalformedRequest, "-PLUS mechanism without channel binding")
		}
	case "y":
		if s.plus {
			return nil, fail(MalformedRequest, "-PLUS mechanism without channel binding")
		}
		if s.cfg.PlusAdvertised {
			// RFC 5802 §6: the client believes the server cannot bind, but
			// it can, so someone stripped the -PLUS mechanisms in transit.
			return nil, fail(NotAuthorized, "channel binding downgrade detected")
		}
	case "p":
		if !s.plus {
			return nil, fail(MalformedRequest, "channel binding requested on a mechanism without -PLUS")
		}
		if !slices.Contains(ChannelBindingTypes(s.cfg.TLS), cbType) || s.cfg.ChannelBinding == nil {
			return nil, fail(NotAuthorized, "unsupported channel binding type")
		}
		data, err := s.cfg.ChannelBinding(cbType)
		if err != nil || len(data) == 0 {
			return nil, &Failure{Condition: NotAuthorized, Text: "channel binding data unavailable", err: err}
		}
		s.cbindInput = append(s.cbindInput, data...)
	}

	fields := strings.Split(bare, ",")
	if strings.HasPrefix(fields[0], "m=") {
		return nil, fail(MalformedRequest, "unsupported mandatory extension")
	}
	if len(fields) < 2 || !strings.HasPrefix(fields[0], "n=") || !strings.HasPrefix(fields[1], "r=") {
		return nil, fail(MalformedRequest, "want n=username,r=nonce")
	}
	for _, ext := range fields[2:] {
		if len(ext) < 2 || ext[1] != '=' {
			return nil, fail(MalformedRequest, "invalid attribute")
		}
	}
	rawUser, ok := decodeSaslname(fields[0][2:])
	if !ok || rawUser == "" {
		return nil, fail(MalformedRequest, "invalid username encoding")
	}
	cnonce := fields[1][2:]
	if !validNonce(cnonce) {
		return nil, fail(MalformedRequest, "invalid nonce")
	}
	user, err := auth.PrepareUsername(rawUser)
	if err != nil {
		return nil, fail(NotAuthorized, "invalid username")
	}

	creds, err := lookup(ctx, &s.cfg, user)
	if err != nil {
		return nil, err
	}
	salt, iter := s.keysFor(user, creds)
	s.user, s.authzid = user, authzid
	s.clientFirstBare = bare
	s.nonce = cnonce + s.cfg.newNonce()
	s.serverFirst = "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(salt) + ",i=" + strconv.Itoa(iter)
	if len(s.cfg.Advertised) > 0 {
		s.serverFirst += ",h=" + SSDPHash(s.hash.new, s.cfg.Advertised, s.cfg.CBTypes)
	}
	return []byte(s.serverFirst), nil
}

// keysFor sets the stored and server keys of the user and returns the salt
// and iteration count to announce. Unknown users, and users without usable
// credentials, get keys no proof can match and a salt that looks like a
// real one.
func (s *scramServer) keysFor(user string, creds *auth.Credentials) (salt []byte, iter int) {
	iter = max(s.cfg.Iterations, DefaultIterations)
	domain, err := auth.NormalizeDomain(s.cfg.Domain)
	if err != nil {
		domain = s.cfg.Domain
	}
	secret := s.cfg.secret()
	salt = s.hash.hmacSalt(secret, domain, user)
	if creds != nil {
		if k, ok := creds.SCRAM[s.hash.name]; ok && k.Iterations >= DefaultIterations &&
			len(k.Salt) > 0 && len(k.StoredKey) == s.hash.size && len(k.ServerKey) == s.hash.size {
			s.storedKey, s.serverKey, s.known = k.StoredKey, k.ServerKey, true
			return k.Salt, k.Iterations
		}
		if creds.HasPassword {
			s.storedKey, s.serverKey = derivedKeys(s.hash, secret, domain, user, creds, salt, iter)
			s.known = s.storedKey != nil
			if s.known {
				return salt, iter
			}
		}
	}
	s.storedKey = s.hash.hmac(secret, "impetus scram fake stored key\x00", domain, "\x00", user)
	s.serverKey = s.hash.hmac(secret, "impetus scram fake server key\x00", domain, "\x00", user)
	s.known = false
	return salt, iter
}

// hmacSalt makes the per-user salt deterministic, so that repeated logins hit
// the derived-key cache and unknown users get a stable, plausible salt.
func (h *scramHash) hmacSalt(secret []byte, domain, user string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("impetus scram salt\x00" + h.name + "\x00" + domain + "\x00" + user))
	return m.Sum(nil)[:16]
}

func (s *scramServer) clientFinal(msg []byte) ([]byte, error) {
	if len(msg) > maxMessage {
		return nil, fail(MalformedRequest, "message too long")
	}
	if !utf8.Valid(msg) {
		return nil, fail(MalformedRequest, "message is not UTF-8")
	}
	m := string(msg)
	i := strings.LastIndex(m, ",p=")
	if i < 0 {
		return nil, fail(MalformedRequest, "missing proof")
	}
	withoutProof, proofB64 := m[:i], m[i+3:]
	fields := strings.Split(withoutProof, ",")
	if len(fields) < 2 || !strings.HasPrefix(fields[0], "c=") || !strings.HasPrefix(fields[1], "r=") {
		return nil, fail(MalformedRequest, "want c=binding,r=nonce,...,p=proof")
	}
	for _, ext := range fields[2:] {
		if len(ext) < 2 || ext[1] != '=' {
			return nil, fail(MalformedRequest, "invalid attribute")
		}
	}
	cbind, err := base64.StdEncoding.DecodeString(fields[0][2:])
	if err != nil {
		return nil, fail(MalformedRequest, "invalid channel binding encoding")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != s.hash.size {
		return nil, fail(MalformedRequest, "invalid proof")
	}
	if subtle.ConstantTimeCompare([]byte(fields[1][2:]), []byte(s.nonce)) != 1 {
		return nil, fail(NotAuthorized, "nonce mismatch")
	}
	if subtle.ConstantTimeCompare(cbind, s.cbindInput) != 1 {
		return nil, fail(NotAuthorized, "channel binding mismatch")
	}

	authMessage := s.clientFirstBare + "," + s.serverFirst + "," + withoutProof
	clientSig := s.hash.hmac(s.storedKey, authMessage)
	clientKey := make([]byte, len(proof))
	subtle.XORBytes(clientKey, proof, clientSig)
	ok := subtle.ConstantTimeCompare(s.hash.sum(clientKey), s.storedKey) == 1
	if !ok || !s.known {
		return nil, wrongCredentials()
	}
	s.username, s.authzidOK = s.user, s.authzid
	return []byte("v=" + base64.StdEncoding.EncodeToString(s.hash.hmac(s.serverKey, authMessage))), nil
}

// The derived-key cache spares a PBKDF2 run (4096 iterations or more) on
// every login of a user whose store holds only the clear text. Entries are
// bound to the store generation and a keyed fingerprint of the password, so
// a reload or a password change never serves stale keys.
type cacheKey struct {
	hash, domain, user, salt string
	iter                     int
}

type cacheEntry struct {
	generation  uint64
	fingerprint []byte
	storedKey   []byte
	serverKey   []byte
}

const cacheMax = 10000

var keyCache = struct {
	sync.Mutex
	m map[cacheKey]cacheEntry
}{m: map[cacheKey]cacheEntry{}}

func derivedKeys(h *scramHash, secret []byte, domain, user string, creds *auth.Credentials, salt []byte, iter int) (storedKey, serverKey []byte) {
	k := cacheKey{hash: h.name, domain: domain, user: user, salt: string(salt), iter: iter}
	fp := hmac.New(sha256.New, secret)
	fp.Write([]byte("impetus scram password fingerprint\x00" + creds.Password))
	fingerprint := fp.Sum(nil)

	keyCache.Lock()
	e, ok := keyCache.m[k]
	keyCache.Unlock()
	if ok && e.generation == creds.Generation && hmac.Equal(e.fingerprint, fingerprint) {
		return e.storedKey, e.serverKey
	}
	salted, err := pbkdf2.Key(h.new, creds.Password, salt, iter, h.size)
	if err != nil {
		return nil, nil
	}
	storedKey, serverKey = h.keys(salted)

	keyCache.Lock()
	defer keyCache.Unlock()
	if len(keyCache.m) >= cacheMax {
		// Dropping an arbitrary half bounds memory without LRU bookkeeping;
		// the cost is one extra PBKDF2 run for the evicted users.
		n := 0
		for key := range keyCache.m {
			delete(keyCache.m, key)
			if n++; n >= cacheMax/2 {
				break
			}
		}
	}
	keyCache.m[k] = cacheEntry{generation: creds.Generation, fingerprint: fingerprint, storedKey: storedKey, serverKey: serverKey}
	return storedKey, serverKey
}

// SSDPHash is the XEP-0474 downgrade protection hash: the sorted mechanism list joined by
// 0x1E, then, when channel-binding types were advertised (cbTypes non-nil), 0x1F and the sorted
// types joined by 0x1E, hashed with the SCRAM mechanism's hash and encoded in base64. Being part
// of the server-first-message, it is covered by the client's proof.
func SSDPHash(newHash func() hash.Hash, mechs, cbTypes []string) string {
	m := slices.Clone(mechs)
	slices.Sort(m) // byte order is the "i;octet" collation of RFC 4790 §9.3
	s := strings.Join(m, "\x1e")
	if cbTypes != nil {
		t := slices.Clone(cbTypes)
		slices.Sort(t)
		s += "\x1f" + strings.Join(t, "\x1e")
	}
	d := newHash()
	d.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(d.Sum(nil))
}
