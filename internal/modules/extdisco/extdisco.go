// Package extdisco implements XEP-0215: External Service Discovery. It tells a domain's users
// about the STUN and TURN servers (and any other external services) the configuration lists,
// with short-lived TURN credentials computed the way TURN servers check them (the "TURN REST
// API" of draft-uberti-behave-turn-rest: username "expiry:user", password
// base64(HMAC-SHA1(secret, username))), so no account data leaves the server.
package extdisco

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	"impetus/internal/config"
	"impetus/internal/module"
	"impetus/internal/stanza"
)

// NS is the XEP-0215 namespace.
const NS = "urn:xmpp:extdisco:2"

// DefaultCredentialTTL is how long TURN REST credentials stay valid by default.
const DefaultCredentialTTL = 24 * time.Hour

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "external_services",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "XEP-0215 external services (STUN, TURN) announced to the users of every hosted domain",
		Options: []config.OptionSpec{
			{Name: "enabled", Type: config.TypeBool, Default: "true", Doc: "answer external service discovery (Impetus)"},
			{Name: "credential_ttl", Type: config.TypeDuration, Default: strconv.Itoa(int(DefaultCredentialTTL / time.Second)), Doc: "seconds TURN REST credentials stay valid (Impetus)"},
		},
		Scopes: []*config.ScopeSpec{{
			Kind: "service",
			Name: config.NameRequired,
			Doc:  "one external service; the scope's name is shown to users",
			Options: []config.OptionSpec{
				{Name: "type", Type: config.TypeString, Doc: "service type from the XEP-0215 registry: stun, turn, turns, …"},
				{Name: "host", Type: config.TypeString, Doc: "host name or IP address of the service"},
				{Name: "port", Type: config.TypeInt, Default: "0", Doc: "port; 0 leaves it out"},
				{Name: "transport", Type: config.TypeString, Values: []string{"", "udp", "tcp"}, Doc: "udp or tcp"},
				{Name: "secret", Type: config.TypeString, Doc: "shared secret of the TURN REST API; credentials are computed per request"},
				{Name: "username", Type: config.TypeString, Doc: "fixed username, when the service has one and no secret"},
				{Name: "password", Type: config.TypeString, Doc: "fixed password, with username"},
				{Name: "restricted", Type: config.TypeBool, Default: "false", Doc: "the service needs credentials; implied by secret or username"},
			},
		}},
	})
	module.Register("extdisco", func() module.Module { return &ExtDisco{} })
}

// Service is one configured external service.
type Service struct {
	Name       string
	Type       string `conf:"type"`
	Host       string `conf:"host"`
	Port       int    `conf:"port"`
	Transport  string `conf:"transport"`
	Secret     string `conf:"secret"`
	Username   string `conf:"username"`
	Password   string `conf:"password"`
	Restricted bool   `conf:"restricted"`
}

// Config is the external_services scope, decoded.
type Config struct {
	Enabled       bool          `conf:"enabled"`
	CredentialTTL time.Duration `conf:"credential_ttl"`
	Services      []Service
}

// Decode reads the external_services scope of cfg; no scope means no services.
func Decode(cfg *config.Config) (*Config, error) {
	out := &Config{Enabled: true, CredentialTTL: DefaultCredentialTTL}
	if cfg == nil || cfg.Root == nil {
		return out, nil
	}
	secs := cfg.Sections("external_services")
	if len(secs) == 0 {
		return out, nil
	}
	if err := secs[0].Decode(out); err != nil {
		return nil, err
	}
	if out.CredentialTTL <= 0 {
		out.CredentialTTL = DefaultCredentialTTL
	}
	for _, sc := range secs[0].Scopes("service") {
		s := Service{Name: sc.Name}
		if err := sc.Decode(&s); err != nil {
			return nil, err
		}
		if s.Type == "" || s.Host == "" {
			return nil, fmt.Errorf("extdisco: %s: service %q needs a type and a host", sc.Pos, sc.Name)
		}
		if s.Port < 0 || s.Port > 65535 {
			return nil, fmt.Errorf("extdisco: %s: service %q: port out of range", sc.Pos, sc.Name)
		}
		out.Services = append(out.Services, s)
	}
	return out, nil
}

// ExtDisco answers XEP-0215 requests of one hosted domain.
type ExtDisco struct {
	// Now returns the current time; tests replace it.
	Now func() time.Time

	h   *module.Host
	cfg *Config
}

// Provision implements module.Module.
func (e *ExtDisco) Provision(h *module.Host) error {
	e.h = h
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.cfg == nil {
		cfg, err := Decode(h.Config)
		if err != nil {
			return err
		}
		e.cfg = cfg
	}
	if !e.cfg.Enabled {
		return nil
	}
	h.HandleIQ(module.ToServer, stanza.Get, NS, "services", e.services)
	h.HandleIQ(module.ToServer, stanza.Get, NS, "credentials", e.credentials)
	h.AddFeature(NS)
	return nil
}

// SetConfig replaces the configuration (tests and embedding), before Provision.
func (e *ExtDisco) SetConfig(c *Config) { e.cfg = c }

// allowed reports whether the requester may learn about the services: the domain's own users,
// since the credentials give access to relays the operator pays for.
func (e *ExtDisco) allowed(iq *module.IQ) bool {
	return iq.From.Domainpart() == e.h.Domain && iq.From.Localpart() != ""
}

// services answers a request for the services, optionally of one type (XEP-0215 §3.1).
func (e *ExtDisco) services(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !e.allowed(iq) {
		return nil, stanza.NewError("forbidden", "external services are for this server's users")
	}
	typ := iq.Payload.Attr("type")
	out := stanza.NewElement(NS, "services")
	if typ != "" {
		out.SetAttr("type", typ)
	}
	for i := range e.cfg.Services {
		s := &e.cfg.Services[i]
		if typ != "" && s.Type != typ {
			continue
		}
		out.AddChild(e.serviceElement(s, iq, true))
	}
	return out, nil
}

// credentials answers a request for the credentials of one service (XEP-0215 §3.2).
func (e *ExtDisco) credentials(_ context.Context, iq *module.IQ) (*stanza.Element, error) {
	if !e.allowed(iq) {
		return nil, stanza.NewError("forbidden", "external services are for this server's users")
	}
	want := iq.Payload.Child(NS, "service")
	if want == nil || want.Attr("host") == "" || want.Attr("type") == "" {
		return nil, stanza.NewError("bad-request", "name the service by host and type")
	}
	for i := range e.cfg.Services {
		s := &e.cfg.Services[i]
		if s.Host != want.Attr("host") || s.Type != want.Attr("type") {
			continue
		}
		if p := want.Attr("port"); p != "" && p != strconv.Itoa(s.Port) {
			continue
		}
		return stanza.NewElement(NS, "credentials").AddChild(e.serviceElement(s, iq, true)), nil
	}
	return nil, stanza.NewError("item-not-found", "no such service")
}

// serviceElement describes s, with credentials for the requester when it has any.
func (e *ExtDisco) serviceElement(s *Service, iq *module.IQ, withCreds bool) *stanza.Element {
	el := stanza.NewElement(NS, "service",
		stanza.Attr{Name: "type", Value: s.Type},
		stanza.Attr{Name: "host", Value: s.Host})
	if s.Port > 0 {
		el.SetAttr("port", strconv.Itoa(s.Port))
	}
	if s.Transport != "" {
		el.SetAttr("transport", s.Transport)
	}
	if s.Name != "" {
		el.SetAttr("name", s.Name)
	}
	restricted := s.Restricted || s.Secret != "" || s.Username != ""
	if restricted {
		el.SetAttr("restricted", "true")
	}
	if !withCreds {
		return el
	}
	switch {
	case s.Secret != "":
		expires := e.Now().Add(e.cfg.CredentialTTL).UTC()
		user, pass := TURNCredentials(s.Secret, iq.From.Bare().String(), expires)
		el.SetAttr("username", user)
		el.SetAttr("password", pass)
		el.SetAttr("expires", expires.Format(time.RFC3339))
	case s.Username != "":
		el.SetAttr("username", s.Username)
		el.SetAttr("password", s.Password)
	}
	return el
}

// TURNCredentials returns the TURN REST API credentials for user valid until expires: the
// username is the expiry as a Unix time, a colon and user; the password the base64 HMAC-SHA1
// of the username keyed with the secret shared with the TURN server.
func TURNCredentials(secret, user string, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + user
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(m.Sum(nil))
}

var _ module.Module = (*ExtDisco)(nil)
