package c2s

import (
	"fmt"
	"time"

	"impetus/internal/config"
)

// Defaults of XEP-0198 stream management and XEP-0352 client state indication.
const (
	DefaultResumeTimeout    = 300 * time.Second
	DefaultMaxResumeTimeout = 900 * time.Second
	DefaultMaxUnacked       = 5000
	DefaultRequestEvery     = 5
	DefaultRequestInterval  = 30 * time.Second
	DefaultCSIMaxBuffer     = 200
)

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "stream_management",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0198 stream management: acknowledgements and session resumption",
		Options: []config.OptionSpec{
			{Name: "enabled", Type: config.TypeBool, Default: "true", Doc: "offer stream management to clients (Impetus)"},
			{Name: "resume", Type: config.TypeBool, Default: "true", Doc: "allow resumption of a session whose connection was lost (Impetus)"},
			{Name: "resume_timeout", Type: config.TypeDuration, Default: fmt.Sprint(int(DefaultResumeTimeout / time.Second)), Doc: "seconds a detached session waits for resumption when the client asks for no other time (Impetus)"},
			{Name: "max_resume_timeout", Type: config.TypeDuration, Default: fmt.Sprint(int(DefaultMaxResumeTimeout / time.Second)), Doc: "the longest a client may ask a detached session to wait, in seconds (Impetus)"},
			{Name: "max_unacked", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxUnacked), Doc: "stanzas kept for a client before it acknowledges them; past it the session ends (Impetus)"},
			{Name: "request_every", Type: config.TypeInt, Default: fmt.Sprint(DefaultRequestEvery), Doc: "ask the client for an acknowledgement after this many unacknowledged stanzas; 0 never (Impetus)"},
			{Name: "request_interval", Type: config.TypeDuration, Default: fmt.Sprint(int(DefaultRequestInterval / time.Second)), Doc: "seconds after which unacknowledged stanzas are followed by a request; 0 never (Impetus)"},
			{Name: "location", Type: config.TypeString, Doc: "host:port clients should reconnect to when resuming (Impetus)"},
		},
	})
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "client_state_indication",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0352 client state indication: traffic held back while a client is inactive",
		Options: []config.OptionSpec{
			{Name: "enabled", Type: config.TypeBool, Default: "true", Doc: "offer client state indication (Impetus)"},
			{Name: "max_buffer", Type: config.TypeInt, Default: fmt.Sprint(DefaultCSIMaxBuffer), Doc: "stanzas held back for an inactive client before they are all sent (Impetus)"},
		},
	})
}

// SMConfig configures XEP-0198 and XEP-0352 on client streams.
type SMConfig struct {
	// Enabled offers stream management; Resume allows resumption.
	Enabled bool
	Resume  bool
	// ResumeTimeout is how long a detached session waits by default; MaxResumeTimeout caps
	// what a client may ask for.
	ResumeTimeout    time.Duration
	MaxResumeTimeout time.Duration
	// MaxUnacked bounds the unacknowledged stanzas kept per session.
	MaxUnacked int
	// RequestEvery and RequestInterval say when the server asks for an acknowledgement.
	RequestEvery    int
	RequestInterval time.Duration
	// Location is the preferred reconnection address, or "".
	Location string
	// CSI offers client state indication; CSIMaxBuffer bounds what an inactive client has held back.
	CSI          bool
	CSIMaxBuffer int
}

// DefaultSMConfig is stream management and client state indication with their defaults.
func DefaultSMConfig() SMConfig {
	return SMConfig{
		Enabled: true, Resume: true,
		ResumeTimeout: DefaultResumeTimeout, MaxResumeTimeout: DefaultMaxResumeTimeout,
		MaxUnacked: DefaultMaxUnacked, RequestEvery: DefaultRequestEvery, RequestInterval: DefaultRequestInterval,
		CSI: true, CSIMaxBuffer: DefaultCSIMaxBuffer,
	}
}

type smScope struct {
	Enabled          bool          `conf:"enabled"`
	Resume           bool          `conf:"resume"`
	ResumeTimeout    time.Duration `conf:"resume_timeout"`
	MaxResumeTimeout time.Duration `conf:"max_resume_timeout"`
	MaxUnacked       int           `conf:"max_unacked"`
	RequestEvery     int           `conf:"request_every"`
	RequestInterval  time.Duration `conf:"request_interval"`
	Location         string        `conf:"location"`
}

type csiScope struct {
	Enabled   bool `conf:"enabled"`
	MaxBuffer int  `conf:"max_buffer"`
}

// SMConfigFrom reads the stream_management and client_state_indication scopes of cfg; a
// missing scope keeps its defaults. A nil cfg gives the defaults.
func SMConfigFrom(cfg *config.Config) (SMConfig, error) {
	out := DefaultSMConfig()
	if cfg == nil {
		return out, nil
	}
	if secs := cfg.Sections("stream_management"); len(secs) > 0 {
		sc := smScope{Enabled: true, Resume: true, ResumeTimeout: out.ResumeTimeout, MaxResumeTimeout: out.MaxResumeTimeout,
			MaxUnacked: out.MaxUnacked, RequestEvery: out.RequestEvery, RequestInterval: out.RequestInterval}
		if err := secs[0].Decode(&sc); err != nil {
			return out, fmt.Errorf("c2s: stream_management: %w", err)
		}
		out.Enabled, out.Resume, out.Location = sc.Enabled, sc.Resume, sc.Location
		out.ResumeTimeout, out.MaxResumeTimeout = sc.ResumeTimeout, sc.MaxResumeTimeout
		out.MaxUnacked, out.RequestEvery, out.RequestInterval = sc.MaxUnacked, sc.RequestEvery, sc.RequestInterval
		if out.MaxResumeTimeout < out.ResumeTimeout {
			out.MaxResumeTimeout = out.ResumeTimeout
		}
		if out.MaxUnacked <= 0 {
			out.MaxUnacked = DefaultMaxUnacked
		}
	}
	if secs := cfg.Sections("client_state_indication"); len(secs) > 0 {
		sc := csiScope{Enabled: true, MaxBuffer: out.CSIMaxBuffer}
		if err := secs[0].Decode(&sc); err != nil {
			return out, fmt.Errorf("c2s: client_state_indication: %w", err)
		}
		out.CSI, out.CSIMaxBuffer = sc.Enabled, sc.MaxBuffer
		if out.CSIMaxBuffer <= 0 {
			out.CSIMaxBuffer = DefaultCSIMaxBuffer
		}
	}
	return out, nil
}
