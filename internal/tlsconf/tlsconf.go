// Package tlsconf turns the TLS options of an xmpp_listener (tls_certificate,
// tls_key, tls_ciphers, tls_client_ca, tls_verify_mode) into crypto/tls
// configurations, one per distinct combination, so that a connection gets
// the configuration of its most specific Peer scope. It also completes the
// "verify if presented" mode after a handshake and reads the XMPP addresses
// a client certificate vouches for (XEP-0178).
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"impetus/internal/config"
)

// Options are the TLS options in effect for one connection.
type Options struct {
	Certificate string // PEM file; "" uses the fallback certificate
	Key         string // PEM key file when Certificate holds none
	Ciphers     string // OpenSSL cipher list; "" leaves the choice to Go
	ClientCA    string // PEM bundle of CAs trusted for client certificates
	VerifyMode  config.TLSVerifyMode
}

// FromListener picks the TLS options out of resolved listener options.
func FromListener(o config.ListenerOptions) Options {
	return Options{
		Certificate: o.TLSCertificate,
		Key:         o.TLSKey,
		Ciphers:     o.TLSCiphers,
		ClientCA:    o.TLSClientCA,
		VerifyMode:  o.TLSVerifyMode,
	}
}

// ClientAuth maps tls_verify_mode onto crypto/tls. "none" never asks for a
// certificate. "require" demands one that verifies against tls_client_ca,
// and the handshake fails without it. Unset asks for a certificate when
// there is a CA to check it against, but lets the handshake succeed either
// way, as Momentum takes "no built-in action" on a failed verification:
// [CompleteVerification] then records whether it verified. Without a CA no
// certificate could verify, so none is asked for.
func ClientAuth(mode config.TLSVerifyMode, haveCA bool) tls.ClientAuthType {
	switch {
	case mode == config.VerifyNone:
		return tls.NoClientCert
	case mode == config.VerifyRequire:
		return tls.RequireAndVerifyClientCert
	case haveCA:
		return tls.RequestClientCert
	}
	return tls.NoClientCert
}

// Build makes the server configuration for o. fallback supplies the
// certificate when o names none (the generated self-signed one); nextProtos
// are the ALPN protocols offered.
func Build(o Options, fallback func() (tls.Certificate, error), nextProtos []string) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	var holder *CertHolder
	if o.Certificate != "" {
		// A configured certificate is served through a holder that notices renewals.
		if holder, err = NewCertHolder(o.Certificate, o.Key); err == nil {
			cert = *holder.Certificate()
		}
	} else if fallback != nil {
		cert, err = fallback()
	} else {
		err = errors.New("no tls_certificate")
	}
	if err != nil {
		return nil, fmt.Errorf("tlsconf: certificate: %w", err)
	}
	suites, err := ParseCiphers(o.Ciphers)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: suites,
		NextProtos:   nextProtos,
	}
	if holder != nil {
		// Certificates keeps the first one for code that reads it directly (the federation's
		// client certificate); handshakes ask GetCertificate, which serves renewals.
		c.GetCertificate = holder.GetCertificate
	}
	if o.ClientCA != "" && o.VerifyMode != config.VerifyNone {
		pool, err := LoadCAs(o.ClientCA)
		if err != nil {
			return nil, err
		}
		c.ClientCAs = pool
	}
	if o.VerifyMode == config.VerifyRequire && c.ClientCAs == nil {
		return nil, errors.New(`tlsconf: tls_verify_mode "require" needs tls_client_ca naming the CAs that issue client certificates`)
	}
	c.ClientAuth = ClientAuth(o.VerifyMode, c.ClientCAs != nil)
	return c, nil
}

// LoadCAs reads a PEM bundle of CA certificates.
func LoadCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: tls_client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tlsconf: tls_client_ca %s: no PEM certificate in the file", path)
	}
	return pool, nil
}

// Cache builds each distinct configuration once and shares it among the
// connections that resolve to the same options. It is safe for concurrent
// use.
type Cache struct {
	fallback   func() (tls.Certificate, error)
	nextProtos []string

	mu      sync.Mutex
	configs map[Options]*tls.Config
}

// NewCache returns an empty cache whose configurations use fallback when no
// certificate is configured and offer nextProtos by ALPN.
func NewCache(fallback func() (tls.Certificate, error), nextProtos ...string) *Cache {
	return &Cache{fallback: fallback, nextProtos: nextProtos, configs: make(map[Options]*tls.Config)}
}

// Get returns the configuration for o, building it on first use.
func (c *Cache) Get(o Options) (*tls.Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conf, ok := c.configs[o]; ok {
		return conf, nil
	}
	conf, err := Build(o, c.fallback, c.nextProtos)
	if err != nil {
		return nil, err
	}
	c.configs[o] = conf
	return conf, nil
}

// CompleteVerification verifies a client certificate presented under the
// unset tls_verify_mode, where the handshake asked for one without
// requiring it to verify. When it verifies against conf's client CAs, the
// chains are stored in st.VerifiedChains, so that everything after the
// handshake (SASL EXTERNAL above all) has one place to look. The error
// says why a presented certificate did not verify; nil when there was
// nothing to verify.
func CompleteVerification(st *tls.ConnectionState, conf *tls.Config) error {
	if st == nil || conf == nil || len(st.VerifiedChains) > 0 || len(st.PeerCertificates) == 0 ||
		conf.ClientCAs == nil || conf.ClientAuth != tls.RequestClientCert {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	chains, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         conf.ClientCAs,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("tlsconf: client certificate: %w", err)
	}
	st.VerifiedChains = chains
	return nil
}

// VerifiedClient returns the client's certificate when it verified, else nil.
func VerifiedClient(st *tls.ConnectionState) *x509.Certificate {
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}

// CheckConfig checks every tls_ciphers string of the configuration, in the
// global scope, the xmpp_listener and its Listen and Peer scopes, so that
// an unknown cipher name is reported at load with its file, line and
// option rather than when the first client starts TLS.
func CheckConfig(cfg *config.Config) error {
	if cfg == nil || cfg.Root == nil {
		return nil
	}
	var errs config.ErrorList
	var walk func(s *config.Scope, depth int)
	walk = func(s *config.Scope, depth int) {
		for _, o := range s.Options {
			if !strings.EqualFold(o.Name, "tls_ciphers") || o.Value.Kind != config.StringValue {
				continue
			}
			if _, err := ParseCiphers(o.Value.Str); err != nil {
				msg := err.Error()
				var ce *CipherError
				if errors.As(err, &ce) {
					msg = ce.Msg
					if ce.Elem != "" {
						msg = fmt.Sprintf("%q: %s", ce.Elem, ce.Msg)
					}
				}
				errs = append(errs, &config.Error{Pos: o.Value.Pos, Msg: fmt.Sprintf("option %q: %s", o.Name, msg)})
			}
		}
		if depth == 3 {
			return
		}
		for _, c := range s.Children {
			switch {
			case depth == 0 && strings.EqualFold(c.Kind, "xmpp_listener"),
				depth > 0 && (strings.EqualFold(c.Kind, "listen") || strings.EqualFold(c.Kind, "peer")):
				walk(c, depth+1)
			}
		}
	}
	walk(cfg.Root, 0)
	if len(errs) == 0 {
		return nil
	}
	return errs
}
