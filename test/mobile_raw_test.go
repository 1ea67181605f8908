package test

// Hand-written XML against the binary for what no Debian client implements: XEP-0357 push,
// XEP-0215 external services, XEP-0388 SASL2 with XEP-0386 Bind 2 and XEP-0484 FAST.

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"impetus/internal/sasl"
)

const mobileExtra = `
push { include_body = true }
external_services {
  service "Relay" {
    type = "turn"
    host = "turn.localhost"
    port = 3478
    transport = "udp"
    secret = "s3cr3t"
  }
  service "STUN" {
    type = "stun"
    host = "stun.localhost"
    port = 3478
  }
}
`

func b64s(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// sasl2Login authenticates with PLAIN over SASL2 and binds with Bind 2; extra goes inside
// <authenticate/>. It returns the <success/> and features the server sent.
func (c *rawTLS) sasl2Login(user, pass, extra string) string {
	c.t.Helper()
	c.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' from='` + user + `@localhost' version='1.0'>`)
	c.until("</stream:features>")
	c.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>` + b64s("\x00"+user+"\x00"+pass) + `</initial-response>` + extra + `</authenticate>`)
	return c.until("</stream:features>")
}

var (
	attrRe  = func(name string) *regexp.Regexp { return regexp.MustCompile(name + `="([^"]*)"`) }
	e2eAuth = regexp.MustCompile(`<authorization-identifier>([^<]+)</authorization-identifier>`)
)

func TestExternalServicesByHand(t *testing.T) {
	srv := startMobileServer(t, mobileUsers, mobileExtra)
	c, err := dialDirect(t, srv.DirectPort, "xmpp-client")
	if err != nil {
		t.Fatal(err)
	}
	c.login("alice", "alicepw", "r1")
	c.send(`<iq type='get' id='e1' to='localhost'><services xmlns='urn:xmpp:extdisco:2'/></iq>`)
	got := c.until("</iq>")
	if !strings.Contains(got, `<service type="stun" host="stun.localhost" port="3478" name="STUN"/>`) || !strings.Contains(got, `type="turn" host="turn.localhost"`) {
		t.Fatalf("services: %s", got)
	}
	turn := got[strings.Index(got, `type="turn"`):]
	user := attrRe("username").FindStringSubmatch(turn)
	pass := attrRe("password").FindStringSubmatch(turn)
	if user == nil || pass == nil || !strings.HasSuffix(user[1], ":alice@localhost") {
		t.Fatalf("credentials: %s", turn)
	}
	// What a TURN server with static-auth-secret=s3cr3t checks.
	m := hmac.New(sha1.New, []byte("s3cr3t"))
	m.Write([]byte(user[1]))
	if pass[1] != base64.StdEncoding.EncodeToString(m.Sum(nil)) {
		t.Fatalf("password %s does not verify", pass[1])
	}
	c.send(`<iq type='get' id='e2' to='localhost'><credentials xmlns='urn:xmpp:extdisco:2'><service host='turn.localhost' type='turn'/></credentials></iq>`)
	if got := c.until("</iq>"); !strings.Contains(got, `<credentials xmlns="urn:xmpp:extdisco:2"><service`) {
		t.Fatalf("credentials request: %s", got)
	}
	c.send(`<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if got := c.until("</iq>"); !strings.Contains(got, "urn:xmpp:extdisco:2") {
		t.Fatalf("disco: %s", got)
	}
}

// TestPushNotificationsByHand registers carol's resource as alice's push service: messages
// that arrive while alice's session hibernates, and while she is offline, are summarized to it,
// and the registration survives a restart.
func TestPushNotificationsByHand(t *testing.T) {
	srv := startMobileServer(t, mobileUsers, mobileExtra)
	carol, _ := dialDirect(t, srv.DirectPort)
	carol.login("carol", "carolpw", "push")
	bob, _ := dialDirect(t, srv.DirectPort)
	bob.login("bob", "bobpw", "r1")

	alice, _ := dialDirect(t, srv.DirectPort)
	got := alice.sasl2Login("alice", "alicepw", `<user-agent id='phone-1'/><bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>`)
	full := e2eAuth.FindStringSubmatch(got)
	smID := regexp.MustCompile(`<enabled xmlns="urn:xmpp:sm:3" id="([0-9a-f]+)"`).FindStringSubmatch(got)
	if full == nil || smID == nil {
		t.Fatalf("SASL2 login: %s", got)
	}
	alice.send(`<presence/><iq type='set' id='x42'><enable xmlns='urn:xmpp:push:0' jid='carol@localhost/push' node='yxs32uqsflafdk3iuqo'>` +
		`<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>` +
		`<field var='secret'><value>eruio234vzxc2kla-91</value></field></x></enable></iq>`)
	if got := alice.until(`id="x42"`); !strings.Contains(got, `type="result"`) {
		t.Fatalf("enable: %s", got)
	}
	alice.send(`<iq type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if got := alice.until(`id="d1"`); !strings.Contains(got, `urn:xmpp:push:0`) {
		t.Fatalf("account disco: %s", got)
	}
	// The phone loses its connection; bob writes.
	alice.conn.NetConn().Close()
	bob.send(`<message to='` + full[1] + `' type='chat'><body>Wherefore art thou?</body></message>`)
	got = carol.until("</iq>")
	for _, want := range []string{`from="alice@localhost"`, `<publish node="yxs32uqsflafdk3iuqo">`, `<value>urn:xmpp:push:summary</value>`,
		`<field var="last-message-sender"><value>bob@localhost/r1</value></field>`, `<field var="last-message-body"><value>Wherefore art thou?</value></field>`,
		`<field var="secret"><value>eruio234vzxc2kla-91</value></field>`} {
		if !strings.Contains(got, want) {
			t.Fatalf("notification lacks %s: %s", want, got)
		}
	}
	// The phone comes back and resumes inside SASL2: the message is there.
	alice2, _ := dialDirect(t, srv.DirectPort)
	got = alice2.sasl2Login("alice", "alicepw", `<user-agent id='phone-1'/><resume xmlns='urn:xmpp:sm:3' previd='`+smID[1]+`' h='2'/>`)
	if !strings.Contains(got, `<resumed xmlns="urn:xmpp:sm:3"`) {
		t.Fatalf("resume: %s", got)
	}
	if !strings.Contains(got, "Wherefore art thou?") {
		alice2.until("Wherefore art thou?")
	}
	alice2.send(`</stream:stream>`)
	alice2.until("</stream:stream>")

	// Offline now, after a restart: the stored registration still gets a summary.
	srv.restart(t)
	carol, _ = dialDirect(t, srv.DirectPort)
	carol.login("carol", "carolpw", "push")
	bob, _ = dialDirect(t, srv.DirectPort)
	bob.login("bob", "bobpw", "r1")
	bob.send(`<message to='alice@localhost' type='chat'><body>still there?</body></message>`)
	if got := carol.until("</iq>"); !strings.Contains(got, "still there?") || !strings.Contains(got, `node="yxs32uqsflafdk3iuqo"`) {
		t.Fatalf("after restart: %s", got)
	}
}

// TestSASL2FASTByHand gets a FAST token with a password login, then logs in with it over a new
// connection after a restart (tokens are stored), with tls-exporter channel binding.
func TestSASL2FASTByHand(t *testing.T) {
	srv := startMobileServer(t, mobileUsers, "")
	c, _ := dialDirect(t, srv.DirectPort, "xmpp-client")
	got := c.sasl2Login("alice", "alicepw", `<user-agent id='laptop'/><bind xmlns='urn:xmpp:bind:0'/><request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-EXPR'/>`)
	tok := regexp.MustCompile(`<token xmlns="urn:xmpp:fast:0" expiry="[^"]+" token="([^"]+)"/>`).FindStringSubmatch(got)
	if tok == nil {
		t.Fatalf("no token: %s", got)
	}
	srv.restart(t)
	c2, _ := dialDirect(t, srv.DirectPort, "xmpp-client")
	c2.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' from='alice@localhost' version='1.0'>`)
	f := c2.until("</stream:features>")
	if !strings.Contains(f, "<mechanism>HT-SHA-256-EXPR</mechanism>") {
		t.Fatalf("features: %s", f)
	}
	st := c2.conn.ConnectionState()
	cb, err := sasl.TLSExporterData(&st)
	if err != nil {
		t.Fatal(err)
	}
	proof := sasl.HTProof("HT-SHA-256-EXPR", []byte(tok[1]), "Initiator", cb)
	c2.send(`<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-EXPR'><initial-response>` +
		base64.StdEncoding.EncodeToString(append([]byte("alice\x00"), proof...)) + `</initial-response>` +
		`<user-agent id='laptop'/><fast xmlns='urn:xmpp:fast:0'/><bind xmlns='urn:xmpp:bind:0'/></authenticate>`)
	got = c2.until("</stream:features>")
	want := base64.StdEncoding.EncodeToString(sasl.HTProof("HT-SHA-256-EXPR", []byte(tok[1]), "Responder", cb))
	if !strings.Contains(got, "<additional-data>"+want+"</additional-data>") || !strings.Contains(got, "<bound") {
		t.Fatalf("FAST login: %s", got)
	}
	c2.send(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	c2.until(`id="p1"`)
}
