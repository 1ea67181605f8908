package server

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"impetus/internal/c2s"
	"impetus/internal/config"
	guard "impetus/internal/limits"
	"impetus/internal/listener"
	"impetus/internal/xmlstream"
)

// maxHeaderWait bounds the wait for a connection's first stream header. Connections are counted
// against max_connections from the moment they are accepted, and an admission that no stream
// handler claims lapses after this (plus a margin), so it must not depend on a setting a reload
// can change.
const maxHeaderWait = 60 * time.Second

// limitState is what the connection limits and the authentication throttle count. It lives as
// long as the server, so that counts survive reloads.
type limitState struct {
	once     sync.Once
	conns    *guard.Conns
	throttle *guard.AuthThrottle
}

func (s *Server) guards() *limitState {
	l := &s.guard
	l.once.Do(func() {
		l.conns = guard.NewConns(maxHeaderWait + 5*time.Second)
		l.throttle = guard.NewAuthThrottle()
	})
	return l
}

// headerTimeout is the wait for the first stream header: the handshake deadline, within
// maxHeaderWait.
func headerTimeout(o config.ListenerOptions) time.Duration {
	if o.HandshakeTimeout > 0 && o.HandshakeTimeout < maxHeaderWait {
		return o.HandshakeTimeout
	}
	return maxHeaderWait
}

// applyLimits copies the limits of resolved listener options into a client stream
// configuration.
func (s *Server) applyLimits(c *c2s.Config, o config.ListenerOptions) {
	c.HandshakeTimeout = o.HandshakeTimeout
	c.MaxAuthFailures = o.MaxAuthFailures
	c.MaxQueue = o.MaxOutboundQueue
	c.MaxResources = o.MaxResourcesPerAccount
	c.ReadRate = o.ReadRate
	c.ReadBurst = o.ReadBurst
	c.AuthThrottle = s.guards().throttle
	c.AuthFailuresPerIP = o.AuthFailuresPerIP
	c.AuthFailuresPerAccount = o.AuthFailuresPerAccount
	c.AuthFailureWindow = o.AuthFailureWindow
	c.AuthFailureDelay = o.AuthFailureDelay
}

// admitting wraps a Listen's access policy with the connection limits: max_connections of the
// Listen over all the server's connections, and max_connections_per_ip of the most specific
// Peer scope. A refused connection is closed before anything is read from it, with a log line.
func (s *Server) admitting(lc *config.Listener, ls *config.Listen, policy listener.Policy) listener.Policy {
	st := s.guards()
	log := s.log.With("listen", ls.Address)
	return func(peer netip.Addr) (bool, xmlstream.Limits) {
		ok, lim := policy(peer)
		if !ok {
			return false, lim
		}
		o := lc.Effective(ls, peer)
		if admitted, by := st.conns.Admit(peer, ls.Options.MaxConnections, o.MaxConnectionsPerIP); !admitted {
			total, fromIP := st.conns.Open(peer)
			log.Warn("connection refused: limit reached", "peer", peer.String(), "limit", by, "open", total, "open_from_peer", fromIP)
			return false, lim
		}
		return true, lim
	}
}

type admittedKey struct{}

// counted wraps a stream handler so that the connection's admission is released when the
// handler returns, and so that the handshake deadline counts from the admission.
func (s *Server) counted(h listener.Handler) listener.Handler {
	st := s.guards()
	return func(ctx context.Context, c *listener.Conn) {
		at, release := st.conns.Claim(c.Peer)
		// A client stream may outlive its handler's goroutine while idle (listener.Detach).
		c.OnEnd(release)
		h(context.WithValue(ctx, admittedKey{}, at), c)
	}
}

// fromAdmission shortens the handshake deadline of a client stream by the time the connection
// already spent before its stream header, so that TLS, SASL and binding finish within
// handshake_timeout of the connect, not of the header.
func fromAdmission(ctx context.Context, c *c2s.Config) *c2s.Config {
	at, ok := ctx.Value(admittedKey{}).(time.Time)
	if !ok || c.HandshakeTimeout <= 0 {
		return c
	}
	// At least a second remains, so that a client whose header came late still gets an answer.
	c.HandshakeTimeout = max(c.HandshakeTimeout-time.Since(at), time.Second)
	return c
}
