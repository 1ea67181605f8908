// Package httpd is Impetus's HTTP(S) listener: XMPP over WebSocket (RFC 7395) and BOSH
// (XEP-0124, XEP-0206) for web clients, XEP-0156 discovery through host-meta, and the HTTP
// side of features that register their own handlers (XEP-0363 file upload).
//
// Both web transports reuse the client stream code unchanged: an adapter presents the framed
// transport to package c2s as a net.Conn carrying an ordinary RFC 6120 byte stream, so SASL,
// binding and everything after behave exactly as on a TCP stream (docs/web.md).
package httpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"impetus/internal/c2s"
	"impetus/internal/tlsutil"
)

var (
	handlersMu sync.Mutex
	handlers   = map[string]http.Handler{}
)

// Handle registers an HTTP handler of a feature (file upload) under pattern, as for
// http.ServeMux. Features call it while they are provisioned, before the listener starts;
// registering a pattern again replaces the handler, so that a reload provisions afresh.
func Handle(pattern string, h http.Handler) {
	handlersMu.Lock()
	handlers[pattern] = h
	handlersMu.Unlock()
}

// Options is what a Server needs besides its settings.
type Options struct {
	Settings *Settings
	// Client is the configuration of the client streams both web transports carry.
	Client *c2s.Config
	// Domains are the hosted domains; the first is the default.
	Domains []string
	Log     *slog.Logger
}

// Server serves the Listen scopes of an http_listener.
type Server struct {
	opts    Options
	set     *Settings
	log     *slog.Logger
	servers []*http.Server
	bosh    *boshManager
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
	// websockets counts live WebSocket streams for Close.
	wsMu sync.Mutex
	ws   map[*wsConn]struct{}
}

// New prepares a server; Start binds its sockets.
func New(opts Options) *Server {
	s := &Server{opts: opts, set: opts.Settings, log: opts.Log, ws: map[*wsConn]struct{}{}, ctx: context.Background()}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.bosh = newBOSHManager(s)
	return s
}

// Handler returns the HTTP handler of every endpoint, for tests and for Start.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	if s.set.WebSocket {
		mux.HandleFunc(s.set.WebSocketPath, s.serveWebSocket)
	}
	if s.set.BOSH {
		mux.Handle(s.set.BOSHPath, s.bosh)
	}
	mux.HandleFunc("/.well-known/host-meta", s.serveHostMeta)
	mux.HandleFunc("/.well-known/host-meta.json", s.serveHostMetaJSON)
	handlersMu.Lock()
	patterns := make([]string, 0, len(handlers))
	for p := range handlers {
		patterns = append(patterns, p)
	}
	sort.Strings(patterns)
	for _, p := range patterns {
		mux.Handle(p, handlers[p])
	}
	handlersMu.Unlock()
	return mux
}

// Start binds every enabled Listen and serves it until Close. It returns the bound addresses.
func (s *Server) Start(ctx context.Context) ([]string, error) {
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.bosh.start(s.ctx)
	h := s.Handler()
	var addrs []string
	for _, l := range s.set.Listens {
		if !l.Enable {
			continue
		}
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("httpd: listen %s: %w", l.Address, err)
		}
		ln = newLimitListener(ln, s.set.MaxConns, s.set.MaxConnsPerIP)
		hs := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: s.set.ReadTimeout,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
			BaseContext:       func(net.Listener) context.Context { return s.ctx },
		}
		if l.TLS() {
			cert, err := tlsutil.Load(l.TLSCertificate, l.TLSKey)
			if err != nil {
				ln.Close()
				s.Close()
				return nil, fmt.Errorf("httpd: Listen %s: %w", l.Address, err)
			}
			hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
			ln = tls.NewListener(ln, hs.TLSConfig)
		} else if host, _, _ := net.SplitHostPort(l.Address); !isLoopback(host) && !s.set.TLSOffloaded {
			s.log.Warn("http_listener serves plain HTTP on a non-loopback address; set tls_certificate", "address", l.Address)
		}
		s.servers = append(s.servers, hs)
		addrs = append(addrs, ln.Addr().String())
		s.log.Info("http listening", "address", ln.Addr().String(), "tls", l.TLS())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("http listener failed", "err", err)
			}
		}()
	}
	return addrs, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Close stops accepting, ends every web stream and waits a bounded time for the handlers.
func (s *Server) Close() {
	for _, hs := range s.servers {
		_ = hs.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.bosh.closeAll()
	s.wsMu.Lock()
	for c := range s.ws {
		c.Close()
	}
	s.wsMu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.log.Warn("http listener: handlers still running after 5s")
	}
}

// secure reports whether a request arrived encrypted, and the TLS state to bind to.
func (s *Server) secure(r *http.Request) (bool, *tls.ConnectionState) {
	if r.TLS != nil {
		return true, r.TLS
	}
	return s.set.TLSOffloaded, nil
}

// corsHeaders sets the CORS headers that let pages of other origins use BOSH and host-meta.
func (s *Server) corsHeaders(w http.ResponseWriter) {
	o := s.set.CORSAllowOrigin
	if o == "" || strings.EqualFold(o, "none") {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", o)
	h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type")
	h.Set("Access-Control-Max-Age", "86400")
}

// endpoints returns the WebSocket and BOSH URLs for a request: public_url when set, else the
// scheme and Host the request came with.
func (s *Server) endpoints(r *http.Request) (ws, bosh string) {
	base := s.set.PublicURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil || s.set.TLSOffloaded {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	wsBase := "ws" + strings.TrimPrefix(base, "http")
	if s.set.WebSocket {
		ws = wsBase + s.set.WebSocketPath
	}
	if s.set.BOSH {
		bosh = base + s.set.BOSHPath
	}
	return ws, bosh
}
