package c2s

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/listener"
	"impetus/internal/metrics"
	"impetus/internal/module"
	"impetus/internal/observe"
	"impetus/internal/sasl"
	"impetus/internal/stanza"
	"impetus/internal/tlsconf"
	"impetus/internal/transport"
	"impetus/internal/xmlstream"
)

// negotiate takes the stream from its first header to a bound resource (RFC 6120 §5, §6, §7).
func (s *Session) negotiate(ctx context.Context, hdr *xmlstream.Header) error {
	if err := s.openStream(hdr); err != nil {
		return err
	}
	for {
		mechs := s.mechanisms()
		if err := s.writeSync(s.preAuthFeatures(mechs)); err != nil {
			return err
		}
		el, err := s.dec.ReadElement()
		// Pre-authentication iq requests (XEP-0077 registration) are answered in place; the
		// features are not offered again.
		for err == nil && s.preAuthIQ(el) != nil {
			if err = s.answerPreAuth(ctx, el); err == nil {
				el, err = s.dec.ReadElement()
			}
		}
		if err != nil {
			return err
		}
		switch {
		case el.Space == stanza.NSTLS && el.Local == "starttls" && s.canStartTLS():
			if err := s.startTLS(); err != nil {
				return err
			}
		case el.Space == stanza.NSSASL && el.Local == "auth":
			ok, err := s.authenticate(ctx, el, mechs)
			if err != nil {
				return err
			}
			if !ok {
				// A failed attempt leaves the stream in place for another try (RFC 6120 §6.4.5),
				// so the features are not sent again: read the next attempt directly.
				if err := s.retryAuth(ctx, mechs); err != nil {
					return err
				}
			}
			if s.username != "" {
				if err := s.bindPhase(ctx); err != nil {
					return err
				}
				// The handshake is over: the stream no longer counts against the Listen's concurrency.
				listener.Established(ctx)
				return nil
			}
		case el.Space == NSSASL2 && el.Local == "authenticate" && s.cfg.SASL2.Enabled && len(mechs) > 0:
			// XEP-0388: no stream restart; a bound or resumed session is ready at once.
			ready, err := s.authenticate2(ctx, el, mechs)
			if err == nil && !ready {
				if err = s.finishSASL2(); err == nil {
					err = s.bindLoop(ctx)
				}
			}
			if err != nil {
				return err
			}
			listener.Established(ctx)
			return nil
		case stanza.IsStanza(el, stanza.NSClient):
			return stanza.NewStreamError("not-authorized", "authenticate before sending stanzas")
		default:
			return stanza.NewStreamError("unsupported-feature", fmt.Sprintf("unexpected <%s/> during negotiation", el.Local))
		}
		hdr, err := s.dec.ReadHeader()
		if err != nil {
			return err
		}
		if err := s.openStream(hdr); err != nil {
			return err
		}
	}
}

// retryAuth reads further <auth/> attempts after a failure until one succeeds.
func (s *Session) retryAuth(ctx context.Context, mechs []string) error {
	for s.username == "" {
		el, err := s.dec.ReadElement()
		if err != nil {
			return err
		}
		if el.Space != stanza.NSSASL || el.Local != "auth" {
			if el.Space == stanza.NSTLS && el.Local == "starttls" {
				return stanza.NewStreamError("policy-violation", "STARTTLS after a failed authentication")
			}
			return stanza.NewStreamError("not-authorized", "authenticate before sending stanzas")
		}
		if _, err := s.authenticate(ctx, el, mechs); err != nil {
			return err
		}
	}
	return nil
}

func (s *Session) canStartTLS() bool { return s.cfg.TLS != nil && s.tlsState == nil && !s.secured }

func (s *Session) mechanisms() []string {
	if s.cfg.Auth == nil {
		return nil
	}
	return sasl.WithExternal(sasl.Mechanisms(s.cfg.Auth.Capabilities(), s.tlsState != nil, s.cfg.AllowPlainWithoutTLS || s.secured), s.tlsState)
}

// preAuthFeatures lists STARTTLS, the SASL mechanisms, the XEP-0440 channel-binding types and the
// XEP-0478 limits.
func (s *Session) preAuthFeatures(mechs []string) *stanza.Element {
	f := stanza.NewElement(stanza.NSStream, "features")
	if s.canStartTLS() {
		f.AddChild(stanza.NewElement(stanza.NSTLS, "starttls"))
	}
	if len(mechs) > 0 {
		m := stanza.NewElement(stanza.NSSASL, "mechanisms")
		for _, name := range mechs {
			m.AddChild(stanza.NewElement(stanza.NSSASL, "mechanism").AddText(name))
		}
		f.AddChild(m)
		if s.cfg.SASL2.Enabled {
			f.AddChild(s.sasl2Feature(mechs))
		}
		if s.tlsState != nil {
			if types := sasl.ChannelBindingTypes(s.tlsState); len(types) > 0 {
				cb := stanza.NewElement(stanza.NSSASLCB, "sasl-channel-binding")
				for _, t := range types {
					cb.AddChild(stanza.NewElement(stanza.NSSASLCB, "channel-binding", stanza.Attr{Name: "type", Value: t}))
				}
				f.AddChild(cb)
			}
		}
	}
	if s.preAuthAllowed() {
		if h := s.cfg.Core.Host(s.domain); h != nil {
			for _, pf := range h.PreAuthFeatures() {
				f.AddChild(pf)
			}
		}
	}
	return f.AddChild(s.limitsFeature())
}

// preAuthAllowed says whether the stream may carry pre-authentication requests, which hold
// passwords: on an encrypted stream, or where PLAIN may go in clear.
func (s *Session) preAuthAllowed() bool {
	return s.cfg.Core != nil && (s.tlsState != nil || s.secured || s.cfg.AllowPlainWithoutTLS)
}

// preAuthIQ returns the host's handler for an iq request read before authentication, or nil.
func (s *Session) preAuthIQ(el *stanza.Element) module.PreAuthFunc {
	if el.Space != stanza.NSClient || el.Local != "iq" || !s.preAuthAllowed() {
		return nil
	}
	if t := el.Attr("type"); t != stanza.Get && t != stanza.Set {
		return nil
	}
	h := s.cfg.Core.Host(s.domain)
	p := el.FirstElement()
	if h == nil || p == nil {
		return nil
	}
	return h.PreAuthIQ(p.Space, p.Local)
}

// answerPreAuth runs the handler and writes its answer; a request that fails validation gets
// its error without reaching the handler.
func (s *Session) answerPreAuth(ctx context.Context, el *stanza.Element) error {
	var reply *stanza.Element
	if serr := stanza.ValidIQ(el); serr != nil {
		reply = stanza.ErrorReply(el, serr)
	} else {
		res, err := s.preAuthIQ(el)(ctx, s.remote, el)
		var serr *stanza.Error
		switch {
		case errors.As(err, &serr):
			reply = stanza.ErrorReply(el, serr)
		case err != nil:
			s.log.Error("pre-authentication request failed", "err", err)
			reply = stanza.ErrorReply(el, stanza.ErrInternalServerError)
		default:
			reply = stanza.ResultReply(el, res)
		}
	}
	// The client has no address yet: the answer carries none (RFC 6120 §8.1.1.1).
	reply.RemoveAttr("to")
	reply.RemoveAttr("from")
	return s.writeSync(reply)
}

// limitsFeature is the XEP-0478 advertisement of this stream's limits.
func (s *Session) limitsFeature() *stanza.Element {
	l := stanza.NewElement(stanza.NSStreamLimits, "limits")
	l.AddChild(stanza.NewElement(stanza.NSStreamLimits, "max-bytes").AddText(strconv.Itoa(s.cfg.Limits.MaxStanzaSize)))
	if s.cfg.IdleTime > 0 {
		l.AddChild(stanza.NewElement(stanza.NSStreamLimits, "idle-seconds").AddText(strconv.Itoa(int(s.cfg.IdleTime / time.Second))))
	}
	return l
}

// servedCerts holds the certificate each connection's TLS handshake presented, from the
// handshake until startTLS takes it: channel binding tls-server-end-point hashes it.
var servedCerts sync.Map // net.Conn → *tls.Certificate

// servingConfigs maps a listener's TLS configuration to the one handshakes use, which records
// the certificate it serves. One shared configuration per listener, rather than a clone per
// connection, keeps about half a kilobyte off every session.
var servingConfigs struct {
	sync.Mutex
	m map[*tls.Config]*tls.Config
}

func servingConfig(base *tls.Config) *tls.Config {
	servingConfigs.Lock()
	defer servingConfigs.Unlock()
	if c, ok := servingConfigs.m[base]; ok {
		return c
	}
	if servingConfigs.m == nil || len(servingConfigs.m) >= 64 {
		// Reloads replace listeners' configurations; forgetting all now and then keeps the
		// ones no longer used from accumulating.
		servingConfigs.m = make(map[*tls.Config]*tls.Config)
	}
	conf := base.Clone()
	conf.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		var c *tls.Certificate
		var err error
		if base.GetCertificate != nil {
			c, err = base.GetCertificate(hello)
		} else if len(base.Certificates) > 0 {
			c = &base.Certificates[0]
		}
		if c != nil {
			servedCerts.Store(hello.Conn, c)
		}
		return c, err
	}
	conf.Certificates = nil
	servingConfigs.m[base] = conf
	return conf
}

// startTLS upgrades the connection (RFC 6120 §5.4.3).
func (s *Session) startTLS() error {
	if s.dec.Buffered() > 0 {
		// Data sent after <starttls/> before <proceed/> could be a plaintext injection.
		return stanza.NewStreamError("policy-violation", "data pipelined before the TLS handshake")
	}
	if err := s.writeSync(stanza.NewElement(stanza.NSTLS, "proceed")); err != nil {
		return err
	}
	tc := tls.Server(s.nc, servingConfig(s.cfg.TLS))
	err := tc.HandshakeContext(context.Background())
	if c, ok := servedCerts.LoadAndDelete(s.nc); ok {
		s.serverCert = c.(*tls.Certificate)
	}
	if err != nil {
		s.log.Info("TLS handshake failed", "err", err)
		tc.Close()
		return err
	}
	st := tc.ConnectionState()
	// Under the unset tls_verify_mode a presented certificate is checked only now, so that a
	// failure never ends the handshake; a verified one enables SASL EXTERNAL.
	if err := tlsconf.CompleteVerification(&st, s.cfg.TLS); err != nil {
		s.log.Info("client certificate not verified", "err", err)
	}
	s.tlsState = &st
	s.nc = tc
	s.dec.Reset(tc)
	return nil
}

// authenticate runs one SASL exchange (RFC 6120 §6.4). It reports success; an error ends the stream.
func (s *Session) authenticate(ctx context.Context, auth *stanza.Element, mechs []string) (bool, error) {
	mech := auth.Attr("mechanism")
	if !slices.Contains(mechs, mech) {
		return false, s.saslFailure(&sasl.Failure{Condition: "invalid-mechanism"}, mech, "")
	}
	cfg := s.saslConfig(mechs)
	if s.throttled("") {
		// Answered before any credential is looked at, so a throttled address learns nothing.
		return false, s.throttledFailure(mech, "")
	}
	neg, err := sasl.NewServer(mech, cfg)
	if err != nil {
		f := &sasl.Failure{Condition: "invalid-mechanism"}
		errors.As(err, &f)
		return false, s.saslFailure(f, mech, "")
	}
	resp, ferr := decodeSASL(auth.Text())
	if ferr != nil {
		return false, s.saslFailure(ferr, mech, "")
	}
	// The username the client claims, for the per-account throttle: the negotiator only tells
	// the authenticated one.
	return s.saslExchange(ctx, saslRFC6120, neg, mech, resp, claimedUser(mech, resp), func(additional []byte) (bool, error) {
		return s.saslSuccess(neg, mech, additional)
	})
}

// decodeSASL decodes SASL payload text: empty means no data, "=" means empty data (RFC 6120 §6.4.2).
func decodeSASL(text string) ([]byte, *sasl.Failure) {
	switch text {
	case "":
		return nil, nil
	case "=":
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, &sasl.Failure{Condition: "incorrect-encoding"}
	}
	return b, nil
}

func (s *Session) saslSuccess(neg sasl.Negotiator, mech string, additional []byte) (bool, error) {
	user := neg.Username()
	bare, err := jid.New(user, s.domain, "")
	if err != nil {
		return false, s.saslFailure(&sasl.Failure{Condition: "not-authorized"}, mech, user)
	}
	if az := neg.Authzid(); az != "" {
		if j, err := jid.Parse(az); err != nil || !j.Equal(bare) {
			return false, s.saslFailure(&sasl.Failure{Condition: "invalid-authzid"}, mech, user)
		}
	}
	succ := stanza.NewElement(stanza.NSSASL, "success")
	if len(additional) > 0 {
		succ.AddText(base64.StdEncoding.EncodeToString(additional))
	}
	if err := s.writeSync(succ); err != nil {
		return false, err
	}
	s.username = user
	s.jid = bare
	s.log = s.log.With("user", bare.String())
	metrics.Default.Auth(mech, true)
	if s.cfg.LogAuthentication {
		s.log.Log(context.Background(), observe.LevelAuth, "authentication succeeded", "mechanism", mech)
	} else {
		s.log.Debug("authentication succeeded", "mechanism", mech)
	}
	s.dec.Restart()
	return true, nil
}

// saslFailure reports a failed attempt; too many end the stream.
func (s *Session) saslFailure(f *sasl.Failure, mech, user string) error {
	return s.authFailure(saslRFC6120, f, mech, user)
}

// bindPhase reads the restarted stream's header, offers bind, and binds a resource (RFC 6120 §7).
func (s *Session) bindPhase(ctx context.Context) error {
	hdr, err := s.dec.ReadHeader()
	if err != nil {
		return err
	}
	if err := s.openStream(hdr); err != nil {
		return err
	}
	if err := s.writeSync(s.bindFeatures(true)); err != nil {
		return err
	}
	return s.bindLoop(ctx)
}

// bindFeatures lists the features of an authenticated stream: resource binding while unbound
// (RFC 6120 §7), and what modules, XEP-0198, XEP-0352 and XEP-0478 add.
func (s *Session) bindFeatures(unbound bool) *stanza.Element {
	f := stanza.NewElement(stanza.NSStream, "features")
	if unbound {
		f.AddChild(stanza.NewElement(stanza.NSBind, "bind"))
		f.AddChild(stanza.NewElement(stanza.NSSession, "session").AddChild(stanza.NewElement(stanza.NSSession, "optional")))
	}
	if h := s.cfg.Core.Host(s.domain); h != nil {
		for _, el := range h.StreamFeatures() {
			f.AddChild(el)
		}
	}
	s.mobileFeatures(f)
	return f.AddChild(s.limitsFeature())
}

// bindLoop reads the client's bind request (or XEP-0198 resumption) once the features that
// offer it were sent.
func (s *Session) bindLoop(ctx context.Context) error {
	for {
		el, err := s.dec.ReadElement()
		if err != nil {
			return err
		}
		if el.Space == NSSM && s.smEnabled() {
			// XEP-0198: resumption instead of binding; enabling needs a bound resource first.
			if el.Local == "resume" {
				ok, err := s.resume(el)
				if ok || err != nil {
					return err
				}
			} else if err := s.writeSync(smFailed("unexpected-request", 0, false)); err != nil {
				return err
			}
			continue
		}
		if !stanza.IsStanza(el, stanza.NSClient) {
			return stanza.NewStreamError("unsupported-stanza-type", "")
		}
		bind := el.Child(stanza.NSBind, "bind")
		if el.Local != "iq" || el.Attr("type") != stanza.Set || bind == nil {
			return stanza.NewStreamError("not-authorized", "bind a resource before sending stanzas")
		}
		if el.Attr("id") == "" {
			return stanza.NewStreamError("bad-format", "iq without id")
		}
		res := ""
		if r := bind.Child(stanza.NSBind, "resource"); r != nil {
			res = r.Text()
		}
		if res == "" {
			res = generatedResource()
		}
		full, err := jid.New(s.username, s.domain, res)
		if err != nil {
			// RFC 6120 §7.7.2.1: a resource that fails the resourcepart rules.
			if werr := s.writeSync(stanza.ErrorReply(el, stanza.NewError("bad-request", "invalid resource"))); werr != nil {
				return werr
			}
			continue
		}
		if s.atResourceLimit(full) {
			// RFC 6120 §7.6.2.1: the account has bound as many resources as it may.
			if werr := s.writeSync(stanza.ErrorReply(el, stanza.NewError("resource-constraint", "too many resources bound for this account"))); werr != nil {
				return werr
			}
			continue
		}
		s.jid = full
		s.w = transport.NewWriter(s.nc, s.cfg.MaxQueue, 0, s.writerFailed)
		s.attachOutput()
		reply := stanza.ResultReply(el, stanza.NewElement(stanza.NSBind, "bind").AddChild(
			stanza.NewElement(stanza.NSBind, "jid").AddText(full.String())))
		reply.RemoveAttr("from")
		reply.RemoveAttr("to")
		s.Deliver(reply)
		// The logger is replaced before the session becomes reachable (Bind, Close), so other
		// goroutines only ever see the final one.
		s.log = s.log.With("jid", full.String())
		s.bound.Store(true)
		s.cfg.Core.Router.Bind(s)
		s.log.Info("session bound")
		if h := s.cfg.Core.Host(s.domain); h != nil {
			h.SessionBound(ctx, s)
		}
		return nil
	}
}

// generatedResource is a server-chosen resource (RFC 6120 §7.6.2.1): unique and unguessable.
func generatedResource() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "impetus-" + hex.EncodeToString(b[:])
}
