// Package cluster runs several Impetus nodes as one server for the same domains. Node-to-node
// routing goes over NATS core subjects, the session registry lives in a JetStream key-value
// bucket written only by compare-and-set, and everything durable stays in the PostgreSQL
// database the nodes share. The registry holds soft state only: every node can rebuild its own
// part of it from its live connections, which anti-entropy does periodically.
package cluster

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"impetus/internal/config"
)

// Defaults of the xmpp_cluster scope.
const (
	// The lease must outlive a JetStream leader election (4 to 9 s in nats-server): a node
	// that fenced itself, or lost its lease, whenever the registry's leader moved would take
	// every session of the cluster down with a single NATS server.
	DefaultLeaseTTL            = 20 * time.Second
	DefaultLeaseRenew          = 2 * time.Second
	DefaultFenceAfter          = 15 * time.Second
	DefaultAntiEntropy         = 30 * time.Second
	DefaultNodeLossGrace       = 30 * time.Second
	DefaultNodeLossPresenceRPS = 500
	DefaultForwardTimeout      = 2 * time.Second
	DefaultHandoverTimeout     = 5 * time.Second
	DefaultReplicas            = 1
	DefaultMaxPresenceBytes    = 4096
	DefaultMaxBatchRecipients  = 1000
	DefaultBucketPrefix        = "impetus"
	DefaultInboundQueue        = 1 << 20
	DefaultInboundQueueBytes   = 512 << 20
)

func init() {
	d := func(v time.Duration) string { return strconv.Itoa(int(v / time.Second)) }
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "xmpp_cluster",
		Name:      config.NameNone,
		Singleton: true,
		Doc:       "a cluster of Impetus nodes on NATS and a shared PostgreSQL database (Impetus)",
		Options: []config.OptionSpec{
			{Name: "node_name", Type: config.TypeString, Doc: "this node's name, unique in the cluster: letters, digits, '-' and '_' (Impetus)"},
			{Name: "nats_urls", Type: config.TypeArray, Doc: "external NATS servers, e.g. ( nats://10.0.0.1:4222 nats://10.0.0.2:4222 ); unset with embedded_nats uses the embedded server (Impetus)"},
			{Name: "nats_discover", Type: config.TypeBool, Default: "true", Doc: "also connect to the NATS servers the servers of nats_urls announce; false keeps to nats_urls, for servers behind NAT or proxies (Impetus)"},
			{Name: "embedded_nats", Type: config.TypeBool, Default: "false", Doc: "run a NATS server with JetStream inside this process, for small installations (Impetus)"},
			{Name: "nats_listen", Type: config.TypeString, Default: "127.0.0.1:4222", Doc: "client address of the embedded NATS server (Impetus)"},
			{Name: "nats_cluster_listen", Type: config.TypeString, Doc: "route address of the embedded NATS server, e.g. 127.0.0.1:6222; unset runs it alone (Impetus)"},
			{Name: "nats_routes", Type: config.TypeArray, Doc: "route URLs of the other nodes' embedded NATS servers, e.g. ( nats://127.0.0.1:6223 ) (Impetus)"},
			{Name: "nats_cluster_name", Type: config.TypeString, Default: "impetus", Doc: "name of the embedded NATS cluster (Impetus)"},
			{Name: "nats_store_dir", Type: config.TypeString, Default: "nats", Doc: "JetStream directory of the embedded server, relative to the data directory (Impetus)"},
			{Name: "replicas", Type: config.TypeInt, Default: strconv.Itoa(DefaultReplicas), Doc: "JetStream replicas of the registry buckets: 3 with three or more NATS servers (Impetus)"},
			{Name: "bucket_prefix", Type: config.TypeString, Default: DefaultBucketPrefix, Doc: "prefix of the key-value buckets and subjects, to run several clusters on one NATS (Impetus)"},
			{Name: "lease_ttl", Type: config.TypeDuration, Default: d(DefaultLeaseTTL), Doc: "seconds after which an unrenewed node lease expires and other nodes clean up its sessions (Impetus)"},
			{Name: "lease_renew", Type: config.TypeDuration, Default: d(DefaultLeaseRenew), Doc: "seconds between lease renewals (Impetus)"},
			{Name: "fence_after", Type: config.TypeDuration, Default: d(DefaultFenceAfter), Doc: "seconds without a successful renewal after which a node fences itself: less than lease_ttl (Impetus)"},
			{Name: "anti_entropy_interval", Type: config.TypeDuration, Default: d(DefaultAntiEntropy), Doc: "seconds between reconciliations of local sessions with the registry (Impetus)"},
			{Name: "node_loss_grace", Type: config.TypeDuration, Default: d(DefaultNodeLossGrace), Doc: "seconds a lost node's users have to log in elsewhere before their contacts see them unavailable (Impetus)"},
			{Name: "node_loss_presence_rate", Type: config.TypeInt, Default: strconv.Itoa(DefaultNodeLossPresenceRPS), Doc: "sessions of a lost node announced unavailable per second at most (Impetus)"},
			{Name: "forward_timeout", Type: config.TypeDuration, Default: d(DefaultForwardTimeout), Doc: "seconds a message or iq forwarded to another node waits for its acceptance (Impetus)"},
			{Name: "handover_timeout", Type: config.TypeDuration, Default: d(DefaultHandoverTimeout), Doc: "seconds a node waits for another node to hand over a session a client resumes here (XEP-0198) (Impetus)"},
			{Name: "inbound_queue", Type: config.TypeInt, Default: strconv.Itoa(DefaultInboundQueue), Doc: "stanzas from other nodes waiting for delivery on this node; beyond it NATS drops them and logs a slow consumer (Impetus)"},
			{Name: "inbound_queue_bytes", Type: config.TypeSize, Default: strconv.Itoa(DefaultInboundQueueBytes), Doc: "bytes of stanzas from other nodes waiting for delivery on this node (Impetus)"},
			{Name: "s2s_single_stream", Type: config.TypeBool, Default: "true", Doc: "one outgoing server stream per pair of local and remote domain for the whole cluster, held by one node that the others forward to; false lets every node open its own (Impetus)"},
			{Name: "max_batch_recipients", Type: config.TypeInt, Default: strconv.Itoa(DefaultMaxBatchRecipients), Doc: "recipients one transfer of a presence broadcast to another node names at most; a larger broadcast takes several (Impetus)"},
			{Name: "max_presence_bytes", Type: config.TypeSize, Default: strconv.Itoa(DefaultMaxPresenceBytes), Doc: "largest presence kept in the registry for answering probes on other nodes; larger ones are trimmed to show and priority (Impetus)"},
		},
	})
}

// Config is the xmpp_cluster scope, decoded. The name follows xmpp_listener and xmpp_logger and
// leaves Momentum's own cluster module scope free, so a Momentum configuration keeps loading.
type Config struct {
	NodeName          string        `conf:"node_name"`
	NATSURLs          []string      `conf:"nats_urls"`
	NATSDiscover      bool          `conf:"nats_discover"`
	EmbeddedNATS      bool          `conf:"embedded_nats"`
	NATSListen        string        `conf:"nats_listen"`
	NATSClusterListen string        `conf:"nats_cluster_listen"`
	NATSRoutes        []string      `conf:"nats_routes"`
	NATSClusterName   string        `conf:"nats_cluster_name"`
	NATSStoreDir      string        `conf:"nats_store_dir"`
	Replicas          int           `conf:"replicas"`
	BucketPrefix      string        `conf:"bucket_prefix"`
	LeaseTTL          time.Duration `conf:"lease_ttl"`
	LeaseRenew        time.Duration `conf:"lease_renew"`
	FenceAfter        time.Duration `conf:"fence_after"`
	AntiEntropy       time.Duration `conf:"anti_entropy_interval"`
	NodeLossGrace     time.Duration `conf:"node_loss_grace"`
	NodeLossRate      int           `conf:"node_loss_presence_rate"`
	ForwardTimeout    time.Duration `conf:"forward_timeout"`
	HandoverTimeout   time.Duration `conf:"handover_timeout"`
	MaxPresenceBytes  int64         `conf:"max_presence_bytes"`
	MaxBatch          int           `conf:"max_batch_recipients"`
	InboundQueue      int           `conf:"inbound_queue"`
	InboundQueueBytes int64         `conf:"inbound_queue_bytes"`
	S2SSingleStream   bool          `conf:"s2s_single_stream"`
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Defaults returns the configuration of a cluster scope with no options set.
func Defaults() Config {
	return Config{
		NATSListen: "127.0.0.1:4222", NATSDiscover: true, NATSClusterName: "impetus", NATSStoreDir: "nats",
		Replicas: DefaultReplicas, BucketPrefix: DefaultBucketPrefix,
		LeaseTTL: DefaultLeaseTTL, LeaseRenew: DefaultLeaseRenew, FenceAfter: DefaultFenceAfter,
		AntiEntropy: DefaultAntiEntropy, NodeLossGrace: DefaultNodeLossGrace,
		NodeLossRate: DefaultNodeLossPresenceRPS, ForwardTimeout: DefaultForwardTimeout,
		HandoverTimeout:  DefaultHandoverTimeout,
		MaxPresenceBytes: DefaultMaxPresenceBytes,
		MaxBatch:         DefaultMaxBatchRecipients,
		InboundQueue:     DefaultInboundQueue, InboundQueueBytes: DefaultInboundQueueBytes,
		S2SSingleStream: true,
	}
}

// FromConfig decodes and checks the cluster scope. It returns nil, nil when there is none: the
// server then runs as a single node exactly as without this package.
func FromConfig(c *config.Config) (*Config, error) {
	if c == nil || c.Root == nil {
		return nil, nil
	}
	secs := c.Sections("xmpp_cluster")
	if len(secs) == 0 {
		return nil, nil
	}
	cc := Defaults()
	if err := secs[0].Decode(&cc); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := cc.Check(); err != nil {
		return nil, err
	}
	// Offline messages, rosters and archives must be seen by every node: only the
	// PostgreSQL backend is shared.
	if ds := c.Storage(""); ds.Driver != "postgres" {
		return nil, fmt.Errorf("cluster: a cluster needs the postgres storage shared by every node; xmpp Storage uses %q", ds.Driver)
	}
	return &cc, nil
}

// Check validates the options among themselves.
func (c *Config) Check() error {
	if !namePattern.MatchString(c.NodeName) {
		return errors.New("cluster: node_name must be set to letters, digits, '-' or '_' (at most 64)")
	}
	if !namePattern.MatchString(c.BucketPrefix) {
		return errors.New("cluster: bucket_prefix must be letters, digits, '-' or '_'")
	}
	if len(c.NATSURLs) == 0 && !c.EmbeddedNATS {
		return errors.New("cluster: set nats_urls, or embedded_nats = true")
	}
	if c.LeaseTTL < time.Second || c.LeaseRenew < time.Second || c.LeaseRenew >= c.LeaseTTL {
		return errors.New("cluster: lease_renew must be at least 1 and less than lease_ttl")
	}
	if c.FenceAfter <= c.LeaseRenew || c.FenceAfter >= c.LeaseTTL {
		return errors.New("cluster: fence_after must lie between lease_renew and lease_ttl")
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return errors.New("cluster: replicas must be between 1 and 5")
	}
	if c.AntiEntropy <= 0 || c.ForwardTimeout <= 0 || c.HandoverTimeout <= 0 {
		return errors.New("cluster: anti_entropy_interval, forward_timeout and handover_timeout must be positive")
	}
	if c.InboundQueue <= 0 || c.InboundQueueBytes <= 0 {
		return errors.New("cluster: inbound_queue and inbound_queue_bytes must be positive")
	}
	if c.NodeLossRate <= 0 {
		return errors.New("cluster: node_loss_presence_rate must be positive")
	}
	if c.MaxBatch <= 0 {
		return errors.New("cluster: max_batch_recipients must be positive")
	}
	return nil
}

// StoreDir returns the embedded server's JetStream directory under dataDir.
func (c *Config) StoreDir(dataDir string) string {
	if filepath.IsAbs(c.NATSStoreDir) {
		return c.NATSStoreDir
	}
	return filepath.Join(dataDir, c.NATSStoreDir, strings.ToLower(c.NodeName))
}
