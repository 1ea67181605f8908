// Package entitytime implements XEP-0202: Entity Time for the server: an iq get of
// <time xmlns='urn:xmpp:time'/> at a hosted domain is answered with the server's UTC time and
// its time zone offset.
package entitytime

import (
	"context"
	"fmt"
	"time"

	"impetus/internal/module"
	"impetus/internal/stanza"
)

// NS is the namespace of XEP-0202.
const NS = "urn:xmpp:time"

func init() { module.Register("time", func() module.Module { return new(Time) }) }

// Time is the entity time module of one hosted domain.
type Time struct {
	// Now is the clock; the zero value means time.Now.
	Now func() time.Time
}

// Provision implements module.Module.
func (t *Time) Provision(h *module.Host) error {
	if t.Now == nil {
		t.Now = time.Now
	}
	h.AddFeature(NS)
	h.HandleIQ(module.ToServer, stanza.Get, NS, "time", t.get)
	return nil
}

func (t *Time) get(_ context.Context, _ *module.IQ) (*stanza.Element, error) {
	now := t.Now()
	_, off := now.Zone()
	sign := '+'
	if off < 0 {
		sign, off = '-', -off
	}
	tzo := fmt.Sprintf("%c%02d:%02d", sign, off/3600, off%3600/60)
	res := stanza.NewElement(NS, "time")
	res.AddChild(stanza.NewElement(NS, "tzo").AddText(tzo))
	// XEP-0082 DateTime in UTC with whole seconds, as in XEP-0202's examples: fractions are
	// allowed but not every client library parses them.
	res.AddChild(stanza.NewElement(NS, "utc").AddText(now.UTC().Format("2006-01-02T15:04:05Z")))
	return res, nil
}

var _ module.Module = (*Time)(nil)
