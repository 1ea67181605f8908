package s2s

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// conn is the connection of one server stream during negotiation, in either direction.
type conn struct {
	nc       net.Conn // the current connection: the TLS one after STARTTLS
	dec      *xmlstream.Decoder
	tlsState *tls.ConnectionState
	id       string // the stream id the receiving side chose
	scratch  []byte
}

// writeSync writes negotiation output directly; only the stream's read goroutine writes then.
func (c *conn) writeSync(els ...*stanza.Element) error {
	buf := c.scratch[:0]
	for _, el := range els {
		buf = el.AppendXML(buf, stanza.NSServer)
	}
	c.scratch = buf[:0]
	return c.writeRaw(buf)
}

func (c *conn) writeRaw(b []byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

// appendHeader appends a server stream header. The dialback namespace is always declared:
// both Prosody and ejabberd expect it, and without it the peer could not send db: elements.
func appendHeader(dst []byte, from, to, id string) []byte {
	dst = append(dst, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' version='1.0'"...)
	for _, a := range [...]stanza.Attr{{Name: "from", Value: from}, {Name: "to", Value: to}, {Name: "id", Value: id}} {
		if a.Value != "" {
			dst = append(dst, ' ')
			dst = append(dst, a.Name...)
			dst = append(dst, "='"...)
			dst = appendAttrValue(dst, a.Value)
			dst = append(dst, '\'')
		}
	}
	return append(dst, '>')
}

// appendAttrValue escapes a header attribute value. Domains and ids reaching it are checked
// already, but escaping keeps a wrong caller from producing broken XML.
func appendAttrValue(dst []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\'':
			dst = append(dst, "&apos;"...)
		case '&':
			dst = append(dst, "&amp;"...)
		case '<':
			dst = append(dst, "&lt;"...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// checkHeader applies RFC 6120 §4.7 and §4.8 to a server stream header.
func checkHeader(hdr *xmlstream.Header) error {
	if hdr.Space != stanza.NSStream || hdr.Local != "stream" {
		if hdr.Local == "stream" {
			return stanza.NewStreamError("invalid-namespace", "the stream element is not in the streams namespace")
		}
		return stanza.NewStreamError("bad-format", "expected a stream header")
	}
	if hdr.DefaultNS != stanza.NSServer {
		return stanza.NewStreamError("invalid-namespace", "the content namespace of a server stream is jabber:server")
	}
	return nil
}

// versionAtLeast1 reports whether a stream version is 1.0 or later. Servers that send no
// version speak the pre-RFC protocol: no features, dialback straight away.
func versionAtLeast1(v string) bool {
	major, _, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	n, err := strconv.Atoi(major)
	return err == nil && n >= 1
}

// domainOf parses a bare domain as found in stream headers and dialback elements.
func domainOf(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	j, err := jid.Parse(s)
	if err != nil || j.Localpart() != "" || j.Resourcepart() != "" {
		return "", false
	}
	return j.Domainpart(), true
}

// certValidFor reports whether the peer's certificate chain validates for domain against roots
// (nil: the system roots). XEP-0178 and RFC 6125 identify a server by a DNS-ID in the
// certificate, which is what x509 verification with DNSName checks.
func certValidFor(st *tls.ConnectionState, domain string, roots *x509.CertPool) bool {
	if st == nil || len(st.PeerCertificates) == 0 || domain == "" {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       domain,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err == nil
}

// dbError builds the <error/> child of a dialback error (XEP-0220 §2.4).
func dbError(condition, text string) *stanza.Element {
	e := stanza.NewError(condition, text).Element()
	// The <error/> child is in the stream's default namespace, not the db: one (XEP-0220 §2.4).
	e.Space = stanza.NSServer
	return e
}

// stanzaErrorOf reads the condition of a dialback error reply.
func stanzaErrorOf(el *stanza.Element) *stanza.Error {
	if e := el.Child("", "error"); e != nil {
		for c := range e.Elements() {
			if c.Space == stanza.NSStanzaErr && c.Local != "text" {
				return stanza.NewError(c.Local, "the peer reported "+c.Local)
			}
		}
	}
	return stanza.NewError("remote-server-not-found", "dialback failed")
}

// timeoutError reports whether err is a timeout, so a failure can be reported as
// remote-server-timeout instead of remote-server-not-found.
func timeoutError(err error) bool {
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout()
}
