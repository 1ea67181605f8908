package cluster

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"impetus/internal/s2s"
	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// The federation peer of TestFederationOneStreamPerPair.
const (
	fedPeerDomain = "prosody.test"
	fedPeerUser   = "bob"
	fedPeerPass   = "peer-pw"
	fedSecret     = "cluster-dialback-secret"
	// fedSecondDomain is hosted without XMPP_Dialback_Secret: the nodes use the secret the
	// cluster shares through NATS.
	fedSecondDomain = "second.localhost"
	// fedDownDomain is a remote domain whose server cannot be reached.
	fedDownDomain = "down.test"
	fedPython     = "/usr/bin/python3"
)

// fedRoutes is the Prosody plugin of test/federation: fixed addresses for the listed domains
// instead of DNS.
const fedRoutes = `local service = require "net.resolvers.service";
local manual = require "net.resolvers.manual";
local routes = module:get_option("test_s2s_routes", {});
if not service._test_routes_orig then
	service._test_routes_orig = service.new;
	service.new = function(hostname, service_name, proto, extra)
		local r = routes[hostname];
		if r then
			if service_name ~= "xmpp-server" then
				return manual.new({}, proto, extra);
			end
			return manual.new({ { (proto or "tcp").."4", r[1], r[2], extra } }, proto, extra);
		end
		return service._test_routes_orig(hostname, service_name, proto, extra);
	end
end
`

// fedEcho is a slixmpp client on Prosody that answers every chat message with "echo:" and
// the body, to the sender's full JID.
const fedEcho = `import asyncio, logging, ssl, sys
import slixmpp

class Echo(slixmpp.ClientXMPP):
    def __init__(self, jid, pw):
        super().__init__(jid, pw)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.use_ipv6 = False
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.message)
        self.add_event_handler("disconnected", lambda r: sys.exit(1))

    async def start(self, _e):
        self.send_presence()
        print("READY", flush=True)

    def message(self, msg):
        if msg["type"] == "chat" and msg["body"]:
            self.send_message(mto=msg["from"], mbody="echo:" + msg["body"], mtype="chat")

async def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    c = Echo(sys.argv[1], sys.argv[2])
    c.connect((sys.argv[3], int(sys.argv[4])))
    await asyncio.Event().wait()

asyncio.run(main())
`

// fedPeer is the Prosody of the test.
type fedPeer struct {
	addr          string // loopback address
	c2sPort, port int    // client and server ports
	dir, log      string
	cmd           *exec.Cmd
	exited        chan struct{}
	out           *syncBuffer
}

func (p *fedPeer) s2s() string { return net.JoinHostPort(p.addr, strconv.Itoa(p.port)) }

func freePortOn(t *testing.T, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newFedPeer picks Prosody's address: its own loopback address, so that connections to its
// server port are told apart from everything else in /proc/net/tcp.
func newFedPeer(t *testing.T) *fedPeer {
	t.Helper()
	if _, err := exec.LookPath("prosody"); err != nil {
		t.Fatal("prosody is not installed; run scripts/peers.sh as root")
	}
	ip := fmt.Sprintf("127.0.%d.%d", 100+os.Getpid()%100, 2+os.Getpid()%200)
	dir, err := os.MkdirTemp("", "impetus-cluster-fed-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &fedPeer{addr: ip, c2sPort: freePortOn(t, ip), port: freePortOn(t, ip), dir: dir, out: &syncBuffer{}, exited: make(chan struct{})}
}

// start runs Prosody as its system user, plain server streams with dialback only, routing
// every domain of the cluster to the address of one node.
func (p *fedPeer) start(t *testing.T, clusterAddr string) {
	t.Helper()
	u, err := user.Lookup("prosody")
	if err != nil {
		t.Fatalf("user prosody: %v (run scripts/peers.sh)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	write := func(path, data string) {
		if err := os.WriteFile(path, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data, plugins := filepath.Join(p.dir, "data"), filepath.Join(p.dir, "plugins")
	for _, d := range []string{data, plugins} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(plugins, "mod_test_routes.lua"), fedRoutes)
	host, port, _ := net.SplitHostPort(clusterAddr)
	p.log = filepath.Join(data, "prosody.log")
	conf := fmt.Sprintf(`pidfile = %[1]q
data_path = %[2]q
plugin_paths = { %[3]q }
interfaces = { %[4]q }
local_interfaces = { %[4]q }
c2s_ports = { %[5]d }
s2s_ports = { %[6]d }
c2s_direct_tls_ports = {}
s2s_direct_tls_ports = {}
modules_enabled = { "roster"; "presence"; "saslauth"; "dialback"; "disco"; "ping"; "test_routes" }
authentication = "internal_plain"
storage = "internal"
log = { debug = %[7]q }
s2s_secure_auth = false
s2s_require_encryption = false
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
s2s_timeout = 20
test_s2s_routes = { ["localhost"] = { %[8]q, %[9]s }, [%[10]q] = { %[8]q, %[9]s } }
VirtualHost %[11]q
`, filepath.Join(data, "prosody.pid"), data, plugins, p.addr, p.c2sPort, p.port, p.log, host, port, fedSecondDomain, fedPeerDomain)
	cfg := filepath.Join(p.dir, "prosody.cfg.lua")
	write(cfg, conf)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "prosodyctl", "--config", cfg, "register", fedPeerUser, fedPeerDomain, fedPeerPass).CombinedOutput(); err != nil {
		t.Fatalf("prosodyctl register: %v\n%s", err, out)
	}
	p.cmd = exec.Command("runuser", "-u", "prosody", "--", "prosody", "--config", cfg, "-F")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 30000 {
				b = b[len(b)-30000:]
			}
			t.Logf("prosody log:\n%s", b)
		}
	})
	deadline := time.Now().Add(wait)
	for _, addr := range []string{net.JoinHostPort(p.addr, strconv.Itoa(p.c2sPort)), p.s2s()} {
		for {
			c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.exited:
				t.Fatalf("prosody exited:\n%s", p.out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("prosody did not listen on %s:\n%s", addr, p.out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// echo starts the slixmpp echo client as bob on Prosody and waits until it is online.
func (p *fedPeer) echo(t *testing.T) {
	t.Helper()
	script := filepath.Join(p.dir, "echo.py")
	if err := os.WriteFile(script, []byte(fedEcho), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fedPython, script, fedPeerUser+"@"+fedPeerDomain, fedPeerPass, p.addr, strconv.Itoa(p.c2sPort))
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("echo client:\n%s", stderr.String())
		}
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(wait):
		t.Fatalf("the echo client did not log in to prosody:\n%s", stderr.String())
	}
}

// startFedCluster is startCluster with federation: localhost (with XMPP_Dialback_Secret)
// and second.localhost (without) hosted, and Prosody's domain reached through a Gateway.
func startFedCluster(t *testing.T, pg string, users map[string]string, peer *fedPeer) []*node {
	t.Helper()
	// Nothing listens on this port: connections to fedDownDomain are refused.
	closed := freePort(t)
	domains := fmt.Sprintf(`domain "#xmpp#%s" {
  XMPP_Role = "server"
  XMPP_Dialback_Secret = %q
}
domain "#xmpp#%s" { XMPP_Role = "server" }
domain "#xmpp#%s" {
  XMPP_Role = "client"
  Gateway = %q
}
domain "#xmpp#%s" {
  XMPP_Role = "client"
  Gateway = "127.0.0.1:%d"
}`, domain, fedSecret, fedSecondDomain, fedPeerDomain, peer.s2s(), fedDownDomain, closed)
	return startClusterSpec(t, pg, users, clusterSpec{
		domains: domains,
		// Prosody reaches the cluster through the second node: that node answers its dialback
		// verifications and receives its streams, while another node holds the outgoing stream.
		prepare: func(nodes []*node) { peer.start(t, nodes[1].addr()) },
	})
}

// s2sConnsTo counts the ESTABLISHED TCP connections from 127.0.0.1 (every node of the cluster)
// to addr, from the kernel's table.
func s2sConnsTo(t *testing.T, addr string) int {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(host).To4()
	p, _ := strconv.Atoi(port)
	// /proc/net/tcp writes an IPv4 address as one little-endian 32-bit word in hex.
	hexAddr := func(ip net.IP, port int) string {
		return strings.ToUpper(hex.EncodeToString([]byte{ip[3], ip[2], ip[1], ip[0]})) + fmt.Sprintf(":%04X", port)
	}
	want := hexAddr(ip, p)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if f[2] == want && f[3] == "01" && strings.HasPrefix(f[1], "0100007F:") {
			n++
		}
	}
	return n
}

// logCount counts the lines of a node's output holding every part.
func logCount(n *node, parts ...string) int {
	c := 0
	for _, line := range strings.Split(n.out.String(), "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			c++
		}
	}
	return c
}

// echoRoundTrip sends body to the Prosody user and waits for its echo. With retry, a stanza
// error (remote-server-timeout while the cluster elects a JetStream leader after a crash) is
// retried within bound; without, it fails the test.
func echoRoundTrip(t *testing.T, c *client, body string, bound time.Duration, retry bool) {
	t.Helper()
	peer := fedPeerUser + "@" + fedPeerDomain
	deadline := time.Now().Add(bound)
	for attempt := 1; ; attempt++ {
		b := fmt.Sprintf("%s#%d", body, attempt)
		c.send(fmt.Sprintf(`<message type='chat' to='%s'><body>%s</body></message>`, peer, b))
		e := c.expectWithin(bound, "echo of "+b, func(e *element) bool {
			return e.XMLName.Local == "message" && strings.HasPrefix(e.attr("from"), peer) &&
				(e.attr("type") == "error" || (e.child("body") != nil && e.child("body").Text == "echo:"+b))
		})
		if e.attr("type") != "error" {
			return
		}
		if !retry || time.Now().After(deadline) {
			t.Fatalf("%s: %s refused: %v", c.full, b, e)
		}
		cond := ""
		if er := e.find("error"); er != nil && len(er.Children) > 0 {
			cond = er.Children[0].XMLName.Local
		}
		t.Logf("%s: %s refused with %s; again", c.full, b, cond)
		time.Sleep(500 * time.Millisecond)
	}
}

// verifyOn asks a node, as the peer would, whether key is the one its domain gave for a
// stream with id (the authoritative role of XEP-0220).
func verifyOn(t *testing.T, n *node, local, id, key string) string {
	t.Helper()
	nc, err := net.DialTimeout("tcp", n.addr(), wait)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(wait))
	fmt.Fprintf(nc, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' version='1.0' from='%s' to='%s'>`, fedPeerDomain, local)
	dec := xmlstream.NewDecoder(nc, xmlstream.Limits{})
	if _, err := dec.ReadHeader(); err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	fmt.Fprintf(nc, `<db:verify from='%s' to='%s' id='%s'>%s</db:verify>`, fedPeerDomain, local, id, key)
	for {
		el, err := dec.ReadElement()
		if err != nil {
			t.Fatalf("%s: reading the verify answer: %v", n.name, err)
		}
		if el.Space == stanza.NSDialback && el.Local == "verify" {
			return el.Attr("type")
		}
	}
}

// clusterSecret reads the dialback secret the nodes share through NATS.
func clusterSecret(t *testing.T, natsURL string) []byte {
	t.Helper()
	var secret []byte
	inBucket(t, natsURL, "impetus_s2s", func(ctx context.Context, kv jetstream.KeyValue) {
		e, err := kv.Get(ctx, "dialback_secret")
		if err != nil {
			t.Fatal(err)
		}
		secret = e.Value()
	})
	return secret
}

// TestFederationOneStreamPerPair runs three nodes and Prosody: users on every node write to a
// Prosody user and get its replies, over exactly one outgoing stream from the cluster; after
// the node holding that stream is killed, the others reach Prosody through a new single owner.
func TestFederationOneStreamPerPair(t *testing.T) {
	pg := pgSchemaURL(t)
	peer := newFedPeer(t)
	nodes := startFedCluster(t, pg, map[string]string{"u1": "pw", "u2": "pw", "u3": "pw"}, peer)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	peer.echo(t)
	c1 := login(t, n1, "u1", "pw", "r")
	c2 := login(t, n2, "u2", "pw", "r")
	c3 := login(t, n3, "u3", "pw", "r")

	t.Run("authoritative dialback on every node", func(t *testing.T) {
		shared := clusterSecret(t, n3.clientURL)
		for _, n := range nodes {
			for _, c := range []struct{ local, secret string }{{domain, fedSecret}, {fedSecondDomain, string(shared)}} {
				id := "id-" + n.name
				if got := verifyOn(t, n, c.local, id, s2s.Key([]byte(c.secret), fedPeerDomain, c.local, id)); got != "valid" {
					t.Errorf("%s: key for %s answered %q, want valid", n.name, c.local, got)
				}
				if got := verifyOn(t, n, c.local, id, strings.Repeat("0", 64)); got != "invalid" {
					t.Errorf("%s: wrong key for %s answered %q, want invalid", n.name, c.local, got)
				}
			}
		}
	})
	if t.Failed() {
		return
	}

	const stream = `msg="outbound stream established"`
	t.Run("users on every node, one stream", func(t *testing.T) {
		// n1's user writes first, so n1 owns localhost → prosody.test; Prosody verifies n1's
		// key with n2 and sends its replies through n2.
		echoRoundTrip(t, c1, "from n1", wait, false)
		echoRoundTrip(t, c2, "from n2", wait, false)
		echoRoundTrip(t, c3, "from n3", wait, false)
		got := s2sConnsTo(t, peer.s2s())
		t.Logf("established connections from the cluster to prosody: %d", got)
		if got != 1 {
			t.Errorf("%d established connections from the cluster to prosody, want 1", got)
		}
		for _, n := range nodes {
			want := 0
			if n == n1 {
				want = 1
			}
			if got := logCount(n, stream, "remote="+fedPeerDomain); got != want {
				t.Errorf("%s opened %d outgoing streams to %s, want %d", n.name, got, fedPeerDomain, want)
			}
		}
		if logCount(n2, `msg="peer verified with dialback"`, "pair_remote="+fedPeerDomain) == 0 {
			t.Errorf("prosody's stream did not reach n2")
		}
	})
	if t.Failed() {
		return
	}

	t.Run("order of one sender through the owner", func(t *testing.T) {
		const burst = 30
		for i := 0; i < burst; i++ {
			c3.send(fmt.Sprintf(`<message type='chat' to='%s@%s'><body>burst%d</body></message>`, fedPeerUser, fedPeerDomain, i))
		}
		for i := 0; i < burst; i++ {
			e := c3.expect("echo of the burst", func(e *element) bool {
				return e.XMLName.Local == "message" && e.child("body") != nil && strings.HasPrefix(e.child("body").Text, "echo:burst")
			})
			if got := e.child("body").Text; got != fmt.Sprintf("echo:burst%d", i) {
				t.Fatalf("echo %d arrived as %s", i, got)
			}
		}
	})

	t.Run("delivery errors reach the sender on any node", func(t *testing.T) {
		isError := func(cond string) func(*element) bool {
			return func(e *element) bool {
				return e.XMLName.Local == "message" && e.attr("type") == "error" && e.attr("from") == "x@"+fedDownDomain && e.find(cond) != nil
			}
		}
		// n3 owns the pair and learns of the failure when its connection attempt fails; n2
		// forwards to n3, which refuses at once during its back-off.
		c3.send(fmt.Sprintf(`<message type='chat' to='x@%s'><body>down</body></message>`, fedDownDomain))
		c3.expect("remote-server-not-found from the owner", isError("remote-server-not-found"))
		c2.send(fmt.Sprintf(`<message type='chat' to='x@%s'><body>down</body></message>`, fedDownDomain))
		c2.expect("remote-server-not-found through the owner", isError("remote-server-not-found"))
		if logCount(n2, `msg="outbound stream failed"`, "remote="+fedDownDomain) != 0 || logCount(n3, `msg="outbound stream failed"`, "remote="+fedDownDomain) != 1 {
			t.Errorf("connection attempts to %s: n2 %d, n3 %d; want 0 and 1", fedDownDomain,
				logCount(n2, `msg="outbound stream failed"`, "remote="+fedDownDomain), logCount(n3, `msg="outbound stream failed"`, "remote="+fedDownDomain))
		}
	})
	if t.Failed() {
		return
	}

	t.Run("owner killed", func(t *testing.T) {
		n1.kill9()
		// The JetStream leaders on n1 move first; stanzas refused meanwhile are sent again.
		echoRoundTrip(t, c2, "n2 after the crash", 90*time.Second, true)
		echoRoundTrip(t, c3, "n3 after the crash", 90*time.Second, true)
		echoRoundTrip(t, c2, "n2 again", wait, false)
		got := s2sConnsTo(t, peer.s2s())
		opened := logCount(n2, stream, "remote="+fedPeerDomain) + logCount(n3, stream, "remote="+fedPeerDomain)
		took := logCount(n2, "took over a federation pair") + logCount(n3, "took over a federation pair")
		t.Logf("after the crash: %d established connections to prosody; streams opened by n2 %d, n3 %d; pairs taken over by n2 %d, n3 %d",
			got, logCount(n2, stream, "remote="+fedPeerDomain), logCount(n3, stream, "remote="+fedPeerDomain),
			logCount(n2, "took over a federation pair"), logCount(n3, "took over a federation pair"))
		if got != 1 {
			t.Errorf("%d established connections from the cluster to prosody after the crash, want 1", got)
		}
		if opened != 1 || took != 1 {
			t.Errorf("after the crash the survivors opened %d streams and took over %d pairs, want 1 and 1", opened, took)
		}
	})
}
