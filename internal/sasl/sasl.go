// Package sasl implements the server side of the SASL mechanisms Impetus
// offers on client streams: PLAIN (RFC 4616), DIGEST-MD5 (RFC 2831),
// SCRAM-SHA-1, SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677 and
// draft-melnikov-scram-sha-512) and their -PLUS variants with the
// tls-exporter (RFC 9266) and tls-server-end-point (RFC 5929) channel
// bindings, and EXTERNAL with a verified TLS client certificate (XEP-0178).
//
// SCRAM is written here rather than taken from mellium.im/sasl: its server
// side (v0.3.2) panics on -PLUS mechanisms, has no SCRAM-SHA-512, knows only
// the tls-unique and tls-exporter bindings, does not reject a "y" flag after
// -PLUS was advertised, compares the nonce without constant time and offers
// no hook to fail unknown users only at the proof. Its client side is still
// used by the tests as an independent implementation.
//
// Base64 is the stream layer's business: Step sees raw bytes. Every failure
// is a *Failure carrying an RFC 6120 §6.5 condition; a wrong password and an
// unknown user both yield not-authorized, and SCRAM runs to the proof with a
// salt derived from a server secret for unknown users, so that the exchange
// does not reveal whether an account exists.
package sasl

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"impetus/internal/auth"
)

// SASL failure conditions (RFC 6120 §6.5).
const (
	Aborted              = "aborted"
	AccountDisabled      = "account-disabled"
	CredentialsExpired   = "credentials-expired"
	EncryptionRequired   = "encryption-required"
	IncorrectEncoding    = "incorrect-encoding"
	InvalidAuthzid       = "invalid-authzid"
	InvalidMechanism     = "invalid-mechanism"
	MalformedRequest     = "malformed-request"
	MechanismTooWeak     = "mechanism-too-weak"
	NotAuthorized        = "not-authorized"
	TemporaryAuthFailure = "temporary-auth-failure"
)

// Mechanism names.
const (
	Plain           = "PLAIN"
	DigestMD5       = "DIGEST-MD5"
	ScramSHA1       = "SCRAM-SHA-1"
	ScramSHA1Plus   = "SCRAM-SHA-1-PLUS"
	ScramSHA256     = "SCRAM-SHA-256"
	ScramSHA256Plus = "SCRAM-SHA-256-PLUS"
	ScramSHA512     = "SCRAM-SHA-512"
	ScramSHA512Plus = "SCRAM-SHA-512-PLUS"
)

// DefaultIterations is the SCRAM iteration count for keys derived from
// clear-text passwords, and the minimum accepted for stored keys (RFC 7677 §4).
const DefaultIterations = 4096

// maxMessage bounds every client message; RFC 2831 §2.1.2 caps a DIGEST-MD5
// response at 4096 bytes and no legitimate SCRAM or PLAIN message comes near.
const maxMessage = 8192

// Config is what the stream layer knows when a client authenticates.
type Config struct {
	// Domain is the hosted domain of the stream ('to' of the stream header).
	Domain string
	// Realm is the DIGEST-MD5 realm ("" means Domain).
	Realm string
	// Store holds the credentials.
	Store auth.Store
	// TLS is nil when the stream is not encrypted.
	TLS *tls.ConnectionState
	// ChannelBinding is nil when not TLS; it returns the binding data for
	// "tls-exporter" or "tls-server-end-point" (see NewChannelBinding).
	ChannelBinding func(cbType string) ([]byte, error)
	// PlusAdvertised reports that the server advertised -PLUS mechanisms on
	// this stream; a SCRAM client answering with the "y" flag then fails.
	PlusAdvertised bool
	// AllowPlainWithoutTLS permits PLAIN on an unencrypted stream; without
	// it NewServer refuses PLAIN with encryption-required.
	AllowPlainWithoutTLS bool
	// Iterations is the SCRAM iteration count for keys derived from clear-text
	// passwords; 0 means 4096, smaller values are raised to 4096.
	Iterations int
	// Secret derives the per-user SCRAM salts; nil means a random secret made
	// once per process. Set it to keep salts (and client-side caches of the
	// salted password) stable across restarts.
	Secret []byte
	// Advertised is the mechanism list the client was offered and CBTypes the XEP-0440
	// channel-binding types (nil when none were advertised). With Advertised set, SCRAM adds the
	// XEP-0474 downgrade protection hash ("h") to its server-first-message.
	Advertised []string
	CBTypes    []string

	// nonce, when set, replaces the random server nonce (tests only).
	nonce func() string
	// service overrides the "xmpp" DIGEST-MD5 digest-uri service (tests only).
	service string
}

func (c *Config) realm() string {
	if c.Realm != "" {
		return c.Realm
	}
	return c.Domain
}

func (c *Config) newNonce() string {
	if c.nonce != nil {
		return c.nonce()
	}
	return randomNonce()
}

// Failure is a SASL failure with an RFC 6120 §6.5 condition.
type Failure struct {
	Condition string
	Text      string
	// Credentials is set when the client's password or proof was checked and found wrong, as
	// opposed to a protocol refusal (unknown channel binding, downgrade, malformed message).
	// Throttling counts only these, so a client probing mechanisms is not locked out.
	Credentials bool
	err         error
}

// Error implements error.
func (f *Failure) Error() string {
	if f.Text == "" {
		return "sasl: " + f.Condition
	}
	return "sasl: " + f.Condition + ": " + f.Text
}

// Unwrap returns the underlying cause, such as a store error.
func (f *Failure) Unwrap() error { return f.err }

func fail(cond, format string, args ...any) *Failure {
	return &Failure{Condition: cond, Text: fmt.Sprintf(format, args...)}
}

// wrongCredentials is the failure for a password or proof that does not match.
func wrongCredentials() *Failure {
	return &Failure{Condition: NotAuthorized, Text: "authentication failed", Credentials: true}
}

// Negotiator is one server-side SASL exchange. It is not safe for concurrent
// use.
type Negotiator interface {
	// Step consumes the client's response (the initial response for the first
	// call; nil if none was sent) and returns the next challenge, or done=true
	// with optional additional data for <success/>.
	Step(ctx context.Context, response []byte) (challenge []byte, done bool, err error)
	// Username is the authenticated, PRECIS-prepared localpart.
	Username() string
	// Authzid is the requested authorization identity ("" if none).
	Authzid() string
}

// Mechanisms lists, strongest first, the mechanisms to advertise for a store
// with caps on a stream: -PLUS only with TLS, PLAIN only with TLS unless
// allowPlainWithoutTLS, and only what the store can serve. DIGEST-MD5 is
// listed when the store can serve it in some realm; a stream whose realm the
// store lacks should check caps.CanDigest(realm). EXTERNAL depends on the
// client's certificate rather than on the store: see [WithExternal].
func Mechanisms(caps auth.Capabilities, tls bool, allowPlainWithoutTLS bool) []string {
	var out []string
	for _, plus := range []bool{true, false} {
		if plus && !tls {
			continue
		}
		for _, h := range []string{auth.SHA512, auth.SHA256, auth.SHA1} {
			if caps.CanSCRAM(h) {
				name := "SCRAM-" + h
				if plus {
					name += "-PLUS"
				}
				out = append(out, name)
			}
		}
	}
	if caps.CanDigest("") {
		out = append(out, DigestMD5)
	}
	if caps.CanPlain() && (tls || allowPlainWithoutTLS) {
		out = append(out, Plain)
	}
	return out
}

// NewServer starts a server-side exchange for the named mechanism.
func NewServer(mechanism string, cfg Config) (Negotiator, error) {
	if cfg.Store == nil {
		return nil, fail(TemporaryAuthFailure, "no credential store configured")
	}
	caps := cfg.Store.Capabilities()
	switch mechanism {
	case Plain:
		if cfg.TLS == nil && !cfg.AllowPlainWithoutTLS {
			return nil, fail(EncryptionRequired, "PLAIN requires TLS")
		}
		if !caps.CanPlain() {
			return nil, fail(InvalidMechanism, "PLAIN is not available")
		}
		return &plainServer{cfg: cfg}, nil
	case DigestMD5:
		if !caps.CanDigest(cfg.realm()) {
			return nil, fail(InvalidMechanism, "DIGEST-MD5 is not available")
		}
		return &digestServer{cfg: cfg}, nil
	case External:
		return newExternal(cfg)
	}
	if !strings.HasPrefix(mechanism, "SCRAM-") {
		return nil, fail(InvalidMechanism, "unknown mechanism")
	}
	name, plus := strings.CutSuffix(mechanism, "-PLUS")
	h := scramHashes[strings.TrimPrefix(name, "SCRAM-")]
	if h == nil {
		return nil, fail(InvalidMechanism, "unknown mechanism")
	}
	if !caps.CanSCRAM(h.name) {
		return nil, fail(InvalidMechanism, "%s is not available", mechanism)
	}
	if plus && (cfg.TLS == nil || cfg.ChannelBinding == nil) {
		return nil, fail(InvalidMechanism, "%s requires TLS", mechanism)
	}
	return &scramServer{cfg: cfg, hash: h, plus: plus}, nil
}

var (
	secretOnce sync.Once
	secret     []byte
)

// processSecret is the fallback server secret when Config.Secret is nil.
func processSecret() []byte {
	secretOnce.Do(func() {
		secret = make([]byte, 32)
		if _, err := io.ReadFull(rand.Reader, secret); err != nil {
			// crypto/rand does not fail on supported platforms; a fixed
			// secret only weakens the unknown-user disguise.
			secret = []byte("impetus-sasl-fallback-secret")
		}
	})
	return secret
}

func (c *Config) secret() []byte {
	if len(c.Secret) > 0 {
		return c.Secret
	}
	return processSecret()
}

// lookup wraps Store.Lookup and maps its errors to failures; a missing user
// returns (nil, nil).
func lookup(ctx context.Context, cfg *Config, username string) (*auth.Credentials, error) {
	creds, err := cfg.Store.Lookup(ctx, username, cfg.Domain)
	switch {
	case err == nil:
		return creds, nil
	case errors.Is(err, auth.ErrNotFound):
		return nil, nil
	default:
		return nil, &Failure{Condition: TemporaryAuthFailure, Text: "credential lookup failed", err: err}
	}
}

// errDone is returned by Step after the exchange finished or failed.
func errDone() error { return fail(MalformedRequest, "exchange already finished") }
