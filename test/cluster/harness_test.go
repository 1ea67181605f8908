// Package cluster tests a cluster of three Impetus nodes on loopback: each node runs an
// embedded NATS server with JetStream, the three form one NATS cluster through their routes,
// and all three share one PostgreSQL database (a fresh schema per run).
package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds of the waits; conditions are awaited, never timed.
const (
	wait         = 20 * time.Second
	startTimeout = 90 * time.Second
	domain       = "localhost"
)

var serverBin string

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if bin := os.Getenv("IMPETUS_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		serverBin = abs
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "impetus-cluster-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	serverBin = filepath.Join(dir, "impetus")
	if out, err := exec.Command("go", "build", "-o", serverBin, "impetus/cmd/impetus").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building impetus: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// pgSchemaURL creates a fresh schema in IMPETUS_TEST_POSTGRES, dropped when the test ends.
func pgSchemaURL(t *testing.T) string {
	t.Helper()
	base := os.Getenv("IMPETUS_TEST_POSTGRES")
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("IMPETUS_TEST_POSTGRES is not set; in CI the cluster test must run (see scripts/postgres.sh)")
		}
		t.Skip("IMPETUS_TEST_POSTGRES is not set; run scripts/postgres.sh as root to get one")
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connecting to IMPETUS_TEST_POSTGRES: %v", err)
	}
	defer conn.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "impetus_cluster_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if conn, err := pgx.Connect(ctx, base); err == nil {
			_, _ = conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			conn.Close(context.Background())
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	// The kernel may hand out a port it just released again, so ports given to one test
	// process are remembered: two nodes configured with the same port would leave one of
	// them failing to bind while the other answers in its place.
	usedPortsMu.Lock()
	defer usedPortsMu.Unlock()
	for {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !usedPorts[port] {
			usedPorts[port] = true
			return port
		}
	}
}

var (
	usedPortsMu sync.Mutex
	usedPorts   = map[int]bool{}
)

// node is one Impetus process of the cluster.
type node struct {
	t         *testing.T
	name      string
	dir       string
	xmpp      int
	nats      int
	route     int
	cmd       *exec.Cmd
	out       *syncBuffer
	exited    chan struct{}
	killed    bool
	clientURL string
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func (n *node) addr() string { return fmt.Sprintf("127.0.0.1:%d", n.xmpp) }

// startCluster writes the configurations of three nodes and starts them together: the
// embedded NATS servers need each other for a JetStream quorum before the nodes listen.
func startCluster(t *testing.T, pg string, users map[string]string) []*node {
	t.Helper()
	return startClusterSpec(t, pg, users, clusterSpec{})
}

// clusterSpec varies the three-node cluster startClusterSpec builds.
type clusterSpec struct {
	// domains replaces the hosted domain's scope: more domains, services, gateways.
	domains string
	// nats returns the NATS lines of node i's xmpp_cluster scope and sets its clientURL; nil
	// gives every node an embedded server routed to the others'.
	nats func(i int, nodes []*node) string
	// replicas of the registry buckets; 0 means 3.
	replicas int
	// prepare runs once every node has its ports, before any starts.
	prepare func(nodes []*node)
	// waitFirst, when above 0, starts that many nodes and waits for them before the rest
	// (nodes that reach NATS through the first ones).
	waitFirst int
}

// embeddedNATS is the default NATS of node i: an embedded server routed to the other nodes'.
func embeddedNATS(i int, nodes []*node) string {
	n := nodes[i]
	var routes []string
	for _, o := range nodes {
		if o != n {
			routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats://127.0.0.1:%d", o.route)))
		}
	}
	n.clientURL = fmt.Sprintf("nats://127.0.0.1:%d", n.nats)
	return fmt.Sprintf(`embedded_nats = true
  nats_listen = "127.0.0.1:%d"
  nats_cluster_listen = "127.0.0.1:%d"
  nats_routes = ( %s )`, n.nats, n.route, strings.Join(routes, " "))
}

func startClusterSpec(t *testing.T, pg string, users map[string]string, spec clusterSpec) []*node {
	t.Helper()
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	var pw strings.Builder
	for u, p := range users {
		fmt.Fprintf(&pw, "%s:%s\n", u, p)
	}
	if err := os.WriteFile(passwd, []byte(pw.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if spec.domains == "" {
		spec.domains = fmt.Sprintf(`domain "#xmpp#%s" { XMPP_Role = "server" }`, domain)
	}
	if spec.nats == nil {
		spec.nats = embeddedNATS
	}
	if spec.replicas == 0 {
		spec.replicas = 3
	}
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = &node{t: t, name: fmt.Sprintf("n%d", i+1), dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			xmpp: freePort(t), nats: freePort(t), route: freePort(t), out: &syncBuffer{}, exited: make(chan struct{})}
	}
	if spec.prepare != nil {
		spec.prepare(nodes)
	}
	for i, n := range nodes {
		conf := fmt.Sprintf(`xmpp {
  debug_level = "INFO"
  storage = "pg"
  max_offline_messages = 0
}
Datasource "pg" { uri = ( %q ) }
%s
xmpp_listener {
  AuthPlainParameters = [ uri = %q ]
  Listen "127.0.0.1:%d" { allow_plain_without_tls = true }
}
xmpp_cluster {
  node_name = %q
  %s
  replicas = %d
  lease_ttl = 15
  lease_renew = 1
  fence_after = 13
  anti_entropy_interval = 5
  node_loss_grace = 1
}
`, pg, spec.domains, "file://"+passwd, n.xmpp, n.name, spec.nats(i, nodes), spec.replicas)
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(n.dir, "impetus.conf")
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		n.cmd = exec.Command(serverBin, "serve", "--config", cfg, "--data", filepath.Join(n.dir, "data"))
		n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func(n *node) { _ = n.cmd.Wait(); close(n.exited) }(n)
		t.Cleanup(n.stop)
		if i+1 == spec.waitFirst {
			for _, f := range nodes[:i+1] {
				f.waitReady()
			}
		}
	}
	for _, n := range nodes[max(spec.waitFirst, 0):] {
		n.waitReady()
	}
	return nodes
}

func (n *node) waitReady() {
	n.t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-n.exited:
			n.t.Fatalf("%s exited before listening:\n%s", n.name, n.out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", n.addr(), 500*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s did not listen within %v:\n%s", n.name, startTimeout, n.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill9 ends the node as a crash would.
func (n *node) kill9() {
	n.t.Helper()
	n.killed = true
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-n.exited:
	case <-time.After(wait):
		n.t.Fatalf("%s did not exit after SIGKILL", n.name)
	}
}

func (n *node) stop() {
	if !n.killed {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(wait):
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	}
	if n.t.Failed() {
		n.t.Logf("output of %s:\n%s", n.name, n.out.String())
	}
}

// element is a received stanza.
type element struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Children []element  `xml:",any"`
	Text     string     `xml:",chardata"`
}

func (e *element) attr(local string) string {
	for _, a := range e.Attrs {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

func (e *element) child(local string) *element {
	for i := range e.Children {
		if e.Children[i].XMLName.Local == local {
			return &e.Children[i]
		}
	}
	return nil
}

// find returns the first descendant with the local name, depth first.
func (e *element) find(local string) *element {
	for i := range e.Children {
		c := &e.Children[i]
		if c.XMLName.Local == local {
			return c
		}
		if f := c.find(local); f != nil {
			return f
		}
	}
	return nil
}

func (e *element) String() string {
	var b strings.Builder
	_ = xml.NewEncoder(&b).Encode(e)
	return b.String()
}

// client is a minimal XMPP client over plain TCP (loopback only) that records what it receives.
type client struct {
	t    *testing.T
	full string
	conn net.Conn
	dec  *xml.Decoder
	in   chan *element
	done chan struct{}
	wmu  sync.Mutex

	pending []*element
	seq     int
	// discoInfo, when set, is the payload of the answer to disco#info requests (the XEP-0115
	// caps queries a server sends); other requests get an empty result.
	discoInfo atomic.Pointer[string]
}

func login(t *testing.T, n *node, user, pass, resource string) *client {
	t.Helper()
	c, err := tryLogin(t, n, user, pass, resource)
	if err != nil {
		t.Fatalf("login %s/%s on %s: %v", user, resource, n.name, err)
	}
	return c
}

func tryLogin(t *testing.T, n *node, user, pass, resource string) (*client, error) {
	conn, err := net.DialTimeout("tcp", n.addr(), wait)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(wait))
	c := &client{t: t, conn: conn, dec: xml.NewDecoder(bufio.NewReader(conn)), in: make(chan *element, 10000), done: make(chan struct{})}
	open := func() error {
		_, err := fmt.Fprintf(conn, `<?xml version='1.0'?><stream:stream to='%s' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`, domain)
		if err != nil {
			return err
		}
		_, err = c.next() // <stream:features/>
		return err
	}
	if err := open(); err != nil {
		conn.Close()
		return nil, err
	}
	auth := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	fmt.Fprintf(conn, `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>`, auth)
	if e, err := c.next(); err != nil || e.XMLName.Local != "success" {
		conn.Close()
		return nil, fmt.Errorf("authentication: %v %v", e, err)
	}
	if err := open(); err != nil {
		conn.Close()
		return nil, err
	}
	fmt.Fprintf(conn, `<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource></bind></iq>`, resource)
	e, err := c.next()
	if err != nil || e.attr("type") != "result" || e.find("jid") == nil {
		conn.Close()
		return nil, fmt.Errorf("bind: %v %v", e, err)
	}
	c.full = e.find("jid").Text
	_ = conn.SetDeadline(time.Time{})
	go c.read()
	t.Cleanup(c.close)
	return c, nil
}

// next reads the next top-level element, skipping the stream header.
func (c *client) next() (*element, error) {
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return nil, err
		}
		if st, ok := tok.(xml.StartElement); ok {
			if st.Name.Local == "stream" {
				continue
			}
			var e element
			if err := c.dec.DecodeElement(&e, &st); err != nil {
				return nil, err
			}
			return &e, nil
		}
	}
}

func (c *client) read() {
	defer close(c.done)
	for {
		e, err := c.next()
		if err != nil {
			return
		}
		if e.XMLName.Local == "iq" && (e.attr("type") == "get" || e.attr("type") == "set") {
			// Roster pushes are acknowledged (RFC 6121 §2.1.6) and other requests answered with
			// an empty result; they are recorded too.
			to := ""
			if f := e.attr("from"); f != "" {
				to = fmt.Sprintf(" to='%s'", xmlEscape(f))
			}
			if q := e.child("query"); q != nil && q.XMLName.Space == "http://jabber.org/protocol/disco#info" && c.discoInfo.Load() != nil {
				c.send(fmt.Sprintf(`<iq type='result' id='%s'%s><query xmlns='http://jabber.org/protocol/disco#info' node='%s'>%s</query></iq>`,
					xmlEscape(e.attr("id")), to, xmlEscape(q.attr("node")), *c.discoInfo.Load()))
			} else {
				c.send(fmt.Sprintf(`<iq type='result' id='%s'%s/>`, xmlEscape(e.attr("id")), to))
			}
		}
		c.in <- e
	}
}

func (c *client) close() {
	c.send(`</stream:stream>`)
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
	c.conn.Close()
}

func (c *client) bare() string { b, _, _ := strings.Cut(c.full, "/"); return b }

func (c *client) send(raw string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(wait))
	_, _ = io.WriteString(c.conn, raw)
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// expect waits, at most `wait`, for a stanza matching pred and consumes it.
func (c *client) expect(what string, pred func(*element) bool) *element {
	c.t.Helper()
	return c.expectWithin(wait, what, pred)
}

// expectWithin is expect with another bound, for what comes only after a lease expires.
func (c *client) expectWithin(bound time.Duration, what string, pred func(*element) bool) *element {
	c.t.Helper()
	for i, e := range c.pending {
		if pred(e) {
			c.pending = append(c.pending[:i:i], c.pending[i+1:]...)
			return e
		}
	}
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		select {
		case e := <-c.in:
			if pred(e) {
				return e
			}
			c.pending = append(c.pending, e)
		case <-c.done:
			for len(c.in) > 0 {
				if e := <-c.in; pred(e) {
					return e
				} else {
					c.pending = append(c.pending, e)
				}
			}
			c.t.Fatalf("%s: stream ended while waiting for %s; received: %v", c.full, what, c.pending)
			return nil
		case <-timer.C:
			c.t.Fatalf("%s: no %s within %v; received: %v", c.full, what, bound, c.pending)
			return nil
		}
	}
}

// iq sends an iq and waits for its response.
func (c *client) iq(raw string) *element {
	c.t.Helper()
	c.seq++
	id := fmt.Sprintf("q%d", c.seq)
	c.send(strings.Replace(raw, "<iq ", "<iq id='"+id+"' ", 1))
	return c.expect("response to "+id, func(e *element) bool {
		return e.XMLName.Local == "iq" && e.attr("id") == id && (e.attr("type") == "result" || e.attr("type") == "error")
	})
}

// sync makes a ping round trip: stanzas sent before are processed and what the server
// queued for this client before the pong is recorded.
func (c *client) sync() {
	c.t.Helper()
	if r := c.iq(fmt.Sprintf(`<iq type='get' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>`, domain)); r.attr("type") != "result" {
		c.t.Fatalf("%s: ping: %v", c.full, r)
	}
}

// drain returns everything received and pending after a sync.
func (c *client) drain() []*element {
	c.sync()
	for len(c.in) > 0 {
		c.pending = append(c.pending, <-c.in)
	}
	out := c.pending
	c.pending = nil
	return out
}

func isPresence(from, typ string) func(*element) bool {
	return func(e *element) bool {
		return e.XMLName.Local == "presence" && e.attr("from") == from && e.attr("type") == typ
	}
}

func isMessage(from, body string) func(*element) bool {
	return func(e *element) bool {
		b := e.child("body")
		return e.XMLName.Local == "message" && strings.HasPrefix(e.attr("from"), from) && b != nil && b.Text == body
	}
}

func isStreamError(cond string) func(*element) bool {
	return func(e *element) bool {
		return e.XMLName.Local == "error" && e.child(cond) != nil && e.attr("type") == ""
	}
}

// inBucket runs fn on a JetStream key-value bucket of the cluster, opened through a node's NATS,
// for a test that checks what the nodes stored there.
func inBucket(t *testing.T, natsURL, name string, fn func(ctx context.Context, kv jetstream.KeyValue)) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		t.Fatalf("bucket %s: %v", name, err)
	}
	fn(ctx, kv)
}

// runSlix runs a scenario of a slixmpp script in test/slix against two nodes (alice on n1,
// bob on n2) and decodes the JSON object on its last line of output into res, failing the test
// unless it reports "ok". Extra arguments follow the common ones.
func runSlix(t *testing.T, script, scenario string, n1, n2 *node, res any, extra ...string) {
	t.Helper()
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import slixmpp").CombinedOutput(); err != nil {
		t.Skipf("%s cannot import slixmpp (run scripts/test-deps.sh): %v\n%s", python, err, out)
	}
	_, file, _, _ := runtime.Caller(0)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{filepath.Join(filepath.Dir(file), "..", "slix", script), scenario, "--host", "127.0.0.1",
		"--port", fmt.Sprint(n1.xmpp), "--port2", fmt.Sprint(n2.xmpp),
		"--cert", filepath.Join(n1.dir, "data", "tls", "selfsigned.crt"),
		"--jid", "alice@" + domain, "--password", "pw", "--peer-jid", "bob@" + domain, "--peer-password", "pw"}, extra...)
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var status struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	last := []byte(lines[len(lines)-1])
	if err := json.Unmarshal(last, &status); err != nil || !status.OK || json.Unmarshal(last, res) != nil {
		t.Fatalf("slixmpp %s %s: %v %+v\nstdout:\n%s\nlog:\n%s", script, scenario, err, status, stdout.String(), stderr.String())
	}
}
