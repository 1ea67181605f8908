package test

// End-to-end tests of the operations features: xmpp_logger, log_authentication, impetus ctl
// over the control socket, Prometheus metrics, and live reload by SIGHUP and by ctl.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// opsWait bounds every poll of these tests for a condition the server reaches on its own.
const opsWait = 10 * time.Second

// opsServer is a server started from a configuration the test writes itself.
type opsServer struct {
	*Server
	t      *testing.T
	dir    string
	passwd string
}

// opsConfig renders a configuration: xmppOpts go into the xmpp scope, top is added at the
// top level, listenerOpts into xmpp_listener, and one Listen per port.
func (o *opsServer) opsConfig(xmppOpts, top, listenerOpts string, ports ...int) string {
	var listens strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&listens, "  Listen %q {}\n", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	return fmt.Sprintf(`xmpp {
  %s
}
domain "#xmpp#%s" { XMPP_Role = "server" }
%s
xmpp_listener {
  AuthPlainParameters = [ uri = %q log_authentication = true ]
  %s
%s}
`, xmppOpts, testDomain, top, "file://"+o.passwd, listenerOpts, listens.String())
}

// write replaces the configuration file.
func (o *opsServer) write(config string) {
	o.t.Helper()
	if err := os.WriteFile(o.ConfigPath, []byte(config), 0o600); err != nil {
		o.t.Fatal(err)
	}
}

// startOps starts impetus on the configuration config returns for a free port.
func startOps(t *testing.T, users map[string]string, config func(o *opsServer, port int) string) *opsServer {
	t.Helper()
	dir := t.TempDir()
	o := &opsServer{t: t, dir: dir, passwd: filepath.Join(dir, "passwd")}
	if err := writePasswdFile(o.passwd, users); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t, "tcp4", "127.0.0.1:0")
		srv := &Server{
			Dir:        filepath.Join(dir, "data"),
			ConfigPath: filepath.Join(dir, "impetus.conf"),
			PasswdPath: o.passwd,
			Port4:      port,
			stderr:     &syncBuffer{},
			exited:     make(chan struct{}),
		}
		o.Server = srv
		text := config(o, port)
		o.write(text)
		srv.cmd = exec.Command(serverBin, "serve", "--config", srv.ConfigPath, "--data", srv.Dir)
		srv.cmd.Stdout, srv.cmd.Stderr = srv.stderr, srv.stderr
		if err := srv.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			srv.err = srv.cmd.Wait()
			close(srv.exited)
		}()
		err := srv.waitReady()
		if err == nil {
			err = srv.loadCert()
		}
		if err == nil {
			err = o.waitControl()
		}
		if err == nil {
			t.Cleanup(func() { srv.stop(t) })
			return o
		}
		srv.kill()
		lastErr = fmt.Errorf("%w\nconfig:\n%s\nserver output:\n%s", err, text, srv.Stderr())
		if !strings.Contains(srv.Stderr(), "address already in use") {
			break
		}
	}
	t.Fatalf("starting impetus: %v", lastErr)
	return nil
}

// waitControl waits until the control socket exists: it is created after the listeners.
func (o *opsServer) waitControl() error {
	path := filepath.Join(o.Dir, "control.sock")
	deadline := time.Now().Add(opsWait)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-o.exited:
			return fmt.Errorf("impetus exited: %v", o.err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no control socket at %s within %v", path, opsWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ctl runs `impetus ctl` against the server and returns its output and exit code.
func (o *opsServer) ctl(args ...string) (stdout, stderr string, code int) {
	o.t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(serverBin, append([]string{"ctl", "--data", o.Dir}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		o.t.Fatalf("impetus ctl %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// mustCtl runs ctl and fails the test unless it succeeds.
func (o *opsServer) mustCtl(args ...string) string {
	o.t.Helper()
	out, errs, code := o.ctl(args...)
	if code != 0 {
		o.t.Fatalf("impetus ctl %s: exit %d: %s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// waitLog waits until the server's output contains s, n times in all.
func (o *opsServer) waitLog(s string, n int) {
	o.t.Helper()
	deadline := time.Now().Add(opsWait)
	for strings.Count(o.Stderr(), s) < n {
		if time.Now().After(deadline) {
			o.t.Fatalf("the server did not log %q (%d times) within %v", s, n, opsWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// opsPing sends an XEP-0199 ping to the server and checks the result: the session works.
func opsPing(c *rawConn, id string) {
	c.t.Helper()
	c.send(fmt.Sprintf(`<iq type='get' id='%s' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>`, id, testDomain))
	for {
		e := c.mustElement("the ping result")
		if e.is(nsClient, "iq") && e.attr("id") == id {
			if e.attr("type") != "result" {
				c.t.Fatalf("ping answered with %s", e)
			}
			return
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOpsLoggerMetricsAndAuthLog(t *testing.T) {
	metricsPort := freePort(t, "tcp4", "127.0.0.1:0")
	var logPath, bodiesPath string
	o := startOps(t, map[string]string{"alice": "pw-a", "bob": "pw-b"}, func(o *opsServer, port int) string {
		logPath = filepath.Join(o.dir, "xmpplog.ec")
		bodiesPath = filepath.Join(o.dir, "bodies.ec")
		return o.opsConfig(
			fmt.Sprintf(`debug_level = "ERROR"
  metrics_listen = "127.0.0.1:%d"`, metricsPort),
			fmt.Sprintf(`xmpp_logger "xmpp_logger1" {
  logfile = %q
  logmode = 0600
  heartbeat = 0
}
xmpp_logger "bodies" {
  logfile = %q
  log_delivery = false
  log_reception_format = "%%st|%%so"
}`, logPath, bodiesPath), "", port)
	})

	alice := dialRaw(t, o.Server)
	_, aliceJID := alice.login(o.Server, "alice", "pw-a", "phone")
	bob := dialRaw(t, o.Server)
	_, bobJID := bob.login(o.Server, "bob", "pw-b", "laptop")
	bob.send(`<presence/>`)
	alice.send(fmt.Sprintf(`<message to='%s' id='m1' type='chat'><body>the secret</body></message>`, bobJID))
	for {
		e := bob.mustElement("alice's message")
		if e.is(nsClient, "message") {
			break
		}
	}
	// A failed attempt, for the authentication log.
	eve := dialRaw(t, o.Server)
	eve.open()
	eve.startTLS(o.Server)
	eve.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>` + "AGFsaWNlAHdyb25n" + `</auth>`)
	if f := eve.mustElement("<failure/>"); !f.is(nsSASL, "failure") {
		t.Fatalf("wrong password answered with %s", f)
	}

	// Reopening writes out every queued line first, so the files are complete afterwards.
	o.mustCtl("reopen", "logs")
	local := alice.tcp.LocalAddr().String()
	log := readFile(t, logPath)
	wantR := fmt.Sprintf("+R+message+%s+%s+m1+chat+%s\n", bobJID, aliceJID, local)
	wantD := fmt.Sprintf("+D+message+%s+%s+m1+chat+%s\n", bobJID, aliceJID, bob.tcp.LocalAddr().String())
	if !strings.Contains(log, wantR) || !strings.Contains(log, wantD) {
		t.Errorf("xmpp_logger1 lacks %q or %q:\n%s", wantR, wantD, log)
	}
	if fi, err := os.Stat(logPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("log file mode: %v, %v; want 0600", fi.Mode(), err)
	}
	bodies := readFile(t, bodiesPath)
	if !strings.Contains(bodies, "message|<message") || !strings.Contains(bodies, "<body>***</body>") || strings.Contains(bodies, "the secret") {
		t.Errorf("bodies logger:\n%s", bodies)
	}

	// Rotation: move the file away, reopen, and the next line lands in a new file.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	o.mustCtl("reopen")
	opsPing(alice, "after-rotation")
	o.mustCtl("reopen")
	if got := readFile(t, logPath); !strings.Contains(got, "+R+iq+localhost+"+aliceJID+"+after-rotation+get+") {
		t.Errorf("after rotation the log holds:\n%s", got)
	}

	// log_authentication prints both outcomes although debug_level is ERROR.
	out := o.Stderr()
	if !strings.Contains(out, `level=AUTH msg="authentication succeeded"`) || !strings.Contains(out, `level=AUTH msg="authentication failed"`) || !strings.Contains(out, "condition=not-authorized") {
		t.Errorf("authentication log missing:\n%s", out)
	}

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(body)
	for _, want := range []string{
		`impetus_stanzas_received_total{kind="message"} 1` + "\n",
		`impetus_auth_attempts_total{mechanism="PLAIN",outcome="success"} 2` + "\n",
		`impetus_auth_attempts_total{mechanism="PLAIN",outcome="failure"} 1` + "\n",
		"impetus_sessions 2\n",
		"impetus_connections_open 3\n",
		`impetus_s2s_links{direction="outbound"} 0` + "\n",
		"# TYPE impetus_route_duration_seconds histogram\n",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}
}

func TestOpsCtlSessionsKickStats(t *testing.T) {
	o := startOps(t, map[string]string{"alice": "pw"}, func(o *opsServer, port int) string {
		return o.opsConfig(`debug_level = "DEBUG"`, "", "", port)
	})
	alice := dialRaw(t, o.Server)
	_, full := alice.login(o.Server, "alice", "pw", "phone")

	out := o.mustCtl("sessions")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "JID") {
		t.Fatalf("sessions:\n%s", out)
	}
	f := strings.Fields(lines[1])
	if len(f) != 5 || f[0] != full || f[1] != alice.tcp.LocalAddr().String() || f[2] != "TLS" || !strings.HasPrefix(f[3], "1.") {
		t.Errorf("session line %q, want %s, %s, TLS 1.x, since", lines[1], full, alice.tcp.LocalAddr())
	}
	if _, err := time.Parse(time.RFC3339, f[4]); err != nil {
		t.Errorf("since %q: %v", f[4], err)
	}

	if out := o.mustCtl("stats"); !strings.Contains(out, "sessions") || !strings.Contains(out, "auth success") {
		t.Errorf("stats:\n%s", out)
	}
	if _, errs, code := o.ctl("kick", "nobody@localhost"); code != 1 || !strings.Contains(errs, "no session") {
		t.Errorf("kick of an absent JID: exit %d, %q", code, errs)
	}
	if _, errs, code := o.ctl("kick", full, "bogus"); code != 1 || !strings.Contains(errs, "policy-violation") {
		t.Errorf("kick with an unknown condition: exit %d, %q", code, errs)
	}
	if _, errs, code := o.ctl("frobnicate"); code != 1 || !strings.Contains(errs, "unknown command") {
		t.Errorf("unknown command: exit %d, %q", code, errs)
	}
	if out := o.mustCtl("kick", full); !strings.Contains(out, "kicked "+full) {
		t.Errorf("kick: %q", out)
	}
	alice.expectStreamError("policy-violation")
	if out := o.mustCtl("sessions"); strings.Contains(out, full) {
		// The session leaves the table once its read loop ends, which the closed
		// connection makes happen promptly; poll rather than assume a delay.
		deadline := time.Now().Add(opsWait)
		for strings.Contains(o.mustCtl("sessions"), full) {
			if time.Now().After(deadline) {
				t.Fatalf("%s still listed after the kick", full)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestOpsReload(t *testing.T) {
	var logPath string
	first := func(o *opsServer, port int) string {
		return o.opsConfig(`debug_level = "DEBUG"`, "", "", port)
	}
	o := startOps(t, map[string]string{"alice": "pw"}, first)
	logPath = filepath.Join(o.dir, "added.ec")
	alice := dialRaw(t, o.Server)
	alice.login(o.Server, "alice", "pw", "phone")
	opsPing(alice, "p0")

	// Add a Listen scope, an xmpp_logger and a user, then SIGHUP.
	port2 := freePort(t, "tcp4", "127.0.0.1:0")
	if err := writePasswdFile(o.passwd, map[string]string{"alice": "pw", "carol": "pw-c"}); err != nil {
		t.Fatal(err)
	}
	logger := fmt.Sprintf(`xmpp_logger "added" { logfile = %q heartbeat = 0 }`, logPath)
	o.write(o.opsConfig(`debug_level = "DEBUG"`, logger, "", o.Port4, port2))
	if err := o.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	o.waitLog("configuration reloaded", 1)

	opsPing(alice, "p1") // the session from before the reload is still there
	carol := &Server{Port4: port2, Cert: o.Cert, CertPath: o.CertPath}
	c := dialRaw(t, carol)
	c.login(o.Server, "carol", "pw-c", "desk") // new port, and the user the new store knows
	opsPing(c, "c1")
	o.mustCtl("reopen")
	if log := readFile(t, logPath); !strings.Contains(log, "+R+iq+localhost+alice@localhost/phone+p1+get+") {
		t.Errorf("the logger added by the reload did not log the ping:\n%s", log)
	}

	// An invalid configuration is rejected, by SIGHUP and by ctl, and nothing changes.
	good := readFile(t, o.ConfigPath)
	o.write(good + "\nxmpp_logger \"broken\" { logfile = \"/nonexistent/dir/x.ec\" log_reception_format = \"%q\" }\nbogus_scope {\n")
	if err := o.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	o.waitLog("configuration reload rejected", 1)
	if _, errs, code := o.ctl("reload"); code != 1 || errs == "" {
		t.Errorf("ctl reload of an invalid configuration: exit %d, %q", code, errs)
	}
	o.waitLog("configuration reload rejected", 2)
	opsPing(alice, "p2")
	opsPing(c, "c2")

	// A valid configuration without the second Listen closes that socket; the session that
	// came in through it stays.
	o.write(o.opsConfig(`debug_level = "INFO"`, logger, "", o.Port4))
	if out := o.mustCtl("reload"); !strings.Contains(out, "reloaded") {
		t.Errorf("ctl reload: %q", out)
	}
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port2)), rawTimeout); err == nil {
		conn.Close()
		t.Errorf("the removed Listen %d still accepts connections", port2)
	}
	opsPing(c, "c3")
	opsPing(alice, "p3")
}

// writeCert writes a fresh self-signed certificate and key for the test domain.
func writeCert(t *testing.T, dir string) (certPath, keyPath string, der []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: testDomain},
		DNSNames:     []string{testDomain},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "renewed.crt"), filepath.Join(dir, "renewed.key")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	return certPath, keyPath, der
}

func TestOpsReloadCertificate(t *testing.T) {
	o := startOps(t, map[string]string{"alice": "pw"}, func(o *opsServer, port int) string {
		return o.opsConfig(`debug_level = "DEBUG"`, "", "", port)
	})
	alice := dialRaw(t, o.Server)
	alice.login(o.Server, "alice", "pw", "phone")

	certPath, keyPath, der := writeCert(t, o.dir)
	o.write(o.opsConfig(`debug_level = "DEBUG"`, "", fmt.Sprintf("tls_certificate = %q\n  tls_key = %q", certPath, keyPath), o.Port4))
	o.mustCtl("reload")

	var presented []byte
	c := dialRaw(t, o.Server)
	c.open()
	c.startTLSWith(&tls.Config{
		ServerName:         testDomain,
		InsecureSkipVerify: true, // the test compares the certificate itself
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			presented = raw[0]
			return nil
		},
	})
	if !bytes.Equal(presented, der) {
		t.Errorf("after the reload STARTTLS presented a certificate other than %s", certPath)
	}
	opsPing(alice, "still-here") // negotiated with the old certificate, still up
}
