// Package version implements XEP-0092: Software Version, for the server itself.
package version

import (
	"context"
	"runtime"

	"impetus/internal/module"
	"impetus/internal/stanza"
)

// NS is the XEP-0092 namespace.
const NS = "jabber:iq:version"

// Name and Version are what the server reports; the build sets Version.
var (
	Name    = "Impetus"
	Version = "0.1.0-dev"
)

func init() { module.Register("version", func() module.Module { return new(SoftwareVersion) }) }

// SoftwareVersion answers version queries to the server.
type SoftwareVersion struct{}

// Provision implements module.Module.
func (*SoftwareVersion) Provision(h *module.Host) error {
	h.HandleIQ(module.ToServer, stanza.Get, NS, "query", answer)
	h.AddFeature(NS)
	return nil
}

func answer(context.Context, *module.IQ) (*stanza.Element, error) {
	q := stanza.NewElement(NS, "query")
	q.AddChild(stanza.NewElement(NS, "name").AddText(Name))
	q.AddChild(stanza.NewElement(NS, "version").AddText(Version))
	q.AddChild(stanza.NewElement(NS, "os").AddText(runtime.GOOS))
	return q, nil
}

var _ module.Module = (*SoftwareVersion)(nil)
