// Package test holds the end-to-end interoperability tests of Impetus: each test
// starts the real server binary on loopback ports and talks to it with an
// independent client (Debian's slixmpp, mellium.im/xmpp, or hand-written XML).
package test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds on every wait the harness does, so that a hung server fails a test
// instead of hanging the whole run.
const (
	startTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
	buildTimeout = 8 * time.Minute
)

// testDomain is the only domain the test servers host.
const testDomain = "localhost"

// serverBin is the path of the impetus binary every test runs.
var serverBin string

// TestMain resolves the server binary once per run: $IMPETUS_BIN when set, so
// that `make test` tests exactly the binary it built, and otherwise a fresh
// build of ./cmd/impetus into a temporary directory.
func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if bin := os.Getenv("IMPETUS_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "IMPETUS_BIN: %v\n", err)
			return 1
		}
		serverBin = abs
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "impetus-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "temp dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	serverBin = filepath.Join(dir, "impetus")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	// The package path resolves from the test's working directory, which is
	// inside the module, so no assumption about the repository layout is made.
	cmd := exec.CommandContext(ctx, "go", "build", "-o", serverBin, "impetus/cmd/impetus")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building impetus/cmd/impetus failed: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// syncBuffer collects the server's stderr; the process writes it while the
// test reads it, so access is serialized.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ServerOptions describes the server a test wants.
type ServerOptions struct {
	// Users are written to a clear-text password file (user:password lines)
	// used through AuthPlainParameters.
	Users map[string]string
	// DigestUsers, when set, are written to an htdigest-style file
	// (user:realm:md5hex) used through AuthDigestMD5Parameters instead of the
	// clear-text file, since a server can only offer DIGEST-MD5 from it.
	DigestUsers map[string]string
	// NoIPv6 leaves out the [::1] listener.
	NoIPv6 bool
}

// Server is a running impetus process and what a client needs to reach it.
type Server struct {
	Dir        string // data directory
	ConfigPath string
	PasswdPath string // clear-text password file, empty with DigestUsers
	DigestPath string // htdigest file, empty without DigestUsers
	Port4      int    // port of the 127.0.0.1 listener
	Port6      int    // port of the [::1] listener, 0 when there is none
	CertPath   string // the server's generated self-signed certificate
	Cert       *x509.Certificate

	cmd      *exec.Cmd
	stderr   *syncBuffer
	exited   chan struct{}
	err      error // the process's exit status, valid once exited is closed
	stopOnce sync.Once
}

// Addr4 is the IPv4 listener's address.
func (s *Server) Addr4() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port4)) }

// Addr6 is the IPv6 listener's address.
func (s *Server) Addr6() string { return net.JoinHostPort("::1", strconv.Itoa(s.Port6)) }

// Stderr returns what the server has logged so far.
func (s *Server) Stderr() string { return s.stderr.String() }

var (
	ipv6Once sync.Once
	ipv6OK   bool
)

// hasIPv6 reports whether the machine can listen on [::1]; some containers
// have no IPv6 loopback at all, and there the IPv6 cases are skipped.
func hasIPv6() bool {
	ipv6Once.Do(func() {
		l, err := net.Listen("tcp6", "[::1]:0")
		if err == nil {
			ipv6OK = true
			l.Close()
		}
	})
	return ipv6OK
}

// freePort asks the kernel for an unused port on addr. Another process can
// take it before the server binds it, so StartServer retries on such a race.
func freePort(t testing.TB, network, addr string) int {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("finding a free port on %s: %v", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartServer starts impetus with a configuration built from opts in a fresh
// temporary data directory, waits until every listener accepts connections,
// and registers a cleanup that stops it and checks that it exits cleanly.
func StartServer(t testing.TB, opts ServerOptions) *Server {
	t.Helper()
	var lastErr error
	// A port picked by freePort may be taken by a parallel test before the
	// server binds it; that shows as an early exit, and a retry with new
	// ports is the fix. Any other failure is reported at once.
	for attempt := 0; attempt < 3; attempt++ {
		s, retry, err := tryStartServer(t, opts)
		if err == nil {
			return s
		}
		lastErr = err
		if !retry {
			break
		}
	}
	t.Fatalf("starting impetus: %v", lastErr)
	return nil
}

func tryStartServer(t testing.TB, opts ServerOptions) (s *Server, retry bool, err error) {
	t.Helper()
	dir := t.TempDir()
	s = &Server{
		Dir:    filepath.Join(dir, "data"),
		Port4:  freePort(t, "tcp4", "127.0.0.1:0"),
		stderr: &syncBuffer{},
		exited: make(chan struct{}),
	}
	if !opts.NoIPv6 && hasIPv6() {
		s.Port6 = freePort(t, "tcp6", "[::1]:0")
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, false, err
	}

	var auth string
	if opts.DigestUsers != nil {
		s.DigestPath = filepath.Join(dir, "htdigest")
		if err := writeDigestFile(s.DigestPath, testDomain, opts.DigestUsers); err != nil {
			return nil, false, err
		}
		auth = fmt.Sprintf("AuthDigestMD5Parameters = [ uri = %q realm = %q ]", "digest://"+s.DigestPath, testDomain)
	} else {
		s.PasswdPath = filepath.Join(dir, "passwd")
		if err := writePasswdFile(s.PasswdPath, opts.Users); err != nil {
			return nil, false, err
		}
		auth = fmt.Sprintf("AuthPlainParameters = [ uri = %q ]", "file://"+s.PasswdPath)
	}
	listen := fmt.Sprintf("  Listen %q {}\n", s.Addr4())
	if s.Port6 != 0 {
		listen += fmt.Sprintf("  Listen %q {}\n", s.Addr6())
	}
	config := fmt.Sprintf(`xmpp { debug_level = "DEBUG" }
domain "#xmpp#%s" { XMPP_Role = "server" }
xmpp_listener {
  %s
%s}
`, testDomain, auth, listen)
	s.ConfigPath = filepath.Join(dir, "impetus.conf")
	if err := os.WriteFile(s.ConfigPath, []byte(config), 0o600); err != nil {
		return nil, false, err
	}

	s.cmd = exec.Command(serverBin, "serve", "--config", s.ConfigPath, "--data", s.Dir)
	s.cmd.Stdout = s.stderr
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, false, err
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitReady(); err != nil {
		s.kill()
		out := s.Stderr()
		retry = strings.Contains(out, "address already in use")
		return nil, retry, fmt.Errorf("%w\nconfig:\n%s\nserver output:\n%s", err, config, out)
	}
	if err := s.loadCert(); err != nil {
		s.kill()
		return nil, false, fmt.Errorf("%w\nserver output:\n%s", err, s.Stderr())
	}
	t.Cleanup(func() { s.stop(t) })
	return s, false, nil
}

// waitReady waits, at most startTimeout, until every listener accepts a TCP
// connection, and fails early if the process exits.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	addrs := []string{s.Addr4()}
	if s.Port6 != 0 {
		addrs = append(addrs, s.Addr6())
	}
	for _, addr := range addrs {
		for {
			select {
			case <-s.exited:
				return fmt.Errorf("impetus exited before listening on %s: %v", addr, s.err)
			default:
			}
			c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("impetus did not accept connections on %s within %v: %v", addr, startTimeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// loadCert finds the certificate the server generated under its data
// directory. The documented name is tls/selfsigned.crt; any other .crt or
// .pem file is accepted so that a rename shows up as a log line rather than
// as every TLS test failing.
func (s *Server) loadCert() error {
	want := filepath.Join(s.Dir, "tls", "selfsigned.crt")
	path := want
	if _, err := os.Stat(want); err != nil {
		var found []string
		_ = filepath.WalkDir(s.Dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".crt") || strings.HasSuffix(p, ".pem")) {
				found = append(found, p)
			}
			return nil
		})
		sort.Strings(found)
		if len(found) == 0 {
			return fmt.Errorf("no certificate under the data directory %s (expected %s)", s.Dir, want)
		}
		path = found[0]
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return fmt.Errorf("%s holds no PEM certificate", path)
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		s.CertPath, s.Cert = path, cert
		return nil
	}
}

// TLSConfig returns a client configuration that trusts exactly the server's
// generated certificate. Verification is done by comparing the presented
// leaf with the file rather than by chain building, because a self-signed
// certificate's fitness as a trust anchor is not what these tests are about.
func (s *Server) TLSConfig() *tls.Config {
	want := sha256.Sum256(s.Cert.Raw)
	return &tls.Config{
		ServerName:         testDomain,
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("server presented no certificate")
			}
			if sha256.Sum256(raw[0]) != want {
				return errors.New("server presented a certificate other than " + s.CertPath)
			}
			return nil
		},
	}
}

// kill ends a process that failed to start properly.
func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
	}
}

// Stop sends SIGTERM and waits at most stopTimeout for the server to exit,
// failing the test when it hangs or exits with an error. It is safe to call
// more than once; the cleanup calls it too.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stopOnce.Do(func() { s.terminate(t) })
}

// stop is the cleanup: it stops the server if the test has not and, on any
// failure of the test, logs the server's output, which is where the server
// explains itself.
func (s *Server) stop(t testing.TB) {
	s.Stop(t)
	if t.Failed() {
		t.Logf("impetus output (%s):\n%s", s.Dir, s.Stderr())
	}
}

// terminate does the work of Stop; a process that is already gone is an
// error, since nothing in a test should make the server exit on its own.
func (s *Server) terminate(t testing.TB) {
	select {
	case <-s.exited:
		t.Errorf("impetus exited before it was told to stop: %v", s.err)
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
			if s.err != nil {
				t.Errorf("impetus exited with an error after SIGTERM: %v", s.err)
			}
		case <-time.After(stopTimeout):
			t.Errorf("impetus did not exit within %v of SIGTERM", stopTimeout)
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
}

// writePasswdFile writes a clear-text Momentum password file.
func writePasswdFile(path string, users map[string]string) error {
	var b strings.Builder
	for _, u := range sortedKeys(users) {
		fmt.Fprintf(&b, "%s:%s\n", u, users[u])
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// writeDigestFile writes an htdigest file: user:realm:md5hex(user:realm:password).
func writeDigestFile(path, realm string, users map[string]string) error {
	var b strings.Builder
	for _, u := range sortedKeys(users) {
		sum := md5.Sum([]byte(u + ":" + realm + ":" + users[u]))
		fmt.Fprintf(&b, "%s:%s:%s\n", u, realm, hex.EncodeToString(sum[:]))
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// family is one of the two loopback address families a test runs over.
type family struct {
	name string // "IPv4" or "IPv6"
	ip   string // the literal the client dials
}

var families = []family{{"IPv4", "127.0.0.1"}, {"IPv6", "::1"}}

// addr returns the server's listener for f, skipping the test when the
// machine has no IPv6 loopback.
func (s *Server) addr(t testing.TB, f family) string {
	t.Helper()
	if f.ip == "::1" {
		if s.Port6 == 0 {
			t.Skip("no IPv6 loopback on this machine")
		}
		return s.Addr6()
	}
	return s.Addr4()
}

// port returns the port of the server's listener for f, as addr does.
func (s *Server) port(t testing.TB, f family) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(s.addr(t, f))
	n, _ := strconv.Atoi(p)
	return n
}

// TestServerShutdown checks the harness's own contract with the binary and
// the server's behaviour on SIGTERM: the data directory gets the generated
// certificate, and connected clients are told <system-shutdown/> (RFC 6120
// §4.9.3.17) before the process exits cleanly.
func TestServerShutdown(t *testing.T) {
	t.Parallel()
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "pw"}, NoIPv6: true})
	if want := filepath.Join(srv.Dir, "tls", "selfsigned.crt"); srv.CertPath != want {
		t.Errorf("self-signed certificate at %s, documented as %s", srv.CertPath, want)
	}
	if err := srv.Cert.VerifyHostname(testDomain); err != nil {
		t.Errorf("generated certificate does not name the hosted domain: %v", err)
	}

	bound := dialRaw(t, srv)
	bound.login(srv, "alice", "pw", "shutdown")
	fresh := dialRaw(t, srv)
	fresh.open()

	srv.Stop(t)
	bound.expectStreamError("system-shutdown")
	fresh.expectStreamError("system-shutdown")
}
