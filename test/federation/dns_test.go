package federation

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a tiny authoritative DNS server on a loopback UDP port for ejabberd, whose
// Erlang resolver is pointed at it through inetrc. ejabberd looks up SRV records with Erlang's
// resolver but addresses with the system's getaddrinfo, which would ask the machine's name
// server; so each test domain gets a _xmpp-server._tcp SRV record whose target is its IP
// address literal, which getaddrinfo turns into an address without any query.
type dnsServer struct {
	conn  *net.UDPConn
	hosts map[string]netip.Addr // lower-case FQDN with the trailing dot
}

func startDNS(t *testing.T, hosts map[string]string) *dnsServer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{conn: c, hosts: make(map[string]netip.Addr)}
	for name, addr := range hosts {
		s.hosts[strings.ToLower(name)+"."] = netip.MustParseAddr(addr)
	}
	t.Cleanup(func() { c.Close() })
	go s.serve()
	return s
}

func (s *dnsServer) port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

func (s *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if out := s.answer(buf[:n]); out != nil {
			_, _ = s.conn.WriteToUDP(out, from)
		}
	}
}

// answer builds the reply to one query: the A record of a known name, the SRV record of its
// _xmpp-server._tcp name, NXDOMAIN for everything else (_xmpps-server included).
func (s *dnsServer) answer(q []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	question, err := p.Question()
	if err != nil {
		return nil
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	name := strings.ToLower(question.Name.String())
	srvHost, isSRV := strings.CutPrefix(name, "_xmpp-server._tcp.")
	if isSRV {
		name = srvHost
	}
	addr, known := s.hosts[name]
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(question)
	_ = b.StartAnswers()
	rr := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 60}
	switch {
	case known && isSRV && question.Type == dnsmessage.TypeSRV:
		target, err := dnsmessage.NewName(addr.String() + ".")
		if err != nil {
			return nil
		}
		_ = b.SRVResource(rr, dnsmessage.SRVResource{Priority: 0, Weight: 0, Port: 5269, Target: target})
	case known && !isSRV && question.Type == dnsmessage.TypeA:
		_ = b.AResource(rr, dnsmessage.AResource{A: addr.As4()})
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}
