package sasl

import (
	"bytes"
	"context"
	"strings"
	"unicode/utf8"

	"impetus/internal/auth"
)

// plainServer implements PLAIN (RFC 4616): one message,
// [authzid] NUL authcid NUL passwd.
type plainServer struct {
	cfg      Config
	step     int
	username string
	authzid  string
}

func (p *plainServer) Step(ctx context.Context, response []byte) ([]byte, bool, error) {
	switch p.step {
	case 0:
		if response == nil {
			// No initial response: send an empty challenge for it.
			p.step = 1
			return []byte{}, false, nil
		}
	case 1:
	default:
		return nil, false, errDone()
	}
	p.step = 2
	if len(response) > maxMessage {
		return nil, false, fail(MalformedRequest, "message too long")
	}
	parts := bytes.Split(response, []byte{0})
	if len(parts) != 3 {
		return nil, false, fail(MalformedRequest, "want authzid NUL authcid NUL passwd")
	}
	authzid, authcid, passwd := string(parts[0]), string(parts[1]), string(parts[2])
	if authcid == "" || passwd == "" {
		return nil, false, fail(MalformedRequest, "empty authcid or password")
	}
	if !utf8.ValidString(authzid) || !utf8.ValidString(authcid) || !utf8.ValidString(passwd) {
		return nil, false, fail(MalformedRequest, "message is not UTF-8")
	}
	// Some clients send the bare JID as authcid; accept it for this domain.
	if local, dom, ok := strings.Cut(authcid, "@"); ok && p.cfg.Domain != "" {
		if d, err := auth.NormalizeDomain(dom); err == nil && strings.EqualFold(d, strings.TrimSuffix(p.cfg.Domain, ".")) {
			authcid = local
		}
	}
	user, err := auth.PrepareUsername(authcid)
	if err != nil {
		return nil, false, fail(NotAuthorized, "invalid username")
	}
	creds, err := lookup(ctx, &p.cfg, user)
	if err != nil {
		return nil, false, err
	}
	if creds == nil {
		// Check against a dummy so an unknown user costs about the same.
		(&auth.Credentials{Password: "\x00", HasPassword: true}).CheckPassword(passwd)
		return nil, false, wrongCredentials()
	}
	if !creds.CheckPassword(passwd) {
		return nil, false, wrongCredentials()
	}
	p.username, p.authzid = creds.Username, authzid
	return nil, true, nil
}

func (p *plainServer) Username() string { return p.username }
func (p *plainServer) Authzid() string  { return p.authzid }
