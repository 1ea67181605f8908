package tlsconf

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
)

// OIDXMPPAddr is id-on-xmppAddr (RFC 6120 §13.7.1.4), the otherName form of
// subjectAltName that carries a JID.
var OIDXMPPAddr = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 5}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// XMPPAddrs returns the id-on-xmppAddr values of cert's subjectAltName.
// Malformed entries are skipped: a certificate's contents never make this
// fail.
func XMPPAddrs(cert *x509.Certificate) []string {
	var out []string
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		if rest, err := asn1.Unmarshal(ext.Value, &seq); err != nil || len(rest) > 0 || seq.Tag != asn1.TagSequence {
			continue
		}
		data := seq.Bytes
		for len(data) > 0 {
			var gn asn1.RawValue
			var err error
			if data, err = asn1.Unmarshal(data, &gn); err != nil {
				break
			}
			// otherName is [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT ANY }.
			if gn.Class != asn1.ClassContextSpecific || gn.Tag != 0 || !gn.IsCompound {
				continue
			}
			var oid asn1.ObjectIdentifier
			rest, err := asn1.Unmarshal(gn.Bytes, &oid)
			if err != nil || !oid.Equal(OIDXMPPAddr) {
				continue
			}
			var wrapped asn1.RawValue
			if _, err := asn1.Unmarshal(rest, &wrapped); err != nil || wrapped.Class != asn1.ClassContextSpecific || wrapped.Tag != 0 {
				continue
			}
			var s string
			if _, err := asn1.UnmarshalWithParams(wrapped.Bytes, &s, "utf8"); err != nil {
				continue
			}
			out = append(out, s)
		}
	}
	return out
}

// ClientIdentities returns the addresses a verified client certificate
// vouches for, in the order XEP-0178 and common practice give them: the
// id-on-xmppAddr values when there are any; failing those, the
// rfc822Name (e-mail) and dNSName values and the subject common name that
// have the form user@domain.
func ClientIdentities(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	if addrs := XMPPAddrs(cert); len(addrs) > 0 {
		return addrs
	}
	var out []string
	add := func(s string) {
		if local, dom, ok := strings.Cut(s, "@"); ok && local != "" && dom != "" && !strings.Contains(dom, "@") {
			out = append(out, s)
		}
	}
	for _, e := range cert.EmailAddresses {
		add(e)
	}
	for _, d := range cert.DNSNames {
		add(d)
	}
	add(cert.Subject.CommonName)
	return out
}

// XMPPAddrExtension builds a subjectAltName extension holding addrs as
// id-on-xmppAddr values and dnsNames as dNSName values, for issuing client
// and server certificates (x509.Certificate.ExtraExtensions; it replaces
// the template's DNSNames).
func XMPPAddrExtension(addrs []string, dnsNames []string) (pkix.Extension, error) {
	var names []asn1.RawValue
	for _, a := range addrs {
		val, err := asn1.MarshalWithParams(a, "utf8")
		if err != nil {
			return pkix.Extension{}, err
		}
		oid, err := asn1.Marshal(OIDXMPPAddr)
		if err != nil {
			return pkix.Extension{}, err
		}
		wrapped, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: val})
		if err != nil {
			return pkix.Extension{}, err
		}
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, wrapped...)})
	}
	for _, d := range dnsNames {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(d)})
	}
	if len(names) == 0 {
		return pkix.Extension{}, errors.New("tlsconf: no names for the subjectAltName")
	}
	val, err := asn1.Marshal(names)
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oidSubjectAltName, Value: val}, nil
}
