package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/auth"
	"impetus/internal/config"
	"impetus/internal/control"
	"impetus/internal/listener"
	"impetus/internal/metrics"
	"impetus/internal/observe"
	"impetus/internal/stanza"
	"impetus/internal/transport"
	"impetus/internal/xmpplog"
)

// DefaultControlSocket is the control socket's name in the data directory.
const DefaultControlSocket = "control.sock"

// opsState is the part of the server that changes while it runs. Fields marked "under mu"
// are only touched with mu held: by start, by a reload, and by the control commands.
type opsState struct {
	// observer is what every stream reports stanzas to; a reload swaps its target.
	observer observe.Swap
	// store is the auth store in use; a reload may open a new one.
	store atomic.Pointer[auth.Store]
	// live is the configuration in force: the loaded one, then each accepted reload.
	live atomic.Pointer[config.Config]

	mu        sync.Mutex
	reloading bool              // under mu: serveListens is re-run by a reload
	slots     map[string]*slot  // under mu: running sockets by network and address
	pending   []listener.Spec   // under mu: the specs a reload collected
	loggers   []*xmpplog.Logger // under mu: the xmpp_logger instances in use
	oldStores []auth.Store      // under mu: stores replaced by reloads, closed at stop
	levels    map[string]*slog.LevelVar

	base  slog.Handler // the server log's output; every module logger filters into it
	xmpp  *slog.LevelVar
	hup   chan os.Signal
	ctx   context.Context
	start time.Time
}

// setupLogging builds the server log: one text output shared by every module, each module
// filtering at its own debug_level, so that a reload can change one level in place.
func (s *Server) setupLogging(out io.Writer, level config.DebugLevel) *slog.Logger {
	s.ops.base = slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.Level(-100), ReplaceAttr: levelNames})
	s.ops.xmpp = new(slog.LevelVar)
	s.ops.xmpp.Set(logLevel(level))
	return slog.New(levelFilter{s.ops.base, s.ops.xmpp})
}

// moduleLog returns the logger of a module instance (e.g. "xmpp_logger:audit") at its
// debug_level. Asking again for the same instance updates its level and returns a logger
// sharing it, which is how a reload changes the level of loggers already handed out.
func (s *Server) moduleLog(instance string, level config.DebugLevel) *slog.Logger {
	if s.ops.levels == nil {
		s.ops.levels = make(map[string]*slog.LevelVar)
	}
	lv := s.ops.levels[instance]
	if lv == nil {
		lv = new(slog.LevelVar)
		s.ops.levels[instance] = lv
	}
	lv.Set(logLevel(level))
	return slog.New(levelFilter{s.ops.base, lv}).With("module", instance)
}

// levelFilter passes records at or above its level to the shared output.
type levelFilter struct {
	h     slog.Handler
	level *slog.LevelVar
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.level.Level() && f.h.Enabled(ctx, l)
}

func (f levelFilter) Handle(ctx context.Context, r slog.Record) error { return f.h.Handle(ctx, r) }

func (f levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{f.h.WithAttrs(a), f.level}
}

func (f levelFilter) WithGroup(g string) slog.Handler { return levelFilter{f.h.WithGroup(g), f.level} }

// levelNames prints Momentum's level names for the levels slog has no name for.
func levelNames(_ []string, a slog.Attr) slog.Attr {
	if a.Key != slog.LevelKey {
		return a
	}
	l, ok := a.Value.Any().(slog.Level)
	if !ok {
		return a
	}
	switch l {
	case slog.LevelInfo + 2:
		a.Value = slog.StringValue("NOTICE")
	case slog.LevelError + 4:
		a.Value = slog.StringValue("CRITICAL")
	case observe.LevelAuth:
		a.Value = slog.StringValue("AUTH")
	}
	return a
}

// authStore returns the auth store in use.
func (s *Server) authStore() auth.Store {
	if p := s.ops.store.Load(); p != nil {
		return *p
	}
	return s.store
}

// liveConfig returns the configuration in force, which a reload replaces. Code that runs
// after start and should follow reloads reads it here rather than s.cfg, which stays the
// configuration the server started with.
func (s *Server) liveConfig() *config.Config {
	if c := s.ops.live.Load(); c != nil {
		return c
	}
	return s.cfg
}

// startOps runs before the listeners start: it catches SIGHUP early, so that a signal during
// startup does not kill the process, and opens the xmpp_logger files.
func (s *Server) startOps(ctx context.Context) error {
	s.ops.ctx = ctx
	s.ops.start = time.Now()
	s.ops.live.Store(s.cfg)
	s.ops.hup = make(chan os.Signal, 1)
	signal.Notify(s.ops.hup, syscall.SIGHUP)
	loggers, err := s.openLoggers(s.cfg)
	if err != nil {
		return err
	}
	s.ops.mu.Lock()
	s.ops.loggers = loggers
	s.ops.mu.Unlock()
	s.ops.observer.Store(observers(loggers))
	return nil
}

// observers is what the streams report to: the metrics, then each logger.
func observers(loggers []*xmpplog.Logger) observe.Observer {
	m := observe.Multi{metrics.Default}
	for _, l := range loggers {
		m = append(m, l)
	}
	return m
}

// openLoggers starts the enabled xmpp_logger instances of cfg; on an error it closes the
// ones it opened.
func (s *Server) openLoggers(cfg *config.Config) ([]*xmpplog.Logger, error) {
	var out []*xmpplog.Logger
	for _, lc := range cfg.Loggers {
		if !lc.Enabled {
			continue // passive mode
		}
		path := lc.Logfile
		if path != "" && !filepath.IsAbs(path) {
			path = filepath.Join(s.opts.DataDir, path)
		}
		l, err := xmpplog.New(xmpplog.Options{
			Name:            lc.Name,
			Path:            path,
			Mode:            lc.Logmode,
			Heartbeat:       lc.Heartbeat,
			LogReception:    lc.LogReception,
			LogDelivery:     lc.LogDelivery,
			ReceptionFormat: lc.LogReceptionFormat,
			DeliveryFormat:  lc.LogDeliveryFormat,
			HeartbeatFormat: lc.LogHeartbeatFormat,
			Namespace:       lc.Namespace,
			Log:             s.moduleLog("xmpp_logger:"+lc.Name, lc.DebugLevel),
		})
		if err != nil {
			closeLoggers(out)
			return nil, fmt.Errorf("server: xmpp_logger %q at %s: %w", lc.Name, lc.Pos, err)
		}
		out = append(out, l)
	}
	return out, nil
}

func closeLoggers(ls []*xmpplog.Logger) {
	for _, l := range ls {
		_ = l.Close()
	}
}

// reopenLogs reopens every xmpp_logger file, for log rotation.
func (s *Server) reopenLogs() error {
	s.ops.mu.Lock()
	defer s.ops.mu.Unlock()
	var errs []error
	for _, l := range s.ops.loggers {
		if err := l.Reopen(); err != nil {
			errs = append(errs, fmt.Errorf("xmpp_logger %q: %w", l.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// runOps serves SIGHUP, the control socket and the metrics listener until ctx ends.
func (s *Server) runOps(ctx context.Context) error {
	x := s.cfg.XMPP
	if x == nil {
		x = &config.XMPP{}
	}
	metrics.Default.GaugeFunc("impetus_sessions", "Client sessions bound now.", func() float64 {
		return float64(len(s.router.All()))
	})
	metrics.Default.GaugeFunc("impetus_connections_parked", "Idle client connections waiting for input without a goroutine (idle_release_time).", func() float64 {
		return float64(transport.DefaultPoller().Parked())
	})
	metrics.Default.CounterFunc("impetus_xmpp_logger_dropped_total", "xmpp_logger lines dropped because the file did not keep up.", "logger", s.loggerDrops)

	var ctl *control.Server
	if path := s.controlPath(x); path != "" {
		var err error
		ctl, err = control.Listen(path, s.controlCommand, s.log.With("module", "control"))
		if err != nil {
			return fmt.Errorf("server: control_socket: %w", err)
		}
		go ctl.Serve(ctx)
		s.log.Info("control socket ready", "path", path)
	}
	var hs *http.Server
	if x.MetricsListen != "" {
		ln, err := net.Listen("tcp", x.MetricsListen)
		if err != nil {
			if ctl != nil {
				ctl.Close()
			}
			return fmt.Errorf("server: metrics_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Default.Handler())
		if x.MetricsPprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("metrics listener failed", "err", err)
			}
		}()
		s.log.Info("metrics listening", "address", ln.Addr().String())
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-s.ops.hup:
			s.log.Info("SIGHUP: reloading the configuration and reopening the logs")
			if err := s.reload(ctx); err != nil {
				// The loggers kept from before still have to follow a rotation.
				if rerr := s.reopenLogs(); rerr != nil {
					s.log.Error("reopening logs failed", "err", rerr)
				}
			}
		}
	}
	signal.Stop(s.ops.hup)
	if ctl != nil {
		ctl.Close()
	}
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = hs.Shutdown(sctx)
		cancel()
	}
	return nil
}

func (s *Server) controlPath(x *config.XMPP) string {
	switch p := x.ControlSocket; {
	case strings.EqualFold(p, "none"):
		return ""
	case p == "":
		return filepath.Join(s.opts.DataDir, DefaultControlSocket)
	case !filepath.IsAbs(p):
		return filepath.Join(s.opts.DataDir, p)
	default:
		return p
	}
}

func (s *Server) loggerDrops() map[string]uint64 {
	s.ops.mu.Lock()
	defer s.ops.mu.Unlock()
	out := make(map[string]uint64, len(s.ops.loggers))
	for _, l := range s.ops.loggers {
		out[l.Name()] = l.Dropped()
	}
	return out
}

// stopOps closes the loggers and the auth stores reloads replaced.
func (s *Server) stopOps() {
	s.ops.mu.Lock()
	defer s.ops.mu.Unlock()
	s.ops.observer.Store(nil)
	closeLoggers(s.ops.loggers)
	s.ops.loggers = nil
	for _, st := range s.ops.oldStores {
		st.Close()
	}
	s.ops.oldStores = nil
	if p := s.ops.store.Load(); p != nil && *p != s.store {
		(*p).Close()
	}
}

// controlCommand runs one command from the control socket.
func (s *Server) controlCommand(ctx context.Context, cmd string, args []string) (string, error) {
	switch strings.ToLower(cmd) {
	case "help":
		return ctlHelp, nil
	case "sessions":
		return s.listSessions(), nil
	case "kick":
		return s.kick(args)
	case "stats":
		return s.stats(), nil
	case "reopen":
		if len(args) > 1 || len(args) == 1 && !strings.EqualFold(args[0], "logs") {
			return "", errors.New("usage: reopen [logs]")
		}
		if err := s.reopenLogs(); err != nil {
			return "", err
		}
		return "logs reopened\n", nil
	case "reload":
		if err := s.reload(ctx); err != nil {
			return "", err
		}
		return "configuration reloaded\n", nil
	}
	return "", fmt.Errorf("unknown command %q; try help", cmd)
}

const ctlHelp = `sessions                       list client sessions: JID, remote address, TLS, since
kick JID [CONDITION [TEXT]]    end the sessions of a full or bare JID with a stream error
                               (policy-violation by default; reset, system-shutdown or conflict)
stats                          connections, sessions, stanzas, authentication, s2s links
reopen [logs]                  reopen the xmpp_logger files (log rotation)
reload                         reload the configuration, as SIGHUP does
`

// sessionInfo is what the control socket shows of a client session.
type sessionInfo interface {
	JID() jid.JID
	Remote() string
	Since() time.Time
	TLSState() *tls.ConnectionState
	Close(*stanza.StreamError)
}

func (s *Server) listSessions() string {
	var rows [][4]string
	for _, sess := range s.router.All() {
		si, ok := sess.(sessionInfo)
		if !ok {
			rows = append(rows, [4]string{sess.JID().String(), "-", "-", "-"})
			continue
		}
		t := "no"
		if st := si.TLSState(); st != nil {
			t = tls.VersionName(st.Version)
		}
		rows = append(rows, [4]string{si.JID().String(), si.Remote(), t, si.Since().UTC().Format(time.RFC3339)})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "JID\tREMOTE\tTLS\tSINCE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r[0], r[1], r[2], r[3])
	}
	w.Flush()
	return b.String()
}

// kickConditions are the stream errors an operator may end a session with.
// policy-violation is the default: the session is ended by local policy, and clients
// reconnect; reset says credentials or security changed and the client must start over.
var kickConditions = []string{"policy-violation", "reset", "system-shutdown", "conflict"}

func (s *Server) kick(args []string) (string, error) {
	if len(args) < 1 {
		return "", errors.New("usage: kick JID [CONDITION [TEXT]]")
	}
	target, err := jid.Parse(args[0])
	if err != nil {
		return "", fmt.Errorf("kick: invalid JID %q", args[0])
	}
	cond := "policy-violation"
	if len(args) > 1 {
		cond = strings.ToLower(args[1])
		ok := false
		for _, c := range kickConditions {
			ok = ok || c == cond
		}
		if !ok {
			return "", fmt.Errorf("kick: condition %q is not one of %s", args[1], strings.Join(kickConditions, ", "))
		}
	}
	text := strings.Join(args[min(2, len(args)):], " ")
	if text == "" {
		text = "ended by the server administrator"
	}
	var kicked []string
	for _, sess := range s.router.Sessions(target.Bare()) {
		if target.Resourcepart() != "" && !sess.JID().Equal(target) {
			continue
		}
		if si, ok := sess.(sessionInfo); ok {
			si.Close(stanza.NewStreamError(cond, text))
			kicked = append(kicked, sess.JID().String())
		}
	}
	if len(kicked) == 0 {
		return "", fmt.Errorf("kick: no session of %s", target)
	}
	sort.Strings(kicked)
	return "kicked " + strings.Join(kicked, ", ") + "\n", nil
}

func (s *Server) stats() string {
	st := metrics.Default.Snapshot()
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintf(w, "uptime\t%s\n", time.Since(s.ops.start).Round(time.Second))
	fmt.Fprintf(w, "sessions\t%d\n", len(s.router.All()))
	// Goroutines return to a baseline when clients leave; the soak test (make soak) checks it.
	fmt.Fprintf(w, "goroutines\t%d\n", runtime.NumGoroutine())
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(w, "heap in use\t%d\n", ms.HeapInuse)
	fmt.Fprintf(w, "connections open\t%d\n", st.ConnectionsOpen)
	fmt.Fprintf(w, "connections accepted\t%d\n", st.ConnectionsAccepted)
	for _, k := range []string{"message", "presence", "iq", "other"} {
		fmt.Fprintf(w, "stanzas in %s\t%d\n", k, st.StanzasIn[k])
	}
	for _, k := range []string{"message", "presence", "iq", "other"} {
		fmt.Fprintf(w, "stanzas out %s\t%d\n", k, st.StanzasOut[k])
	}
	fmt.Fprintf(w, "auth success\t%d\n", st.AuthSuccess)
	fmt.Fprintf(w, "auth failure\t%d\n", st.AuthFailure)
	fmt.Fprintf(w, "s2s links inbound\t%d\n", st.S2SInbound)
	fmt.Fprintf(w, "s2s links outbound\t%d\n", st.S2SOutbound)
	for name, n := range s.loggerDrops() {
		fmt.Fprintf(w, "xmpp_logger %s dropped\t%d\n", name, n)
	}
	w.Flush()
	return b.String()
}
