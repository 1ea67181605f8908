package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// This file extends the shared harness for the RFC 6121 tests: servers on a
// chosen storage backend with a data directory that outlives the process (so
// that a kill -9 and a restart can be tested), and an instant-messaging
// client built on mellium that records every stanza it receives.

// Namespaces of RFC 6121 and the extensions the IM tests check.
const (
	nsRoster      = "jabber:iq:roster"
	nsRosterVer   = "urn:xmpp:features:rosterver"
	nsPreApproval = "urn:xmpp:features:pre-approval"
	nsDelay       = "urn:xmpp:delay"
	nsStanzas     = "urn:ietf:params:xml:ns:xmpp-stanzas"
	nsPing        = "urn:xmpp:ping"
)

// imWait bounds every wait for a stanza in the IM tests.
const imWait = 10 * time.Second

// storeBackend is one storage configuration a test runs against.
type storeBackend struct {
	name string
	// storage is the xmpp scope's storage option and datasource the
	// Datasource scope it names; both are empty for the default SQLite
	// file in the data directory.
	storage    string
	datasource string
}

// forEachBackend runs fn as parallel subtests on SQLite and on PostgreSQL.
func forEachBackend(t *testing.T, fn func(t *testing.T, b *storeBackend)) {
	t.Helper()
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := &storeBackend{name: name}
			if name == "postgres" {
				u := pgSchemaURL(t)
				b.storage = `storage = "pg"`
				b.datasource = fmt.Sprintf("Datasource \"pg\" { uri = ( %q ) }\n", u)
			}
			fn(t, b)
		})
	}
}

// pgSchemaURL creates a fresh schema in the database IMPETUS_TEST_POSTGRES
// names, drops it when the test ends, and returns the URL with search_path
// set to it, so that runs and parallel tests never see each other's rows.
// Without the variable the test is skipped locally and fails under CI,
// where the PostgreSQL variants must always run.
func pgSchemaURL(t *testing.T) string {
	t.Helper()
	base := os.Getenv("IMPETUS_TEST_POSTGRES")
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("IMPETUS_TEST_POSTGRES is not set; in CI the PostgreSQL variants must run (see scripts/postgres.sh)")
		}
		t.Skip("IMPETUS_TEST_POSTGRES is not set; run scripts/postgres.sh as root to get one")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connecting to IMPETUS_TEST_POSTGRES: %v", err)
	}
	defer conn.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "impetus_e2e_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" {
		t.Fatalf("IMPETUS_TEST_POSTGRES must be a postgres:// URL, found %q", base)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// imOptions describes the server an IM test wants.
type imOptions struct {
	Users map[string]string
	// MaxOffline sets max_offline_messages when non-zero; negative writes 0
	// (no bound).
	MaxOffline int
	// MaxRoster sets max_roster_items when non-zero.
	MaxRoster int
	// Extra is configuration appended to the generated one, kept on every
	// rewrite (a retry on a new port), such as another domain's scope.
	Extra string
}

// imServer is a server on a storage backend whose data directory, password
// file and database survive the process, so it can be killed and started
// again on the same data.
type imServer struct {
	*Server // the running process; replaced by each start
	t       *testing.T
	b       *storeBackend
	opts    imOptions
	dir     string
	passwd  string
	config  string // path of the configuration last written
	killed  bool
}

// newIMServer prepares the directory, password file and configuration of a
// server without starting it, so that a test can run an administration
// command (such as import-rosters) on the data first.
func newIMServer(t *testing.T, b *storeBackend, opts imOptions) *imServer {
	t.Helper()
	dir := t.TempDir()
	s := &imServer{t: t, b: b, opts: opts, dir: dir, passwd: filepath.Join(dir, "passwd")}
	if err := os.MkdirAll(s.dataDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writePasswdFile(s.passwd, opts.Users); err != nil {
		t.Fatal(err)
	}
	s.writeConfig(freePort(t, "tcp4", "127.0.0.1:0"))
	return s
}

// startIMServer prepares and starts a server.
func startIMServer(t *testing.T, b *storeBackend, opts imOptions) *imServer {
	t.Helper()
	s := newIMServer(t, b, opts)
	s.start()
	return s
}

func (s *imServer) dataDir() string { return filepath.Join(s.dir, "data") }

// writeConfig writes the configuration for a listener on port.
func (s *imServer) writeConfig(port int) {
	s.t.Helper()
	var xmppOpts []string
	xmppOpts = append(xmppOpts, `debug_level = "DEBUG"`)
	if s.b.storage != "" {
		xmppOpts = append(xmppOpts, s.b.storage)
	}
	switch {
	case s.opts.MaxOffline > 0:
		xmppOpts = append(xmppOpts, fmt.Sprintf("max_offline_messages = %d", s.opts.MaxOffline))
	case s.opts.MaxOffline < 0:
		xmppOpts = append(xmppOpts, "max_offline_messages = 0")
	}
	if s.opts.MaxRoster > 0 {
		xmppOpts = append(xmppOpts, fmt.Sprintf("max_roster_items = %d", s.opts.MaxRoster))
	}
	config := fmt.Sprintf(`xmpp {
  %s
}
%sdomain "#xmpp#%s" { XMPP_Role = "server" }
xmpp_listener {
  AuthPlainParameters = [ uri = %q ]
  Listen %q {}
}
`, strings.Join(xmppOpts, "\n  "), s.b.datasource, testDomain, "file://"+s.passwd,
		net.JoinHostPort("127.0.0.1", fmt.Sprint(port))) + s.opts.Extra
	s.config = filepath.Join(s.dir, "impetus.conf")
	if err := os.WriteFile(s.config, []byte(config), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// start runs the server on the prepared data, retrying with a new port when
// a parallel test took the one picked, and registers a cleanup that stops
// it unless the test killed it.
func (s *imServer) start() {
	s.t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			s.writeConfig(freePort(s.t, "tcp4", "127.0.0.1:0"))
		}
		srv, retry, err := s.tryStart()
		if err == nil {
			s.Server, s.killed = srv, false
			s.t.Cleanup(func() {
				if srv == s.Server && !s.killed {
					srv.stop(s.t)
				}
			})
			return
		}
		lastErr = err
		if !retry {
			break
		}
	}
	s.t.Fatalf("starting impetus: %v", lastErr)
}

func (s *imServer) tryStart() (*Server, bool, error) {
	data, err := os.ReadFile(s.config)
	if err != nil {
		return nil, false, err
	}
	var port int
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "Listen ") {
			_, p, _ := net.SplitHostPort(strings.Trim(strings.Fields(line)[1], `"`))
			fmt.Sscan(p, &port)
		}
	}
	srv := &Server{
		Dir:        s.dataDir(),
		ConfigPath: s.config,
		PasswdPath: s.passwd,
		Port4:      port,
		stderr:     &syncBuffer{},
		exited:     make(chan struct{}),
	}
	srv.cmd = exec.Command(serverBin, "serve", "--config", s.config, "--data", s.dataDir())
	srv.cmd.Stdout, srv.cmd.Stderr = srv.stderr, srv.stderr
	if err := srv.cmd.Start(); err != nil {
		return nil, false, err
	}
	go func() {
		srv.err = srv.cmd.Wait()
		close(srv.exited)
	}()
	if err := srv.waitReady(); err != nil {
		srv.kill()
		out := srv.Stderr()
		return nil, strings.Contains(out, "address already in use"), fmt.Errorf("%w\nconfig:\n%s\nserver output:\n%s", err, data, out)
	}
	if err := srv.loadCert(); err != nil {
		srv.kill()
		return nil, false, fmt.Errorf("%w\nserver output:\n%s", err, srv.Stderr())
	}
	return srv, false, nil
}

// kill9 ends the server with SIGKILL, as a crash or an OOM kill would, and
// waits for the process to be gone. Its output is logged if the test fails.
func (s *imServer) kill9() {
	s.t.Helper()
	srv := s.Server
	s.killed = true
	if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatalf("kill -9: %v", err)
	}
	select {
	case <-srv.exited:
	case <-time.After(stopTimeout):
		s.t.Fatalf("impetus did not exit within %v of SIGKILL", stopTimeout)
	}
	s.t.Cleanup(func() {
		if s.t.Failed() {
			s.t.Logf("output of the killed impetus:\n%s", srv.Stderr())
		}
	})
}

// imClient is a logged-in mellium session that records every stanza it
// receives. Roster pushes are acknowledged as RFC 6121 §2.1.6 asks and
// recorded too.
type imClient struct {
	t    *testing.T
	name string // for failure messages: the bound full JID
	*xmpp.Session
	tcp net.Conn

	in   chan *element // filled by the Serve handler
	done chan struct{}

	mu      sync.Mutex
	pending []*element // received and not yet consumed by an expectation
}

// dialIM connects to srv and logs user in with a resource, without sending
// presence or asking for the roster.
func dialIM(t *testing.T, srv *Server, user, pass, resource string) *imClient {
	t.Helper()
	c, err := tryDialIM(t, srv, user, pass, resource)
	if err != nil {
		t.Fatalf("login as %s/%s: %v", user, resource, err)
	}
	return c
}

func tryDialIM(t *testing.T, srv *Server, user, pass, resource string) (*imClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), negotiateTimeout)
	defer cancel()
	origin, err := jid.New(user, testDomain, resource)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", srv.Addr4())
	if err != nil {
		return nil, err
	}
	s, err := xmpp.NewClientSession(ctx, origin, conn,
		xmpp.StartTLS(srv.TLSConfig()),
		xmpp.SASL("", pass, sasl.ScramSha256),
		bindResource(),
	)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &imClient{t: t, name: s.LocalAddr().String(), Session: s, tcp: conn,
		in: make(chan *element, 8192), done: make(chan struct{})}
	go func() {
		_ = s.Serve(xmpp.HandlerFunc(c.handle))
		close(c.done)
	}()
	t.Cleanup(c.close)
	return c, nil
}

// close ends the stream, bounded; a session whose connection is already gone
// ends at once.
func (c *imClient) close() {
	_ = c.Session.Close()
	select {
	case <-c.done:
	case <-time.After(closeTimeout):
	}
	_ = c.tcp.Close()
}

// drop ends the connection abruptly with a TCP reset, as a crashed client or
// a lost network would, without closing the XML stream.
func (c *imClient) drop() {
	if tc, ok := c.tcp.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.tcp.Close()
	select {
	case <-c.done:
	case <-time.After(closeTimeout):
	}
}

// handle records a received stanza and answers roster pushes.
func (c *imClient) handle(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	var e element
	if err := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), r)).Decode(&e); err != nil {
		return err
	}
	if e.XMLName.Local == "iq" && (e.attr("type") == "set" || e.attr("type") == "get") {
		typ := stanza.ResultIQ
		var payload xml.TokenReader
		if e.attr("type") != "set" || e.child(nsRoster, "query") == nil {
			typ = stanza.ErrorIQ
			payload = stanza.Error{Type: stanza.Cancel, Condition: stanza.ServiceUnavailable}.TokenReader()
		}
		if _, err := xmlstream.Copy(r, stanza.IQ{ID: e.attr("id"), Type: typ}.Wrap(payload)); err != nil {
			return err
		}
	}
	c.in <- &e
	return nil
}

// rawTokens turns hand-written XML into tokens mellium can send. Namespace
// declarations are dropped because the encoder writes them from the names.
func rawTokens(s string) xml.TokenReader {
	d := xml.NewDecoder(strings.NewReader(s))
	return xmlstream.ReaderFunc(func() (xml.Token, error) {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		if st, ok := tok.(xml.StartElement); ok {
			attrs := st.Attr[:0:0]
			for _, a := range st.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					continue
				}
				attrs = append(attrs, a)
			}
			st.Attr = attrs
			return st.Copy(), nil
		}
		return xml.CopyToken(tok), nil
	})
}

// send writes a stanza given as XML.
func (c *imClient) send(raw string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), imWait)
	defer cancel()
	if err := c.Send(ctx, rawTokens(raw)); err != nil {
		c.t.Fatalf("%s sending %s: %v", c.name, raw, err)
	}
}

// iq sends an iq get or set given as XML and returns the response.
func (c *imClient) iq(raw string) *element {
	c.t.Helper()
	e, err := c.tryIQ(raw)
	if err != nil {
		c.t.Fatalf("%s: %s: %v", c.name, raw, err)
	}
	return e
}

func (c *imClient) tryIQ(raw string) (*element, error) {
	return c.tryIQContext(context.Background(), raw)
}

// tryIQContext is tryIQ ended early by ctx, which lets load clients stop at
// once when their server is killed rather than wait out the bound.
func (c *imClient) tryIQContext(ctx context.Context, raw string) (*element, error) {
	ctx, cancel := context.WithTimeout(ctx, imWait)
	defer cancel()
	resp, err := c.SendIQ(ctx, rawTokens(raw))
	if err != nil {
		return nil, err
	}
	defer resp.Close()
	var e element
	if err := xml.NewTokenDecoder(resp).Decode(&e); err != nil {
		return nil, fmt.Errorf("decoding the response: %w", err)
	}
	return &e, nil
}

// sync makes a ping round trip to the server. The server handles a session's
// stanzas in order and queues what it sends in order, so once the pong is
// here every stanza sent before has been processed and everything the
// server queued for this client before the pong has been recorded.
func (c *imClient) sync() {
	c.t.Helper()
	r := c.iq(`<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if r.attr("type") != "result" {
		c.t.Fatalf("%s: ping answered with %s", c.name, r)
	}
}

// collect moves what the handler recorded into pending.
func (c *imClient) collect() {
	for {
		select {
		case e := <-c.in:
			c.pending = append(c.pending, e)
		default:
			return
		}
	}
}

// take removes and returns the first pending stanza matching pred, or nil.
func (c *imClient) take(pred func(*element) bool) *element {
	c.collect()
	for i, e := range c.pending {
		if pred(e) {
			c.pending = append(c.pending[:i:i], c.pending[i+1:]...)
			return e
		}
	}
	return nil
}

// expect waits, at most imWait, for a stanza matching pred and consumes it.
// Stanzas that do not match stay pending for later expectations.
func (c *imClient) expect(what string, pred func(*element) bool) *element {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.take(pred); e != nil {
		return e
	}
	timer := time.NewTimer(imWait)
	defer timer.Stop()
	for {
		select {
		case e := <-c.in:
			if pred(e) {
				return e
			}
			c.pending = append(c.pending, e)
		case <-c.done:
			if e := c.take(pred); e != nil {
				return e
			}
			c.t.Fatalf("%s: the session ended while waiting for %s; pending: %s", c.name, what, c.pendingString())
			return nil
		case <-timer.C:
			c.t.Fatalf("%s: no %s within %v; received meanwhile: %s", c.name, what, imWait, c.pendingString())
			return nil
		}
	}
}

// expectNone checks, after a sync round trip of the client, that nothing
// matching pred was received. The caller makes sure that whatever it wants
// to rule out would have been queued before the round trip (by a sync of
// the sender first).
func (c *imClient) expectNone(what string, pred func(*element) bool) {
	c.t.Helper()
	c.sync()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.take(pred); e != nil {
		c.t.Errorf("%s received %s: %s", c.name, what, e)
	}
}

// all consumes every pending stanza matching pred, after a sync.
func (c *imClient) all(pred func(*element) bool) []*element {
	c.t.Helper()
	c.sync()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*element
	for e := c.take(pred); e != nil; e = c.take(pred) {
		out = append(out, e)
	}
	return out
}

func (c *imClient) pendingString() string {
	var b strings.Builder
	for _, e := range c.pending {
		b.WriteString("\n  ")
		b.WriteString(e.String())
	}
	if b.Len() == 0 {
		return "nothing"
	}
	return b.String()
}

// bare is the client's bare JID as a string.
func (c *imClient) bare() string { return c.LocalAddr().Bare().String() }

// full is the client's full JID as a string.
func (c *imClient) full() string { return c.LocalAddr().String() }

// Stanza predicates.

func isPresence(from, typ string) func(*element) bool {
	return func(e *element) bool {
		return e.XMLName.Local == "presence" && e.attr("from") == from && e.attr("type") == typ
	}
}

func isPresenceFrom(from string) func(*element) bool {
	return func(e *element) bool { return e.XMLName.Local == "presence" && e.attr("from") == from }
}

// isPresenceFromUser matches any presence from the account bare or one of
// its resources.
func isPresenceFromUser(bare string) func(*element) bool {
	return func(e *element) bool {
		f := e.attr("from")
		return e.XMLName.Local == "presence" && (f == bare || strings.HasPrefix(f, bare+"/"))
	}
}

// isPush matches a roster push carrying an item for contact.
func isPush(contact string) func(*element) bool {
	return func(e *element) bool {
		if e.XMLName.Local != "iq" || e.attr("type") != "set" {
			return false
		}
		q := e.child(nsRoster, "query")
		if q == nil {
			return false
		}
		it := q.child(nsRoster, "item")
		return it != nil && it.attr("jid") == contact
	}
}

func isMessageFrom(from string) func(*element) bool {
	return func(e *element) bool { return e.XMLName.Local == "message" && e.attr("from") == from }
}

func isMessageBody(body string) func(*element) bool {
	return func(e *element) bool {
		b := e.child(nsClient, "body")
		return e.XMLName.Local == "message" && b != nil && b.Text == body
	}
}

// pushItem returns the item of a roster push and checks what RFC 6121
// §2.1.6 requires of the push itself: no 'from' other than the account, a
// query with a 'ver' (the server supports versioning) and exactly one item.
func pushItem(t *testing.T, c *imClient, push *element) *element {
	t.Helper()
	if f := push.attr("from"); f != "" && f != c.bare() {
		t.Errorf("%s: roster push from %q; only the account itself may push (RFC 6121 §2.1.6)", c.name, f)
	}
	q := push.child(nsRoster, "query")
	if q.attr("ver") == "" {
		t.Errorf("%s: roster push without 'ver' although versioning is advertised (§2.6.3): %s", c.name, push)
	}
	var n int
	for _, ch := range q.Children {
		if ch.XMLName.Local == "item" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%s: roster push with %d items, want 1 (§2.1.6): %s", c.name, n, push)
	}
	return q.child(nsRoster, "item")
}

// itemGroups lists an item's groups.
func itemGroups(it *element) []string {
	var out []string
	for _, g := range it.Children {
		if g.XMLName.Local == "group" {
			out = append(out, g.Text)
		}
	}
	return out
}

// stanzaError returns the type and defined condition of a stanza's error
// child, or empty strings when there is none.
func stanzaError(e *element) (typ, cond string) {
	er := e.child(nsClient, "error")
	if er == nil {
		return "", ""
	}
	for _, ch := range er.Children {
		if ch.XMLName.Space == nsStanzas && ch.XMLName.Local != "text" {
			return er.attr("type"), ch.XMLName.Local
		}
	}
	return er.attr("type"), ""
}

// rosterGet fetches the roster and returns the query (nil for an empty
// result) after checking it is a result.
func rosterGet(t *testing.T, c *imClient, ver *string) *element {
	t.Helper()
	q := `<iq type='get'><query xmlns='jabber:iq:roster'/></iq>`
	if ver != nil {
		q = fmt.Sprintf(`<iq type='get'><query xmlns='jabber:iq:roster' ver='%s'/></iq>`, xmlEscape(*ver))
	}
	r := c.iq(q)
	if r.attr("type") != "result" {
		t.Fatalf("%s: roster get answered with %s", c.name, r)
	}
	return r.child(nsRoster, "query")
}

// rosterItems indexes a roster result's items by JID.
func rosterItems(q *element) map[string]*element {
	out := map[string]*element{}
	if q == nil {
		return out
	}
	for i := range q.Children {
		if it := &q.Children[i]; it.XMLName.Local == "item" {
			out[it.attr("jid")] = it
		}
	}
	return out
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return strings.ReplaceAll(b.String(), "'", "&#39;")
}

// online logs a user in, fetches the roster (which makes the resource
// interested in pushes, §2.1.6) and sends initial presence, with a priority
// when prio is not empty, then syncs so that the presence has been processed.
func online(t *testing.T, srv *Server, user, resource, prio string) *imClient {
	t.Helper()
	c := dialIM(t, srv, user, "pw-"+user, resource)
	rosterGet(t, c, nil)
	c.sendPresence(prio)
	return c
}

// sendPresence sends available presence with an optional priority and syncs.
func (c *imClient) sendPresence(prio string) {
	c.t.Helper()
	if prio == "" {
		c.send(`<presence/>`)
	} else {
		c.send(`<presence><priority>` + prio + `</priority></presence>`)
	}
	c.sync()
}

// users returns the password map for accounts named in the list, each with
// password "pw-<name>".
func users(names ...string) map[string]string {
	m := map[string]string{}
	for _, n := range names {
		m[n] = "pw-" + n
	}
	return m
}

// subscribeBoth makes a and b subscribed to each other with the whole
// RFC 6121 §3.1 exchange, both online, and consumes the stanzas it causes.
func subscribeBoth(t *testing.T, a, b *imClient) {
	t.Helper()
	for _, p := range [][2]*imClient{{a, b}, {b, a}} {
		u, c := p[0], p[1]
		u.send(fmt.Sprintf(`<presence to='%s' type='subscribe'/>`, c.bare()))
		c.expect("subscription request from "+u.bare(), isPresence(u.bare(), "subscribe"))
		c.send(fmt.Sprintf(`<presence to='%s' type='subscribed'/>`, u.bare()))
		c.sync()
		u.expect("'subscribed' from "+c.bare(), isPresence(c.bare(), "subscribed"))
	}
	a.sync()
	b.sync()
	// What is left (pushes, presence) is not what the callers test.
	a.all(func(*element) bool { return true })
	b.all(func(*element) bool { return true })
}

// runImpetus runs an administration command of the binary, bounded.
func runImpetus(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, serverBin, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("impetus %s did not finish within 30 s\n%s", strings.Join(args, " "), out)
	}
	if err != nil {
		t.Fatalf("impetus %s failed: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
