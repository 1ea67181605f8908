package config

import (
	"strings"
	"testing"
)

func TestComponentDomains(t *testing.T) {
	src := `domain "#xmpp#example.com" { XMPP_Role = "server" }
domain "#xmpp#Gateway.example.com" { XMPP_Component_Secret = "s3cret" }
xmpp {}
xmpp_listener { AuthPlainParameters = [ uri = "file:///dev/null" ] Listen "127.0.0.1:5222" {} }
`
	cfg, _, err := Parse("test.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.ComponentDomains()
	if len(got) != 1 || got["gateway.example.com"] != "s3cret" {
		t.Fatalf("components = %v", got)
	}
	for _, d := range cfg.HostedDomains() {
		if d == "gateway.example.com" {
			t.Fatal("a component domain is hosted")
		}
	}
	_, _, err = Parse("test.conf", []byte(`domain "#xmpp#x.example.com" { XMPP_Role = "server" XMPP_Component_Secret = "s" }
xmpp {}
xmpp_listener { AuthPlainParameters = [ uri = "file:///dev/null" ] Listen "127.0.0.1:5222" {} }
`))
	if err == nil || !strings.Contains(err.Error(), "XMPP_Component_Secret") {
		t.Fatalf("component domain with a role: %v", err)
	}
}
