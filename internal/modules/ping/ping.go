// Package ping implements XEP-0199: XMPP Ping, answered by the server for itself and on
// behalf of the pinging client's own account (an iq without 'to').
package ping

import (
	"context"

	"impetus/internal/module"
	"impetus/internal/stanza"
)

// NS is the XEP-0199 namespace.
const NS = "urn:xmpp:ping"

func init() { module.Register("ping", func() module.Module { return new(Ping) }) }

// Ping answers pings.
type Ping struct{}

// Provision implements module.Module.
func (*Ping) Provision(h *module.Host) error {
	h.HandleIQ(module.ToServer, stanza.Get, NS, "ping", pong)
	h.HandleIQ(module.ToAccount, stanza.Get, NS, "ping", pongOwnAccount)
	h.AddFeature(NS)
	return nil
}

func pong(context.Context, *module.IQ) (*stanza.Element, error) { return nil, nil }

// pongOwnAccount answers a client pinging its own account; a ping to another account's bare JID
// is that account's business, which the server does not answer for (XEP-0199 §4.3).
func pongOwnAccount(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !iq.From.Bare().Equal(iq.To) {
		return nil, stanza.ErrServiceUnavailable
	}
	return nil, nil
}

var _ module.Module = (*Ping)(nil)
