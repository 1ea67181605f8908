package cluster

import (
	"strings"
	"testing"
	"time"

	"impetus/internal/config"
)

const baseConfig = `xmpp {}
domain "#xmpp#example.org" { XMPP_Role = "server" }
xmpp_listener {
  AuthPlainParameters = [ uri = "file:///dev/null" ]
  Listen "127.0.0.1:5222" {}
}
`

const pgStorage = `Datasource "pg" { uri = ( "postgres://u:p@127.0.0.1/db" ) }
`

func parse(t *testing.T, src string) (*Config, error) {
	t.Helper()
	cfg, _, err := config.Parse("test.conf", []byte(src))
	if err != nil {
		return nil, err
	}
	return FromConfig(cfg)
}

func TestConfig(t *testing.T) {
	// No cluster scope: a single node, nothing to start.
	if c, err := parse(t, baseConfig); c != nil || err != nil {
		t.Fatalf("without a cluster scope: %v %v", c, err)
	}
	c, err := parse(t, strings.Replace(baseConfig, "xmpp {}", `xmpp { storage = "pg" }`, 1)+pgStorage+`xmpp_cluster {
  node_name = "xmpp1"
  nats_urls = ( "nats://10.0.0.1:4222" "nats://10.0.0.2:4222" )
  replicas = 3
  lease_ttl = 30
  fence_after = 20
}
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "xmpp1" || len(c.NATSURLs) != 2 || c.Replicas != 3 || c.LeaseTTL != 30*time.Second ||
		c.FenceAfter != 20*time.Second || c.LeaseRenew != DefaultLeaseRenew || c.BucketPrefix != "impetus" {
		t.Fatalf("decoded %+v", c)
	}
	for _, bad := range []struct{ src, want string }{
		{baseConfig + `xmpp_cluster { node_name = "a" nats_urls = ( "nats://x:4222" ) }`, "postgres"},
		{baseConfig + pgStorage + `xmpp_cluster { nats_urls = ( "nats://x:4222" ) }`, "node_name"},
		{baseConfig + pgStorage + `xmpp_cluster { node_name = "a b" embedded_nats = true }`, "node_name"},
		{baseConfig + pgStorage + `xmpp_cluster { node_name = "a" }`, "nats_urls"},
		{baseConfig + pgStorage + `xmpp_cluster { node_name = "a" embedded_nats = true fence_after = 25 }`, "fence_after"},
		{baseConfig + pgStorage + `xmpp_cluster { node_name = "a" embedded_nats = true lease_renew = 30 }`, "lease_renew"},
		{baseConfig + pgStorage + `xmpp_cluster { node_name = "a" embedded_nats = true replicas = 9 }`, "replicas"},
	} {
		src := bad.src
		if strings.Contains(src, "Datasource") {
			src = strings.Replace(src, "xmpp {}", `xmpp { storage = "pg" }`, 1)
		}
		if _, err := parse(t, src); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error %v, want one about %s", bad.src, err, bad.want)
		}
	}
}
