package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"impetus/internal/control"
)

func TestCtl(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	srv, err := control.Listen(sock, func(_ context.Context, cmd string, args []string) (string, error) {
		if cmd == "kick" {
			return "", errors.New("kick: no session of " + args[0])
		}
		return cmd + " " + strings.Join(args, " ") + "\n", nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	defer srv.Close()

	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := run(append([]string{"ctl"}, args...), nil, &out, &errb)
		return out.String(), errb.String(), code
	}
	if out, _, code := run("--data", dir, "reopen", "logs"); code != 0 || out != "reopen logs\n" {
		t.Errorf("reopen logs: %d %q", code, out)
	}
	if _, errs, code := run("--socket", sock, "kick", "a@b"); code != 1 || !strings.Contains(errs, "no session of a@b") {
		t.Errorf("failing command: %d %q", code, errs)
	}
	// control_socket in the configuration, relative to the data directory.
	other := filepath.Join(dir, "d2")
	os.MkdirAll(other, 0o700)
	os.Symlink(sock, filepath.Join(other, "ops.sock"))
	cfg := filepath.Join(dir, "impetus.conf")
	os.WriteFile(cfg, []byte("xmpp { control_socket = \"ops.sock\" }\n"), 0o600)
	if out, errs, code := run("--config", cfg, "--data", other, "stats"); code != 0 || out != "stats \n" {
		t.Errorf("via --config: %d %q %q", code, out, errs)
	}
	if _, _, code := run(); code != 2 {
		t.Errorf("no command: exit %d, want 2", code)
	}
	if _, errs, code := run("--socket", filepath.Join(dir, "absent.sock"), "stats"); code != 1 || !strings.HasPrefix(errs, "impetus ctl: control: ") {
		t.Errorf("absent socket: %d %q", code, errs)
	}
}
