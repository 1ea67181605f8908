package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"impetus/internal/config"
	"impetus/internal/control"
	"impetus/internal/observe"
)

// lockedBuffer collects log output written from the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestModuleLevels(t *testing.T) {
	var buf bytes.Buffer
	s := &Server{}
	log := s.setupLogging(&buf, config.LevelError)
	log.Info("hidden info")
	log.Error("shown error")
	log.Log(context.Background(), observe.LevelAuth, "shown auth")
	mod := s.moduleLog("xmpp_logger:a", config.LevelDebug)
	mod.Debug("shown module debug")
	mod.Log(context.Background(), slog.LevelInfo+2, "shown notice")
	s.ops.xmpp.Set(logLevel(config.LevelCritical))
	log.Error("hidden error")
	log.Log(context.Background(), slog.LevelError+4, "shown critical")
	// Asking for the instance again, as a reload does, changes the level of loggers out there.
	s.moduleLog("xmpp_logger:a", config.LevelError)
	mod.Debug("hidden module debug")

	out := buf.String()
	for _, want := range []string{
		`level=ERROR msg="shown error"`,
		`level=AUTH msg="shown auth"`,
		`level=DEBUG msg="shown module debug" module=xmpp_logger:a`,
		`level=NOTICE msg="shown notice"`,
		`level=CRITICAL msg="shown critical"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Errorf("filtered records logged:\n%s", out)
	}
}

func TestRestartOnly(t *testing.T) {
	parse := func(src string) *config.Config {
		c, _, err := config.Parse("t.conf", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := parse(`xmpp {} domain "a.example" { xmpp_role = "server" }`)
	b := parse(`xmpp { max_roster_items = 5 metrics_listen = "127.0.0.1:1" } domain "a.example" { xmpp_role = "server" } domain "b.example" { xmpp_role = "server" }`)
	got := strings.Join(restartOnly(a, b), "; ")
	for _, want := range []string{"hosted domains", "max_roster_items", "metrics_listen"} {
		if !strings.Contains(got, want) {
			t.Errorf("restartOnly = %q, lacks %q", got, want)
		}
	}
	if r := restartOnly(a, a); len(r) != 0 {
		t.Errorf("restartOnly of identical configurations = %q", r)
	}
}

// TestReloadInProcess runs the server, reloads a changed, an invalid and a fixed
// configuration through the control socket, and checks each outcome.
func TestReloadInProcess(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	passwd := filepath.Join(dir, "passwd")
	os.WriteFile(passwd, []byte("alice:pw\n"), 0o600)
	cfgPath := filepath.Join(dir, "impetus.conf")
	conf := func(xmpp, extra string) string {
		return fmt.Sprintf(`xmpp { %s }
domain "#xmpp#localhost" { XMPP_Role = "server" }
%s
xmpp_listener {
  AuthPlainParameters = [ uri = %q ]
  Listen "127.0.0.1:0" {}
}
`, xmpp, extra, "file://"+passwd)
	}
	os.WriteFile(cfgPath, []byte(conf(`debug_level = "INFO"`, "")), 0o600)

	logs := &lockedBuffer{}
	ready := make(chan []string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigPath: cfgPath, DataDir: data, LogOutput: logs, Ready: func(a []string) { ready <- a }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run ended: %v\n%s", err, logs)
	}
	sock := filepath.Join(data, DefaultControlSocket)
	call := func(cmd string) *control.Response {
		t.Helper()
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		for {
			r, err := control.Call(cctx, sock, cmd)
			if err == nil {
				return r
			}
			if cctx.Err() != nil {
				t.Fatalf("control %s: %v\n%s", cmd, err, logs)
			}
			time.Sleep(10 * time.Millisecond) // the socket comes up just after Ready
		}
	}

	logPath := filepath.Join(dir, "x.ec")
	os.WriteFile(cfgPath, []byte(conf(`debug_level = "DEBUG"`, fmt.Sprintf(`xmpp_logger "x" { logfile = %q }`, logPath))), 0o600)
	if r := call("reload"); !r.OK {
		t.Fatalf("reload: %+v\n%s", r, logs)
	}
	if _, err := os.Stat(logPath); err != nil {
		t.Errorf("the reload did not start the xmpp_logger: %v", err)
	}
	if r := call("reopen"); !r.OK {
		t.Errorf("reopen: %+v", r)
	}

	os.WriteFile(cfgPath, []byte(conf(`debug_level = "LOUD"`, "")), 0o600)
	r := call("reload")
	if r.OK || !strings.Contains(r.Error, "debug_level") {
		t.Errorf("reload of an invalid configuration: %+v", r)
	}
	if !strings.Contains(logs.String(), "configuration reload rejected") {
		t.Errorf("rejection not logged:\n%s", logs)
	}
	if r := call("stats"); !r.OK || !strings.Contains(r.Output, "sessions") {
		t.Errorf("stats after a rejected reload: %+v", r)
	}
}
