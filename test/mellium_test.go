package test

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/disco"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
	"mellium.im/xmpp/version"
)

// Bounds for the mellium clients: negotiation, one request, and the wait for
// a session to end after its stream is closed.
const (
	negotiateTimeout = 10 * time.Second
	requestTimeout   = 10 * time.Second
	closeTimeout     = 5 * time.Second
)

// receivedMessage is a message stanza as a mellium client received it.
type receivedMessage struct {
	stanza.Message
	Body string `xml:"body"`
}

// melliumClient is a negotiated mellium session whose input is being served,
// which mellium needs in order to match iq responses to requests.
type melliumClient struct {
	*xmpp.Session
	msgs     chan receivedMessage
	done     chan struct{} // closed when Serve returns
	serveErr error         // Serve's result, valid once done is closed
}

// dialMellium connects to srv over family f and negotiates STARTTLS, SASL
// with mech and resource binding; the connection is closed on failure.
func dialMellium(ctx context.Context, srv *Server, f family, tlsCfg *tls.Config, user, pass, resource string, mech sasl.Mechanism) (*xmpp.Session, error) {
	origin, err := jid.New(user, testDomain, resource)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(f.ip, portOf(srv, f)))
	if err != nil {
		return nil, err
	}
	s, err := xmpp.NewClientSession(ctx, origin, conn,
		xmpp.StartTLS(tlsCfg),
		xmpp.SASL("", pass, mech),
		bindResource(),
	)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// bindResource is a client-side resource binding feature (RFC 6120 §7)
// that requests the resourcepart of the session's address. mellium v0.22's
// xmpp.BindResource puts an empty <resource/> in its request whenever a
// resource is set, so the server always picks one; this does what it means.
func bindResource() xmpp.StreamFeature {
	return xmpp.StreamFeature{
		Name:       xml.Name{Space: nsBind, Local: "bind"},
		Necessary:  xmpp.Authn,
		Prohibited: xmpp.Ready,
		Parse: func(ctx context.Context, d *xml.Decoder, start *xml.StartElement) (bool, interface{}, error) {
			return true, nil, d.Skip()
		},
		Negotiate: func(ctx context.Context, s *xmpp.Session, _ interface{}) (xmpp.SessionState, io.ReadWriter, error) {
			r := s.TokenReader()
			defer r.Close()
			w := s.TokenWriter()
			defer w.Close()
			const id = "bind-1"
			var inner xml.TokenReader
			if res := s.LocalAddr().Resourcepart(); res != "" {
				inner = xmlstream.Wrap(xmlstream.Token(xml.CharData(res)), xml.StartElement{Name: xml.Name{Local: "resource"}})
			}
			req := stanza.IQ{ID: id, Type: stanza.SetIQ}.Wrap(
				xmlstream.Wrap(inner, xml.StartElement{Name: xml.Name{Space: nsBind, Local: "bind"}}))
			if _, err := xmlstream.Copy(w, req); err != nil {
				return 0, nil, err
			}
			if err := w.Flush(); err != nil {
				return 0, nil, err
			}
			var resp struct {
				stanza.IQ
				JID   string        `xml:"urn:ietf:params:xml:ns:xmpp-bind bind>jid"`
				Error *stanza.Error `xml:"error"`
			}
			d := xml.NewTokenDecoder(r)
			tok, err := d.Token()
			if err != nil {
				return 0, nil, err
			}
			start, ok := tok.(xml.StartElement)
			if !ok || start.Name.Local != "iq" {
				return 0, nil, fmt.Errorf("bind: got %v, want an iq", tok)
			}
			if err := d.DecodeElement(&resp, &start); err != nil {
				return 0, nil, err
			}
			switch {
			case resp.ID != id:
				return 0, nil, fmt.Errorf("bind: response id %q, want %q", resp.ID, id)
			case resp.Type == stanza.ErrorIQ && resp.Error != nil:
				return 0, nil, *resp.Error
			case resp.Type != stanza.ResultIQ:
				return 0, nil, fmt.Errorf("bind: response type %q", resp.Type)
			}
			j, err := jid.Parse(resp.JID)
			if err != nil {
				return 0, nil, fmt.Errorf("bind: server assigned %q: %v", resp.JID, err)
			}
			s.UpdateAddr(j)
			return xmpp.Ready, nil, nil
		},
	}
}

// portOf returns the port of srv's listener for f as a string.
func portOf(srv *Server, f family) string {
	if f.ip == "::1" {
		_, p, _ := net.SplitHostPort(srv.Addr6())
		return p
	}
	_, p, _ := net.SplitHostPort(srv.Addr4())
	return p
}

// connectMellium logs user in and serves the session until the test ends;
// the cleanup closes the stream and waits, bounded, for the server to close
// its side.
func connectMellium(t *testing.T, srv *Server, f family, user, pass, resource string, mech sasl.Mechanism) *melliumClient {
	t.Helper()
	srv.addr(t, f) // skips when the family is unavailable
	ctx, cancel := context.WithTimeout(context.Background(), negotiateTimeout)
	defer cancel()
	s, err := dialMellium(ctx, srv, f, srv.TLSConfig(), user, pass, resource, mech)
	if err != nil {
		t.Fatalf("%s login as %s over %s: %v", mech.Name, user, f.name, err)
	}
	c := &melliumClient{Session: s, msgs: make(chan receivedMessage, 16), done: make(chan struct{})}
	go func() {
		c.serveErr = s.Serve(xmpp.HandlerFunc(c.handle))
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = s.Close()
		select {
		case <-c.done:
		case <-time.After(closeTimeout):
			t.Errorf("%s: the server did not close the stream within %v of </stream:stream>", s.LocalAddr(), closeTimeout)
		}
		_ = s.Conn().Close()
	})
	return c
}

// handle records incoming messages; iq requests are left to Serve, which
// answers them with service-unavailable.
func (c *melliumClient) handle(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	if start.Name.Local != "message" {
		return nil
	}
	// The reader starts after the start element, which the decoder must see
	// to match the end element.
	var m receivedMessage
	if err := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), r)).Decode(&m); err != nil {
		return err
	}
	select {
	case c.msgs <- m:
	default:
	}
	return nil
}

// serverJID is the hosted domain as a JID, the address of the server itself.
var serverJID = jid.MustParse(testDomain)

// TestMelliumLogin logs in with mellium over STARTTLS with each SASL
// mechanism mellium implements, including the -PLUS variants (tls-exporter
// on TLS 1.3), on IPv4 and IPv6, and checks the bound JID and a ping.
func TestMelliumLogin(t *testing.T) {
	t.Parallel()
	const user, pass = "alice", "s3cret pässword"
	srv := StartServer(t, ServerOptions{Users: map[string]string{user: pass}})
	mechs := []sasl.Mechanism{sasl.Plain, sasl.ScramSha1, sasl.ScramSha256, sasl.ScramSha1Plus, sasl.ScramSha256Plus}
	for _, f := range families {
		for _, mech := range mechs {
			t.Run(f.name+"/"+mech.Name, func(t *testing.T) {
				t.Parallel()
				// A resource per case: the cases run in parallel, and a shared
				// one would make them replace one another with <conflict/>.
				res := "laptop-" + f.name + "-" + mech.Name
				c := connectMellium(t, srv, f, user, pass, res, mech)
				want := user + "@" + testDomain + "/" + res
				if got := c.LocalAddr().String(); got != want {
					t.Errorf("bound JID = %q, want %q", got, want)
				}
				if v := c.ConnectionState().Version; v < tls.VersionTLS12 {
					t.Errorf("TLS version %#x after STARTTLS", v)
				}
				if c.State()&xmpp.Secure == 0 || c.State()&xmpp.Authn == 0 || c.State()&xmpp.Ready == 0 {
					t.Errorf("session state %v lacks Secure|Authn|Ready", c.State())
				}
				ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
				defer cancel()
				if err := pingStrict(ctx, c.Session, serverJID); err != nil {
					t.Errorf("ping after login: %v", err)
				}
			})
		}
	}
}

// TestMelliumLoginTLS12 checks that a client limited to TLS 1.2 can log in,
// with SCRAM and with SCRAM-PLUS, for which mellium binds to tls-unique on
// TLS 1.2 (RFC 5929 §3).
func TestMelliumLoginTLS12(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}})
	for _, mech := range []sasl.Mechanism{sasl.ScramSha256, sasl.ScramSha256Plus, sasl.ScramSha1Plus} {
		t.Run(mech.Name, func(t *testing.T) {
			t.Parallel()
			cfg := srv.TLSConfig()
			cfg.MaxVersion = tls.VersionTLS12
			ctx, cancel := context.WithTimeout(context.Background(), negotiateTimeout)
			defer cancel()
			s, err := dialMellium(ctx, srv, families[0], cfg, "alice", "pw", "old-"+mech.Name, mech)
			if err != nil {
				t.Fatalf("%s login over TLS 1.2: %v", mech.Name, err)
			}
			defer s.Conn().Close()
			if v := s.ConnectionState().Version; v != tls.VersionTLS12 {
				t.Errorf("negotiated TLS version %#x, want TLS 1.2", v)
			}
		})
	}
}

// TestMelliumServerAssignedResource binds with mellium's own
// xmpp.BindResource and no requested resource, so the server must generate
// one (RFC 6120 §7.6.2.1) and report it in the bind result.
func TestMelliumServerAssignedResource(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})
	ctx, cancel := context.WithTimeout(context.Background(), negotiateTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", srv.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := xmpp.NewClientSession(ctx, jid.MustParse("alice@"+testDomain), conn,
		xmpp.StartTLS(srv.TLSConfig()), xmpp.SASL("", "pw", sasl.ScramSha256Plus), xmpp.BindResource())
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer s.Close()
	got := s.LocalAddr()
	if got.Bare().String() != "alice@"+testDomain || got.Resourcepart() == "" {
		t.Errorf("bound %q, want alice@%s with a server-generated resource", got, testDomain)
	}
}

// TestMelliumWrongPassword checks that mellium's SCRAM and PLAIN logins with
// a wrong password are refused.
func TestMelliumWrongPassword(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "right"}})
	for _, mech := range []sasl.Mechanism{sasl.Plain, sasl.ScramSha256, sasl.ScramSha256Plus} {
		t.Run(mech.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), negotiateTimeout)
			defer cancel()
			s, err := dialMellium(ctx, srv, families[0], srv.TLSConfig(), "alice", "wrong", "x", mech)
			if err == nil {
				s.Conn().Close()
				t.Fatalf("login with a wrong password succeeded as %s", s.LocalAddr())
			}
			if ctx.Err() != nil {
				t.Fatalf("wrong password: the server gave no answer within %v: %v", negotiateTimeout, err)
			}
			if cond := saslCondition(err); cond != "not-authorized" {
				t.Errorf("wrong password: got %v (SASL condition %q), want a SASL failure with not-authorized", err, cond)
			}
		})
	}
}

// saslCondition extracts the condition of a SASL <failure/> from mellium's
// error, whose text hides the condition when the server sent a <text/>.
func saslCondition(err error) string {
	var m interface {
		error
		TokenReader() xml.TokenReader
	}
	if !errors.As(err, &m) {
		return ""
	}
	r := m.TokenReader()
	for {
		tok, err := r.Token()
		if tok == nil && err != nil {
			return ""
		}
		if start, ok := tok.(xml.StartElement); ok && start.Name.Local != "failure" && start.Name.Local != "text" {
			return start.Name.Local
		}
	}
}

// pingStrict sends an XEP-0199 ping and requires an empty result. mellium's
// ping.Send treats service-unavailable as success, which would hide a server
// without ping support, so the response is checked here.
func pingStrict(ctx context.Context, s *xmpp.Session, to jid.JID) error {
	return s.UnmarshalIQ(ctx, ping.IQ{IQ: stanza.IQ{Type: stanza.GetIQ, To: to}}.TokenReader(), nil)
}

// TestMelliumQueries sends XEP-0199 ping, XEP-0030 disco#info and
// disco#items, XEP-0092 version, and iq payloads the server does not
// implement, through mellium's packages.
func TestMelliumQueries(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}})
	c := connectMellium(t, srv, families[0], "alice", "pw", "desk", sasl.ScramSha256)

	t.Run("ping", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		if err := ping.Send(ctx, c.Session, serverJID); err != nil {
			t.Errorf("ping.Send: %v", err)
		}
		if err := pingStrict(ctx, c.Session, serverJID); err != nil {
			t.Errorf("ping: %v, want an empty result", err)
		}
	})

	t.Run("disco#info", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		info, err := disco.GetInfo(ctx, "", serverJID, c.Session)
		if err != nil {
			t.Fatalf("disco#info: %v", err)
		}
		found := false
		for _, id := range info.Identity {
			if id.Category == "server" && id.Type == "im" {
				found = true
			}
		}
		if !found {
			t.Errorf("identities %+v lack category=server type=im", info.Identity)
		}
		have := map[string]bool{}
		for _, f := range info.Features {
			have[f.Var] = true
		}
		for _, want := range []string{"http://jabber.org/protocol/disco#info", "urn:xmpp:ping", "jabber:iq:version"} {
			if !have[want] {
				t.Errorf("features %v lack %s", info.Features, want)
			}
		}
	})

	t.Run("disco#items", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		iter := disco.FetchItemsIQ(ctx, "", stanza.IQ{To: serverJID}, c.Session)
		for iter.Next() {
		}
		if err := iter.Err(); err != nil {
			t.Errorf("disco#items: %v", err)
		}
		if err := iter.Close(); err != nil {
			t.Errorf("disco#items: %v", err)
		}
	})

	t.Run("version", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		q, err := version.Get(ctx, c.Session, serverJID)
		if err != nil {
			t.Fatalf("version: %v", err)
		}
		if q.Name != "Impetus" {
			t.Errorf("version name = %q, want Impetus", q.Name)
		}
		if q.Version == "" {
			t.Errorf("version reply has no <version/>")
		}
	})

	// RFC 6120 §8.4: an iq get or set whose payload the server does not
	// understand gets service-unavailable (type cancel).
	for _, typ := range []stanza.IQType{stanza.GetIQ, stanza.SetIQ} {
		t.Run("unknown payload "+string(typ), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			defer cancel()
			payload := xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: "urn:example:impetus:unknown", Local: "query"}})
			err := c.UnmarshalIQ(ctx, stanza.IQ{Type: typ, To: serverJID}.Wrap(payload), nil)
			var se stanza.Error
			if !errors.As(err, &se) {
				t.Fatalf("unknown payload: got %v, want an iq error", err)
			}
			if se.Condition != stanza.ServiceUnavailable || se.Type != stanza.Cancel {
				t.Errorf("unknown payload: got error type=%q condition=%q, want cancel/service-unavailable", se.Type, se.Condition)
			}
		})
	}
}

// TestMelliumResourceConflict binds the same full JID twice: the server must
// keep the newer session and end the older one with a <conflict/> stream
// error (RFC 6120 §7.7.2.2, §4.9.3.3).
func TestMelliumResourceConflict(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}})
	first := connectMellium(t, srv, families[0], "alice", "pw", "phone", sasl.ScramSha256)
	second := connectMellium(t, srv, families[0], "alice", "pw", "phone", sasl.ScramSha256)

	select {
	case <-first.done:
		var se stream.Error
		if !errors.As(first.serveErr, &se) || se.Err != "conflict" {
			t.Fatalf("first session ended with %v, want stream error <conflict/>", first.serveErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("first session was not ended within 10 s of a second bind of the same resource")
	}

	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if err := pingStrict(ctx, second.Session, serverJID); err != nil {
		t.Errorf("the replacing session does not work: ping: %v", err)
	}
	if got := second.LocalAddr().String(); got != "alice@"+testDomain+"/phone" {
		t.Errorf("replacing session bound %q", got)
	}
}

// TestMelliumMessage sends a chat message between two mellium clients, to
// the full and to the bare JID, and checks delivery, body and the 'from'
// stamped by the server (RFC 6120 §8.1.2.1).
func TestMelliumMessage(t *testing.T) {
	t.Parallel()
	// Separate accounts per family: the cases run in parallel, and a message
	// to bob's bare JID may rightly reach every available resource of bob.
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice4": "a", "bob4": "b", "alice6": "a", "bob6": "b"}})
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			n := f.name[len(f.name)-1:]
			alice := connectMellium(t, srv, f, "alice"+n, "a", "phone", sasl.ScramSha256Plus)
			bob := connectMellium(t, srv, f, "bob"+n, "b", "desk", sasl.ScramSha256Plus)

			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			defer cancel()
			// Bare-JID delivery needs an available resource (RFC 6121 §8.5.2);
			// the ping round trip makes sure the presence was processed first.
			if err := bob.Send(ctx, stanza.Presence{}.Wrap(nil)); err != nil {
				t.Fatalf("bob's initial presence: %v", err)
			}
			if err := pingStrict(ctx, bob.Session, serverJID); err != nil {
				t.Fatalf("bob's ping: %v", err)
			}
			for _, to := range []jid.JID{bob.LocalAddr(), bob.LocalAddr().Bare()} {
				body := "hi bob at " + to.String() + " <&>"
				msg := stanza.Message{To: to, Type: stanza.ChatMessage}
				err := alice.Send(ctx, msg.Wrap(xmlstream.Wrap(
					xmlstream.Token(xml.CharData(body)),
					xml.StartElement{Name: xml.Name{Local: "body"}},
				)))
				if err != nil {
					t.Fatalf("sending to %s: %v", to, err)
				}
				select {
				case m := <-bob.msgs:
					if !m.From.Equal(alice.LocalAddr()) {
						t.Errorf("to %s: from = %q, want alice's full JID %q", to, m.From, alice.LocalAddr())
					}
					if m.Body != body {
						t.Errorf("to %s: body = %q, want %q", to, m.Body, body)
					}
					if m.Type != stanza.ChatMessage {
						t.Errorf("to %s: type = %q, want chat", to, m.Type)
					}
				case <-time.After(requestTimeout):
					t.Errorf("to %s: bob received nothing within %v", to, requestTimeout)
				}
			}
			select {
			case m := <-alice.msgs:
				t.Errorf("alice received %+v; a delivered message must not bounce", m)
			default:
			}

			// An iq to another user's full JID is routed to that client,
			// whose answer (mellium's automatic service-unavailable for a
			// payload it has no handler for) is routed back.
			_, err := version.Get(ctx, alice.Session, bob.LocalAddr())
			var se stanza.Error
			if !errors.As(err, &se) || se.Condition != stanza.ServiceUnavailable {
				t.Errorf("version query to bob's client: got %v, want bob's service-unavailable routed back", err)
			}
		})
	}
}

// TestPasswdAddReload adds an account with `impetus passwd add` while the
// server runs and checks that the server picks up the changed file.
func TestPasswdAddReload(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, serverBin, "passwd", "add", srv.PasswdPath, "carol")
	cmd.Stdin = strings.NewReader("carol's pass\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("impetus passwd add (password on stdin): %v\n%s", err, out)
	}
	cmd = exec.CommandContext(ctx, serverBin, "passwd", "add", srv.PasswdPath, "dave", "--password", "dave pw")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("impetus passwd add --password: %v\n%s", err, out)
	}
	// The reload is asynchronous (a watcher or a poll), so log in again
	// until it takes effect, within a bound.
	deadline := time.Now().Add(10 * time.Second)
	for {
		lctx, lcancel := context.WithTimeout(ctx, negotiateTimeout)
		s, err := dialMellium(lctx, srv, families[0], srv.TLSConfig(), "carol", "carol's pass", "r", sasl.ScramSha256)
		lcancel()
		if err == nil {
			s.Conn().Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol cannot log in 10 s after `impetus passwd add`: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The account added with --password and the one that was there before
	// must both work after the rewrites of the file.
	for _, acct := range [][2]string{{"dave", "dave pw"}, {"alice", "pw"}} {
		lctx, lcancel := context.WithTimeout(ctx, negotiateTimeout)
		s, err := dialMellium(lctx, srv, families[0], srv.TLSConfig(), acct[0], acct[1], "r", sasl.Plain)
		lcancel()
		if err != nil {
			t.Fatalf("%s cannot log in after `impetus passwd add`: %v", acct[0], err)
		}
		s.Conn().Close()
	}
}
