package c2s

import (
	"bytes"
	"net"
	"net/netip"
	"strings"

	"mellium.im/xmpp/jid"

	"impetus/internal/limits"
	"impetus/internal/sasl"
)

// The defences of negotiation against guessing and hoarding: the authentication throttle and
// the bound on resources per account.

// ipKey is the throttle key of the client's address: its IP without the port, so that new
// connections from one address share their failures. An IPv6 address counts as its /64, the
// block one subscriber usually holds, so that hopping through it gains a guesser nothing.
func (s *Session) ipKey() string {
	host, _, err := net.SplitHostPort(s.remote)
	if err != nil {
		return "ip:" + s.remote
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return "ip:" + limits.AddressKey(a).String()
	}
	return "ip:" + host
}

// accountKey is the throttle key of an account, normalized so that spellings of one account
// share their failures.
func (s *Session) accountKey(user string) string {
	if user == "" {
		return ""
	}
	if j, err := jid.New(user, s.domain, ""); err == nil {
		return "account:" + j.String()
	}
	return "account:" + user + "@" + s.domain
}

// claimedUser returns the username a SASL message of mech names, before it is verified, so
// that failed attempts count against the account they tried; "" when the message names none.
// Negotiators report a username only once it authenticated.
func claimedUser(mech string, msg []byte) string {
	switch {
	case mech == "PLAIN":
		// authzid NUL authcid NUL passwd (RFC 4616).
		parts := bytes.SplitN(msg, []byte{0}, 3)
		if len(parts) == 3 {
			return string(parts[1])
		}
	case strings.HasPrefix(mech, "SCRAM-"):
		// gs2-header "n=" saslname "," ... (RFC 5802 §5.1), with "=2C" and "=3D" escapes.
		for _, f := range strings.Split(string(msg), ",") {
			if strings.HasPrefix(f, "n=") {
				return strings.NewReplacer("=2C", ",", "=3D", "=").Replace(f[2:])
			}
		}
	case mech == "DIGEST-MD5":
		// username="..." in the digest-response (RFC 2831 §2.1.2).
		s := string(msg)
		if i := strings.Index(s, `username="`); i >= 0 {
			if j := strings.IndexByte(s[i+10:], '"'); j >= 0 {
				return s[i+10 : i+10+j]
			}
		}
	}
	return ""
}

// throttled reports whether the client's address, or the account user when it is known, has
// failed too often recently.
func (s *Session) throttled(user string) bool {
	t := s.cfg.AuthThrottle
	if t == nil {
		return false
	}
	return t.Blocked(s.ipKey(), s.cfg.AuthFailuresPerIP, s.cfg.AuthFailureWindow) ||
		t.Blocked(s.accountKey(user), s.cfg.AuthFailuresPerAccount, s.cfg.AuthFailureWindow)
}

// recordFailure counts a failed guess against the address and the account. Only failures that
// tested credentials count: a malformed or aborted exchange, or a refused channel binding that a
// client then retries without, guessed nothing — and counting those would lock out every client
// behind one address that walks down the mechanism list.
func (s *Session) recordFailure(f *sasl.Failure, user string) {
	t := s.cfg.AuthThrottle
	if t == nil || f == nil || !f.Credentials {
		return
	}
	t.Fail(s.ipKey(), s.cfg.AuthFailuresPerIP, s.cfg.AuthFailureWindow)
	t.Fail(s.accountKey(user), s.cfg.AuthFailuresPerAccount, s.cfg.AuthFailureWindow)
}

// throttledFailure answers an attempt of a throttled address or account; see authThrottled.
func (s *Session) throttledFailure(mech, user string) error {
	return s.authThrottled(saslRFC6120, mech, user)
}

// atResourceLimit reports whether binding full would exceed the resources the account may
// bind. Binding a resource already bound replaces that session (RFC 6120 §7.7.2.2), which does
// not add one, so it is always allowed.
func (s *Session) atResourceLimit(full jid.JID) bool {
	if s.cfg.MaxResources <= 0 || s.cfg.Core == nil {
		return false
	}
	sessions := s.cfg.Core.Router.Sessions(full.Bare())
	if len(sessions) < s.cfg.MaxResources {
		return false
	}
	for _, o := range sessions {
		if o.JID().Equal(full) {
			return false
		}
	}
	return true
}
