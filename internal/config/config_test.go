package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest configuration with a working listener.
const minimal = `xmpp {}
xmpp_listener {
  AuthPlainParameters = [ uri = "file:///opt/msys/etc/passwd" ]
  Listen "*:5222" {}
}
`

func mustParse(t *testing.T, src string) (*Config, []Warning) {
	t.Helper()
	c, w, err := Parse("t.conf", []byte(src))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return c, w
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string // the whole error text
	}{
		{"unknown option with suggestion", "xmpp {}\nxmpp_listener {\n  listen_backlg = 5\n}", `t.conf:3:3: unknown option "listen_backlg" in xmpp_listener; did you mean "listen_backlog"?`},
		{"enabled on a listener", "xmpp {}\nxmpp_listener {\n  enabled = true\n}", `t.conf:3:3: option "enabled" is not valid in xmpp_listener; did you mean "enable"? (it is valid in: xmpp, xmpp_logger)`},
		{"unknown option far from any", "xmpp { colour = red }", `t.conf:1:8: unknown option "colour" in xmpp`},
		{"unknown scope with suggestion", "xmpp_listner {}", `t.conf:1:1: unknown scope "xmpp_listner" in the global scope; did you mean "xmpp_listener"?`},
		{"unknown scope", "frobnicator {}", `t.conf:1:1: unknown scope "frobnicator" in the global scope`},
		{"unknown nested scope", "xmpp {}\nxmpp_listener { Lisen \"*:1\" {} }", `t.conf:2:17: unknown scope "Lisen" in xmpp_listener; did you mean "listen"?`},
		{"authplain in peer", "xmpp {}\nxmpp_listener {\n  Peer \"10.0.0.1\" {\n    AuthPlainParameters = [ uri = \"file:///p\" ]\n  }\n}", `t.conf:4:5: option "AuthPlainParameters" is not valid in Peer "10.0.0.1" (it is valid in: xmpp_listener, listen)`},
		{"listen_backlog in peer", "xmpp {}\nxmpp_listener {\n  Peer \"10.0.0.1\" { listen_backlog = 5 }\n}", `t.conf:3:21: option "listen_backlog" is not valid in Peer "10.0.0.1" (it is valid in: xmpp_listener, listen)`},
		{"bad integer", "xmpp {}\nxmpp_listener {\n  listen_backlog = lots\n}", `t.conf:3:20: option "listen_backlog": expected a whole number, found "lots"`},
		{"negative integer", "xmpp {}\nxmpp_listener { concurrency = -1 }", `t.conf:2:31: option "concurrency": expected a whole number, found "-1"`},
		{"bad boolean", "xmpp { enabled = maybe }", `t.conf:1:18: option "enabled": expected a boolean (true, false, yes, no, on or off), found "maybe"`},
		{"bad mode", "xmpp_logger { logmode = 0999 }", `t.conf:1:25: option "logmode": expected an octal file mode such as 0644, found "0999"`},
		{"bad debug level", "xmpp { debug_level = LOUD }", `t.conf:1:22: option "debug_level": expected one of DEBUG, INFO, NOTICE, WARNING, ERROR, CRITICAL, found "LOUD"`},
		{"bad role", "domain \"d\" { XMPP_Role = master }", `t.conf:1:26: option "XMPP_Role": expected one of server, client, found "master"`},
		{"bad verify mode", "xmpp {}\nxmpp_listener { tls_verify_mode = \"optional\" }", `t.conf:2:35: option "tls_verify_mode": expected one of none, require, found "optional"`},
		{"dict where scalar wanted", "xmpp { storage = [ a = b ] }", `t.conf:1:18: option "storage": expected a value, found a dictionary`},
		{"scalar where dict wanted", "xmpp {}\nxmpp_listener { AuthPlainParameters = \"file:///p\" }", `t.conf:2:39: option "AuthPlainParameters": expected a dictionary [ key = value … ], found "file:///p"`},
		{"option twice", "xmpp {\n  enabled = true\n  Enabled = false\n}", `t.conf:3:3: option "Enabled" is set twice in xmpp (first at t.conf:2:3)`},
		{"singleton twice", "xmpp {}\nXMPP {}", `t.conf:2:1: XMPP appears twice in the global scope (first at t.conf:1:1)`},
		{"domain twice", "domain \"a.example\" {}\ndomain \"A.example\" {}", `t.conf:2:1: domain "A.example" appears twice in the global scope (first at t.conf:1:1)`},
		{"name on singleton", "xmpp \"x\" {}", `t.conf:1:1: scope "xmpp" takes no name; write xmpp { … }`},
		{"domain without name", "domain {}", `t.conf:1:1: scope "domain" needs a name; write domain "name" { … }`},
		{"listener before xmpp", "xmpp_listener {\n  AuthPlainParameters = [ uri = \"file:///p\" ]\n}\nxmpp {}", `t.conf:1:1: xmpp_listener must come after the xmpp module, which is at t.conf:4:1: Momentum cannot add the listener before the module`},
		{"listener without xmpp", "xmpp_listener { AuthPlainParameters = [ uri = \"file:///p\" ] }", `t.conf:1:1: xmpp_listener needs the xmpp module: add "xmpp {}" before it`},
		{"no auth", "xmpp {}\nxmpp_listener {\n  Listen \"*:5222\" {}\n}", `t.conf:3:3: xmpp_listener Listen "*:5222" has neither AuthPlainParameters nor AuthDigestMD5Parameters (in the Listen or the listener); the manual requires one`},
		{"no auth and no listen", "xmpp {}\nxmpp_listener {}", `t.conf:2:1: xmpp_listener has neither AuthPlainParameters nor AuthDigestMD5Parameters; the manual requires one`},
		{"auth without uri", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ log_authentication = true ] }", `t.conf:2:39: option "AuthPlainParameters": missing key "uri" naming the password store`},
		{"auth unknown key", "xmpp {}\nxmpp_listener { AuthDigestMD5Parameters = [ uri = \"digest:///p\" relm = x ] }", `t.conf:2:65: option "AuthDigestMD5Parameters": unknown key "relm"; did you mean "realm"?`},
		{"auth key twice", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a URI = b ] }", `t.conf:2:49: option "AuthPlainParameters": key "URI" is set twice`},
		{"auth bad bool", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a log_authentication = sure ] }", `t.conf:2:70: option "AuthPlainParameters": key "log_authentication": expected a boolean, found "sure"`},
		{"realm in plain", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a realm = r ] }", `t.conf:2:49: key "realm" is only valid in AuthDigestMD5Parameters`},
		{"bad listen address", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Listen \"5222\" {} }", `t.conf:3:2: Listen "5222": expected "address:port", "[ipv6]:port" or a unix socket path starting with "/"`},
		{"bad listen port", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Listen \"*:99999\" {} }", `t.conf:3:2: Listen "*:99999": invalid port "99999"`},
		{"ipv6 listen without brackets", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Listen \"::1:5222\" {} }", `t.conf:3:2: Listen "::1:5222": IPv6 addresses must be in brackets, e.g. "[::1]:5222"`},
		{"ipv4 in brackets", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Listen \"[127.0.0.1]:5222\" {} }", `t.conf:3:2: Listen "[127.0.0.1]:5222": invalid IPv6 address "127.0.0.1"`},
		{"same socket twice", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Listen \"*:5222\" {}\n Listen \":5222\" {} }", `t.conf:4:2: Listen ":5222" is the same socket as Listen "*:5222" at t.conf:3:2`},
		{"file_mode on tcp listen", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Listen \"*:5222\" { file_mode = 0600 } }", `t.conf:3:20: option "file_mode" is only valid in a Listen on a unix socket path`},
		{"bad peer", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Peer \"10.0.0.300\" {} }", `t.conf:3:2: Peer "10.0.0.300": invalid address "10.0.0.300": expected an IPv4 or IPv6 address or a CIDR block`},
		{"bad peer prefix", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Peer \"10.0.0.0/33\" {} }", `t.conf:3:2: Peer "10.0.0.0/33": invalid CIDR block "10.0.0.0/33"`},
		{"bracketed peer", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Peer \"[::1]\" {} }", `t.conf:3:2: Peer "[::1]": Peer addresses are written without brackets, e.g. 2001:db8::/32`},
		{"same peer twice", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ]\n Peer \"10.0.0.0/8\" {}\n Peer \"10.1.0.0/8\" {} }", `t.conf:4:2: Peer "10.1.0.0/8" is the same block as Peer "10.0.0.0/8" at t.conf:3:2`},
		{"bad domain name", "domain \"#xmpp\" {}", `t.conf:1:1: domain "#xmpp": expected a domain name or #protocol#name`},
		{"role on other protocol", "domain \"#smpp#air2web\" { XMPP_Role = server }", `t.conf:1:26: option "XMPP_Role" is only valid on a plain or #xmpp# domain, not "#smpp#air2web"`},
		{"hosted twice", "domain \"#xmpp#a.example\" { XMPP_Role = server }\ndomain \"a.example\" { XMPP_Role = server }", `t.conf:2:1: domain "a.example" hosts a.example, which domain "#xmpp#a.example" at t.conf:1:1 hosts already`},
		{"bad gateway", "domain \"d\" { Gateway = \"a b:1\" }", `t.conf:1:24: option "Gateway": expected host[:port], found "a b:1"`},
		{"bad gateway port", "domain \"d\" { Gateway = \"h:x\" }", `t.conf:1:24: option "Gateway": invalid port "x" in gateway "h:x"`},
		{"unknown storage", "xmpp { storage = nope }", `t.conf:1:18: option "storage": no Datasource named "nope"`},
		{"unsupported storage", "xmpp { storage = ecdb }\nDatasource \"ecdb\" { uri = ( \"mysql:host=x\" ) }", `t.conf:1:18: option "storage": Datasource "ecdb" uses "mysql:host=x", which Impetus cannot store in; use sqlite or pgsql`},
		{"datasource without uri", "Datasource \"d\" {}", `t.conf:1:1: Datasource "d" has no uri`},
		{"bad sqlite uri", "Datasource \"d\" { uri = ( \"sqlite://host/x.db\" ) }", `t.conf:1:26: Datasource "d": expected sqlite:///absolute/path.db or sqlite:relative.db, found "sqlite://host/x.db"`},
		{"bad pgsql uri", "Datasource \"d\" { uri = ( \"pgsql:host\" ) }", `t.conf:1:26: Datasource "d": expected key=value pairs separated by ";" in "pgsql:host"`},
		{"several errors", "xmpp { enabled = x\n debug_level = y }", "t.conf:1:18: option \"enabled\": expected a boolean (true, false, yes, no, on or off), found \"x\"\nt.conf:2:16: option \"debug_level\": expected one of DEBUG, INFO, NOTICE, WARNING, ERROR, CRITICAL, found \"y\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse("t.conf", []byte(tt.src))
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"none", minimal, nil},
		{"accepted listener option", "xmpp {}\nxmpp_listener {\n  AuthPlainParameters = [ uri = a ]\n  Listen \"*:5222\" { proxy_protocol = true }\n}",
			[]string{`t.conf:4:21: option "proxy_protocol" is a Momentum option Impetus does not implement yet; it has no effect`}},
		{"accepted domain option", "domain \"d\" {\n  max_outbound_connections = 40\n}",
			[]string{`t.conf:2:3: option "max_outbound_connections" is a Momentum option Impetus does not implement yet; it has no effect`}},
		{"momentum scope", "esmtp_listener {\n  Listen \":25\" { anything = goes }\n}\nDebug_Flags { ERROR = (TIME FD) }",
			[]string{`t.conf:1:1: scope "esmtp_listener" is a Momentum scope Impetus does not implement; its contents are ignored`,
				`t.conf:4:1: scope "Debug_Flags" is a Momentum scope Impetus does not implement; its contents are ignored`}},
		{"unknown pool", "xmpp {}\nxmpp_listener {\n  AuthPlainParameters = [ uri = a ]\n  pool_name = \"nopool\"\n  Listen \"*:1\" { pool_name = IO }\n}",
			[]string{`t.conf:4:3: pool_name "nopool" names no ThreadPool; Momentum falls back to the IO pool`}},
		{"defined pool", "ThreadPool p { concurrency = 2 }\nxmpp {}\nxmpp_listener {\n  AuthPlainParameters = [ uri = a ]\n  pool_name = P\n  Listen \"*:1\" {}\n}", nil},
		{"no listen", "xmpp {}\nxmpp_listener { AuthPlainParameters = [ uri = a ] }",
			[]string{`t.conf:2:1: xmpp_listener has no Listen scope, so it accepts no connections`}},
		{"several uris", "Datasource \"d\" { uri = ( \"sqlite:a.db\" \"sqlite:b.db\" ) }",
			[]string{`t.conf:1:18: Datasource "d": only the first uri is used`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, w := mustParse(t, tt.src)
			var got []string
			for _, x := range w {
				got = append(got, x.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestTypedSections(t *testing.T) {
	c, _ := mustParse(t, `
xmpp { Debug_Level = "notice" enabled = no storage = pg }
Datasource "pg" { uri = ( "pgsql:host=db.example;port=5432;dbname=xmpp;user=impetus;password=p w" ) }
Datasource "lite" { uri = "sqlite:///var/lib/impetus/x.db" }
Datasource "rel" { uri = ( "sqlite:rel.db" ) }
Datasource "url" { uri = ( "postgres://u:p@h/db?sslmode=disable" ) }
Datasource "ecdb" { uri = ( "odbc:dsn=x" ) }
domain "#xmpp#Example.COM" { XMPP_Role = SERVER XMPP_Dialback_Secret = "s\"1" }
domain "plain.example" { xmpp_role = "server" }
domain "#xmpp#remote.example" { XMPP_Role = client Gateway = "gw.example" }
domain "#xmpp#v6.example" { XMPP_Role = client Gateway = "[2001:db8::1]:5270" }
domain "smtp.example" { max_outbound_connections = 4 }
domain "#smpp#txt#air2web" {}
xmpp_logger { logmode = 600 heartbeat = 0 log_delivery = off }
xmpp_logger "two" {}
ThreadPool IO { Backlog = 7 }
ThreadPool "mine" { stack_size = 64k }
`)
	t.Run("xmpp", func(t *testing.T) {
		want := XMPP{Pos: Pos{"t.conf", 2, 1}, Enabled: false, DebugLevel: LevelNotice, Storage: "pg", MaxRosterItems: 1000, MaxOfflineMessages: 100,
			S2SRemoteDomains: "all", S2SDialbackWithoutValidCert: true, S2SIdleTime: 600 * time.Second, S2SConnectTimeout: 30 * time.Second, S2SMaxQueue: 1000,
			MAMDefault: "always", MAMPurgeInterval: time.Hour, MAMDefaultPage: 50, MAMMaxPage: 250, MAMMaxScan: 5000}
		if *c.XMPP != want {
			t.Errorf("got %+v, want %+v", *c.XMPP, want)
		}
	})
	t.Run("datasources", func(t *testing.T) {
		want := []struct{ name, driver, dsn string }{
			{"pg", "postgres", "host=db.example port=5432 dbname=xmpp user=impetus password='p w'"},
			{"lite", "sqlite", "/var/lib/impetus/x.db"},
			{"rel", "sqlite", "rel.db"},
			{"url", "postgres", "postgres://u:p@h/db?sslmode=disable"},
			{"ecdb", "", ""},
		}
		for i, w := range want {
			d := c.Datasources[i]
			if d.Name != w.name || d.Driver != w.driver || d.DSN != w.dsn {
				t.Errorf("datasource %d: got %q %q %q, want %q %q %q", i, d.Name, d.Driver, d.DSN, w.name, w.driver, w.dsn)
			}
		}
	})
	t.Run("storage", func(t *testing.T) {
		if got := c.Storage("/data"); got.Driver != "postgres" || got.Name != "pg" {
			t.Errorf("got %+v", got)
		}
		c2, _ := mustParse(t, "xmpp { storage = rel }\nDatasource \"rel\" { uri = ( \"sqlite:rel.db\" ) }")
		if got := c2.Storage("/data"); got.DSN != filepath.Join("/data", "rel.db") || got.Driver != "sqlite" {
			t.Errorf("relative: got %+v", got)
		}
		c3, _ := mustParse(t, "xmpp {}")
		if got := c3.Storage("/data"); got.DSN != "/data/impetus.db" || got.Driver != "sqlite" {
			t.Errorf("default: got %+v", got)
		}
	})
	t.Run("domains", func(t *testing.T) {
		want := []Domain{
			{Pos: Pos{"t.conf", 8, 1}, Raw: "#xmpp#Example.COM", Protocol: "xmpp", Name: "Example.COM", Role: RoleServer, DialbackSecret: `s"1`},
			{Pos: Pos{"t.conf", 9, 1}, Raw: "plain.example", Name: "plain.example", Role: RoleServer},
			{Pos: Pos{"t.conf", 10, 1}, Raw: "#xmpp#remote.example", Protocol: "xmpp", Name: "remote.example", Role: RoleClient, Gateway: "gw.example:5269"},
			{Pos: Pos{"t.conf", 11, 1}, Raw: "#xmpp#v6.example", Protocol: "xmpp", Name: "v6.example", Role: RoleClient, Gateway: "[2001:db8::1]:5270"},
			{Pos: Pos{"t.conf", 12, 1}, Raw: "smtp.example", Name: "smtp.example"},
			{Pos: Pos{"t.conf", 13, 1}, Raw: "#smpp#txt#air2web", Protocol: "smpp", Name: "txt"},
		}
		if len(c.Domains) != len(want) {
			t.Fatalf("got %d domains", len(c.Domains))
		}
		for i := range want {
			if *c.Domains[i] != want[i] {
				t.Errorf("domain %d: got %+v, want %+v", i, *c.Domains[i], want[i])
			}
		}
		if got := c.HostedDomains(); !reflect.DeepEqual(got, []string{"Example.COM", "plain.example"}) {
			t.Errorf("HostedDomains = %q", got)
		}
		if d := c.Domain("example.com"); d == nil || d.Raw != "#xmpp#Example.COM" {
			t.Errorf("Domain(example.com) = %+v", d)
		}
		if d := c.Domain("nowhere.example"); d != nil {
			t.Errorf("Domain(nowhere.example) = %+v", d)
		}
	})
	t.Run("loggers", func(t *testing.T) {
		want := []Logger{
			{Pos: Pos{"t.conf", 14, 1}, Name: "xmpp_logger", Enabled: true, DebugLevel: LevelError, Heartbeat: 0, LogDelivery: false,
				LogDeliveryFormat: "%t+D+%st+%at+%af+%ai+%ay+%H", LogHeartbeatFormat: "%t+M", LogReception: true,
				LogReceptionFormat: "%t+R+%st+%at+%af+%ai+%ay+%H", Logfile: "/var/log/ecelerity/xmpplog.ec", Logmode: 0o600,
				Namespace: "xmpp_logger,sieve,custom_logger"},
			{Pos: Pos{"t.conf", 15, 1}, Name: "two", Enabled: true, DebugLevel: LevelError, Heartbeat: 60 * time.Second, LogDelivery: true,
				LogDeliveryFormat: "%t+D+%st+%at+%af+%ai+%ay+%H", LogHeartbeatFormat: "%t+M", LogReception: true,
				LogReceptionFormat: "%t+R+%st+%at+%af+%ai+%ay+%H", Logfile: "/var/log/ecelerity/xmpplog.ec", Logmode: 0o644,
				Namespace: "xmpp_logger,sieve,custom_logger"},
		}
		for i := range want {
			if *c.Loggers[i] != want[i] {
				t.Errorf("logger %d:\ngot  %+v\nwant %+v", i, *c.Loggers[i], want[i])
			}
		}
	})
	t.Run("thread pools", func(t *testing.T) {
		tests := []struct {
			name string
			want ThreadPool
			ok   bool
		}{
			{"io", ThreadPool{Pos: Pos{"t.conf", 16, 1}, Name: "IO", Concurrency: 50, Backlog: 7}, true},
			{"mine", ThreadPool{Pos: Pos{"t.conf", 17, 1}, Name: "mine", Concurrency: 1, StackSize: 64 << 10}, true},
			{"unlink", ThreadPool{Name: "Unlink", Concurrency: 6, Backlog: 100}, true},
			{"other", ThreadPool{}, false},
		}
		for _, tt := range tests {
			got, ok := c.ThreadPool(tt.name)
			if ok != tt.ok || got != tt.want {
				t.Errorf("ThreadPool(%q) = %+v %v, want %+v %v", tt.name, got, ok, tt.want, tt.ok)
			}
		}
	})
}

func TestBooleans(t *testing.T) {
	for _, v := range []string{"true", "TRUE", `"yes"`, "on", "On"} {
		c, _ := mustParse(t, "xmpp { enabled = "+v+" }")
		if !c.XMPP.Enabled {
			t.Errorf("%s: got false", v)
		}
	}
	for _, v := range []string{"false", `"False"`, "no", "OFF"} {
		c, _ := mustParse(t, "xmpp { enabled = "+v+" }")
		if c.XMPP.Enabled {
			t.Errorf("%s: got true", v)
		}
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestIncludes(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    string // tree, or the error with "DIR" for the directory
		wantErr bool
	}{
		{"file", map[string]string{"main.conf": `a = 1 include "sub/b.conf" c = 3`, "sub/b.conf": "b = 2"}, `a="1" b="2" c="3"`, false},
		{"relative to the including file", map[string]string{"main.conf": `include "sub/b.conf"`, "sub/b.conf": `include "c.conf"`, "sub/c.conf": "c = 3"}, `c="3"`, false},
		{"inside a scope", map[string]string{"main.conf": `xmpp_listener { readonly_include "l.conf" }`, "l.conf": `Listen "*:1" {}`}, `xmpp_listener{Listen"*:1"{}}`, false},
		{"directory in lexical order, hidden and subdirectories skipped", map[string]string{
			"main.conf": `include "conf.d"`, "conf.d/20-b.conf": "b = 2", "conf.d/10-a.conf": "a = 1",
			"conf.d/.hidden.conf": "hidden = 1", "conf.d/sub/x.conf": "x = 1"}, `a="1" b="2"`, false},
		{"same file twice is fine", map[string]string{"main.conf": `include "b.conf" include "b.conf"`, "b.conf": "b = 2"}, `b="2" b="2"`, false},
		{"absolute path", map[string]string{"main.conf": `include "DIR/b.conf"`, "b.conf": "b = 2"}, `b="2"`, false},
		{"cycle", map[string]string{"main.conf": `include "b.conf"`, "b.conf": `x = 1 include "main.conf"`},
			`DIR/b.conf:1:15: include "main.conf": include cycle: DIR/main.conf -> DIR/b.conf -> DIR/main.conf`, true},
		{"self", map[string]string{"main.conf": "\n  include main.conf"},
			`DIR/main.conf:2:11: include "main.conf": include cycle: DIR/main.conf -> DIR/main.conf`, true},
		{"missing", map[string]string{"main.conf": `include "nope.conf"`},
			`DIR/main.conf:1:9: include "nope.conf": DIR/nope.conf: no such file or directory`, true},
		{"error in included file names that file", map[string]string{"main.conf": "a = 1\ninclude \"b.conf\"", "b.conf": "\n\nb = "},
			`DIR/b.conf:3:5: expected a value for "b", found end of file`, true},
		{"unbalanced included file", map[string]string{"main.conf": "x {\ninclude \"b.conf\"\n}", "b.conf": "}"},
			`DIR/b.conf:1:1: unexpected "}" with no scope open`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			main := filepath.Join(dir, "main.conf")
			src := strings.ReplaceAll(tt.files["main.conf"], "DIR", dir)
			if err := os.WriteFile(main, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			ld := &loader{fsys: osFS{}}
			root, err := ld.parseTree(main, []byte(src))
			want := strings.ReplaceAll(tt.want, "DIR", dir)
			if tt.wantErr {
				if err == nil || err.Error() != want {
					t.Errorf("got  %v\nwant %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := treeString(root); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestIncludePositions(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"impetus.conf": "xmpp {}\nxmpp_listener {\n  include \"auth.conf\"\n  Listen \"*:5222\" {}\n}\n",
		"auth.conf":    "# auth\nAuthPlainParameters = [ uri = \"file:///p\" ]\nidle_tme = 5\n",
	})
	_, _, err := Load(filepath.Join(dir, "impetus.conf"))
	want := filepath.Join(dir, "auth.conf") + `:3:1: unknown option "idle_tme" in xmpp_listener; did you mean "idle_time"?`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestLoad(t *testing.T) {
	if _, _, err := Load("testdata/does-not-exist.conf"); err == nil || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("missing file: %v", err)
	}
	if _, _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
}
