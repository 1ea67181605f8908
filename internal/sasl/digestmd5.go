package sasl

import (
	"context"
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"unicode/utf8"

	"impetus/internal/auth"
)

// digestServer implements the server side of DIGEST-MD5 (RFC 2831) for
// authentication only (qop=auth): no integrity or confidentiality layer and
// no subsequent authentication.
type digestServer struct {
	cfg   Config
	step  int // 0 start, 1 waiting for the digest-response, 2 waiting for the empty reply, 3 finished
	nonce string

	user, authzid string
	username      string
	authzidOK     string
}

func (d *digestServer) Username() string { return d.username }
func (d *digestServer) Authzid() string  { return d.authzidOK }

func (d *digestServer) service() string {
	if d.cfg.service != "" {
		return d.cfg.service
	}
	return "xmpp"
}

func (d *digestServer) Step(ctx context.Context, response []byte) ([]byte, bool, error) {
	switch d.step {
	case 0:
		if len(response) > 0 {
			d.step = 3
			return nil, false, fail(MalformedRequest, "DIGEST-MD5 takes no initial response")
		}
		d.step = 1
		d.nonce = d.cfg.newNonce()
		return []byte(`realm=` + quote(d.cfg.realm()) + `,nonce=` + quote(d.nonce) +
			`,qop="auth",charset=utf-8,algorithm=md5-sess`), false, nil
	case 1:
		d.step = 3
		rspauth, err := d.verify(ctx, response)
		if err != nil {
			return nil, false, err
		}
		d.step = 2
		return []byte("rspauth=" + rspauth), false, nil
	case 2:
		d.step = 3
		if len(response) > 0 {
			return nil, false, fail(MalformedRequest, "expected an empty response after rspauth")
		}
		d.username, d.authzidOK = d.user, d.authzid
		return nil, true, nil
	default:
		return nil, false, errDone()
	}
}

func (d *digestServer) verify(ctx context.Context, msg []byte) (string, error) {
	if len(msg) > 4096 {
		return "", fail(MalformedRequest, "digest-response longer than 4096 bytes")
	}
	dir, ok := parseDirectives(string(msg))
	if !ok {
		return "", fail(MalformedRequest, "invalid digest-response syntax")
	}
	for _, name := range []string{"username", "nonce", "cnonce", "nc", "digest-uri", "response"} {
		if _, ok := dir[name]; !ok {
			return "", fail(MalformedRequest, "missing %s", name)
		}
	}
	utf8Charset := false
	if cs, ok := dir["charset"]; ok {
		if !strings.EqualFold(cs, "utf-8") {
			return "", fail(MalformedRequest, "unsupported charset")
		}
		utf8Charset = true
	}
	text := func(s string) (string, bool) {
		if utf8Charset {
			return s, utf8.ValidString(s)
		}
		return latin1ToUTF8(s), true
	}
	username, ok1 := text(dir["username"])
	realm, ok2 := text(dir["realm"])
	authzid, ok3 := text(dir["authzid"])
	if !ok1 || !ok2 || !ok3 || username == "" {
		return "", fail(MalformedRequest, "invalid username, realm or authzid")
	}
	if _, ok := dir["realm"]; ok && realm != d.cfg.realm() {
		return "", fail(NotAuthorized, "unknown realm")
	}
	if subtle.ConstantTimeCompare([]byte(dir["nonce"]), []byte(d.nonce)) != 1 {
		return "", fail(NotAuthorized, "nonce mismatch")
	}
	if dir["cnonce"] == "" {
		return "", fail(MalformedRequest, "empty cnonce")
	}
	// A fresh nonce is used once, so the only valid nonce-count is 1.
	if dir["nc"] != "00000001" {
		return "", fail(NotAuthorized, "nonce-count must be 00000001")
	}
	qop := "auth"
	if q, ok := dir["qop"]; ok && q != "auth" {
		return "", fail(MalformedRequest, "only qop=auth is supported")
	}
	if !d.digestURIOK(dir["digest-uri"]) {
		return "", fail(NotAuthorized, "digest-uri does not name this service")
	}
	resp := strings.ToLower(dir["response"])
	if b, err := hex.DecodeString(resp); err != nil || len(b) != md5.Size {
		return "", fail(MalformedRequest, "response is not 32 hex digits")
	}

	user, err := auth.PrepareUsername(username)
	if err != nil {
		return "", fail(NotAuthorized, "invalid username")
	}
	creds, err := lookup(ctx, &d.cfg, user)
	if err != nil {
		return "", err
	}
	var ha1 []byte
	switch {
	case creds == nil:
	case creds.HasPassword:
		// The client hashed the username exactly as it sent it.
		sum := auth.DigestHA1(username, realm, creds.Password)
		ha1 = sum[:]
	default:
		if h, ok := creds.HA1[realm]; ok {
			ha1, _ = hex.DecodeString(h)
		}
	}
	if len(ha1) != md5.Size {
		// Unknown user or no hash for this realm: run the computation
		// anyway against a dummy so both cases cost the same.
		ha1 = make([]byte, md5.Size)
		creds = nil
	}

	a1 := string(ha1) + ":" + d.nonce + ":" + dir["cnonce"]
	if _, ok := dir["authzid"]; ok {
		a1 += ":" + dir["authzid"]
	}
	ha1hex := hexMD5(a1)
	prefix := ha1hex + ":" + d.nonce + ":" + dir["nc"] + ":" + dir["cnonce"] + ":" + qop + ":"
	want := hexMD5(prefix + hexMD5("AUTHENTICATE:"+dir["digest-uri"]))
	if subtle.ConstantTimeCompare([]byte(want), []byte(resp)) != 1 || creds == nil {
		return "", wrongCredentials()
	}
	d.user, d.authzid = creds.Username, authzid
	return hexMD5(prefix + hexMD5(":"+dir["digest-uri"])), nil
}

// digestURIOK accepts "xmpp/<domain>" and "xmpp/<host>/<domain>" (RFC 2831
// §2.1.2: serv-type "/" host [ "/" serv-name ]).
func (d *digestServer) digestURIOK(uri string) bool {
	parts := strings.Split(uri, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] != d.service() {
		return false
	}
	domain := strings.TrimSuffix(d.cfg.Domain, ".")
	return strings.EqualFold(strings.TrimSuffix(parts[len(parts)-1], "."), domain)
}

func hexMD5(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

func latin1ToUTF8(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(rune(s[i]))
	}
	return b.String()
}

// parseDirectives parses a comma-separated list of name=value directives
// (RFC 2831 §7.1: #rule with optional whitespace and empty elements; values
// are tokens or quoted strings). Names are lowercased; a repeated directive
// makes the list invalid, as RFC 2831 §2.1.2 requires for most of them.
func parseDirectives(s string) (map[string]string, bool) {
	out := map[string]string{}
	i := 0
	skipLWS := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n') {
			i++
		}
	}
	for {
		skipLWS()
		if i >= len(s) {
			return out, true
		}
		if s[i] == ',' {
			i++
			continue
		}
		start := i
		for i < len(s) && isTokenChar(s[i]) {
			i++
		}
		name := strings.ToLower(s[start:i])
		if name == "" {
			return nil, false
		}
		skipLWS()
		if i >= len(s) || s[i] != '=' {
			return nil, false
		}
		i++
		skipLWS()
		var value string
		if i < len(s) && s[i] == '"' {
			i++
			var b strings.Builder
			closed := false
			for i < len(s) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					b.WriteByte(s[i])
					i++
					continue
				}
				if c == '"' {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return nil, false
			}
			value = b.String()
		} else {
			start := i
			for i < len(s) && isTokenChar(s[i]) {
				i++
			}
			value = s[start:i]
		}
		if _, dup := out[name]; dup {
			return nil, false
		}
		out[name] = value
		skipLWS()
		if i < len(s) && s[i] != ',' {
			return nil, false
		}
	}
}

// isTokenChar reports whether c may appear in an RFC 2616 token.
func isTokenChar(c byte) bool {
	if c <= ' ' || c >= 0x7F {
		return false
	}
	return !strings.ContainsRune(`()<>@,;:\"/[]?={}`, rune(c))
}
