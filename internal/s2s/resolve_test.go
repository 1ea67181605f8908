package s2s

import (
	"context"
	"net"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// srvZone answers SRV queries from a fixed table and NXDOMAIN for everything else.
func srvZone(t *testing.T, zone map[string][]dnsmessage.SRVResource) *net.Resolver {
	t.Helper()
	return dnsZone(t, zone, nil)
}

// dnsZone answers SRV and A queries from fixed tables (names lower case with the final dot),
// and NXDOMAIN for everything else.
func dnsZone(t *testing.T, zone map[string][]dnsmessage.SRVResource, hosts map[string][4]byte) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			recs, ok := zone[strings.ToLower(q.Name.String())]
			addr, isHost := hosts[strings.ToLower(q.Name.String())]
			rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
			switch {
			case ok && q.Type == dnsmessage.TypeSRV, isHost && q.Type == dnsmessage.TypeA:
			case isHost:
				// The name exists without records of this type (AAAA).
			default:
				rh.RCode = dnsmessage.RCodeNameError
			}
			b := dnsmessage.NewBuilder(nil, rh)
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			if isHost && q.Type == dnsmessage.TypeA {
				_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: addr})
			}
			if rh.RCode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeSRV {
				for _, r := range recs {
					_ = b.SRVResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, r)
				}
			}
			out, _ := b.Finish()
			_, _ = pc.WriteTo(out, from)
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

func TestTargets(t *testing.T) {
	name := func(s string) dnsmessage.Name { return dnsmessage.MustNewName(s) }
	r := srvZone(t, map[string][]dnsmessage.SRVResource{
		"_xmpps-server._tcp.both.test.": {{Priority: 10, Port: 5270, Target: name("tls.both.test.")}},
		"_xmpp-server._tcp.both.test.": {
			{Priority: 5, Port: 5269, Target: name("first.both.test.")},
			{Priority: 10, Port: 5269, Target: name("plain.both.test.")},
		},
		"_xmpps-server._tcp.none.test.": {{Target: name(".")}},
		"_xmpp-server._tcp.none.test.":  {{Target: name(".")}},
	})
	m := New(Config{Resolver: r})
	defer m.Close(0)
	got := m.targets(context.Background(), "both.test")
	want := []target{{"first.both.test.", 5269, false}, {"tls.both.test.", 5270, true}, {"plain.both.test.", 5269, false}}
	if len(got) != len(want) {
		t.Fatalf("targets = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("targets = %+v, want %+v", got, want)
		}
	}
	// No SRV records: the domain itself on 5269, where the dialer tries AAAA and A.
	if got := m.targets(context.Background(), "plain.test"); len(got) != 1 || got[0] != (target{"plain.test", 5269, false}) {
		t.Fatalf("fallback = %+v", got)
	}
	// "." in both services: no XMPP service at all.
	if got := m.targets(context.Background(), "none.test"); len(got) != 0 {
		t.Fatalf("declined = %+v", got)
	}
}

// A Gateway is dialed as given, IPv4 or IPv6.
func TestConnectGateway(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if strings.HasPrefix(addr, "[") {
				t.Logf("no IPv6 loopback here: %v", err)
				continue
			}
			t.Fatal(err)
		}
		accepted := make(chan struct{})
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
			close(accepted)
		}()
		m := New(Config{Gateway: func(d string) string {
			if d == "gw.test" {
				return ln.Addr().String()
			}
			return ""
		}})
		c, err := m.connect(context.Background(), "gw.test")
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		c.Close()
		<-accepted
		ln.Close()
		m.Close(0)
	}
}
