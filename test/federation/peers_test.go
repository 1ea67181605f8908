// Package federation tests Impetus's server-to-server streams against real servers: Debian's
// Prosody and ejabberd run next to Impetus, each on its own loopback address, with
// configurations in temporary directories. scripts/peers.sh installs them when missing; the
// tests fail, never skip, when they cannot run.
package federation

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// python is Debian's interpreter, the one that has python3-slixmpp.
const python = "/usr/bin/python3"

// serverBin is the impetus binary under test.
var serverBin string

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// The script installs Prosody and ejabberd when missing and stops their system services;
	// when both are present it returns at once.
	if out, err := exec.CommandContext(ctx, "../../scripts/peers.sh").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "scripts/peers.sh failed: %v\n%s", err, out)
		return 1
	}
	if bin := os.Getenv("IMPETUS_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		serverBin = abs
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "impetus-fed-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	serverBin = filepath.Join(dir, "impetus")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", serverBin, "impetus/cmd/impetus").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building impetus failed: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// proc is a daemon started by the test, in its own process group so that stopping it also
// stops what it started (runuser, su and the Erlang VM).
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	stop   func() // a graceful stop, tried before signals
}

func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.kill)
	return p
}

// kill stops the process group: the graceful stop first, then SIGTERM, then SIGKILL.
func (p *proc) kill() {
	if p.stop != nil {
		p.stop()
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
	// Children that left the group's leader behind still belong to the group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// waitListen waits until addr accepts TCP connections.
func waitListen(t *testing.T, p *proc, addr string, timeout time.Duration, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before listening on %s\noutput:\n%s\nlog:\n%s", p.name, addr, p.out.String(), logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within %v\noutput:\n%s\nlog:\n%s", p.name, addr, timeout, p.out.String(), logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ownedDir makes a directory readable by every user and owned by the named one, so a daemon
// that drops privileges can use it.
func ownedDir(t *testing.T, path, owner string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	chown(t, path, owner)
}

func chown(t *testing.T, path, owner string) {
	t.Helper()
	u, err := user.Lookup(owner)
	if err != nil {
		t.Fatalf("user %s: %v (run scripts/peers.sh)", owner, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// selfSigned writes a throw-away certificate and key for domain.
func selfSigned(t *testing.T, domain string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: domain},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{domain},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, path string, data []byte, owner string) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if owner != "" {
		chown(t, path, owner)
	}
}

// addrSet is the three loopback addresses of one run.
type addrSet struct{ impetus, prosody, ejabberd string }

// pickAddrs finds three loopback addresses whose ports 5222, 5269 and 5270 are free. The peers must
// use port 5269, since neither Prosody nor ejabberd can be told another port for a domain
// without DNS; the address is what varies.
func pickAddrs(t *testing.T) addrSet {
	t.Helper()
	free := func(ip string) bool {
		for _, port := range []string{"5222", "5269", "5270"} {
			l, err := net.Listen("tcp4", net.JoinHostPort(ip, port))
			if err != nil {
				return false
			}
			l.Close()
		}
		return true
	}
	for base := 2; base < 250; base += 10 {
		s := addrSet{fmt.Sprintf("127.0.0.%d", base), fmt.Sprintf("127.0.0.%d", base+1), fmt.Sprintf("127.0.0.%d", base+2)}
		if free(s.impetus) && free(s.prosody) && free(s.ejabberd) {
			return s
		}
	}
	t.Fatal("no three loopback addresses with free ports 5222 and 5269")
	return addrSet{}
}

func readLog(path string) func() string {
	return func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			return "(" + err.Error() + ")"
		}
		if len(b) > 20000 {
			b = b[len(b)-20000:]
		}
		return string(b)
	}
}

// runCmd runs a helper command (prosodyctl, ejabberdctl) with a bound.
func runCmd(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
