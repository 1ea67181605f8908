package httpd

import (
	"fmt"
	"net"
	"strings"
	"time"

	"impetus/internal/config"
)

// Defaults of the http_listener scope.
const (
	DefaultWebSocketPath   = "/xmpp-websocket"
	DefaultBOSHPath        = "/http-bind"
	DefaultBOSHMaxWait     = 60 * time.Second
	DefaultBOSHMaxHold     = 1
	DefaultBOSHInactivity  = 60 * time.Second
	DefaultBOSHMaxPause    = 120 * time.Second
	DefaultBOSHPolling     = 2 * time.Second
	DefaultBOSHMaxSessions = 10000
	DefaultBOSHMaxBody     = 262144 + 4096
	DefaultReadTimeout     = 10 * time.Second
)

func init() {
	// Options valid both in the listener and in each Listen scope; a Listen's own value wins.
	// The generic listener options of Momentum's http_listener load with a warning, so that a
	// Momentum configuration that has one keeps loading.
	both := func() []config.OptionSpec {
		opts := []config.OptionSpec{
			{Name: "enable", Type: config.TypeBool, Default: "true", Doc: "serve HTTP on this listener or Listen"},
			{Name: "tls_certificate", Type: config.TypeString, Doc: `PEM certificate (may hold the key too); serves HTTPS when set, "none" cancels a parent's`},
			{Name: "tls_key", Type: config.TypeString, Doc: "PEM key when the certificate file holds none"},
		}
		for _, name := range []string{"accept_queue_backlog", "concurrency", "events_per_iter", "listen_backlog"} {
			opts = append(opts, config.OptionSpec{Name: name, Type: config.TypeInt, Status: config.Accepted})
		}
		for _, name := range []string{"tcp_recv_buffer_size", "tcp_send_buffer_size"} {
			opts = append(opts, config.OptionSpec{Name: name, Type: config.TypeSize, Status: config.Accepted})
		}
		for _, name := range []string{"pool_name", "tls_ciphers", "tls_client_ca", "tls_verify_mode"} {
			opts = append(opts, config.OptionSpec{Name: name, Type: config.TypeString, Status: config.Accepted})
		}
		for _, name := range []string{"disable_nagle_algorithm", "tls_allow_renegotiation"} {
			opts = append(opts, config.OptionSpec{Name: name, Type: config.TypeBool, Status: config.Accepted})
		}
		return opts
	}
	peer := &config.ScopeSpec{Kind: "peer", Name: config.NameRequired, Status: config.Accepted, Doc: "Momentum's per-client options; not implemented for HTTP"}
	listenerOpts := append(both(),
		config.OptionSpec{Name: "public_url", Type: config.TypeString, Doc: "base URL clients reach this listener at, e.g. https://xmpp.example.com:5281; default from the request or the first Listen (Impetus)"},
		config.OptionSpec{Name: "websocket", Type: config.TypeBool, Default: "true", Doc: "serve XMPP over WebSocket (RFC 7395) (Impetus)"},
		config.OptionSpec{Name: "websocket_path", Type: config.TypeString, Default: DefaultWebSocketPath, Doc: "path of the WebSocket endpoint (Impetus)"},
		config.OptionSpec{Name: "bosh", Type: config.TypeBool, Default: "true", Doc: "serve BOSH (XEP-0124, XEP-0206) (Impetus)"},
		config.OptionSpec{Name: "bosh_path", Type: config.TypeString, Default: DefaultBOSHPath, Doc: "path of the BOSH endpoint (Impetus)"},
		config.OptionSpec{Name: "bosh_max_wait", Type: config.TypeDuration, Default: "60", Doc: "longest seconds a BOSH request is held (Impetus)"},
		config.OptionSpec{Name: "bosh_max_hold", Type: config.TypeInt, Default: "1", Doc: "most BOSH requests held at once per session (Impetus)"},
		config.OptionSpec{Name: "bosh_inactivity", Type: config.TypeDuration, Default: "60", Doc: "seconds a BOSH session may have no request before it ends (Impetus)"},
		config.OptionSpec{Name: "bosh_max_pause", Type: config.TypeDuration, Default: "120", Doc: "longest pause in seconds a BOSH client may ask for; 0 refuses pauses (Impetus)"},
		config.OptionSpec{Name: "bosh_polling", Type: config.TypeDuration, Default: "2", Doc: "shortest seconds between two empty requests of a polling BOSH session (Impetus)"},
		config.OptionSpec{Name: "bosh_max_sessions", Type: config.TypeInt, Default: "10000", Doc: "BOSH sessions at once; 0 means no bound (Impetus)"},
		config.OptionSpec{Name: "bosh_max_body_size", Type: config.TypeSize, Default: fmt.Sprint(DefaultBOSHMaxBody), Doc: "largest BOSH request body in bytes (Impetus)"},
		config.OptionSpec{Name: "tls_offloaded", Type: config.TypeBool, Default: "false", Doc: "a TLS proxy in front terminates HTTPS: plain HTTP streams count as encrypted (Impetus)"},
		config.OptionSpec{Name: "cors_allow_origin", Type: config.TypeString, Default: "*", Doc: "Access-Control-Allow-Origin of BOSH and host-meta answers; \"none\" sends no CORS headers (Impetus)"},
		config.OptionSpec{Name: "read_timeout", Type: config.TypeDuration, Default: "10", Doc: "seconds to read a request's headers (Impetus)"},
		config.OptionSpec{Name: "max_connections", Type: config.TypeInt, Default: "10000", Doc: "open HTTP connections on each Listen; 0 means no bound (Impetus)"},
		config.OptionSpec{Name: "max_connections_per_ip", Type: config.TypeInt, Default: "100", Doc: "open HTTP connections from one IP address on each Listen; 0 means no bound (Impetus)"},
	)
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "http_listener",
		Singleton: true,
		Doc:       "serves XMPP over WebSocket and BOSH, host-meta discovery and HTTP file upload",
		Options:   listenerOpts,
		Scopes: []*config.ScopeSpec{{
			Kind:    "listen",
			Name:    config.NameRequired,
			Doc:     "one HTTP socket, host:port",
			Options: both(),
			Scopes:  []*config.ScopeSpec{peer},
		}, peer},
	})
}

// Settings is the http_listener scope, decoded.
type Settings struct {
	Enable          bool          `conf:"enable"`
	TLSCertificate  string        `conf:"tls_certificate"`
	TLSKey          string        `conf:"tls_key"`
	PublicURL       string        `conf:"public_url"`
	WebSocket       bool          `conf:"websocket"`
	WebSocketPath   string        `conf:"websocket_path"`
	BOSH            bool          `conf:"bosh"`
	BOSHPath        string        `conf:"bosh_path"`
	BOSHMaxWait     time.Duration `conf:"bosh_max_wait"`
	BOSHMaxHold     int           `conf:"bosh_max_hold"`
	BOSHInactivity  time.Duration `conf:"bosh_inactivity"`
	BOSHMaxPause    time.Duration `conf:"bosh_max_pause"`
	BOSHPolling     time.Duration `conf:"bosh_polling"`
	BOSHMaxSessions int           `conf:"bosh_max_sessions"`
	BOSHMaxBody     int64         `conf:"bosh_max_body_size"`
	TLSOffloaded    bool          `conf:"tls_offloaded"`
	CORSAllowOrigin string        `conf:"cors_allow_origin"`
	ReadTimeout     time.Duration `conf:"read_timeout"`
	MaxConns        int           `conf:"max_connections"`
	MaxConnsPerIP   int           `conf:"max_connections_per_ip"`
	Listens         []Listen
}

// Listen is one Listen scope with the listener's TLS options resolved.
type Listen struct {
	Address        string
	Enable         bool   `conf:"enable"`
	TLSCertificate string `conf:"tls_certificate"`
	TLSKey         string `conf:"tls_key"`
}

// TLS reports whether the Listen serves HTTPS.
func (l Listen) TLS() bool {
	return l.TLSCertificate != "" && !strings.EqualFold(l.TLSCertificate, "none")
}

// DefaultSettings returns what an http_listener scope that sets nothing means.
func DefaultSettings() Settings {
	return Settings{
		Enable: true, WebSocket: true, WebSocketPath: DefaultWebSocketPath, BOSH: true, BOSHPath: DefaultBOSHPath,
		BOSHMaxWait: DefaultBOSHMaxWait, BOSHMaxHold: DefaultBOSHMaxHold, BOSHInactivity: DefaultBOSHInactivity,
		BOSHMaxPause: DefaultBOSHMaxPause, BOSHPolling: DefaultBOSHPolling, BOSHMaxSessions: DefaultBOSHMaxSessions,
		BOSHMaxBody: DefaultBOSHMaxBody, CORSAllowOrigin: "*", ReadTimeout: DefaultReadTimeout,
		MaxConns: 10000, MaxConnsPerIP: 100,
	}
}

// Decode reads the http_listener scope of cfg. It returns nil and no error when there is none.
func Decode(cfg *config.Config) (*Settings, error) {
	if cfg == nil || cfg.Root == nil {
		return nil, nil
	}
	secs := cfg.Sections("http_listener")
	if len(secs) == 0 {
		return nil, nil
	}
	sec := secs[0]
	out := DefaultSettings()
	if err := sec.Decode(&out); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(out.WebSocketPath, "/") || !strings.HasPrefix(out.BOSHPath, "/") {
		return nil, fmt.Errorf("%s: http_listener: websocket_path and bosh_path must start with /", sec.Pos)
	}
	if out.PublicURL != "" && !strings.HasPrefix(out.PublicURL, "http://") && !strings.HasPrefix(out.PublicURL, "https://") {
		return nil, fmt.Errorf("%s: http_listener: public_url must be an http:// or https:// URL", sec.Pos)
	}
	out.PublicURL = strings.TrimSuffix(out.PublicURL, "/")
	for _, ls := range sec.Scopes("listen") {
		l := Listen{Address: ls.Name, Enable: out.Enable, TLSCertificate: out.TLSCertificate, TLSKey: out.TLSKey}
		if err := ls.Decode(&l); err != nil {
			return nil, err
		}
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			return nil, fmt.Errorf("%s: http_listener: Listen %q is not host:port", ls.Pos, ls.Name)
		}
		out.Listens = append(out.Listens, l)
	}
	return &out, nil
}

// BaseURL is the URL other features (file upload) put in front of their paths: public_url, or
// the first enabled Listen with the domain as host name.
func (s *Settings) BaseURL(domain string) string {
	if s.PublicURL != "" {
		return s.PublicURL
	}
	for _, l := range s.Listens {
		if !l.Enable {
			continue
		}
		_, port, _ := net.SplitHostPort(l.Address)
		scheme := "http"
		if l.TLS() || s.TLSOffloaded {
			scheme = "https"
		}
		return scheme + "://" + net.JoinHostPort(domain, port)
	}
	return "http://" + domain
}
