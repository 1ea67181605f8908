package server

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"impetus/internal/c2s"
	"impetus/internal/config"
	"impetus/internal/listener"
)

func loadListenerConfig(t *testing.T, body string) (*Server, *config.Config) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "impetus.conf")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return &Server{opts: Options{DataDir: dir}, cfg: cfg, log: slog.New(slog.DiscardHandler)}, cfg
}

func TestSocketOptions(t *testing.T) {
	s, cfg := loadListenerConfig(t, `xmpp {}
domain "#xmpp#localhost" { XMPP_Role = "server" }
ThreadPool "accept-pool" { concurrency = 4 }
disable_nagle_algorithm = true
xmpp_listener {
  AuthPlainParameters = [ uri = "file:///dev/null" ]
  Listen "127.0.0.1:5222" {
    concurrency = 8
    pool_name = "accept-pool"
    events_per_iter = 20
    accept_queue_backlog = 200
    listen_backlog = 300
    tcp_recv_buffer_size = 0
    tcp_send_buffer_size = 8192
  }
  Listen "127.0.0.1:5223" { concurrency = 3 }
  Listen "127.0.0.1:5224" { concurrency = 1 }
}
`)
	lc := cfg.Listener
	var spec listener.Spec
	s.socketOptions(&spec, lc.Listens[0], lc.Listens[0].Options)
	want := listener.Spec{ListenBacklog: 300, AcceptQueueBacklog: 200, EventsPerIter: 20, NoDelay: true, RecvBuffer: 0, SendBuffer: 8192, Concurrency: 4}
	if spec.ListenBacklog != want.ListenBacklog || spec.AcceptQueueBacklog != want.AcceptQueueBacklog || spec.EventsPerIter != want.EventsPerIter ||
		spec.NoDelay != want.NoDelay || spec.RecvBuffer != want.RecvBuffer || spec.SendBuffer != want.SendBuffer || spec.Concurrency != want.Concurrency {
		t.Errorf("Listen 1: %+v, want %+v (concurrency 8 capped by accept-pool's 4)", spec, want)
	}
	spec = listener.Spec{}
	s.socketOptions(&spec, lc.Listens[1], lc.Listens[1].Options)
	// Momentum's defaults, and concurrency 3 under the IO pool's 50.
	if spec.ListenBacklog != 500 || spec.RecvBuffer != 4096 || spec.SendBuffer != 4096 || spec.Concurrency != 3 || spec.AcceptQueueBacklog != 0 {
		t.Errorf("Listen 2: %+v", spec)
	}
	spec = listener.Spec{}
	s.socketOptions(&spec, lc.Listens[2], lc.Listens[2].Options)
	if spec.Concurrency != 0 {
		t.Errorf("concurrency 1 (accept on the main loop) bounded handshakes: %d", spec.Concurrency)
	}
}

func TestPeerConfig(t *testing.T) {
	s, cfg := loadListenerConfig(t, `xmpp {}
domain "#xmpp#localhost" { XMPP_Role = "server" }
xmpp_listener {
  AuthPlainParameters = [ uri = "file://passwd" ]
  idle_time = 60
  Peer "10.0.0.0/8" { tls_ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256"  idle_time = 5 }
  Listen "127.0.0.1:5222" {
    Peer "10.1.0.0/16" {
      AuthDigestMD5Parameters = [ uri = "digest://htdigest" realm = "partner" ]
      tls_verify_mode = "none"
    }
  }
}
`)
	lc := cfg.Listener
	ls := lc.Listens[0]
	// nurse:partner:md5("nurse:partner:secret")
	sum := md5.Sum([]byte("nurse:partner:secret"))
	if err := os.WriteFile(filepath.Join(s.opts.DataDir, "htdigest"), []byte("nurse:partner:"+hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := s.listenerWiring(lc, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.peerAuth.close()
	baseTLS, err := s.tlsConfig(ls.Options, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	base := &c2s.Config{TLS: baseTLS, Realm: "localhost", IdleTime: ls.Options.IdleTime}

	c := s.peerConfig(base, w, lc, ls, netip.MustParseAddr("192.0.2.1"))
	if c.TLS != baseTLS || c.IdleTime.Seconds() != 60 || c.Auth != nil {
		t.Errorf("an unlisted peer: %+v", c)
	}
	c = s.peerConfig(base, w, lc, ls, netip.MustParseAddr("10.2.0.1"))
	if c.IdleTime.Seconds() != 5 || c.TLS == baseTLS || len(c.TLS.CipherSuites) != 1 || c.TLS.CipherSuites[0] != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
		t.Errorf("Peer 10.0.0.0/8: idle %v, TLS %+v", c.IdleTime, c.TLS)
	}
	c = s.peerConfig(base, w, lc, ls, netip.MustParseAddr("10.1.2.3"))
	if c.Auth == nil || c.Realm != "partner" || c.IdleTime.Seconds() != 5 || c.TLS.ClientAuth != tls.NoClientCert || len(c.TLS.CipherSuites) != 1 {
		t.Errorf("Peer 10.1.0.0/16 inside Peer 10.0.0.0/8: %+v", c)
	}
	// The same parameters reuse the store opened at wiring time.
	if c2 := s.peerConfig(base, w, lc, ls, netip.MustParseAddr("10.1.9.9")); c2.Auth != c.Auth {
		t.Errorf("the Peer's store was opened twice")
	}
	// The Peer's accounts exist for the rest of the server.
	if ok, err := s.peerAuth.exists(context.Background(), "nurse", "localhost"); !ok || err != nil {
		t.Errorf("nurse of the Peer's store: exists %v, %v", ok, err)
	}
	if ok, _ := s.peerAuth.exists(context.Background(), "mallory", "localhost"); ok {
		t.Errorf("an unknown account exists")
	}
}
