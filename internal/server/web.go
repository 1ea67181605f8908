package server

import (
	"context"

	"impetus/internal/auth"
	"impetus/internal/c2s"
	"impetus/internal/config"
	"impetus/internal/httpd"
)

// startWeb starts the http_listener (WebSocket, BOSH, host-meta, file upload) when the
// configuration has one. Its client streams take the xmpp_listener's own options (limits,
// timeouts, authentication), as a stream over TCP on a Listen without options of its own would.
// The transport's TLS is the HTTP listener's, so STARTTLS is never offered there.
func (s *Server) startWeb(ctx context.Context, lc *config.Listener, domains []string, hosted map[string]bool, store auth.Store, realm string, logAuth bool) error {
	set, err := httpd.Decode(s.cfg)
	if err != nil {
		return err
	}
	if set == nil || !set.Enable {
		return nil
	}
	opts := lc.Options
	cc := &c2s.Config{
		Core:                 s.core,
		Hosted:               func(d string) bool { return hosted[d] },
		DefaultDomain:        domains[0],
		Auth:                 store,
		Realm:                realm,
		AllowPlainWithoutTLS: opts.AllowPlainWithoutTLS,
		LogAuthentication:    logAuth,
		Limits:               limits(opts),
		IdleTime:             opts.IdleTime,
		Log:                  s.log.With("listen", "http"),
		Observer:             &s.ops.observer,
		Streams:              &s.streams,
	}
	s.applyLimits(cc, opts)
	s.web = httpd.New(httpd.Options{Settings: set, Client: cc, Domains: domains, Log: s.log.With("http_listener", "")})
	_, err = s.web.Start(ctx)
	return err
}

// stopWeb closes the http_listener, if one runs.
func (s *Server) stopWeb() {
	if s.web != nil {
		s.web.Close()
	}
}
