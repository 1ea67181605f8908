package c2s

// XEP-0388 Extensible SASL Profile (SASL2), with the features negotiated inside it:
// XEP-0386 Bind 2 (with XEP-0280 carbons, XEP-0198 and XEP-0352 inline), XEP-0198 resumption,
// and XEP-0484 FAST tokens (fast.go). SASL2 runs the same mechanisms as RFC 6120 SASL, framed
// differently and without a stream restart: the server answers <success/> and the stream's
// new features at once.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/config"
	"impetus/internal/metrics"
	"impetus/internal/module"
	"impetus/internal/observe"
	"impetus/internal/sasl"
	"impetus/internal/stanza"
	"impetus/internal/transport"
)

// Namespaces of SASL2, Bind 2, FAST and the features Bind 2 enables inline.
const (
	NSSASL2   = "urn:xmpp:sasl:2"
	NSBind2   = "urn:xmpp:bind:0"
	NSFAST    = "urn:xmpp:fast:0"
	nsCarbons = "urn:xmpp:carbons:2"
	nsMAM     = "urn:xmpp:mam:2"
)

// DefaultFASTLifetime is how long a FAST token is valid by default.
const DefaultFASTLifetime = 14 * 24 * time.Hour

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "sasl2",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0388 SASL2 with XEP-0386 Bind 2 and XEP-0484 FAST",
		Options: []config.OptionSpec{
			{Name: "enabled", Type: config.TypeBool, Default: "true", Doc: "offer SASL2 beside RFC 6120 SASL (Impetus)"},
			{Name: "bind2", Type: config.TypeBool, Default: "true", Doc: "offer resource binding inside SASL2 (XEP-0386) (Impetus)"},
			{Name: "fast", Type: config.TypeBool, Default: "true", Doc: "offer FAST token authentication on encrypted streams (XEP-0484) (Impetus)"},
			{Name: "fast_token_lifetime", Type: config.TypeDuration, Default: fmt.Sprint(int(DefaultFASTLifetime / time.Second)), Doc: "seconds a FAST token stays valid; a token used in its second half is replaced (Impetus)"},
		},
	})
}

// SASL2Config configures SASL2 and what is negotiated inside it.
type SASL2Config struct {
	Enabled      bool
	Bind2        bool
	FAST         bool
	FASTLifetime time.Duration
}

// DefaultSASL2Config is everything on with default limits.
func DefaultSASL2Config() SASL2Config {
	return SASL2Config{Enabled: true, Bind2: true, FAST: true, FASTLifetime: DefaultFASTLifetime}
}

// SASL2ConfigFrom reads the sasl2 scope of cfg; a missing scope keeps the defaults.
func SASL2ConfigFrom(cfg *config.Config) (SASL2Config, error) {
	out := DefaultSASL2Config()
	if cfg == nil {
		return out, nil
	}
	if secs := cfg.Sections("sasl2"); len(secs) > 0 {
		var sc struct {
			Enabled  bool          `conf:"enabled"`
			Bind2    bool          `conf:"bind2"`
			FAST     bool          `conf:"fast"`
			Lifetime time.Duration `conf:"fast_token_lifetime"`
		}
		sc.Enabled, sc.Bind2, sc.FAST, sc.Lifetime = true, true, true, DefaultFASTLifetime
		if err := secs[0].Decode(&sc); err != nil {
			return out, fmt.Errorf("c2s: sasl2: %w", err)
		}
		out = SASL2Config{Enabled: sc.Enabled, Bind2: sc.Bind2, FAST: sc.FAST, FASTLifetime: sc.Lifetime}
		if out.FASTLifetime <= 0 {
			out.FASTLifetime = DefaultFASTLifetime
		}
	}
	return out, nil
}

// fastMechanisms are the FAST mechanisms this stream can serve: only on an encrypted stream
// whose host keeps tokens (XEP-0484 §7), with channel binding where the TLS state has it.
func (s *Session) fastMechanisms() []string {
	if !s.cfg.SASL2.FAST || s.tlsState == nil || s.fastStore() == nil {
		return nil
	}
	return sasl.HTUsable(sasl.ChannelBindingTypes(s.tlsState))
}

// sasl2Feature is the <authentication/> stream feature with the inline features (XEP-0388 §2.1).
func (s *Session) sasl2Feature(mechs []string) *stanza.Element {
	a := stanza.NewElement(NSSASL2, "authentication")
	for _, m := range mechs {
		a.AddChild(stanza.NewElement(NSSASL2, "mechanism").AddText(m))
	}
	inline := stanza.NewElement(NSSASL2, "inline")
	if s.cfg.SASL2.Bind2 {
		b := stanza.NewElement(NSBind2, "bind")
		bi := stanza.NewElement(NSBind2, "inline")
		if s.carbonsHandler() != nil {
			bi.AddChild(stanza.NewElement(NSBind2, "feature", stanza.Attr{Name: "var", Value: nsCarbons}))
		}
		if s.cfg.SM.CSI {
			bi.AddChild(stanza.NewElement(NSBind2, "feature", stanza.Attr{Name: "var", Value: NSCSI}))
		}
		if s.cfg.SM.Enabled {
			bi.AddChild(stanza.NewElement(NSBind2, "feature", stanza.Attr{Name: "var", Value: NSSM}))
		}
		inline.AddChild(b.AddChild(bi))
	}
	if s.cfg.SM.Enabled && s.cfg.SM.Resume && s.cfg.Streams != nil {
		inline.AddChild(stanza.NewElement(NSSM, "sm"))
	}
	if fm := s.fastMechanisms(); len(fm) > 0 {
		f := stanza.NewElement(NSFAST, "fast")
		for _, m := range fm {
			f.AddChild(stanza.NewElement(NSFAST, "mechanism").AddText(m))
		}
		inline.AddChild(f)
	}
	if inline.ElementCount() > 0 {
		a.AddChild(inline)
	}
	return a
}

// sasl2Auth is the state of one SASL2 attempt.
type sasl2Auth struct {
	req     *stanza.Element
	mech    string
	uaID    string
	success *stanza.Element
	// token is the FAST token matched by a FAST authentication, for rotation.
	fast *fastMatch
}

// authenticate2 runs SASL2 from an <authenticate/> until the stream is authenticated: it
// reports whether a session is bound or resumed (then the stream is ready for stanzas);
// otherwise the client binds next. An error ends the stream.
func (s *Session) authenticate2(ctx context.Context, el *stanza.Element, mechs []string) (bool, error) {
	for {
		ok, err := s.sasl2Attempt(ctx, el, mechs)
		if err != nil {
			return false, err
		}
		if ok {
			return s.sasl2Succeed(ctx, el)
		}
		// A failure leaves the stream as it was (XEP-0388 §2.6.2): read the next attempt.
		if el, err = s.dec.ReadElement(); err != nil {
			return false, err
		}
		if el.Space != NSSASL2 || el.Local != "authenticate" {
			return false, stanza.NewStreamError("not-authorized", "authenticate before sending stanzas")
		}
	}
}

// sasl2Attempt runs one exchange and reports whether it authenticated the client. On success
// s.username, s.jid and s.auth2 are set.
func (s *Session) sasl2Attempt(ctx context.Context, el *stanza.Element, mechs []string) (bool, error) {
	mech := el.Attr("mechanism")
	a := &sasl2Auth{req: el, mech: mech, success: stanza.NewElement(NSSASL2, "success")}
	if ua := el.Child(NSSASL2, "user-agent"); ua != nil {
		a.uaID = ua.Attr("id")
	}
	if el.Attr("upgrade") != "" {
		// No <upgrade/> is offered, so any requested upgrade names an unannounced one.
		return false, s.sasl2Failure(&sasl.Failure{Condition: "invalid-mechanism", Text: "no upgrade tasks are offered"}, mech, "")
	}
	if s.throttled("") {
		return false, s.sasl2Throttled(mech, "")
	}
	var resp []byte
	if ir := el.Child(NSSASL2, "initial-response"); ir != nil {
		b, ferr := decodeSASL2(ir.Text())
		if ferr != nil {
			return false, s.sasl2Failure(ferr, mech, "")
		}
		resp = b
	}
	if fe := el.Child(NSFAST, "fast"); fe != nil && slices.Contains(s.fastMechanisms(), mech) {
		return s.fastAuthenticate(ctx, a, fe, resp)
	}
	if !slices.Contains(mechs, mech) {
		return false, s.sasl2Failure(&sasl.Failure{Condition: "invalid-mechanism"}, mech, "")
	}
	cfg := s.saslConfig(mechs)
	neg, err := sasl.NewServer(mech, cfg)
	if err != nil {
		f := &sasl.Failure{Condition: "invalid-mechanism"}
		errors.As(err, &f)
		return false, s.sasl2Failure(f, mech, "")
	}
	return s.saslExchange(ctx, saslXEP0388, neg, mech, resp, claimedUser(mech, resp), func(additional []byte) (bool, error) {
		if len(additional) > 0 {
			a.success.AddChild(stanza.NewElement(NSSASL2, "additional-data").AddText(base64.StdEncoding.EncodeToString(additional)))
		}
		return s.sasl2Authenticated(a, neg.Username(), neg.Authzid())
	})
}

// saslConfig is the negotiator configuration of this stream; mechs is what was advertised,
// for XEP-0474.
func (s *Session) saslConfig(mechs []string) sasl.Config {
	plusAdvertised := false
	for _, m := range mechs {
		if strings.HasSuffix(m, "-PLUS") {
			plusAdvertised = true
		}
	}
	cfg := sasl.Config{
		Domain: s.domain, Realm: s.cfg.Realm, Store: s.cfg.Auth, TLS: s.tlsState,
		PlusAdvertised: plusAdvertised, AllowPlainWithoutTLS: s.cfg.AllowPlainWithoutTLS || s.secured,
		Advertised: mechs,
	}
	if s.tlsState != nil {
		cfg.ChannelBinding = s.channelBinding()
		if types := sasl.ChannelBindingTypes(s.tlsState); len(types) > 0 {
			cfg.CBTypes = types
		}
	}
	return cfg
}

// channelBinding returns the channel-binding data function of this stream's TLS connection.
func (s *Session) channelBinding() func(string) ([]byte, error) {
	var leaf *x509.Certificate
	if s.serverCert != nil {
		leaf = s.serverCert.Leaf
	}
	return sasl.NewChannelBinding(s.tlsState, leaf)
}

// sasl2Authenticated checks the authenticated identity against the authorization identity and
// the stream's 'from' (XEP-0388 §3.4), and records it.
func (s *Session) sasl2Authenticated(a *sasl2Auth, user, authzid string) (bool, error) {
	bare, err := jid.New(user, s.domain, "")
	if err != nil {
		return false, s.sasl2Failure(&sasl.Failure{Condition: "not-authorized"}, a.mech, user)
	}
	if authzid != "" {
		j, err := jid.Parse(authzid)
		if err != nil || !j.Equal(bare) {
			return false, s.sasl2Failure(&sasl.Failure{Condition: "invalid-authzid"}, a.mech, user)
		}
		if s.peer != "" {
			if p, err := jid.Parse(s.peer); err == nil && !p.Bare().Equal(j) {
				return false, s.sasl2Failure(&sasl.Failure{Condition: "invalid-authzid", Text: "the stream's 'from' names another account"}, a.mech, user)
			}
		}
	}
	s.username = user
	s.jid = bare
	s.auth2 = a
	s.log = s.log.With("user", bare.String())
	metrics.Default.Auth(a.mech, true)
	if s.cfg.LogAuthentication {
		s.log.Log(context.Background(), observe.LevelAuth, "authentication succeeded", "mechanism", a.mech, "profile", "sasl2")
	} else {
		s.log.Debug("authentication succeeded", "mechanism", a.mech, "profile", "sasl2")
	}
	return true, nil
}

// sasl2Succeed completes an authenticated SASL2 exchange: FAST tokens, inline resumption, Bind 2,
// then <success/> and the new stream features (XEP-0388 §2.6.1).
func (s *Session) sasl2Succeed(ctx context.Context, req *stanza.Element) (bool, error) {
	a := s.auth2
	succ := a.success
	// A FAST token goes in <success/> whatever happens to binding.
	if tok := s.fastIssue(ctx, a); tok != nil {
		succ.AddChild(tok)
	}
	if r := req.Child(NSSM, "resume"); r != nil && s.cfg.SM.Enabled {
		ok, failed, err := s.resumeWith(r, func(resumed *stanza.Element) []*stanza.Element {
			succ.AddChild(stanza.NewElement(NSSASL2, "authorization-identifier").AddText(s.jid.String()))
			succ.AddChild(resumed)
			return []*stanza.Element{succ, s.bindFeatures(false)}
		})
		if err != nil || ok {
			return ok, err
		}
		// XEP-0386 §3.2: a failed resumption is reported, then binding proceeds.
		succ.AddChild(failed)
	}
	if b := req.Child(NSBind2, "bind"); b != nil && s.cfg.SASL2.Bind2 {
		bound, err := s.bind2(ctx, b, succ)
		if err != nil || bound {
			return bound, err
		}
	}
	succ.AddChild(stanza.NewElement(NSSASL2, "authorization-identifier").AddText(s.jid.String()))
	return false, nil
}

// finishSASL2 writes <success/> and the bind features for a client that binds next.
func (s *Session) finishSASL2() error {
	return s.writeSync(s.auth2.success, s.bindFeatures(true))
}

// bind2 binds a resource as XEP-0386 §3.2 describes, enabling the requested features inline, and
// writes <success/>. It reports false when the resource cannot be bound: the client then
// binds the RFC 6120 way and learns why.
func (s *Session) bind2(ctx context.Context, b *stanza.Element, succ *stanza.Element) (bool, error) {
	tag := ""
	if t := b.Child(NSBind2, "tag"); t != nil {
		tag = strings.TrimSpace(t.Text())
	}
	full, err := jid.New(s.username, s.domain, s.bind2Resource(tag))
	if err != nil && tag != "" {
		// A tag that is no valid resourcepart is dropped rather than failing the bind.
		full, err = jid.New(s.username, s.domain, s.bind2Resource(""))
	}
	if err != nil || s.atResourceLimit(full) {
		return false, nil
	}
	s.jid = full
	s.log = s.log.With("jid", full.String())
	h := s.cfg.Core.Host(s.domain)
	bound := stanza.NewElement(NSBind2, "bound")
	if md := s.mamMetadata(ctx, h, full); md != nil {
		bound.AddChild(md)
		// XEP-0386 §3.2: the archive has these messages; offline delivery would duplicate them.
		if h.Storage != nil {
			if err := h.Storage.Archive("offline").Purge(ctx, full.Bare().String()); err != nil {
				s.log.Warn("offline messages not cleared", "err", err)
			}
		}
	}
	s.w = transport.NewWriter(s.nc, s.cfg.MaxQueue, 0, s.writerFailed)
	s.attachOutput()
	var enableCarbons bool
	for c := range b.Elements() {
		switch {
		case c.Space == NSSM && c.Local == "enable" && s.cfg.SM.Enabled:
			o := s.output(s)
			o.mu.Lock()
			bound.AddChild(s.smEnable(s, o, c))
			o.mu.Unlock()
		case c.Space == NSCSI && (c.Local == "inactive" || c.Local == "active") && s.cfg.SM.CSI:
			o := s.output(s)
			o.mu.Lock()
			o.inactive = c.Local == "inactive"
			o.mu.Unlock()
		case c.Space == nsCarbons && c.Local == "enable":
			enableCarbons = true
		}
	}
	if enableCarbons {
		if fn := s.carbonsHandler(); fn != nil {
			iq := &module.IQ{
				El: stanza.NewElement(stanza.NSClient, "iq", stanza.Attr{Name: "type", Value: stanza.Set},
					stanza.Attr{Name: "from", Value: full.String()}, stanza.Attr{Name: "to", Value: full.Bare().String()}),
				Payload: stanza.NewElement(nsCarbons, "enable"), From: full, To: full.Bare(), Session: s,
			}
			if _, err := fn(ctx, iq); err != nil {
				s.log.Warn("carbons not enabled inline", "err", err)
			}
		}
	}
	succ.AddChild(stanza.NewElement(NSSASL2, "authorization-identifier").AddText(full.String()))
	succ.AddChild(bound)
	// <success/> and the features go out before the session is reachable, so nothing routed
	// to it can come first.
	s.write(succ)
	s.write(s.bindFeatures(false))
	s.bound.Store(true)
	s.cfg.Core.Router.Bind(s)
	s.log.Info("session bound", "profile", "bind2")
	if h != nil {
		h.SessionBound(ctx, s)
	}
	return true, nil
}

// bind2Resource generates the resource of XEP-0386 §3.2.1: the client's tag, a slash, and an
// identifier that is stable for the same account and user-agent id within this process (so a
// reconnecting client replaces its earlier session) without revealing the id.
func (s *Session) bind2Resource(tag string) string {
	var id string
	if ua := s.auth2.uaID; ua != "" {
		m := hmac.New(sha256.New, resourceKey[:])
		m.Write([]byte(s.jid.Bare().String()))
		m.Write([]byte{0})
		m.Write([]byte(ua))
		id = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(m.Sum(nil)[:10]))
	} else {
		id = strings.TrimPrefix(generatedResource(), "impetus-")
	}
	if tag == "" {
		return id
	}
	return tag + "/" + id
}

// resourceKey keys the stable resource identifiers of this process.
var resourceKey = func() (k [32]byte) { _, _ = rand.Read(k[:]); return }()

// carbonsHandler is the host's XEP-0280 enable handler, through which Bind 2 enables carbons.
func (s *Session) carbonsHandler() module.IQHandler {
	if s.cfg.Core == nil {
		return nil
	}
	h := s.cfg.Core.Host(s.domain)
	if h == nil {
		return nil
	}
	return h.IQHandler(module.ToAccount, stanza.Set, nsCarbons, "enable")
}

// mamMetadata asks the host's XEP-0313 module for the archive metadata, or returns nil when
// there is no archive.
func (s *Session) mamMetadata(ctx context.Context, h *module.Host, full jid.JID) *stanza.Element {
	if h == nil {
		return nil
	}
	fn := h.IQHandler(module.ToAccount, stanza.Get, nsMAM, "metadata")
	if fn == nil {
		return nil
	}
	iq := &module.IQ{
		El: stanza.NewElement(stanza.NSClient, "iq", stanza.Attr{Name: "type", Value: stanza.Get},
			stanza.Attr{Name: "from", Value: full.String()}, stanza.Attr{Name: "to", Value: full.Bare().String()}),
		Payload: stanza.NewElement(nsMAM, "metadata"), From: full, To: full.Bare(), Session: s,
	}
	md, err := fn(ctx, iq)
	if err != nil {
		s.log.Warn("archive metadata unavailable", "err", err)
		return nil
	}
	return md
}

// sasl2Failure reports a failed SASL2 attempt (XEP-0388 §2.6.2); too many end the stream.
func (s *Session) sasl2Failure(f *sasl.Failure, mech, user string) error {
	return s.authFailure(saslXEP0388, f, mech, user)
}

// sasl2Throttled answers an attempt of a throttled address or account as throttledFailure does.
func (s *Session) sasl2Throttled(mech, user string) error {
	return s.authThrottled(saslXEP0388, mech, user)
}
