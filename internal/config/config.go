package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is a loaded configuration: the core sections typed, the whole
// tree kept for sections feature packages decode themselves.
type Config struct {
	File        string
	Root        *Scope    // the global scope, includes spliced in
	XMPP        *XMPP     // nil when there is no xmpp scope
	Listener    *Listener // nil when there is no xmpp_listener scope
	Domains     []*Domain // every domain scope, in file order
	Loggers     []*Logger // every xmpp_logger scope
	ThreadPools []*ThreadPool
	Datasources []*Datasource
}

// DebugLevel is a module's debug_level: the least severe message logged.
type DebugLevel int

// The debug levels, numbered as Momentum numbers them.
const (
	LevelDebug DebugLevel = iota
	LevelInfo
	LevelNotice
	LevelWarning
	LevelError
	LevelCritical
)

var debugLevelNames = [...]string{"DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"}

// String returns the level's name as the configuration writes it.
func (l DebugLevel) String() string {
	if l >= 0 && int(l) < len(debugLevelNames) {
		return debugLevelNames[l]
	}
	return "DebugLevel(" + strconv.Itoa(int(l)) + ")"
}

// UnmarshalConfig reads a level name in any case.
func (l *DebugLevel) UnmarshalConfig(v Value) error {
	for i, n := range debugLevelNames {
		if strings.EqualFold(n, v.Str) && v.Kind == StringValue {
			*l = DebugLevel(i)
			return nil
		}
	}
	return errorf(v.Pos, "option \"debug_level\": expected one of %s, found %s", strings.Join(debugLevelNames[:], ", "), describeValue(v))
}

// XMPP is the xmpp module scope.
type XMPP struct {
	Pos        Pos
	Enabled    bool       `conf:"enabled"`
	DebugLevel DebugLevel `conf:"debug_level"`
	Storage    string     `conf:"storage"` // a Datasource name; "" for the default SQLite file
	// MaxRosterItems bounds each roster (RFC 6121 §2.3.3 lets a server refuse more).
	MaxRosterItems int `conf:"max_roster_items"`
	// MaxOfflineMessages bounds each user's offline store (XEP-0160).
	MaxOfflineMessages int `conf:"max_offline_messages"`
	// ControlSocket is the path of the control socket impetus ctl talks to: "" for
	// control.sock in the data directory, "none" for no socket.
	ControlSocket string `conf:"control_socket"`
	// MetricsListen is the host:port of the Prometheus metrics HTTP listener; "" for none.
	MetricsListen string `conf:"metrics_listen"`
	// MetricsPprof also serves the Go runtime's profiles at /debug/pprof/ on MetricsListen.
	MetricsPprof bool `conf:"metrics_pprof"`
	// The federation options (docs/federation.md).
	S2SRemoteDomains            string        `conf:"s2s_remote_domains"` // "all" or "listed"
	S2SDialbackWithoutValidCert bool          `conf:"s2s_dialback_without_valid_cert"`
	S2SCAFile                   string        `conf:"s2s_ca_file"`
	S2SIdleTime                 time.Duration `conf:"s2s_idle_time"`
	S2SConnectTimeout           time.Duration `conf:"s2s_connect_timeout"`
	S2SMaxQueue                 int           `conf:"s2s_max_queue"`
	// The message archive options (docs/mam.md).
	MAMDefault       string        `conf:"mam_default"`   // always, roster or never
	MAMRetention     int           `conf:"mam_retention"` // days; 0 keeps forever
	MAMPurgeInterval time.Duration `conf:"mam_purge_interval"`
	MAMDefaultPage   int           `conf:"mam_default_page"`
	MAMMaxPage       int           `conf:"mam_max_page"`
	MAMMaxScan       int           `conf:"mam_max_scan"`
}

// Role is a domain's XMPP_Role.
type Role string

// The XMPP roles. A server domain is hosted here and accepts incoming
// streams; a client domain is remote and reached over outgoing s2s streams.
const (
	RoleNone   Role = ""
	RoleServer Role = "server"
	RoleClient Role = "client"
)

// UnmarshalConfig reads server or client in any case.
func (r *Role) UnmarshalConfig(v Value) error {
	switch strings.ToLower(v.Str) {
	case "server":
		*r = RoleServer
	case "client":
		*r = RoleClient
	default:
		return errorf(v.Pos, `option "xmpp_role": expected server or client, found %s`, describeValue(v))
	}
	return nil
}

// Domain is a domain scope.
type Domain struct {
	Pos            Pos
	Raw            string // the name as written, e.g. "#xmpp#example.com"
	Protocol       string // "xmpp" for "#xmpp#…", "" for a plain DNS name
	Name           string // the display name: "example.com" for both forms
	Role           Role   `conf:"xmpp_role"`
	DialbackSecret string `conf:"xmpp_dialback_secret"`
	// Gateway is host:port to connect to instead of resolving the domain;
	// a gateway written without a port gets the s2s port 5269.
	Gateway string `conf:"gateway"`
	// Service is the service a hosted domain runs instead of accounts ("muc"), or "".
	Service string `conf:"xmpp_service"`
	// MUC holds the multi-user chat options when Service is "muc", else nil.
	MUC *MUCService
	// ComponentSecret, when set, makes the domain an external component's (XEP-0114): a
	// component that knows the secret may connect to a Listen and serve the domain.
	ComponentSecret string `conf:"xmpp_component_secret"`
}

// MUCService is the multi-user chat options of a domain with XMPP_Service "muc"
// (docs/muc.md): who may create rooms, the service's bounds, and the settings new rooms get.
type MUCService struct {
	RoomCreation         string        `conf:"muc_room_creation"` // anyone, local or admins
	Admins               []string      `conf:"muc_admins"`
	MaxRooms             int           `conf:"muc_max_rooms"`
	MaxOccupants         int           `conf:"muc_max_occupants"`
	HistoryLength        int           `conf:"muc_history_length"`
	MaxNickLength        int           `conf:"muc_max_nick_length"`
	MaxAffiliations      int           `conf:"muc_max_affiliations"`
	MaxRelayedIQ         int           `conf:"muc_max_relayed_iq"`
	ArchivePageSize      int           `conf:"muc_archive_page_size"`
	ArchiveMaxPage       int           `conf:"muc_archive_max_page"`
	ArchiveExpiry        time.Duration `conf:"muc_archive_expiry"` // 0 keeps messages
	DefaultMaxUsers      int           `conf:"muc_default_max_users"`
	DefaultPersistent    bool          `conf:"muc_default_persistent"`
	DefaultPublic        bool          `conf:"muc_default_public"`
	DefaultMembersOnly   bool          `conf:"muc_default_members_only"`
	DefaultModerated     bool          `conf:"muc_default_moderated"`
	DefaultWhois         string        `conf:"muc_default_whois"` // moderators or anyone
	DefaultChangeSubject bool          `conf:"muc_default_change_subject"`
	DefaultAllowInvites  bool          `conf:"muc_default_allow_invites"`
	DefaultAllowPM       string        `conf:"muc_default_allow_pm"` // anyone, participants, moderators or none
	DefaultArchive       bool          `conf:"muc_default_archive"`
	Registration         bool          `conf:"muc_registration"` // users may register with rooms (XEP-0045 §7.10)
}

// Logger is an xmpp_logger scope.
type Logger struct {
	Pos                Pos
	Name               string        // the instance name; "xmpp_logger" when none is written
	Enabled            bool          `conf:"enabled"`
	DebugLevel         DebugLevel    `conf:"debug_level"`
	Heartbeat          time.Duration `conf:"heartbeat"`
	LogDelivery        bool          `conf:"log_delivery"`
	LogDeliveryFormat  string        `conf:"log_delivery_format"`
	LogHeartbeatFormat string        `conf:"log_heartbeat_format"`
	LogReception       bool          `conf:"log_reception"`
	LogReceptionFormat string        `conf:"log_reception_format"`
	Logfile            string        `conf:"logfile"`
	Logmode            os.FileMode   `conf:"logmode"`
	Namespace          string        `conf:"namespace"`
}

// ThreadPool is a ThreadPool scope or one of Momentum's predefined pools.
type ThreadPool struct {
	Pos         Pos
	Name        string
	Concurrency int   `conf:"concurrency"`
	StackSize   int64 `conf:"stack_size"` // 0 for the system default
	Backlog     int   `conf:"backlog"`    // 0 for no bound
}

// Datasource is a Datasource scope mapped to a storage driver.
type Datasource struct {
	Pos    Pos
	Name   string
	Driver string // "sqlite" or "postgres"; "" for a Momentum driver Impetus lacks
	// DSN is the SQLite file path (relative ones are taken from the data
	// directory by [Config.Storage]) or a PostgreSQL connection string.
	DSN  string
	URIs []string `conf:"uri"` // as written
}

// Load reads and checks the configuration file at path and the files it
// includes. Warnings describe configuration that loads but has no effect.
func Load(path string) (*Config, []Warning, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("config: %s is not a regular file", path)
	}
	if fi.Size() > maxFileSize {
		return nil, nil, fmt.Errorf("config: %s is larger than %d bytes", path, maxFileSize)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, src)
}

// Parse checks the configuration src as if read from the file name; its
// includes are read from disk relative to name's directory.
func Parse(name string, src []byte) (*Config, []Warning, error) {
	return parse(name, src, osFS{})
}

func parse(name string, src []byte, fsys fileSystem) (*Config, []Warning, error) {
	ld := &loader{fsys: fsys}
	root, err := ld.parseTree(name, src)
	if err != nil {
		return nil, nil, err
	}
	var d diag
	checkTree(root, &d)
	if err := d.err(); err != nil {
		return nil, d.warnings, err
	}
	c := build(name, root, &d)
	if err := d.err(); err != nil {
		return nil, d.warnings, err
	}
	return c, d.warnings, nil
}

// decodeInto decodes a checked scope, recording errors.
func decodeInto(s *Scope, dst any, d *diag) {
	if err := s.Decode(dst); err != nil {
		if l, ok := err.(ErrorList); ok {
			for _, e := range l {
				d.add(e)
			}
			return
		}
		d.add(err)
	}
}

func build(name string, root *Scope, d *diag) *Config {
	c := &Config{File: name, Root: root}
	var listenerScope *Scope
	for _, s := range root.Children {
		if s.spec == nil {
			continue // a Momentum scope Impetus ignores
		}
		switch s.spec.Kind {
		case "xmpp":
			c.XMPP = &XMPP{Pos: s.Pos}
			decodeInto(s, c.XMPP, d)
		case "xmpp_listener":
			if c.XMPP == nil {
				if x := root.Scopes("xmpp"); len(x) > 0 {
					d.errorf(s.Pos, "xmpp_listener must come after the xmpp module, which is at %s: Momentum cannot add the listener before the module", x[0].Pos)
				} else {
					d.errorf(s.Pos, `xmpp_listener needs the xmpp module: add "xmpp {}" before it`)
				}
			}
			listenerScope = s
		case "domain":
			if dom := buildDomain(s, d); dom != nil {
				c.Domains = append(c.Domains, dom)
			}
		case "xmpp_logger":
			lg := &Logger{Pos: s.Pos, Name: s.Name}
			if !s.HasName {
				lg.Name = "xmpp_logger"
			}
			decodeInto(s, lg, d)
			c.Loggers = append(c.Loggers, lg)
		case "threadpool":
			tp := &ThreadPool{Pos: s.Pos, Name: s.Name, Concurrency: 1}
			if p, ok := predefinedPool(s.Name); ok {
				tp.Concurrency, tp.Backlog = p.Concurrency, p.Backlog
			}
			decodeInto(s, tp, d)
			c.ThreadPools = append(c.ThreadPools, tp)
		case "datasource":
			c.Datasources = append(c.Datasources, buildDatasource(s, d))
		}
	}
	if listenerScope != nil {
		before := len(d.errs)
		c.Listener = buildListener(listenerScope, root, d)
		// A dictionary that failed to decode would also read as missing.
		if len(d.errs) == before {
			checkListener(c, d)
		}
	}
	checkDomains(c, d)
	checkStorage(c, d)
	return c
}

func predefinedPool(name string) (ThreadPool, bool) {
	for _, p := range predefinedPools {
		if strings.EqualFold(p.Name, name) {
			return p, true
		}
	}
	return ThreadPool{}, false
}

// checkListener enforces the manual's rule that the listener has an
// authentication dictionary, and that the pools it names exist.
func checkListener(c *Config, d *diag) {
	l := c.Listener
	if !l.Options.Enable {
		return
	}
	hasAuth := func(o *ListenerOptions) bool { return o.AuthPlain != nil || o.AuthDigestMD5 != nil }
	if len(l.Listens) == 0 {
		if !hasAuth(&l.Options) {
			d.errorf(l.Pos, "xmpp_listener has neither AuthPlainParameters nor AuthDigestMD5Parameters; the manual requires one")
		}
		d.warnf(l.Pos, "xmpp_listener has no Listen scope, so it accepts no connections")
	}
	for _, ln := range l.Listens {
		if ln.Options.Enable && !hasAuth(&ln.Options) {
			d.errorf(ln.Pos, "xmpp_listener Listen %q has neither AuthPlainParameters nor AuthDigestMD5Parameters (in the Listen or the listener); the manual requires one", ln.Address)
		}
	}
	for _, s := range append([]*Scope{l.scope}, listenScopes(l)...) {
		o := s.Option("pool_name")
		if o == nil || o.Value.Kind != StringValue {
			continue
		}
		if _, ok := c.ThreadPool(o.Value.Str); !ok {
			d.warnf(o.Pos, "pool_name %q names no ThreadPool; Momentum falls back to the IO pool", o.Value.Str)
		}
	}
}

func listenScopes(l *Listener) []*Scope {
	out := make([]*Scope, len(l.Listens))
	for i, ln := range l.Listens {
		out[i] = ln.scope
	}
	return out
}

// ThreadPool returns the pool of that name (case-insensitively): a
// ThreadPool scope, or else one of Momentum's predefined pools.
func (c *Config) ThreadPool(name string) (ThreadPool, bool) {
	for _, p := range c.ThreadPools {
		if strings.EqualFold(p.Name, name) {
			return *p, true
		}
	}
	return predefinedPool(name)
}

// splitDomainName applies Multi Protocol Domain Naming: "#proto#name" and
// "#proto#name#extra" name a domain of another protocol than SMTP.
func splitDomainName(raw string) (proto, name string, ok bool) {
	if !strings.HasPrefix(raw, "#") {
		return "", raw, raw != ""
	}
	parts := strings.SplitN(raw[1:], "#", 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return "", "", false
	}
	return strings.ToLower(parts[0]), parts[1], true
}

func buildDomain(s *Scope, d *diag) *Domain {
	proto, name, ok := splitDomainName(s.Name)
	if !ok {
		d.errorf(s.Pos, "domain %q: expected a domain name or #protocol#name", s.Name)
		return nil
	}
	dom := &Domain{Pos: s.Pos, Raw: s.Name, Protocol: proto, Name: name}
	decodeInto(s, dom, d)
	if proto != "" && proto != "xmpp" {
		for _, n := range []string{"xmpp_role", "xmpp_dialback_secret"} {
			if o := s.Option(n); o != nil {
				d.errorf(o.Pos, "option %q is only valid on a plain or #xmpp# domain, not %q", o.Name, s.Name)
			}
		}
	}
	if dom.ComponentSecret != "" && (dom.Role != RoleNone || dom.Service != "") {
		o := s.Option("xmpp_component_secret")
		d.errorf(o.Pos, "option %q: a component domain is served by the component, so it takes no XMPP_Role or XMPP_Service", o.Name)
	}
	dom.Service = strings.ToLower(dom.Service)
	if dom.Service != "" && dom.Role != RoleServer {
		d.errorf(s.Option("xmpp_service").Pos, "option %q needs XMPP_Role = \"server\" on %q", "xmpp_service", s.Name)
	}
	if dom.Service == "muc" {
		dom.MUC = new(MUCService)
		decodeInto(s, dom.MUC, d)
	}
	if dom.Gateway != "" {
		g, msg := normalizeGateway(dom.Gateway)
		if msg != "" {
			o := s.Option("gateway")
			d.errorf(o.Value.Pos, "option %q: %s", o.Name, msg)
		}
		dom.Gateway = g
	}
	return dom
}

// normalizeGateway returns host:port, adding the s2s port when none is given.
func normalizeGateway(g string) (string, string) {
	if a, err := netip.ParseAddr(g); err == nil {
		return net.JoinHostPort(a.String(), "5269"), ""
	}
	host, port, err := net.SplitHostPort(g)
	if err != nil {
		host, port = g, "5269"
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil || port == "" || port[0] == '+' {
		return g, fmt.Sprintf("invalid port %q in gateway %q", port, g)
	}
	if _, err := netip.ParseAddr(host); err != nil && !isHostName(host) {
		return g, fmt.Sprintf("expected host[:port], found %q", g)
	}
	return net.JoinHostPort(host, port), ""
}

// checkDomains refuses two scopes that host the same XMPP domain, which
// would leave it unclear which secret and options apply.
func checkDomains(c *Config, d *diag) {
	seen := map[string]*Domain{}
	for _, dom := range c.Domains {
		if dom.Role != RoleServer {
			continue
		}
		k := strings.ToLower(dom.Name)
		if first, dup := seen[k]; dup {
			d.errorf(dom.Pos, "domain %q hosts %s, which domain %q at %s hosts already", dom.Raw, dom.Name, first.Raw, first.Pos)
			continue
		}
		seen[k] = dom
	}
}

// ComponentDomains returns the external component domains (XEP-0114) with their secrets.
func (c *Config) ComponentDomains() map[string]string {
	out := map[string]string{}
	for _, dom := range c.Domains {
		if dom.ComponentSecret != "" {
			out[strings.ToLower(dom.Name)] = dom.ComponentSecret
		}
	}
	return out
}

// HostedDomains returns the names of the domains with XMPP_Role server, the
// domains this server hosts, without any #xmpp# prefix.
func (c *Config) HostedDomains() []string {
	var out []string
	for _, dom := range c.Domains {
		if dom.Role == RoleServer {
			out = append(out, dom.Name)
		}
	}
	return out
}

// Domain returns the domain scope for an XMPP domain name, matching its
// display name case-insensitively, and preferring "#xmpp#name" to a plain
// "name" when both exist.
func (c *Config) Domain(name string) *Domain {
	var plain *Domain
	for _, dom := range c.Domains {
		if !strings.EqualFold(dom.Name, name) {
			continue
		}
		switch dom.Protocol {
		case "xmpp":
			return dom
		case "":
			if plain == nil {
				plain = dom
			}
		}
	}
	return plain
}

func buildDatasource(s *Scope, d *diag) *Datasource {
	ds := &Datasource{Pos: s.Pos, Name: s.Name}
	decodeInto(s, ds, d)
	if len(ds.URIs) == 0 {
		d.errorf(s.Pos, "Datasource %q has no uri", s.Name)
		return ds
	}
	o := s.Option("uri")
	if len(ds.URIs) > 1 {
		d.warnf(o.Pos, "Datasource %q: only the first uri is used", s.Name)
	}
	driver, dsn, msg := parseDatasourceURI(ds.URIs[0])
	if msg != "" {
		pos := o.Value.Pos
		if o.Value.Kind == ArrayValue {
			pos = o.Value.Items[0].Pos
		}
		d.errorf(pos, "Datasource %q: %s", s.Name, msg)
	}
	ds.Driver, ds.DSN = driver, dsn
	return ds
}

// parseDatasourceURI maps a Datasource uri to a driver and a DSN. A driver
// Impetus does not have yields "" and no error: the datasource may serve a
// part of Momentum Impetus does not implement; naming it as storage is the
// error.
func parseDatasourceURI(u string) (driver, dsn, msg string) {
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok || scheme == "" {
		return "", "", fmt.Sprintf("expected a uri such as sqlite:///path.db or pgsql:host=…;dbname=…, found %q", u)
	}
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite3":
		path := rest
		if strings.HasPrefix(rest, "//") {
			// sqlite:///abs/path: an empty authority, then the path.
			path = strings.TrimPrefix(rest, "//")
			if !strings.HasPrefix(path, "/") {
				return "", "", fmt.Sprintf("expected sqlite:///absolute/path.db or sqlite:relative.db, found %q", u)
			}
		}
		if path == "" {
			return "", "", fmt.Sprintf("missing database path in %q", u)
		}
		return "sqlite", path, ""
	case "pgsql":
		var kv []string
		for _, part := range strings.Split(rest, ";") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			k, v, ok := strings.Cut(part, "=")
			k = strings.TrimSpace(k)
			if !ok || !isName(k) {
				return "", "", fmt.Sprintf("expected key=value pairs separated by \";\" in %q", u)
			}
			kv = append(kv, k+"="+quoteLibpq(strings.TrimSpace(v)))
		}
		if len(kv) == 0 {
			return "", "", fmt.Sprintf("missing connection parameters in %q", u)
		}
		return "postgres", strings.Join(kv, " "), ""
	case "postgres", "postgresql":
		if _, err := url.Parse(u); err != nil {
			return "", "", fmt.Sprintf("invalid PostgreSQL url %q", u)
		}
		return "postgres", u, ""
	}
	return "", "", ""
}

// quoteLibpq quotes a value for a libpq keyword=value connection string.
func quoteLibpq(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// checkStorage makes sure the datasource xmpp's storage option names
// exists and has a driver Impetus can use.
func checkStorage(c *Config, d *diag) {
	if c.XMPP == nil || c.XMPP.Storage == "" {
		return
	}
	o := c.Root.Scopes("xmpp")[0].Option("storage")
	for _, ds := range c.Datasources {
		if strings.EqualFold(ds.Name, c.XMPP.Storage) {
			if ds.Driver == "" && len(ds.URIs) > 0 {
				d.errorf(o.Value.Pos, "option %q: Datasource %q uses %q, which Impetus cannot store in; use sqlite or pgsql", o.Name, ds.Name, ds.URIs[0])
			}
			return
		}
	}
	d.errorf(o.Value.Pos, "option %q: no Datasource named %q", o.Name, c.XMPP.Storage)
}

// DefaultDatabase is the SQLite file, in the data directory, used when the
// xmpp scope names no storage.
const DefaultDatabase = "impetus.db"

// Storage returns the datasource Impetus stores its data in: the one the
// xmpp scope's storage option names, or SQLite at dataDir/impetus.db. A
// relative SQLite path is taken from dataDir.
func (c *Config) Storage(dataDir string) Datasource {
	if c.XMPP != nil && c.XMPP.Storage != "" {
		for _, ds := range c.Datasources {
			if strings.EqualFold(ds.Name, c.XMPP.Storage) {
				out := *ds
				if out.Driver == "sqlite" && !filepath.IsAbs(out.DSN) {
					out.DSN = filepath.Join(dataDir, out.DSN)
				}
				return out
			}
		}
	}
	return Datasource{Driver: "sqlite", DSN: filepath.Join(dataDir, DefaultDatabase)}
}

// Sections returns the top-level scopes of a kind, for a feature package
// that registered the kind with [RegisterScope] to decode.
func (c *Config) Sections(kind string) []*Scope {
	return c.Root.Scopes(kind)
}
