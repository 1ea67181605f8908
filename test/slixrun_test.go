package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// slixStatus is what every script in test/slix reports besides its
// scenario's own fields.
type slixStatus struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// runSlixScript runs one scenario of script, a file in test/slix, against the
// server at host:port whose certificate is in certPath, and decodes the JSON
// object the script prints on its last line into a T. The run is bounded by
// timeout; the script's log, which has every XML exchange, is attached to the
// test log when the test fails.
func runSlixScript[T any](t *testing.T, script string, timeout time.Duration, host string, port int, certPath, scenario string, args ...string) (T, slixStatus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	path := filepath.Join(filepath.Dir(slixScript(t)), script)
	full := append([]string{path, scenario, "--host", host, "--port", strconv.Itoa(port), "--cert", certPath}, args...)
	cmd := exec.CommandContext(ctx, python, full...)
	// Keep the source tree free of __pycache__ directories.
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("slixmpp %s log:\n%s", scenario, stderr.String())
		}
	})
	if ctx.Err() != nil {
		t.Fatalf("slixmpp %s did not finish within %v", scenario, timeout)
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("running slixmpp %s: %v", scenario, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	last := []byte(lines[len(lines)-1])
	var res T
	var st slixStatus
	if jerr := errors.Join(json.Unmarshal(last, &res), json.Unmarshal(last, &st)); jerr != nil {
		t.Fatalf("slixmpp %s printed no JSON result (exit %v): %v\nstdout:\n%s", scenario, err, jerr, stdout.String())
	}
	return res, st
}

// runSlixOK runs one scenario of script over IPv4 like runSlixScript and
// fails the test unless the script reports that the scenario went through;
// the checks of its fields are the caller's.
func runSlixOK[T any](t *testing.T, srv *Server, script string, timeout time.Duration, scenario string, args ...string) T {
	t.Helper()
	res, st := runSlixScript[T](t, script, timeout, "127.0.0.1", srv.Port4, srv.CertPath, scenario, args...)
	if !st.OK {
		t.Fatalf("slixmpp %s failed: %s\nresult: %+v", scenario, st.Error, res)
	}
	return res
}
