package federation

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a tiny authoritative DNS server on a loopback UDP port for ejabberd, whose
// Erlang resolver is pointed at it through inetrc: A records for the test domains and no SRV
// records, so ejabberd falls back to port 5269 at once and no query leaves the machine.
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

// answer builds the reply to one query: the A record of a known name, an empty answer for
// other types of a known name, NXDOMAIN for everything else.
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
	addr, known := s.hosts[strings.ToLower(question.Name.String())]
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(question)
	_ = b.StartAnswers()
	if known && question.Type == dnsmessage.TypeA {
		_ = b.AResource(dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: addr.As4()})
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}
