package c2s

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"impetus/internal/auth"
	"impetus/internal/core"
	"impetus/internal/limits"
	"impetus/internal/module"
	"impetus/internal/router"
	"impetus/internal/xmlstream"
)

// fuzzHeader opens a client stream; the fuzzer supplies everything after it.
const fuzzHeader = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"

// fuzzEnd bounds one negotiation. It is a bound, not an expectation: an input ends when its
// bytes run out, which takes microseconds.
const fuzzEnd = 10 * time.Second

// FuzzNegotiate feeds arbitrary bytes after a stream header to a client stream over net.Pipe:
// STARTTLS-less negotiation, SASL with the throttle, binding, and the bound session's stanzas.
// Whatever the input, the session must neither panic nor outlive its input.
func FuzzNegotiate(f *testing.F) {
	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))
	bad := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00wrong"))
	restart := fuzzHeader
	seeds := []string{
		"",
		"</stream:stream>",
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + plain + "</auth>" + restart +
			"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>" +
			"<message to='alice@localhost/r'><body>hi</body></message><presence/>" +
			"<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq></stream:stream>",
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + bad + "</auth>" +
			"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + plain + "</auth>" + restart +
			"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/><response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</response>",
		"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj1hbGljZSxyPWFiYw==</auth><abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
		"<message to='bob@localhost'><body>early</body></message>",
		"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
		"<!DOCTYPE x [<!ENTITY a 'b'>]><x/>",
		"<a><b><c><d/></c></b></a>",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}

	dir := f.TempDir()
	pw := filepath.Join(dir, "passwd")
	if err := os.WriteFile(pw, []byte("alice:secret\nbob:secret\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	store, err := auth.Open("file://"+pw, auth.Options{Domains: []string{"localhost"}, Logger: log, PollInterval: -1})
	if err != nil {
		f.Fatal(err)
	}
	defer store.Close()
	r := router.NewLocal(nil)
	c := core.New(r, log)
	h := module.NewHost("localhost", r, c, nil, nil, log)
	if err := h.Provision([]string{"disco", "ping", "version"}); err != nil {
		f.Fatal(err)
	}
	c.AddHost(h)
	cfg := &Config{
		Core: c, Hosted: func(d string) bool { return d == "localhost" }, DefaultDomain: "localhost",
		Auth: store, AllowPlainWithoutTLS: true, Limits: xmlstream.Limits{MaxStanzaSize: 65536},
		HandshakeTimeout: fuzzEnd, MaxQueue: 1 << 20, MaxAuthFailures: 3, MaxResources: 2,
		AuthThrottle: limits.NewAuthThrottle(), AuthFailuresPerIP: 1000, AuthFailuresPerAccount: 1000,
		AuthFailureWindow: time.Minute, Log: log,
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		srv, cli := net.Pipe()
		// The client side drains everything the server sends, so that no server write blocks,
		// and writes the header and the input, then hangs up.
		drained := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, cli)
			close(drained)
		}()
		go func() {
			_, _ = cli.Write([]byte(fuzzHeader))
			_, _ = cli.Write(data)
			cli.Close()
		}()
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer srv.Close()
			dec := xmlstream.NewDecoder(srv, cfg.Limits)
			hdr, err := dec.ReadHeader()
			if err != nil {
				return
			}
			Serve(context.Background(), srv, dec, hdr, cfg)
		}()
		select {
		case <-done:
		case <-time.After(fuzzEnd + 5*time.Second):
			t.Fatalf("the session did not end after its input %q", data)
		}
		<-drained
	})
}
