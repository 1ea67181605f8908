package extdisco

import (
	"strings"
	"testing"
	"time"

	"impetus/internal/config"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage/memory"
)

func TestTURNCredentials(t *testing.T) {
	// The expected password was computed independently (Python hmac), as a TURN server with
	// static-auth-secret=s3cr3t computes it.
	u, p := TURNCredentials("s3cr3t", "juliet@example.org", time.Unix(1700000000, 0))
	if u != "1700000000:juliet@example.org" || p != "IxONSIcIt9J9kK0hzmLJy8vlQAk=" {
		t.Fatalf("got %s %s", u, p)
	}
}

func newServer(t *testing.T, cfg *Config) *rostertest.Server {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.org")
	e := &ExtDisco{Now: func() time.Time { return time.Unix(1700000000, 0) }}
	e.SetConfig(cfg)
	if err := e.Provision(srv.Hosts["example.org"]); err != nil {
		t.Fatal(err)
	}
	return srv
}

func TestServicesAndCredentials(t *testing.T) {
	srv := newServer(t, &Config{Enabled: true, CredentialTTL: time.Hour, Services: []Service{
		{Name: "STUN", Type: "stun", Host: "stun.example.org", Port: 3478, Transport: "udp"},
		{Name: "Relay", Type: "turn", Host: "turn.example.org", Port: 3478, Transport: "udp", Secret: "s3cr3t"},
	}})
	j := srv.Connect("juliet@example.org/balcony")
	j.Input(`<iq type='get' id='s1' to='example.org'><services xmlns='urn:xmpp:extdisco:2'/></iq>`)
	got := strings.Join(j.Take(), "")
	for _, want := range []string{
		`<service type="stun" host="stun.example.org" port="3478" transport="udp" name="STUN"/>`,
		`type="turn" host="turn.example.org"`, `restricted="true"`, `username="1700003600:juliet@example.org"`,
		`expires="2023-11-14T23:13:20Z"`,
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("services: missing %s in %s", want, got)
		}
	}
	j.Input(`<iq type='get' id='s2' to='example.org'><services xmlns='urn:xmpp:extdisco:2' type='turn'/></iq>`)
	if got := strings.Join(j.Take(), ""); strings.Contains(got, "stun.example.org") || !strings.Contains(got, "turn.example.org") {
		t.Fatalf("typed: %s", got)
	}
	j.Input(`<iq type='get' id='c1' to='example.org'><credentials xmlns='urn:xmpp:extdisco:2'><service host='turn.example.org' type='turn'/></credentials></iq>`)
	_, wantPass := TURNCredentials("s3cr3t", "juliet@example.org", time.Unix(1700003600, 0))
	if got := strings.Join(j.Take(), ""); !strings.Contains(got, `<credentials xmlns="urn:xmpp:extdisco:2">`) || !strings.Contains(got, `password="`+wantPass+`"`) {
		t.Fatalf("credentials: %s", got)
	}
	j.Input(`<iq type='get' id='c2' to='example.org'><credentials xmlns='urn:xmpp:extdisco:2'><service host='nope.example.org' type='turn'/></credentials></iq>`)
	if got := strings.Join(j.Take(), ""); !strings.Contains(got, "item-not-found") {
		t.Fatalf("unknown: %s", got)
	}
	j.Input(`<iq type='get' id='d1' to='example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	_ = j.Take()
}

func TestDecode(t *testing.T) {
	cfg, _, err := config.Parse("test.conf", []byte(`
external_services {
  credential_ttl = 600
  service "Relay" {
    type = "turn"
    host = "turn.example.org"
    port = 3478
    transport = "udp"
    secret = "s3cr3t"
  }
}
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Decode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.CredentialTTL != 10*time.Minute || len(c.Services) != 1 || c.Services[0].Name != "Relay" || c.Services[0].Port != 3478 || c.Services[0].Secret != "s3cr3t" {
		t.Fatalf("decoded %+v", c)
	}
}
