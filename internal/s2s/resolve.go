package s2s

import (
	"context"
	"net"
	"slices"
)

// target is one place a remote domain's server may listen.
type target struct {
	host      string
	port      uint16
	directTLS bool // XEP-0368: TLS from the first byte, ALPN xmpp-server
}

// targets lists where to connect for a domain (RFC 6120 §3.2, XEP-0368): the SRV records of
// _xmpps-server._tcp and _xmpp-server._tcp merged by priority, direct TLS first among equals;
// without any, the domain itself on port 5269 (the dialer tries its AAAA and A addresses). A
// single "." target means the domain offers no service, so nothing is tried.
func (m *Manager) targets(ctx context.Context, domain string) []target {
	r := m.cfg.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	type prio struct {
		target
		priority, order int
	}
	var all []prio
	decline := 0
	for i, svc := range []string{"xmpps-server", "xmpp-server"} {
		_, srvs, err := r.LookupSRV(ctx, svc, "tcp", domain)
		if err != nil {
			continue
		}
		if len(srvs) == 1 && srvs[0].Target == "." {
			decline++
			continue
		}
		for j, s := range srvs {
			// LookupSRV already orders by priority and shuffles by weight; order keeps that.
			all = append(all, prio{target{host: s.Target, port: s.Port, directTLS: i == 0}, int(s.Priority), j*2 + i})
		}
	}
	if len(all) == 0 {
		if decline == 2 {
			return nil
		}
		return []target{{host: domain, port: 5269}}
	}
	slices.SortStableFunc(all, func(a, b prio) int {
		if a.priority != b.priority {
			return a.priority - b.priority
		}
		return a.order - b.order
	})
	out := make([]target, len(all))
	for i, p := range all {
		out[i] = p.target
	}
	return out
}
