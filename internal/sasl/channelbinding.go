package sasl

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Channel binding types (RFC 9266, RFC 5929).
const (
	TLSExporter       = "tls-exporter"
	TLSServerEndPoint = "tls-server-end-point"
	// TLSUnique (RFC 5929 §3) exists only for TLS 1.2 and earlier (RFC 9266 retires it for 1.3);
	// it is offered there because older clients implement nothing else.
	TLSUnique = "tls-unique"
)

// exporterLabel and exporterLength are fixed by RFC 9266 §2; the context is
// empty.
const (
	exporterLabel  = "EXPORTER-Channel-Binding"
	exporterLength = 32
)

// ChannelBindingTypes lists the XEP-0440 channel binding types to advertise
// for a TLS state: tls-exporter only on TLS 1.3 or when the TLS 1.2 handshake
// used the extended master secret (RFC 9266 §3), and tls-server-end-point.
// The latter needs a server certificate whose signature hash is known
// (RFC 5929 §4.1); a stream serving an Ed25519 certificate should drop it
// when TLSServerEndPointData fails.
func ChannelBindingTypes(st *tls.ConnectionState) []string {
	if st == nil || !st.HandshakeComplete {
		return nil
	}
	var out []string
	if exporterUsable(st) {
		out = append(out, TLSExporter)
	}
	out = append(out, TLSServerEndPoint)
	if uniqueUsable(st) {
		out = append(out, TLSUnique)
	}
	return out
}

// uniqueUsable reports whether tls-unique is defined and safe: TLS 1.2 with the extended master
// secret, which crypto/tls signals by exporting keying material (it refuses without it), since
// tls-unique is vulnerable to the triple-handshake attack otherwise.
func uniqueUsable(st *tls.ConnectionState) bool {
	return st.Version == tls.VersionTLS12 && len(st.TLSUnique) > 0 && exporterUsable(st)
}

func exporterUsable(st *tls.ConnectionState) bool {
	if st == nil || !st.HandshakeComplete {
		return false
	}
	if st.Version >= tls.VersionTLS13 {
		return true
	}
	// crypto/tls refuses the exporter on TLS 1.2 without the extended master
	// secret, which is exactly the RFC 9266 condition, so asking it decides.
	_, err := TLSExporterData(st)
	return err == nil
}

// TLSExporterData returns the tls-exporter channel binding data of a
// connection (RFC 9266).
func TLSExporterData(st *tls.ConnectionState) (data []byte, err error) {
	if st == nil || !st.HandshakeComplete {
		return nil, errors.New("sasl: tls-exporter needs a completed TLS handshake")
	}
	// A ConnectionState not produced by crypto/tls has no exporter function
	// and ExportKeyingMaterial would panic on it.
	defer func() {
		if recover() != nil {
			data, err = nil, errors.New("sasl: connection state has no keying material exporter")
		}
	}()
	data, err = st.ExportKeyingMaterial(exporterLabel, nil, exporterLength)
	if err != nil {
		return nil, fmt.Errorf("sasl: tls-exporter: %w", err)
	}
	return data, nil
}

// TLSServerEndPointData returns the tls-server-end-point channel binding data
// for the server certificate cert: its hash with the hash function of its
// signature algorithm, SHA-256 when that is MD5 or SHA-1 (RFC 5929 §4.1).
func TLSServerEndPointData(cert *x509.Certificate) ([]byte, error) {
	if cert == nil {
		return nil, errors.New("sasl: tls-server-end-point needs the server certificate")
	}
	var h crypto.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		h = crypto.SHA256
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = crypto.SHA384
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = crypto.SHA512
	default:
		return nil, fmt.Errorf("sasl: tls-server-end-point is undefined for %v certificates", cert.SignatureAlgorithm)
	}
	d := h.New()
	d.Write(cert.Raw)
	return d.Sum(nil), nil
}

// NewChannelBinding returns a Config.ChannelBinding function for a server
// connection with state st that presented the certificate cert (the leaf the
// server sent; ConnectionState does not record it on the server side).
func NewChannelBinding(st *tls.ConnectionState, cert *x509.Certificate) func(cbType string) ([]byte, error) {
	return func(cbType string) ([]byte, error) {
		switch cbType {
		case TLSExporter:
			if !exporterUsable(st) {
				return nil, errors.New("sasl: tls-exporter is unsafe without TLS 1.3 or extended master secret")
			}
			return TLSExporterData(st)
		case TLSServerEndPoint:
			return TLSServerEndPointData(cert)
		case TLSUnique:
			if st == nil || !uniqueUsable(st) {
				return nil, errors.New("sasl: tls-unique is only defined for TLS 1.2 with extended master secret")
			}
			return st.TLSUnique, nil
		default:
			return nil, fmt.Errorf("sasl: unsupported channel binding type %q", cbType)
		}
	}
}
