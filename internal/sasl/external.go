package sasl

import (
	"context"
	"crypto/tls"
	"strings"
	"unicode/utf8"

	"mellium.im/xmpp/jid"

	"impetus/internal/tlsconf"
)

// External is the SASL EXTERNAL mechanism (RFC 4422 Appendix A) with the
// identity taken from a TLS client certificate, as XEP-0178 describes for
// client streams.
const External = "EXTERNAL"

// WithExternal returns mechs with EXTERNAL in front when the stream's TLS
// state holds a client certificate that verified against tls_client_ca and
// names at least one address; otherwise mechs unchanged.
func WithExternal(mechs []string, st *tls.ConnectionState) []string {
	cert := tlsconf.VerifiedClient(st)
	if cert == nil || len(tlsconf.ClientIdentities(cert)) == 0 {
		return mechs
	}
	return append([]string{External}, mechs...)
}

// externalServer implements EXTERNAL: the client's only message is the
// authorization identity it wants, or nothing to take the one address its
// certificate names in the stream's domain. The account must exist in the
// store; a certificate alone does not create users.
type externalServer struct {
	cfg      Config
	step     int
	username string
	authzid  string
}

func newExternal(cfg Config) (Negotiator, error) {
	if tlsconf.VerifiedClient(cfg.TLS) == nil {
		return nil, fail(InvalidMechanism, "EXTERNAL needs a verified client certificate")
	}
	return &externalServer{cfg: cfg}, nil
}

// identities returns the bare JIDs of the certificate in the stream's domain.
func (e *externalServer) identities() []jid.JID {
	var out []jid.JID
	for _, s := range tlsconf.ClientIdentities(tlsconf.VerifiedClient(e.cfg.TLS)) {
		j, err := jid.Parse(s)
		if err != nil || j.Localpart() == "" || j.Resourcepart() != "" {
			continue
		}
		if strings.EqualFold(strings.TrimSuffix(j.Domainpart(), "."), strings.TrimSuffix(e.cfg.Domain, ".")) {
			out = append(out, j)
		}
	}
	return out
}

func (e *externalServer) Step(ctx context.Context, response []byte) ([]byte, bool, error) {
	switch e.step {
	case 0:
		if response == nil {
			// No initial response: an empty challenge asks for it (RFC 6120 §6.4.2).
			e.step = 1
			return []byte{}, false, nil
		}
	case 1:
	default:
		return nil, false, errDone()
	}
	e.step = 2
	if len(response) > maxMessage || !utf8.Valid(response) {
		return nil, false, fail(MalformedRequest, "the authorization identity is not a UTF-8 JID")
	}
	ids := e.identities()
	var who jid.JID
	if az := string(response); az != "" {
		want, err := jid.Parse(az)
		if err != nil {
			return nil, false, fail(InvalidAuthzid, "the authorization identity is not a JID")
		}
		found := false
		for _, j := range ids {
			if j.Equal(want) {
				who, found = j, true
				break
			}
		}
		if !found {
			return nil, false, fail(InvalidAuthzid, "the client certificate does not vouch for %s", want.String())
		}
		e.authzid = az
	} else {
		switch len(ids) {
		case 0:
			return nil, false, fail(NotAuthorized, "the client certificate names no address in %s", e.cfg.Domain)
		case 1:
			who = ids[0]
		default:
			// XEP-0178: with several addresses the client has to say which one it means.
			return nil, false, fail(InvalidAuthzid, "the client certificate names several addresses; send one as the authorization identity")
		}
	}
	creds, err := lookup(ctx, &e.cfg, who.Localpart())
	if err != nil {
		return nil, false, err
	}
	if creds == nil {
		return nil, false, fail(NotAuthorized, "no account %s", who.Bare().String())
	}
	e.username = creds.Username
	return nil, true, nil
}

func (e *externalServer) Username() string { return e.username }
func (e *externalServer) Authzid() string  { return e.authzid }
