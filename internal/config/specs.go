package config

// The option tables of the scopes Impetus implements. A feature adds an
// option by adding a row here (and, for the typed sections, a tagged field
// to the struct that holds it); the checking, defaults, warnings and dump
// follow from the row.

// Where a listener option is valid. The manual's tables list the scopes per
// option; a Peer inside a Listen takes the same options as a Peer directly
// under the listener.
const (
	atGlobal = 1 << iota
	atListener
	atListen
	atPeer
)

type listenerRow struct {
	OptionSpec
	at int
}

// listenerRows is the xmpp_listener table of the manual (Table 10.1), the
// options other pages list for xmpp_listener, and the Impetus extensions.
//
// The extensions, valid at listener, Listen and Peer level:
//
//   - max_stanza_size: the largest stanza, in bytes, a peer may send before
//     the stream is closed with a policy-violation error. 256 KiB matches
//     what common XMPP servers allow and leaves room for avatars in vCards.
//   - allow_plain_without_tls: offer SASL PLAIN on a stream that has not
//     negotiated TLS. Off by default because PLAIN sends the password in
//     clear; Momentum itself only offers PLAIN with TLS (BZ5825).
//   - max_xml_depth: the deepest element nesting allowed inside a stanza,
//     the stanza itself counting as 1. Real stanzas rarely pass 10 levels;
//     32 stops nesting attacks on the parser without refusing real traffic.
var listenerRows = []listenerRow{
	{OptionSpec{Name: "accept_queue_backlog", Type: TypeInt, Default: "0", Doc: "the accept queue backlog"}, atListener | atListen},
	{OptionSpec{Name: "authdigestmd5parameters", Type: TypeDict, Doc: "DIGEST-MD5 authentication: uri, realm, stored_cleartext, log_authentication"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "authplainparameters", Type: TypeDict, Doc: "PLAIN authentication: uri, log_authentication"}, atListener | atListen},
	{OptionSpec{Name: "concurrency", Type: TypeInt, Default: "0", Doc: "threads that accept connections; above 1 accepts run on pool_name"}, atListener | atListen},
	{OptionSpec{Name: "disable_nagle_algorithm", Type: TypeBool, Default: "false", Doc: "set TCP_NODELAY on accepted sockets"}, atGlobal | atListener | atListen},
	// enable is not in the manual's Peer list, but a Peer scope that refuses its network
	// (enable = false) is how Impetus expresses an ACL that denies.
	{OptionSpec{Name: "enable", Type: TypeBool, Default: "true", Doc: "enable the listener, this Listen, or connections from this Peer"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "events_per_iter", Type: TypeInt, Default: "0", Doc: "accepted connections dispatched per scheduler iteration (below 1 means 1)"}, atListener | atListen},
	// file_mode is listener-level in the manual's table, but its own example
	// sets it in a Listen on a unix socket path, so Listen accepts it there.
	{OptionSpec{Name: "file_mode", Type: TypeMode, Default: "0660", Doc: "permissions of a unix socket"}, atListener | atListen},
	{OptionSpec{Name: "idle_time", Type: TypeDuration, Default: "0", Doc: "seconds of inactivity before a client is disconnected; 0 never"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "idle_release_time", Type: TypeDuration, Default: "1", Doc: "seconds without input after which a bound client connection gives up its goroutine and read buffer until input arrives; 0 never (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "listen_backlog", Type: TypeInt, Default: "500", Doc: "the listen(2) backlog"}, atListener | atListen},
	{OptionSpec{Name: "pool_name", Type: TypeString, Doc: "ThreadPool that runs threaded accepts"}, atListener | atListen},
	{OptionSpec{Name: "tcp_recv_buffer_size", Type: TypeSize, Default: "4096", Doc: "SO_RCVBUF; 0 lets the system choose"}, atListener | atListen},
	{OptionSpec{Name: "tcp_send_buffer_size", Type: TypeSize, Default: "4096", Doc: "SO_SNDBUF; 0 lets the system choose"}, atListener | atListen},
	{OptionSpec{Name: "tls_certificate", Type: TypeString, Doc: `PEM certificate (may hold the key too); "none" cancels a parent's`}, atListener | atListen | atPeer},
	{OptionSpec{Name: "tls_ciphers", Type: TypeString, Doc: "OpenSSL cipher list"}, atGlobal | atListener | atListen | atPeer},
	{OptionSpec{Name: "tls_client_ca", Type: TypeString, Doc: "PEM bundle of CAs trusted for client certificates"}, atGlobal | atListener | atListen | atPeer},
	{OptionSpec{Name: "tls_key", Type: TypeString, Doc: "PEM key when the certificate file holds none"}, atGlobal | atListener | atListen | atPeer},
	{OptionSpec{Name: "tls_verify_mode", Type: TypeString, Values: []string{"none", "require"}, Doc: "client certificates: unset verifies if presented, none ignores, require demands"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "tls_allow_renegotiation", Type: TypeBool, Default: "true", Status: Accepted, Doc: "allow TLS renegotiation"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "proxy_protocol", Type: TypeBool, Default: "false", Status: Accepted, Doc: "expect a PROXY protocol header"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "proxy_protocol_timeout", Type: TypeDuration, Default: "60", Status: Accepted, Doc: "seconds to wait for the PROXY header"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "max_stanza_size", Type: TypeSize, Default: "262144", Doc: "largest stanza in bytes (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "allow_plain_without_tls", Type: TypeBool, Default: "false", Doc: "offer SASL PLAIN before TLS (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "max_xml_depth", Type: TypeInt, Default: "32", Doc: "deepest element nesting in a stanza (Impetus)"}, atListener | atListen | atPeer},
	// The hardening limits (docs/security.md gives each default and what exceeding it does).
	{OptionSpec{Name: "max_xml_attributes", Type: TypeInt, Default: "64", Doc: "attributes per element, namespace declarations included (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "max_attribute_length", Type: TypeSize, Default: "16384", Doc: "longest attribute value in bytes (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "handshake_timeout", Type: TypeDuration, Default: "30", Doc: "seconds from connect until TLS, SASL and resource binding must be done (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "max_connections", Type: TypeInt, Default: "10000", Doc: "open connections on all sockets together; 0 means no bound (Impetus)"}, atListener | atListen},
	{OptionSpec{Name: "max_connections_per_ip", Type: TypeInt, Default: "100", Doc: "open connections from one IP address; 0 means no bound (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "read_rate", Type: TypeSize, Default: "50000", Doc: "bytes per second read from one connection; 0 means no shaping (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "read_burst", Type: TypeSize, Default: "100000", Doc: "bytes one connection may send at once above read_rate (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "max_auth_failures", Type: TypeInt, Default: "5", Doc: "failed SASL attempts before a stream is closed; 0 means no bound (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "auth_failures_per_ip", Type: TypeInt, Default: "10", Doc: "failed authentications from one IP address within auth_failure_window before it is throttled; 0 means no bound (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "auth_failures_per_account", Type: TypeInt, Default: "20", Doc: "failed authentications of one account within auth_failure_window before it is throttled; 0 means no bound (Impetus)"}, atListener | atListen},
	{OptionSpec{Name: "auth_failure_window", Type: TypeDuration, Default: "300", Doc: "seconds a failed authentication counts against its IP address and account (Impetus)"}, atListener | atListen},
	{OptionSpec{Name: "auth_failure_delay", Type: TypeDuration, Default: "2", Doc: "seconds a throttled authentication attempt waits before its failure is sent (Impetus)"}, atListener | atListen | atPeer},
	{OptionSpec{Name: "tls", Type: TypeString, Default: "starttls", Values: []string{"starttls", "direct"}, Doc: "starttls offers STARTTLS in the stream; direct does the TLS handshake first, with ALPN xmpp-client and xmpp-server (XEP-0368) (Impetus)"}, atListener | atListen},
	{OptionSpec{Name: "max_resources_per_account", Type: TypeInt, Default: "10", Doc: "resources one account may bind at once; 0 means no bound (Impetus)"}, atListener | atListen},
	{OptionSpec{Name: "max_outbound_queue", Type: TypeSize, Default: "1048576", Doc: "bytes waiting to be sent to one client before it is disconnected (Impetus)"}, atListener | atListen | atPeer},
}

func listenerOptions(at int) []OptionSpec {
	var out []OptionSpec
	for _, r := range listenerRows {
		if r.at&at != 0 {
			out = append(out, r.OptionSpec)
		}
	}
	return out
}

// ModuleOptions returns the rows of the options every Momentum module has,
// enabled and debug_level, for a feature package to start its table with.
func ModuleOptions() []OptionSpec {
	return []OptionSpec{
		{Name: "enabled", Type: TypeBool, Default: "true", Doc: "false loads the module in passive mode"},
		{Name: "debug_level", Type: TypeString, Default: "ERROR", Values: debugLevelNames[:], Doc: "least severe message logged"},
	}
}

// predefinedPools are Momentum's built-in thread pools and their defaults.
var predefinedPools = []ThreadPool{
	{Name: "SwapOut", Concurrency: 5},
	{Name: "SwapIn", Concurrency: 5},
	{Name: "Unlink", Concurrency: 6, Backlog: 100},
	{Name: "Batch_Unlink", Concurrency: 4},
	{Name: "Close", Concurrency: 0},
	{Name: "CPU", Concurrency: 4},
	{Name: "IO", Concurrency: 50},
	{Name: "SpoolIn", Concurrency: 1},
}

func newGlobalSpec() *ScopeSpec {
	peer := &ScopeSpec{Kind: "peer", Name: NameRequired, Doc: "options for clients whose address is in a CIDR block", Options: listenerOptions(atPeer)}
	listen := &ScopeSpec{Kind: "listen", Name: NameRequired, Doc: "one socket of the listener", Options: listenerOptions(atListen), Scopes: []*ScopeSpec{peer}}
	global := &ScopeSpec{
		Kind: "global",
		Options: append(listenerOptions(atGlobal),
			OptionSpec{Name: "local_changes_file", Type: TypeString, Status: Accepted},
			OptionSpec{Name: "local_changes_only", Type: TypeBool, Status: Accepted},
			OptionSpec{Name: "max_outbound_connections", Type: TypeInt, Status: Accepted},
			OptionSpec{Name: "spool_base", Type: TypeString, Status: Accepted},
		),
		Scopes: []*ScopeSpec{
			{Kind: "xmpp", Singleton: true, Doc: "the XMPP module", Options: append(ModuleOptions(),
				OptionSpec{Name: "storage", Type: TypeString, Doc: "Datasource holding users' data; default SQLite impetus.db in the data directory (Impetus)"},
				OptionSpec{Name: "max_roster_items", Type: TypeInt, Default: "1000", Doc: "items one roster may hold; 0 means no bound (Impetus)"},
				OptionSpec{Name: "max_offline_messages", Type: TypeInt, Default: "100", Doc: "messages kept for one offline user; 0 means no bound (Impetus)"},
				OptionSpec{Name: "control_socket", Type: TypeString, Doc: `path of the impetus ctl socket; default control.sock in the data directory, "none" for no socket (Impetus)`},
				OptionSpec{Name: "metrics_listen", Type: TypeString, Doc: "host:port serving Prometheus metrics at /metrics; unset for none (Impetus)"},
				OptionSpec{Name: "metrics_pprof", Type: TypeBool, Default: "false", Doc: "also serve Go runtime profiles at /debug/pprof/ on metrics_listen (Impetus)"},
				// Federation (docs/federation.md).
				OptionSpec{Name: "s2s_remote_domains", Type: TypeString, Default: "all", Values: []string{"all", "listed"}, Doc: "remote domains reached and accepted: all, or only XMPP_Role client domains (Impetus)"},
				OptionSpec{Name: "s2s_dialback_without_valid_cert", Type: TypeBool, Default: "true", Doc: "allow dialback from peers whose certificate does not validate (Impetus)"},
				OptionSpec{Name: "s2s_ca_file", Type: TypeString, Doc: "PEM CAs for peer certificates; default the system roots (Impetus)"},
				OptionSpec{Name: "s2s_idle_time", Type: TypeDuration, Default: "600", Doc: "seconds before an unused server stream is closed; 0 never (Impetus)"},
				OptionSpec{Name: "s2s_connect_timeout", Type: TypeDuration, Default: "30", Doc: "seconds to set up one server stream or dialback check (Impetus)"},
				OptionSpec{Name: "s2s_max_queue", Type: TypeInt, Default: "1000", Doc: "stanzas waiting for one outbound stream being set up (Impetus)"},
				// Message archives (docs/mam.md).
				OptionSpec{Name: "mam_default", Type: TypeString, Default: "always", Values: []string{"always", "roster", "never"}, Doc: "what a user's archive keeps until the user sets preferences: always, roster or never (Impetus)"},
				OptionSpec{Name: "mam_retention", Type: TypeInt, Default: "0", Doc: "days archived messages are kept; 0 keeps them forever (Impetus)"},
				OptionSpec{Name: "mam_purge_interval", Type: TypeDuration, Default: "3600", Doc: "seconds between removals of messages past mam_retention (Impetus)"},
				OptionSpec{Name: "mam_default_page", Type: TypeInt, Default: "50", Doc: "archive query results when the client gives no max (Impetus)"},
				OptionSpec{Name: "mam_max_page", Type: TypeInt, Default: "250", Doc: "most archive query results in one page (Impetus)"},
				OptionSpec{Name: "mam_max_scan", Type: TypeInt, Default: "5000", Doc: "archived messages one query examines for a full-JID with filter (Impetus)"})},
			{Kind: "xmpp_listener", Singleton: true, Doc: "accepts XMPP client and server streams", Options: listenerOptions(atListener), Scopes: []*ScopeSpec{listen, peer}},
			{Kind: "domain", Name: NameRequired, Doc: "a domain; #xmpp#name names an XMPP one", Options: []OptionSpec{
				{Name: "xmpp_role", Type: TypeString, Values: []string{"server", "client"}, Doc: "server: hosted here; client: remote, reached over s2s"},
				{Name: "xmpp_dialback_secret", Type: TypeString, Doc: "secret for server dialback keys"},
				{Name: "gateway", Type: TypeString, Doc: "host[:port] to connect to instead of resolving the domain"},
				{Name: "max_outbound_connections", Type: TypeInt, Status: Accepted},
				{Name: "max_resident_active_queue", Type: TypeInt, Status: Accepted},
				{Name: "tls", Type: TypeString, Values: []string{"no", "ifavailable", "required"}, Status: Accepted},
				{Name: "tls_verify", Type: TypeString, Values: []string{"no", "ca", "host"}, Status: Accepted},
				{Name: "tls_ca", Type: TypeString, Status: Accepted},
				{Name: "tls_certificate", Type: TypeString, Status: Accepted},
				{Name: "tls_key", Type: TypeString, Status: Accepted},
				{Name: "tls_ciphers", Type: TypeString, Status: Accepted},
				// A service domain (docs/muc.md) runs one service instead of hosting accounts.
				{Name: "xmpp_component_secret", Type: TypeString, Doc: "makes the domain an external component's (XEP-0114): the shared secret of its handshake; the domain takes no XMPP_Role (Impetus)"},
				{Name: "xmpp_service", Type: TypeString, Values: []string{"muc"}, Doc: "the service this XMPP_Role server domain runs instead of accounts: muc (Impetus)"},
				{Name: "muc_room_creation", Type: TypeString, Default: "local", Values: []string{"anyone", "local", "admins"}, Doc: "who may create rooms: anyone, accounts of hosted domains, or muc_admins only (Impetus)"},
				{Name: "muc_admins", Type: TypeArray, Doc: "bare JIDs that own every room of the service and may always create rooms (Impetus)"},
				{Name: "muc_max_rooms", Type: TypeInt, Default: "10000", Doc: "rooms the service holds at once; 0 means no bound (Impetus)"},
				{Name: "muc_max_occupants", Type: TypeInt, Default: "200", Doc: "occupants of one room, the ceiling of its maxusers setting; 0 means no bound (Impetus)"},
				{Name: "muc_history_length", Type: TypeInt, Default: "20", Doc: "messages kept for the discussion history sent on join (Impetus)"},
				{Name: "muc_max_nick_length", Type: TypeInt, Default: "64", Doc: "longest room nickname in bytes (Impetus)"},
				{Name: "muc_max_affiliations", Type: TypeInt, Default: "1000", Doc: "affiliations (owners, admins, members, outcasts) one room may hold; 0 means no bound (Impetus)"},
				{Name: "muc_max_relayed_iq", Type: TypeInt, Default: "256", Doc: "iq requests one room relays to occupants and awaits answers to; past it the oldest is forgotten (Impetus)"},
				{Name: "muc_archive_page_size", Type: TypeInt, Default: "50", Doc: "room archive results per page when the client asks for no size (Impetus)"},
				{Name: "muc_archive_max_page", Type: TypeInt, Default: "250", Doc: "most room archive results per page (Impetus)"},
				{Name: "muc_archive_expiry", Type: TypeDuration, Default: "0", Doc: "seconds a room archive keeps a message; 0 keeps it until the room is destroyed (Impetus)"},
				{Name: "muc_default_max_users", Type: TypeInt, Default: "100", Doc: "maxusers of a new room (Impetus)"},
				{Name: "muc_default_persistent", Type: TypeBool, Default: "false", Doc: "new rooms outlive their last occupant (Impetus)"},
				{Name: "muc_default_public", Type: TypeBool, Default: "true", Doc: "new rooms are listed in the service's disco items (Impetus)"},
				{Name: "muc_default_members_only", Type: TypeBool, Default: "false", Doc: "new rooms admit members only (Impetus)"},
				{Name: "muc_default_moderated", Type: TypeBool, Default: "false", Doc: "new rooms give visitors no voice (Impetus)"},
				{Name: "muc_default_whois", Type: TypeString, Default: "moderators", Values: []string{"moderators", "anyone"}, Doc: "who sees occupants' real JIDs in new rooms (Impetus)"},
				{Name: "muc_default_change_subject", Type: TypeBool, Default: "false", Doc: "participants of new rooms may change the subject (Impetus)"},
				{Name: "muc_default_allow_invites", Type: TypeBool, Default: "false", Doc: "participants of new rooms may send mediated invitations (Impetus)"},
				{Name: "muc_default_allow_pm", Type: TypeString, Default: "anyone", Values: []string{"anyone", "participants", "moderators", "none"}, Doc: "who may send private messages in new rooms (Impetus)"},
				{Name: "muc_default_archive", Type: TypeBool, Default: "true", Doc: "new rooms keep a message archive (XEP-0313) (Impetus)"},
				{Name: "muc_registration", Type: TypeBool, Default: "true", Doc: "users may register with rooms to become members and reserve a nickname (XEP-0045 §7.10) (Impetus)"},
			}},
			{Kind: "xmpp_logger", Name: NameOptional, Doc: "logs XMPP receptions and deliveries", Options: append(ModuleOptions(),
				OptionSpec{Name: "heartbeat", Type: TypeDuration, Default: "60", Doc: "seconds between heartbeat entries; 0 disables them"},
				OptionSpec{Name: "log_delivery", Type: TypeBool, Default: "true"},
				OptionSpec{Name: "log_delivery_format", Type: TypeString, Default: "%t+D+%st+%at+%af+%ai+%ay+%H"},
				OptionSpec{Name: "log_heartbeat_format", Type: TypeString, Default: "%t+M"},
				OptionSpec{Name: "log_reception", Type: TypeBool, Default: "true"},
				OptionSpec{Name: "log_reception_format", Type: TypeString, Default: "%t+R+%st+%at+%af+%ai+%ay+%H"},
				OptionSpec{Name: "logfile", Type: TypeString, Default: "/var/log/ecelerity/xmpplog.ec"},
				OptionSpec{Name: "logmode", Type: TypeMode, Default: "0644"},
				OptionSpec{Name: "namespace", Type: TypeString, Default: "xmpp_logger,sieve,custom_logger", Doc: "macro namespaces, searched in order"},
			)},
			{Kind: "threadpool", Name: NameRequired, Doc: "a pool of threads", Options: []OptionSpec{
				{Name: "concurrency", Type: TypeInt, Doc: "threads in the pool; a new pool has 1, a predefined one its own default"},
				{Name: "stack_size", Type: TypeSize, Default: "0", Doc: "stack size of each thread"},
				{Name: "backlog", Type: TypeInt, Doc: "queued jobs before producers block; 0 unbounded"},
			}},
			{Kind: "datasource", Name: NameRequired, Doc: "a database", Options: []OptionSpec{
				{Name: "uri", Type: TypeArray, Doc: `sqlite:///abs.db, sqlite:rel.db, pgsql:host=…;dbname=… or postgres://…`},
				{Name: "cache_size", Type: TypeInt, Status: Accepted},
				{Name: "cache_life", Type: TypeInt, Status: Accepted},
				{Name: "no_cache", Type: TypeBool, Status: Accepted},
			}},
		},
	}
	return global
}
