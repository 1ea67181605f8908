package config

import (
	"fmt"
	"io/fs"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ListenerOptions holds every xmpp_listener option with its resolved value.
// Field tags name the options, which is how the table rows in specs.go find
// their fields.
type ListenerOptions struct {
	AcceptQueueBacklog    int           `conf:"accept_queue_backlog"`
	AuthDigestMD5         *AuthParams   `conf:"authdigestmd5parameters"` // nil when not configured
	AuthPlain             *AuthParams   `conf:"authplainparameters"`     // nil when not configured
	Concurrency           int           `conf:"concurrency"`
	DisableNagle          bool          `conf:"disable_nagle_algorithm"`
	Enable                bool          `conf:"enable"`
	EventsPerIter         int           `conf:"events_per_iter"`
	FileMode              fs.FileMode   `conf:"file_mode"`
	IdleTime              time.Duration `conf:"idle_time"`         // 0 never disconnects
	IdleReleaseTime       time.Duration `conf:"idle_release_time"` // 0 keeps a goroutine per connection
	ListenBacklog         int           `conf:"listen_backlog"`
	PoolName              string        `conf:"pool_name"`
	TCPRecvBufferSize     int           `conf:"tcp_recv_buffer_size"` // 0 lets the system choose
	TCPSendBufferSize     int           `conf:"tcp_send_buffer_size"` // 0 lets the system choose
	TLSCertificate        string        `conf:"tls_certificate"`      // "" when unset or set to "none"
	TLSCiphers            string        `conf:"tls_ciphers"`
	TLSClientCA           string        `conf:"tls_client_ca"`
	TLSKey                string        `conf:"tls_key"`
	TLSVerifyMode         TLSVerifyMode `conf:"tls_verify_mode"`
	TLSAllowRenegotiation bool          `conf:"tls_allow_renegotiation"`
	ProxyProtocol         bool          `conf:"proxy_protocol"`
	ProxyProtocolTimeout  time.Duration `conf:"proxy_protocol_timeout"`
	MaxStanzaSize         int64         `conf:"max_stanza_size"`
	AllowPlainWithoutTLS  bool          `conf:"allow_plain_without_tls"`
	MaxXMLDepth           int           `conf:"max_xml_depth"`
	// The hardening limits; docs/security.md describes each.
	MaxXMLAttributes       int           `conf:"max_xml_attributes"`
	MaxAttributeLength     int           `conf:"max_attribute_length"`
	HandshakeTimeout       time.Duration `conf:"handshake_timeout"`
	MaxConnections         int           `conf:"max_connections"`
	MaxConnectionsPerIP    int           `conf:"max_connections_per_ip"`
	ReadRate               int           `conf:"read_rate"`
	ReadBurst              int           `conf:"read_burst"`
	MaxAuthFailures        int           `conf:"max_auth_failures"`
	AuthFailuresPerIP      int           `conf:"auth_failures_per_ip"`
	AuthFailuresPerAccount int           `conf:"auth_failures_per_account"`
	AuthFailureWindow      time.Duration `conf:"auth_failure_window"`
	AuthFailureDelay       time.Duration `conf:"auth_failure_delay"`
	MaxResourcesPerAccount int           `conf:"max_resources_per_account"`
	MaxOutboundQueue       int           `conf:"max_outbound_queue"`
	// TLS is "starttls" or "direct" (XEP-0368: TLS before the stream on a dedicated port).
	TLS string `conf:"tls"`
}

// TLSVerifyMode is the tls_verify_mode option.
type TLSVerifyMode string

// The values of tls_verify_mode. When it is not set, a client certificate is
// optional and verified if presented.
const (
	VerifyUnset   TLSVerifyMode = ""
	VerifyNone    TLSVerifyMode = "none"    // any certificate is ignored
	VerifyRequire TLSVerifyMode = "require" // a valid certificate is required
)

// UnmarshalConfig reads "none" or "require", in any case.
func (m *TLSVerifyMode) UnmarshalConfig(v Value) error {
	switch strings.ToLower(v.Str) {
	case "none":
		*m = VerifyNone
	case "require":
		*m = VerifyRequire
	default:
		return errorf(v.Pos, `option "tls_verify_mode": expected none or require, found %q`, v.Str)
	}
	return nil
}

// AuthParams is the dictionary of AuthPlainParameters or
// AuthDigestMD5Parameters.
type AuthParams struct {
	URI               string // file:///path, digest:///path or scheme:// of an auth_ds scheme
	Realm             string // DIGEST-MD5 only; empty means the server's host name
	StoredCleartext   bool   // DIGEST-MD5 only: the store holds clear-text passwords
	LogAuthentication bool
}

// UnmarshalConfig reads the dictionary. Keys are case-insensitive; unknown
// or repeated keys and a missing uri are errors.
func (a *AuthParams) UnmarshalConfig(v Value) error {
	if v.Kind != DictValue {
		return errorf(v.Pos, "expected a dictionary [ uri = … ], found %s", describeValue(v))
	}
	var out AuthParams
	seen := map[string]bool{}
	for _, e := range v.Entries {
		k := strings.ToLower(e.Key)
		if seen[k] {
			return errorf(e.Pos, "key %q is set twice", e.Key)
		}
		seen[k] = true
		if e.Value.Kind != StringValue {
			return errorf(e.Value.Pos, "key %q: expected a plain value, found %s", e.Key, describeValue(e.Value))
		}
		s := e.Value.Str
		switch k {
		case "uri":
			out.URI = s
		case "realm":
			out.Realm = s
		case "stored_cleartext", "log_authentication":
			b, ok := parseBool(s)
			if !ok {
				return errorf(e.Value.Pos, "key %q: expected a boolean, found %q", e.Key, s)
			}
			if k == "stored_cleartext" {
				out.StoredCleartext = b
			} else {
				out.LogAuthentication = b
			}
		default:
			msg := fmt.Sprintf("unknown key %q; the keys are uri, realm, stored_cleartext and log_authentication", e.Key)
			if c := closest(e.Key, []string{"uri", "realm", "stored_cleartext", "log_authentication"}); c != "" {
				msg = fmt.Sprintf("unknown key %q; did you mean %q?", e.Key, c)
			}
			return errorf(e.Pos, "%s", msg)
		}
	}
	if out.URI == "" {
		return errorf(v.Pos, `missing key "uri" naming the password store`)
	}
	*a = out
	return nil
}

// Listener is the typed xmpp_listener scope.
type Listener struct {
	Pos     Pos
	Options ListenerOptions // listener level: defaults, then global, then the listener's own
	Listens []*Listen
	Peers   []*Peer // Peer scopes directly under the listener
	scope   *Scope
}

// Listen is one Listen scope: a socket of the listener.
type Listen struct {
	Pos     Pos
	Address string          // as written, e.g. "*:5222" or "/tmp/xmpp.sock"
	Network string          // "tcp4", "tcp6", "tcp" (a host name) or "unix"
	Addr    string          // address for net.Listen, e.g. "0.0.0.0:5222"
	Options ListenerOptions // the listener's options overridden by this Listen's, no Peer applied
	Peers   []*Peer
	layer   layer
	scope   *Scope
}

// Peer is a Peer scope: options for clients whose address is in Prefix.
type Peer struct {
	Pos     Pos
	Address string // as written
	Prefix  netip.Prefix
	layer   layer
}

// Effective returns the options for a connection from peer accepted on
// listen, resolved the way Momentum does: Peer inside the Listen, then the
// Listen, then Peer under the listener, then the listener, then global, then
// the default. Among Peer scopes at one level the longest matching prefix
// wins. A connection on a unix socket, or an invalid peer address, counts
// as loopback (127.0.0.1 or ::1), as Momentum maps it. listen may be nil.
func (l *Listener) Effective(listen *Listen, peer netip.Addr) ListenerOptions {
	o := l.Options
	var cands []netip.Addr
	if !peer.IsValid() || listen != nil && listen.Network == "unix" {
		cands = []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}
	} else {
		cands = []netip.Addr{peer.Unmap()}
	}
	if p := bestPeer(l.Peers, cands); p != nil {
		p.layer.apply(&o)
	}
	if listen != nil {
		listen.layer.apply(&o)
		if p := bestPeer(listen.Peers, cands); p != nil {
			p.layer.apply(&o)
		}
	}
	fixup(&o)
	return o
}

// fixup applies the special value "none" of tls_certificate, which cancels
// a certificate a parent scope set.
func fixup(o *ListenerOptions) {
	if strings.EqualFold(o.TLSCertificate, "none") {
		o.TLSCertificate = ""
	}
}

func bestPeer(peers []*Peer, cands []netip.Addr) *Peer {
	var best *Peer
	for _, p := range peers {
		for _, a := range cands {
			if p.Prefix.Contains(a) && (best == nil || p.Prefix.Bits() > best.Prefix.Bits()) {
				best = p
			}
		}
	}
	return best
}

// layer is the options one scope sets, decoded once at load so that
// resolving a connection's options does no parsing.
type layer []layerSet

type layerSet struct {
	field int
	val   reflect.Value
}

func (ly layer) apply(o *ListenerOptions) {
	rv := reflect.ValueOf(o).Elem()
	for _, s := range ly {
		rv.Field(s.field).Set(s.val)
	}
}

// listenerFields maps option names to ListenerOptions field indexes.
var listenerFields = sync.OnceValue(func() map[string]int {
	m := map[string]int{}
	t := reflect.TypeFor[ListenerOptions]()
	for i := 0; i < t.NumField(); i++ {
		m[t.Field(i).Tag.Get("conf")] = i
	}
	return m
})

// listenerDefaults decodes the Default column of listenerRows.
var listenerDefaults = sync.OnceValue(func() ListenerOptions {
	var o ListenerOptions
	rv := reflect.ValueOf(&o).Elem()
	for _, r := range listenerRows {
		if r.Default == "" {
			continue
		}
		if i, ok := listenerFields()[r.Name]; ok {
			_ = decodeField(rv.Field(i), &r.OptionSpec, Value{Kind: StringValue, Str: r.Default})
		}
	}
	return o
})

// buildLayer decodes the listener options s sets.
func buildLayer(s *Scope, d *diag) layer {
	var ly layer
	fields := listenerFields()
	t := reflect.TypeFor[ListenerOptions]()
	for _, o := range s.Options {
		name := strings.ToLower(o.Name)
		i, ok := fields[name]
		if !ok || s.spec == nil || s.spec.Option(name) == nil {
			continue
		}
		if name == "authplainparameters" {
			for _, k := range []string{"realm", "stored_cleartext"} {
				if e, ok := o.Value.Lookup(k); ok {
					d.errorf(e.Pos, "key %q is only valid in AuthDigestMD5Parameters", e.Key)
				}
			}
		}
		v := reflect.New(t.Field(i).Type).Elem()
		if err := decodeField(v, s.spec.Option(name), o.Value); err != nil {
			if e, ok := err.(*Error); ok {
				e.Msg = fmt.Sprintf("option %q: %s", o.Name, e.Msg)
				d.add(e)
			} else {
				d.errorf(o.Value.Pos, "option %q: %v", o.Name, err)
			}
			continue
		}
		ly = append(ly, layerSet{field: i, val: v})
	}
	return ly
}

// parseListenAddress turns a Listen address into a network and an address
// for net.Listen. Forms: "*:5222" and ":5222" (IPv4 wildcard), "[*]:5222"
// and "[::]:5222" (IPv6 wildcard), "127.0.0.1:5222", "[::1]:5222", a host
// name with a port (network "tcp"), and a unix socket path starting with /.
func parseListenAddress(s string) (network, addr, errMsg string) {
	if strings.HasPrefix(s, "/") {
		return "unix", s, ""
	}
	var host, port string
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 || !strings.HasPrefix(s[end+1:], ":") {
			return "", "", `expected "[address]:port"`
		}
		host, port = s[1:end], s[end+2:]
	} else {
		i := strings.LastIndex(s, ":")
		if i < 0 {
			return "", "", `expected "address:port", "[ipv6]:port" or a unix socket path starting with "/"`
		}
		host, port = s[:i], s[i+1:]
		if strings.Contains(host, ":") {
			return "", "", `IPv6 addresses must be in brackets, e.g. "[::1]:5222"`
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || port == "" || port[0] == '+' {
		return "", "", fmt.Sprintf("invalid port %q", port)
	}
	port = strconv.FormatUint(n, 10)
	if strings.HasPrefix(s, "[") {
		if host == "*" {
			return "tcp6", "[::]:" + port, ""
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return "", "", fmt.Sprintf("invalid IPv6 address %q", host)
		}
		return "tcp6", "[" + a.String() + "]:" + port, ""
	}
	if host == "" || host == "*" {
		return "tcp4", "0.0.0.0:" + port, ""
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return "tcp4", a.String() + ":" + port, ""
	}
	if !isHostName(host) {
		return "", "", fmt.Sprintf("invalid address %q", host)
	}
	return "tcp", host + ":" + port, ""
}

// isHostName reports whether s looks like a DNS name.
func isHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return false
			}
		}
	}
	return true
}

// parsePeerAddress reads a Peer name: an address or a CIDR block, IPv6
// written without brackets. Host bits set in a CIDR block are ignored.
func parsePeerAddress(s string) (netip.Prefix, string) {
	if strings.HasPrefix(s, "[") {
		return netip.Prefix{}, "Peer addresses are written without brackets, e.g. 2001:db8::/32"
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Sprintf("invalid CIDR block %q", s)
		}
		return p.Masked(), ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Sprintf("invalid address %q: expected an IPv4 or IPv6 address or a CIDR block", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), ""
}

// buildListener decodes the xmpp_listener scope s; global is the global
// scope, whose options are the last fallback.
func buildListener(s, global *Scope, d *diag) *Listener {
	l := &Listener{Pos: s.Pos, scope: s}
	l.Options = listenerDefaults()
	buildLayer(global, d).apply(&l.Options)
	buildLayer(s, d).apply(&l.Options)
	l.Peers = buildPeers(s, d)
	seen := map[string]*Listen{}
	for _, c := range s.Scopes("listen") {
		network, addr, msg := parseListenAddress(c.Name)
		if msg != "" {
			d.errorf(c.Pos, "Listen %q: %s", c.Name, msg)
			continue
		}
		key := network + " " + addr
		if first, dup := seen[key]; dup {
			d.errorf(c.Pos, "Listen %q is the same socket as Listen %q at %s", c.Name, first.Address, first.Pos)
			continue
		}
		ln := &Listen{Pos: c.Pos, Address: c.Name, Network: network, Addr: addr, scope: c}
		seen[key] = ln
		if o := c.Option("file_mode"); o != nil && network != "unix" {
			d.errorf(o.Pos, `option %q is only valid in a Listen on a unix socket path`, o.Name)
		}
		ln.layer = buildLayer(c, d)
		ln.Options = l.Options
		ln.layer.apply(&ln.Options)
		fixup(&ln.Options)
		ln.Peers = buildPeers(c, d)
		l.Listens = append(l.Listens, ln)
	}
	fixup(&l.Options)
	return l
}

func buildPeers(s *Scope, d *diag) []*Peer {
	var out []*Peer
	seen := map[netip.Prefix]*Peer{}
	for _, c := range s.Scopes("peer") {
		pfx, msg := parsePeerAddress(c.Name)
		if msg != "" {
			d.errorf(c.Pos, "Peer %q: %s", c.Name, msg)
			continue
		}
		if first, dup := seen[pfx]; dup {
			d.errorf(c.Pos, "Peer %q is the same block as Peer %q at %s", c.Name, first.Address, first.Pos)
			continue
		}
		p := &Peer{Pos: c.Pos, Address: c.Name, Prefix: pfx, layer: buildLayer(c, d)}
		seen[pfx] = p
		out = append(out, p)
	}
	return out
}
