package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestMUCServiceDomain(t *testing.T) {
	c, _ := mustParse(t, `domain "#xmpp#example.com" { XMPP_Role = "server" }
domain "#xmpp#conference.example.com" {
  XMPP_Role = "server"
  XMPP_Service = "MUC"
  MUC_Room_Creation = "admins"
  MUC_Admins = ( "boss@example.com" "ops@example.com" )
  MUC_Max_Rooms = 5
  MUC_Default_Persistent = true
  MUC_Default_Whois = "anyone"
}
`)
	plain := c.Domain("example.com")
	if plain.Service != "" || plain.MUC != nil {
		t.Errorf("account domain got service %q, %+v", plain.Service, plain.MUC)
	}
	d := c.Domain("conference.example.com")
	if d.Service != "muc" || d.MUC == nil {
		t.Fatalf("service %q, options %+v", d.Service, d.MUC)
	}
	want := MUCService{
		RoomCreation: "admins", Admins: []string{"boss@example.com", "ops@example.com"},
		MaxRooms: 5, MaxOccupants: 200, HistoryLength: 20, MaxNickLength: 64, MaxAffiliations: 1000,
		MaxRelayedIQ: 256, ArchivePageSize: 50, ArchiveMaxPage: 250,
		DefaultMaxUsers: 100, DefaultPersistent: true, DefaultPublic: true, DefaultWhois: "anyone",
		DefaultAllowPM: "anyone", DefaultArchive: true, Registration: true,
	}
	if !reflect.DeepEqual(*d.MUC, want) {
		t.Errorf("options\n got %+v\nwant %+v", *d.MUC, want)
	}
	if _, _, err := Parse("t.conf", []byte(`domain "#xmpp#c.example" { XMPP_Role = "server" XMPP_Service = "pubsub" }`)); err == nil || !strings.Contains(strings.ToLower(err.Error()), "xmpp_service") {
		t.Errorf("unknown service accepted: %v", err)
	}
	if _, _, err := Parse("t.conf", []byte(`domain "#xmpp#c.example" { XMPP_Role = "client" XMPP_Service = "muc" }`)); err == nil {
		t.Error("a service on a remote domain accepted")
	}
	if _, _, err := Parse("t.conf", []byte(`domain "#xmpp#c.example" { XMPP_Role = "server" XMPP_Service = "muc" MUC_Default_Whois = "nobody" }`)); err == nil {
		t.Error("invalid whois accepted")
	}
}
