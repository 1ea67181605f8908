package federation

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Domains and accounts of the three servers.
const (
	impetusDomain = "impetus.test"
	// impetusDomain2 is a second domain hosted by Impetus, for sender multiplexing.
	impetusDomain2 = "second.impetus.test"
	prosodyDomain  = "prosody.test"
	ejabberdDomain = "ejabberd.test"
	password       = "fed-secret-pw"
)

// server is one running XMPP server of the test.
type server struct {
	domain string
	addr   string // loopback address; c2s on 5222, s2s on 5269
	log    func() string
	proc   *proc
}

func (s *server) c2s() string { return net.JoinHostPort(s.addr, "5222") }
func (s *server) s2s() string { return net.JoinHostPort(s.addr, "5269") }

// directTLS is Impetus's XEP-0368 port, TLS from the first byte for clients and servers.
func (s *server) directTLS() string { return net.JoinHostPort(s.addr, "5270") }

// startImpetus runs impetus hosting impetus.test with the two peers configured as remote
// domains reached through Gateway, and the "listed" policy so that other domains are refused.
func startImpetus(t *testing.T, a addrSet) *server {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "passwd"), []byte("alice:"+password+"\ndave:"+password+"\nerin:"+password+"\nfrank:"+password+"\ngina:"+password+"\n"), "")
	conf := fmt.Sprintf(`xmpp {
  debug_level = "DEBUG"
  s2s_remote_domains = "listed"
}
domain "#xmpp#%s" {
  XMPP_Role = "server"
  XMPP_Dialback_Secret = "impetus-test-secret"
}
domain "#xmpp#%s" {
  XMPP_Role = "server"
}
domain "#xmpp#%s" {
  XMPP_Role = "client"
  Gateway = "%s:5269"
}
domain "#xmpp#%s" {
  XMPP_Role = "client"
  Gateway = "%s:5269"
}
xmpp_listener {
  AuthPlainParameters = [ uri = "file://%s" ]
  allow_plain_without_tls = true
  Listen "%s:5222" {}
  Listen "%s:5269" {}
  Listen "%s:5270" { tls = "direct" }
}
`, impetusDomain, impetusDomain2, prosodyDomain, a.prosody, ejabberdDomain, a.ejabberd, filepath.Join(dir, "passwd"), a.impetus, a.impetus, a.impetus)
	path := filepath.Join(dir, "impetus.conf")
	writeFile(t, path, []byte(conf), "")
	p := startProc(t, "impetus", exec.Command(serverBin, "serve", "--config", path, "--data", data))
	s := &server{domain: impetusDomain, addr: a.impetus, proc: p, log: p.out.String}
	waitListen(t, p, s.c2s(), 10*time.Second, s.log)
	waitListen(t, p, s.s2s(), 10*time.Second, s.log)
	return s
}

// prosodyRoutes is a Prosody plugin for the test only: Prosody has no static route option,
// so this replaces the SRV/A resolution of the listed domains with fixed addresses, which
// keeps the test away from DNS and /etc/hosts.
const prosodyRoutes = `local service = require "net.resolvers.service";
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
	module:log("info", "static s2s routes installed");
end
`

// startProsody runs Prosody as its system user with everything in a temporary directory.
// withTLS loads mod_tls, which offers STARTTLS on incoming streams and uses it on outgoing
// ones; without it Prosody's server streams stay plain.
func startProsody(t *testing.T, a addrSet, withTLS bool) *server {
	t.Helper()
	dir := sharedTempDir(t)
	data := filepath.Join(dir, "data")
	ownedDir(t, data, "prosody")
	ownedDir(t, filepath.Join(dir, "plugins"), "prosody")
	writeFile(t, filepath.Join(dir, "plugins", "mod_test_routes.lua"), []byte(prosodyRoutes), "prosody")
	cert, key := selfSigned(t, prosodyDomain)
	writeFile(t, filepath.Join(dir, "prosody.crt"), cert, "prosody")
	writeFile(t, filepath.Join(dir, "prosody.key"), key, "prosody")
	logPath := filepath.Join(data, "prosody.log")
	tlsModule := ""
	if withTLS {
		tlsModule = `"tls"; `
	}
	conf := fmt.Sprintf(`pidfile = %[1]q
data_path = %[2]q
plugin_paths = { %[3]q }
certificates = %[4]q
interfaces = { %[5]q }
local_interfaces = { %[5]q }
c2s_ports = { 5222 }
s2s_ports = { 5269 }
c2s_direct_tls_ports = {}
s2s_direct_tls_ports = {}
modules_enabled = { "roster"; "presence"; "saslauth"; %[14]s"dialback"; "disco"; "ping"; "test_routes" }
authentication = "internal_plain"
storage = "internal"
log = { debug = %[6]q }
s2s_secure_auth = false
s2s_require_encryption = false
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
s2s_timeout = 20
test_s2s_routes = { [%[7]q] = { %[8]q, 5269 }, [%[9]q] = { %[10]q, 5269 }, [%[15]q] = { %[8]q, 5269 } }
VirtualHost %[11]q
	ssl = { certificate = %[12]q; key = %[13]q }
`, filepath.Join(data, "prosody.pid"), data, filepath.Join(dir, "plugins"), dir, a.prosody, logPath,
		impetusDomain, a.impetus, ejabberdDomain, a.ejabberd, prosodyDomain,
		filepath.Join(dir, "prosody.crt"), filepath.Join(dir, "prosody.key"), tlsModule, impetusDomain2)
	path := filepath.Join(dir, "prosody.cfg.lua")
	writeFile(t, path, []byte(conf), "prosody")
	for _, u := range []string{"bob", "bob2"} {
		runCmd(t, 20*time.Second, "prosodyctl", "--config", path, "register", u, prosodyDomain, password)
	}
	p := startProc(t, "prosody", exec.Command("runuser", "-u", "prosody", "--", "prosody", "--config", path, "-F"))
	s := &server{domain: prosodyDomain, addr: a.prosody, proc: p, log: readLog(logPath)}
	waitListen(t, p, s.c2s(), 15*time.Second, s.log)
	waitListen(t, p, s.s2s(), 15*time.Second, s.log)
	return s
}

// startEjabberd runs ejabberd through ejabberdctl (which switches to the ejabberd user) with
// its configuration, spool and logs in a temporary directory and an Erlang node name of its
// own. Erlang's resolver reads the inetrc file in the configuration directory: a static host
// table for the peers, and the test's own DNS server on a loopback port, which has no SRV
// records, so ejabberd's SRV lookups fail at once and no query leaves the machine.
//
// withTLS sets s2s_use_starttls to optional: STARTTLS offered and used, the peers' self-signed
// certificates accepted for dialback. Without it, STARTTLS is neither offered nor used on
// server streams.
func startEjabberd(t *testing.T, a addrSet, withTLS bool) *server {
	t.Helper()
	dns := startDNS(t, map[string]string{impetusDomain: a.impetus, impetusDomain2: a.impetus, prosodyDomain: a.prosody, ejabberdDomain: a.ejabberd})
	dir := sharedTempDir(t)
	spool, logs := filepath.Join(dir, "spool"), filepath.Join(dir, "logs")
	ownedDir(t, spool, "ejabberd")
	ownedDir(t, logs, "ejabberd")
	starttls := "false"
	if withTLS {
		starttls = "optional"
	}
	cert, key := selfSigned(t, ejabberdDomain)
	pemPath := filepath.Join(dir, "ejabberd.pem")
	writeFile(t, pemPath, append(cert, key...), "ejabberd")
	conf := fmt.Sprintf(`hosts: [%q]
loglevel: debug
certfiles: [%q]
listen:
  - port: 5222
    ip: %q
    module: ejabberd_c2s
    starttls: true
  - port: 5269
    ip: %q
    module: ejabberd_s2s_in
s2s_use_starttls: %s
outgoing_s2s_families: [ipv4]
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  s2s:
    allow: all
modules:
  mod_roster: {}
  mod_disco: {}
  mod_ping: {}
  mod_s2s_dialback: {}
`, ejabberdDomain, pemPath, a.ejabberd, a.ejabberd, starttls)
	writeFile(t, filepath.Join(dir, "ejabberd.yml"), []byte(conf), "ejabberd")
	ip := func(s string) string {
		p := net.ParseIP(s).To4()
		return fmt.Sprintf("{%d,%d,%d,%d}", p[0], p[1], p[2], p[3])
	}
	inetrc := fmt.Sprintf(`{host, %s, [%q, %q]}.
{host, %s, [%q]}.
{host, {127,0,0,1}, ["localhost"]}.
{lookup, [file, dns]}.
{resolv_conf, ""}.
{hosts_file, ""}.
{nameserver, {127,0,0,1}, %d}.
`, ip(a.impetus), impetusDomain, impetusDomain2, ip(a.prosody), prosodyDomain, dns.port())
	writeFile(t, filepath.Join(dir, "inetrc"), []byte(inetrc), "ejabberd")
	writeFile(t, filepath.Join(dir, "ejabberdctl.cfg"), nil, "ejabberd")
	node := fmt.Sprintf("impetusfed%d@localhost", os.Getpid())
	ctl := []string{"--config-dir", dir, "--spool", spool, "--logs", logs, "--node", node}
	p := startProc(t, "ejabberd", exec.Command("ejabberdctl", append(ctl, "foreground")...))
	p.stop = func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = exec.Command("timeout", append([]string{"15", "ejabberdctl"}, append(ctl, "stop")...)...).Run()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
		}
	}
	s := &server{domain: ejabberdDomain, addr: a.ejabberd, proc: p, log: readLog(filepath.Join(logs, "ejabberd.log"))}
	waitListen(t, p, s.c2s(), 40*time.Second, s.log)
	waitListen(t, p, s.s2s(), 10*time.Second, s.log)
	for _, u := range []string{"carol", "carol2"} {
		runCmd(t, 30*time.Second, "ejabberdctl", append(ctl, "register", u, ejabberdDomain, password)...)
	}
	return s
}

// sharedTempDir is a temporary directory other users can enter: t.TempDir's parent is private
// to root, and the daemons run as their own users.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "impetus-fed-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
