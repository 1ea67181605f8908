package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// embedded is a NATS server with JetStream running inside this process. Several nodes'
// embedded servers form one NATS cluster through their routes, so a small installation needs
// no other process; production runs external NATS servers instead, so that a crash of an
// Impetus node does not also take a JetStream peer down.
type embedded struct {
	srv *natsserver.Server
}

// startEmbedded starts the embedded server and waits until it accepts connections.
func startEmbedded(c *Config, dataDir string, log *slog.Logger) (*embedded, error) {
	host, port, err := splitHostPort(c.NATSListen)
	if err != nil {
		return nil, fmt.Errorf("cluster: nats_listen: %w", err)
	}
	opts := &natsserver.Options{
		ServerName: c.NodeName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   c.StoreDir(dataDir),
		NoSigs:     true,
		// Dead peers must be noticed in seconds, not in the default two minutes.
		PingInterval: 2 * time.Second,
		MaxPingsOut:  2,
	}
	if c.NATSClusterListen != "" {
		ch, cp, err := splitHostPort(c.NATSClusterListen)
		if err != nil {
			return nil, fmt.Errorf("cluster: nats_cluster_listen: %w", err)
		}
		opts.Cluster = natsserver.ClusterOpts{Name: c.NATSClusterName, Host: ch, Port: cp, PingInterval: 2 * time.Second, MaxPingsOut: 2}
		for _, r := range c.NATSRoutes {
			u, err := url.Parse(r)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("cluster: nats_routes: %q is not a nats://host:port URL", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	srv, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: embedded nats: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("cluster: embedded nats did not start within 10 s")
	}
	return &embedded{srv: srv}, nil
}

func (e *embedded) close() {
	if e == nil {
		return
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// connect opens this node's NATS connection. Publishes fail at once while disconnected
// (no reconnect buffer): a stale routing decision replayed seconds later would do harm.
func connect(c *Config, emb *embedded, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("impetus-" + c.NodeName),
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("cluster: nats disconnected", "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			// A slow consumer means stanzas from other nodes were dropped.
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("cluster: nats error", "subject", subj, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("cluster: nats reconnected", "url", nc.ConnectedUrl())
		}),
	}
	if !c.NATSDiscover {
		opts = append(opts, nats.IgnoreDiscoveredServers())
	}
	if emb != nil && len(c.NATSURLs) == 0 {
		opts = append(opts, nats.InProcessServer(emb.srv))
		return nats.Connect("", opts...)
	}
	url := ""
	for i, u := range c.NATSURLs {
		if i > 0 {
			url += ","
		}
		url += u
	}
	return nats.Connect(url, opts...)
}

func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < -1 || n > 65535 { // -1 picks a free port
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, n, nil
}

// natsLogger forwards the embedded server's log to the node's logger.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) logf(level slog.Level, format string, v []any) {
	l.log.Log(context.Background(), level, "nats: "+fmt.Sprintf(format, v...))
}

func (l natsLogger) Noticef(format string, v ...any) { l.logf(slog.LevelInfo, format, v) }
func (l natsLogger) Warnf(format string, v ...any)   { l.logf(slog.LevelWarn, format, v) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l natsLogger) Errorf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l natsLogger) Debugf(format string, v ...any)  { l.logf(slog.LevelDebug, format, v) }
func (l natsLogger) Tracef(string, ...any)           {}
