package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCallAndMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	h := func(_ context.Context, cmd string, args []string) (string, error) {
		if cmd == "fail" {
			return "", errors.New("it failed")
		}
		return cmd + ":" + strings.Join(args, ","), nil
	}
	srv, err := Listen(path, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	resp, err := Call(ctx, path, "kick", "a@b/c", "reset")
	if err != nil || !resp.OK || resp.Output != "kick:a@b/c,reset" {
		t.Errorf("Call = %+v, %v", resp, err)
	}
	resp, err = Call(ctx, path, "fail")
	if err != nil || resp.OK || resp.Error != "it failed" {
		t.Errorf("failing command: %+v, %v", resp, err)
	}
	// A second server on the same path is refused while the first answers.
	if _, err := Listen(path, h, nil); err == nil {
		t.Error("a second Listen on a live socket succeeded")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind after Close: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	srv, err := Listen(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Closing the listener without removing the file leaves what a crash leaves.
	srv.ln.Close()
	srv2, err := Listen(path, func(context.Context, string, []string) (string, error) { return "", nil }, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	srv2.Close()
}

func TestNotASocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := Listen(path, nil, nil); err == nil || !strings.HasPrefix(err.Error(), "control: ") {
		t.Errorf("Listen over a file = %v", err)
	}
}
