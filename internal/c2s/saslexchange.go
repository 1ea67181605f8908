package c2s

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"impetus/internal/metrics"
	"impetus/internal/observe"
	"impetus/internal/sasl"
	"impetus/internal/stanza"
)

// saslProfile is what separates RFC 6120 SASL from XEP-0388 SASL2 on the wire: the
// namespace of the exchange's elements and how a payload is written in them. The exchange
// itself, the throttle and the failure accounting are the same for both.
type saslProfile struct {
	ns     string                                    // challenge, response, abort, failure, text
	name   string                                    // logged as "profile"; empty for RFC 6120
	lang   bool                                      // <text/> carries xml:lang (RFC 6120 §6.5)
	decode func(text string) ([]byte, *sasl.Failure) // a response's payload
}

var (
	saslRFC6120 = saslProfile{ns: stanza.NSSASL, lang: true, decode: decodeSASL}
	saslXEP0388 = saslProfile{ns: NSSASL2, name: "sasl2", decode: decodeSASL2}
)

// decodeSASL2 decodes a SASL2 payload (XEP-0388 §2.4): plain base64, where empty means empty
// data.
func decodeSASL2(text string) ([]byte, *sasl.Failure) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, &sasl.Failure{Condition: "incorrect-encoding"}
	}
	return b, nil
}

// saslExchange steps neg from the client's first response resp until it succeeds or fails,
// sending challenges and reading responses in profile p. claimed is the username resp names,
// for the per-account throttle until the negotiator knows the authenticated one; success is
// called with the server's additional data once the credentials check out. It reports
// success; an error ends the stream.
func (s *Session) saslExchange(ctx context.Context, p saslProfile, neg sasl.Negotiator, mech string, resp []byte, claimed string, success func(additional []byte) (bool, error)) (bool, error) {
	user := func() string {
		if u := neg.Username(); u != "" {
			return u
		}
		return claimed
	}
	for {
		challenge, done, err := neg.Step(ctx, resp)
		if err != nil {
			var f *sasl.Failure
			if !errors.As(err, &f) {
				s.log.Error("authentication backend failed", "mechanism", mech, "err", err)
				f = &sasl.Failure{Condition: "temporary-auth-failure"}
			}
			if s.throttled(user()) {
				return false, s.authThrottled(p, mech, user())
			}
			s.recordFailure(f, user())
			return false, s.authFailure(p, f, mech, user())
		}
		if done {
			if s.throttled(user()) {
				// Right and wrong passwords get the same answer while the account is
				// throttled; otherwise the throttle would confirm a guess.
				return false, s.authThrottled(p, mech, user())
			}
			return success(challenge)
		}
		ch := stanza.NewElement(p.ns, "challenge")
		if len(challenge) > 0 {
			ch.AddText(base64.StdEncoding.EncodeToString(challenge))
		}
		if err := s.writeSync(ch); err != nil {
			return false, err
		}
		el, err := s.dec.ReadElement()
		if err != nil {
			return false, err
		}
		switch {
		case el.Space == p.ns && el.Local == "response":
			var ferr *sasl.Failure
			if resp, ferr = p.decode(el.Text()); ferr != nil {
				return false, s.authFailure(p, ferr, mech, user())
			}
			if c := claimedUser(mech, resp); c != "" {
				claimed = c
			}
			if resp == nil {
				// A response always carries data, if empty; nil would mean none was sent.
				resp = []byte{}
			}
		case el.Space == p.ns && el.Local == "abort":
			return false, s.authFailure(p, &sasl.Failure{Condition: "aborted"}, mech, user())
		default:
			// RFC 6120 §6.4.2, XEP-0388 §2.4: nothing but responses during authentication.
			return false, stanza.NewStreamError("not-authorized", "unexpected element during authentication")
		}
	}
}

// authFailure reports a failed attempt in profile p (RFC 6120 §6.5, XEP-0388 §2.6.2); too
// many end the stream.
func (s *Session) authFailure(p saslProfile, f *sasl.Failure, mech, user string) error {
	// Wrong credentials count fully; protocol refusals (a channel binding the client cannot do,
	// a mechanism it then retries without) count a third, so clients that probe their way down
	// the mechanism list still reach one that works, while endless attempts stay bounded.
	if f.Credentials {
		s.authFails += 3
	} else {
		s.authFails++
	}
	metrics.Default.Auth(mech, false)
	attrs := []any{"mechanism", mech, "username", user, "condition", f.Condition}
	if p.name != "" {
		attrs = append(attrs, "profile", p.name)
	}
	if s.cfg.LogAuthentication {
		s.log.Log(context.Background(), observe.LevelAuth, "authentication failed", attrs...)
	} else {
		s.log.Debug("authentication failed", attrs...)
	}
	// The condition is in the RFC 6120 namespace in both profiles (XEP-0388 §2.6.2).
	el := stanza.NewElement(p.ns, "failure").AddChild(stanza.NewElement(stanza.NSSASL, f.Condition))
	if f.Text != "" {
		text := stanza.NewElement(p.ns, "text")
		if p.lang {
			text.Attrs = append(text.Attrs, stanza.Attr{Name: "xml:lang", Value: "en"})
		}
		el.AddChild(text.AddText(f.Text))
	}
	if err := s.writeSync(el); err != nil {
		return err
	}
	if s.cfg.MaxAuthFailures > 0 && s.authFails >= 3*s.cfg.MaxAuthFailures {
		return stanza.NewStreamError("policy-violation", "too many failed authentication attempts")
	}
	return nil
}

// authThrottled answers an attempt of a throttled address or account in profile p: after the
// delay, a temporary-auth-failure (RFC 6120 §6.5.12), which tells a client to try again later.
// The wait is a sleep of this stream's own goroutine with no lock held: it slows the guesser
// without holding anything another stream needs.
func (s *Session) authThrottled(p saslProfile, mech, user string) error {
	// authFailure counts the failure in the metrics and logs it as any failure.
	s.log.Warn("authentication throttled", "mechanism", mech, "username", user)
	if d := s.cfg.AuthFailureDelay; d > 0 {
		time.Sleep(d)
	}
	return s.authFailure(p, &sasl.Failure{Condition: "temporary-auth-failure", Text: "too many failed attempts; try again later"}, mech, user)
}
