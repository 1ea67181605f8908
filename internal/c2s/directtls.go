package c2s

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"time"

	"impetus/internal/tlsconf"
	"impetus/internal/xmlstream"
)

// ALPN protocol names of XEP-0368 direct TLS.
const (
	ALPNClient = "xmpp-client"
	ALPNServer = "xmpp-server"
)

// DirectTLSConfig returns the configuration for a direct TLS port (XEP-0368): base, offering
// the xmpp-client and xmpp-server ALPN protocols. A client that offers ALPN without either is
// refused in the handshake (RFC 7301 §3.2); one that offers none is served.
//
// A server (ALPN xmpp-server only) is asked for its certificate, as after STARTTLS on a server
// stream, so that SASL EXTERNAL (XEP-0178) can be offered to it; the handshake does not fail
// when it presents none or one that does not verify.
func DirectTLSConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.NextProtos = []string{ALPNClient, ALPNServer}
	if c.ClientAuth == tls.NoClientCert && c.GetConfigForClient == nil {
		srv := c.Clone()
		srv.ClientAuth = tls.RequestClientCert
		c.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			if slices.Contains(h.SupportedProtos, ALPNServer) && !slices.Contains(h.SupportedProtos, ALPNClient) {
				return srv, nil
			}
			return nil, nil
		}
	}
	return c
}

// ServeDirectTLS runs a client stream on a connection whose TLS handshake was done before the
// stream began (XEP-0368): the stream proceeds as after STARTTLS, so no STARTTLS is offered,
// and channel binding and SASL EXTERNAL work on the connection's TLS state.
func ServeDirectTLS(ctx context.Context, nc net.Conn, dec *xmlstream.Decoder, hdr *xmlstream.Header, cfg *Config, state *tls.ConnectionState) {
	s := &Session{cfg: cfg, nc: nc, raw: nc, dec: dec, remote: nc.RemoteAddr().String(), since: time.Now()}
	st := *state
	if cfg.TLS != nil {
		// As after STARTTLS: a presented certificate is checked now, never failing the
		// handshake; a verified one enables SASL EXTERNAL.
		if err := tlsconf.CompleteVerification(&st, cfg.TLS); err != nil {
			cfg.Log.Info("client certificate not verified", "err", err, "remote", s.remote)
		}
		s.serverCert = servedCertificate(cfg.TLS, &st)
	}
	s.tlsState = &st
	serve(ctx, s, hdr)
}

// servedCertificate finds the certificate the handshake presented, for tls-server-end-point
// channel binding: the configuration picks it by server name, as it did in the handshake.
func servedCertificate(conf *tls.Config, st *tls.ConnectionState) *tls.Certificate {
	if conf.GetCertificate != nil {
		c, err := conf.GetCertificate(&tls.ClientHelloInfo{ServerName: st.ServerName})
		if err == nil {
			return c
		}
		return nil
	}
	if len(conf.Certificates) > 0 {
		return &conf.Certificates[0]
	}
	return nil
}
