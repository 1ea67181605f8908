// Package jidutil holds what the server adds to mellium.im/xmpp/jid for addresses that come
// from the network.
package jidutil

import (
	"errors"

	"mellium.im/xmpp/jid"
)

// ErrUnstable is returned for an address whose prepared form is not itself a valid address.
var ErrUnstable = errors.New("jidutil: the address does not survive preparation")

// Parse parses s like jid.Parse and also requires that the JID's string form parses back to
// the same JID. jid.Parse maps some inputs to a form that fails its own checks: "ℶⅣ" becomes
// the domain "בiv", which the IDNA bidi rule rejects. A stanza addressed so would be routed
// and stored under a JID that cannot be read back, so such addresses are refused as malformed
// up front.
func Parse(s string) (jid.JID, error) {
	j, err := jid.Parse(s)
	if err != nil {
		return jid.JID{}, err
	}
	out := j.String()
	if out == s {
		// Already in prepared form: preparation is idempotent on its own output.
		return j, nil
	}
	j2, err := jid.Parse(out)
	if err != nil || !j2.Equal(j) || j2.String() != out {
		return jid.JID{}, ErrUnstable
	}
	return j, nil
}
