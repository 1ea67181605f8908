package config

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// roundTrip checks that the dump of c parses, dumps to the same text, and
// yields the same typed configuration.
func roundTrip(t *testing.T, c *Config) {
	t.Helper()
	out := c.Dump()
	c2, _, err := Parse(c.File, []byte(out))
	if err != nil {
		t.Fatalf("dump does not parse: %v\n%s", err, out)
	}
	if out2 := c2.Dump(); out2 != out {
		t.Fatalf("dump is not stable:\n%s\n----\n%s", out, out2)
	}
	if !sameConfig(c, c2) {
		t.Errorf("dump parses to a different configuration:\n%s", out)
	}
}

// sameConfig compares the typed parts of two configurations, ignoring
// positions and the raw tree.
func sameConfig(a, b *Config) bool {
	norm := func(c *Config) []any {
		var out []any
		if c.XMPP != nil {
			x := *c.XMPP
			x.Pos = Pos{}
			out = append(out, x)
		}
		for _, d := range c.Domains {
			x := *d
			x.Pos = Pos{}
			out = append(out, x)
		}
		for _, l := range c.Loggers {
			x := *l
			x.Pos = Pos{}
			out = append(out, x)
		}
		for _, p := range c.ThreadPools {
			x := *p
			x.Pos = Pos{}
			out = append(out, x)
		}
		for _, d := range c.Datasources {
			x := *d
			x.Pos = Pos{}
			out = append(out, x)
		}
		if l := c.Listener; l != nil {
			peers := []netip.Addr{{}, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.1.2.3"),
				netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("127.0.0.1")}
			listens := append([]*Listen{nil}, l.Listens...)
			for _, ln := range listens {
				if ln != nil {
					out = append(out, ln.Address, ln.Network, ln.Addr)
				}
				for _, p := range peers {
					out = append(out, l.Effective(ln, p))
				}
			}
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func TestDumpRoundTrip(t *testing.T) {
	sources := []struct{ name, src string }{
		{"minimal", minimal},
		{"resolution", resolution},
		{"escapes", "xmpp {}\nxmpp_listener {\n AuthPlainParameters = [ uri = \"file:///a \\\"b\\\" \\\\c \\d\" ]\n Listen \"/tmp/a b\" {}\n}\ndomain \"#xmpp#x\" { xmpp_dialback_secret = \"#{}[]()=\\n\" }"},
		{"momentum scopes kept", "esmtp_listener { Listen \":25\" { Relay_Hosts = ( 127.0.0.0/8 ) map = [ a = [ b = c ] ] } }"},
		{"normalised values", "xmpp { enabled = YES }\nxmpp_logger { logmode = 600 heartbeat = 010 }\nThreadPool p { stack_size = 1M }"},
		{"tls_certificate none", "xmpp {}\nxmpp_listener {\n AuthPlainParameters = [ uri = a ]\n tls_certificate = none\n Listen \"*:1\" { tls_certificate = /c.pem }\n}"},
	}
	for _, s := range sources {
		t.Run(s.name, func(t *testing.T) {
			c, _ := mustParse(t, s.src)
			roundTrip(t, c)
		})
	}
	files, _ := filepath.Glob("../../testdata/config/*.conf")
	if len(files) == 0 {
		t.Fatal("no sample files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, _, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c)
		})
	}
}

func TestDumpContent(t *testing.T) {
	c, _ := mustParse(t, "tls_key = /g.key\n"+minimal)
	out := c.Dump()
	for _, want := range []string{
		"tls_key = \"/g.key\"\n",
		"xmpp {\n  enabled = true\n  debug_level = \"ERROR\"\n  # storage is not set\n  max_roster_items = 1000\n  max_offline_messages = 100\n  # control_socket is not set\n  # metrics_listen is not set\n  metrics_pprof = false\n  s2s_remote_domains = \"all\"\n  s2s_dialback_without_valid_cert = true\n  # s2s_ca_file is not set\n  s2s_idle_time = 600\n  s2s_connect_timeout = 30\n  s2s_max_queue = 1000\n  mam_default = \"always\"\n  mam_retention = 0\n  mam_purge_interval = 3600\n  mam_default_page = 50\n  mam_max_page = 250\n  mam_max_scan = 5000\n}\n",
		"  listen_backlog = 500\n",
		"  tls_key = \"/g.key\"\n", // the listener shows the global fallback
		"  # tls_verify_mode is not set\n",
		"  max_stanza_size = 262144\n",
		"  Listen \"*:5222\" {}\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dump lacks %q:\n%s", want, out)
		}
	}
}

func TestSampleFiles(t *testing.T) {
	tests := []struct {
		file     string
		warnings int
		check    func(c *Config) bool
	}{
		{"impetus.conf", 0, func(c *Config) bool {
			return len(c.Listener.Listens) == 4 && c.Storage("/d").DSN == "/d/impetus.db" && c.HostedDomains()[0] == "example.com"
		}},
		{"manual-xmpp.conf", 1, func(c *Config) bool {
			return c.Listener.Options.AuthPlain.URI == "file:///opt/msys/etc/passwd" && c.Domains[0].Role == RoleClient
		}},
		{"manual-momentum.conf", 7, func(c *Config) bool {
			o := c.Listener.Effective(c.Listener.Listens[0], netip.MustParseAddr("10.0.0.1"))
			off := c.Listener.Listens[6]
			return o.TLSVerifyMode == VerifyNone && o.AuthDigestMD5.Realm == "my choice of realm" && o.TLSCiphers == "DEFAULT:!LOW:!EXP" &&
				o.DisableNagle && !off.Options.Enable && off.Options.Concurrency == 4 && c.XMPP.DebugLevel == LevelDebug &&
				c.Storage("/d").Driver == "postgres"
		}},
		{"includes.conf", 0, func(c *Config) bool {
			return c.Listener.Options.AuthPlain.URI == "file:///etc/impetus/passwd" && len(c.Domains) == 1
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, w, err := Load(filepath.Join("../../testdata/config", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(w) != tt.warnings {
				t.Errorf("%d warnings, want %d: %v", len(w), tt.warnings, w)
			}
			if !tt.check(c) {
				t.Errorf("unexpected configuration:\n%s", c.Dump())
			}
		})
	}
}
