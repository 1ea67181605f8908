package config

import (
	"net/netip"
	"testing"
	"time"
)

func TestListenAddresses(t *testing.T) {
	tests := []struct {
		name, in, network, addr string
	}{
		{"star", "*:5222", "tcp4", "0.0.0.0:5222"},
		{"empty host", ":5222", "tcp4", "0.0.0.0:5222"},
		{"ipv6 star", "[*]:5222", "tcp6", "[::]:5222"},
		{"ipv6 any", "[::]:5222", "tcp6", "[::]:5222"},
		{"ipv6 zeros", "[0:0:0:0:0:0:0:0]:25", "tcp6", "[::]:25"},
		{"ipv4", "127.0.0.1:5222", "tcp4", "127.0.0.1:5222"},
		{"ipv6 loopback", "[::1]:5222", "tcp6", "[::1]:5222"},
		{"ipv4 compatible", "[::192.168.0.1]:25", "tcp6", "[::c0a8:1]:25"},
		{"ipv6 upper case", "[::C0A8:1]:25", "tcp6", "[::c0a8:1]:25"},
		{"ipv6 full", "[fd82:7796:815b:af9d:230:48ff:fef2:aa4a]:587", "tcp6", "[fd82:7796:815b:af9d:230:48ff:fef2:aa4a]:587"},
		{"unix", "/tmp/2025", "unix", "/tmp/2025"},
		{"host name", "localhost:5222", "tcp", "localhost:5222"},
		{"port zero", "127.0.0.1:0", "tcp4", "127.0.0.1:0"},
		{"leading zero port", "*:05222", "tcp4", "0.0.0.0:5222"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, a, msg := parseListenAddress(tt.in)
			if msg != "" || n != tt.network || a != tt.addr {
				t.Errorf("got %q %q %q, want %q %q", n, a, msg, tt.network, tt.addr)
			}
		})
	}
	for _, bad := range []string{"", "*", "5222", "*:", "*:x", "*:-1", "*:+1", "[::1]", "[::1]5222", "::1:5222", "[1.2.3.4]:1", "bad_host:1", "[*:1"} {
		t.Run("bad "+bad, func(t *testing.T) {
			if n, a, msg := parseListenAddress(bad); msg == "" {
				t.Errorf("accepted as %q %q", n, a)
			}
		})
	}
}

func TestPeerAddresses(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.0.0.1", "10.0.0.1/32"},
		{"10.0.0.0/16", "10.0.0.0/16"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"::1", "::1/128"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"fd82:7796:815b:af9d::", "fd82:7796:815b:af9d::/128"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, msg := parsePeerAddress(tt.in)
			if msg != "" || p.String() != tt.want {
				t.Errorf("got %v %q, want %s", p, msg, tt.want)
			}
		})
	}
}

const resolution = `
tls_ciphers = "GLOBAL"
tls_key = "/global.key"
xmpp {}
xmpp_listener {
  AuthPlainParameters = [ uri = "file:///listener" ]
  idle_time = 1
  tls_ciphers = "LISTENER"
  tls_certificate = "/listener.pem"
  max_stanza_size = 1k
  Peer "10.0.0.0/8" {
    idle_time = 2
    tls_verify_mode = none
    tls_certificate = none
  }
  Peer "10.1.0.0/16" {
    idle_time = 3
  }
  Peer "2001:db8::/32" {
    idle_time = 4
  }
  Peer "127.0.0.0/8" {
    idle_time = 5
  }
  Listen "*:5222" {
    tls_verify_mode = require
    Peer "10.1.2.3" {
      idle_time = 6
      AuthDigestMD5Parameters = [ uri = "digest:///peer" realm = "r" stored_cleartext = yes ]
    }
    Peer "10.0.0.0/8" {
      max_stanza_size = 2048
    }
  }
  Listen "[::]:5222" {
    idle_time = 7
  }
  Listen "/tmp/impetus.sock" {
    file_mode = 0600
  }
}
`

func TestEffective(t *testing.T) {
	c, _ := mustParse(t, resolution)
	l := c.Listener
	ln4, ln6, unix := l.Listens[0], l.Listens[1], l.Listens[2]
	addr := netip.MustParseAddr
	tests := []struct {
		name   string
		listen *Listen
		peer   netip.Addr
		check  func(o ListenerOptions) bool
	}{
		{"listener level", nil, addr("192.0.2.1"), func(o ListenerOptions) bool {
			return o.IdleTime == time.Second && o.TLSCiphers == "LISTENER" && o.TLSKey == "/global.key" && o.TLSVerifyMode == VerifyUnset &&
				o.AuthPlain.URI == "file:///listener" && o.AuthDigestMD5 == nil && o.ListenBacklog == 500 && o.MaxStanzaSize == 1024
		}},
		{"peer in listener beats listener", nil, addr("10.9.9.9"), func(o ListenerOptions) bool {
			return o.IdleTime == 2*time.Second && o.TLSVerifyMode == VerifyNone && o.TLSCertificate == ""
		}},
		{"longest prefix wins", nil, addr("10.1.9.9"), func(o ListenerOptions) bool {
			return o.IdleTime == 3*time.Second && o.TLSVerifyMode == VerifyUnset && o.TLSCertificate == "/listener.pem"
		}},
		{"listen beats peer in listener", ln4, addr("10.9.9.9"), func(o ListenerOptions) bool {
			return o.TLSVerifyMode == VerifyRequire && o.IdleTime == 2*time.Second && o.MaxStanzaSize == 2048
		}},
		{"peer in listen beats listen", ln4, addr("10.1.2.3"), func(o ListenerOptions) bool {
			return o.IdleTime == 6*time.Second && o.TLSVerifyMode == VerifyRequire &&
				*o.AuthDigestMD5 == AuthParams{URI: "digest:///peer", Realm: "r", StoredCleartext: true} && o.AuthPlain != nil
		}},
		{"listen without matching peer", ln4, addr("192.0.2.1"), func(o ListenerOptions) bool {
			return o.IdleTime == time.Second && o.TLSVerifyMode == VerifyRequire && o.MaxStanzaSize == 1024
		}},
		{"ipv6 peer", nil, addr("2001:db8::5"), func(o ListenerOptions) bool { return o.IdleTime == 4*time.Second }},
		{"ipv6 listen beats ipv6 peer", ln6, addr("2001:db8::5"), func(o ListenerOptions) bool { return o.IdleTime == 7*time.Second }},
		{"ipv4-mapped peer", nil, addr("::ffff:10.1.0.1"), func(o ListenerOptions) bool { return o.IdleTime == 3*time.Second }},
		{"unix socket is loopback", unix, netip.Addr{}, func(o ListenerOptions) bool {
			return o.IdleTime == 5*time.Second && o.FileMode == 0o600
		}},
		{"invalid address is loopback", nil, netip.Addr{}, func(o ListenerOptions) bool { return o.IdleTime == 5*time.Second }},
		{"defaults", nil, addr("192.0.2.1"), func(o ListenerOptions) bool {
			return o.Enable && !o.DisableNagle && o.TLSAllowRenegotiation && !o.ProxyProtocol && o.ProxyProtocolTimeout == time.Minute &&
				o.TCPRecvBufferSize == 4096 && o.TCPSendBufferSize == 4096 && o.FileMode == 0o660 && o.MaxXMLDepth == 32 &&
				!o.AllowPlainWithoutTLS && o.AcceptQueueBacklog == 0 && o.Concurrency == 0 && o.EventsPerIter == 0
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := l.Effective(tt.listen, tt.peer)
			if !tt.check(o) {
				t.Errorf("unexpected options %+v", o)
			}
		})
	}
	t.Run("listen options", func(t *testing.T) {
		if ln4.Network != "tcp4" || ln4.Addr != "0.0.0.0:5222" || ln4.Options.TLSVerifyMode != VerifyRequire || ln4.Options.IdleTime != time.Second {
			t.Errorf("ln4 %+v", ln4)
		}
		if unix.Network != "unix" || unix.Options.FileMode != 0o600 {
			t.Errorf("unix %+v", unix)
		}
	})
}

func TestDefaultsMatchTable(t *testing.T) {
	// Every row's default must decode; a typo in the table would otherwise
	// leave a zero value silently.
	for _, r := range listenerRows {
		if _, ok := listenerFields()[r.Name]; !ok {
			t.Errorf("row %s has no ListenerOptions field", r.Name)
		}
		if r.Default != "" {
			if msg := checkValue(&r.OptionSpec, Value{Kind: StringValue, Str: r.Default}); msg != "" {
				t.Errorf("row %s: %s", r.Name, msg)
			}
		}
	}
	if n := len(listenerFields()); n != len(listenerRows) {
		t.Errorf("%d fields for %d rows", n, len(listenerRows))
	}
}
