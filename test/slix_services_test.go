package test

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	testComponent       = "comp.localhost"
	testComponentSecret = "c0mponent-secret"
)

// startServicesServer starts an IM server whose configuration also declares an external
// component domain and turns in-band registration on.
func startServicesServer(t *testing.T, b *storeBackend, opts imOptions) *imServer {
	t.Helper()
	opts.Extra += fmt.Sprintf("domain \"#xmpp#%s\" { XMPP_Component_Secret = %q }\nregister { allow_registration = true registrations_per_ip = 10 }\n",
		testComponent, testComponentSecret)
	s := newIMServer(t, b, opts)
	s.start()
	return s
}

// runSlixServices runs one services.py scenario and returns its JSON result.
func runSlixServices(t *testing.T, srv *imServer, scenario string, args ...string) map[string]any {
	t.Helper()
	return runSlixOK[map[string]any](t, srv.Server, "services.py", slixTimeout, scenario, args...)
}

// TestSlixmppServices runs XEP-0202, XEP-0012, XEP-0054 with XEP-0153 stamping, XEP-0191,
// XEP-0114 (slixmpp's ComponentXMPP) with XEP-0030 items, and XEP-0077 with Debian's
// slixmpp on both storage backends.
func TestSlixmppServices(t *testing.T) {
	t.Parallel()
	requireSlixmpp(t)
	forEachBackend(t, func(t *testing.T, b *storeBackend) {
		srv := startServicesServer(t, b, imOptions{Users: users("ava", "bea", "cid")})

		t.Run("services", func(t *testing.T) {
			res := runSlixServices(t, srv, "services", "--jid", "ava@"+testDomain, "--password", "pw-ava",
				"--peer-jid", "bea@"+testDomain, "--peer-password", "pw-bea")
			if !strings.HasPrefix(str(res, "time_utc"), strconv.Itoa(time.Now().UTC().Year())) {
				t.Errorf("entity time %q", str(res, "time_utc"))
			}
			if str(res, "vcard_fn") != "Ava Example" || res["vcard_photo_ok"] != true {
				t.Errorf("vcard: %v %v", res["vcard_fn"], res["vcard_photo_ok"])
			}
			if str(res, "presence_photo") != str(res, "photo_sha1") {
				t.Errorf("presence photo %q, want %q", str(res, "presence_photo"), str(res, "photo_sha1"))
			}
			if str(res, "presence_on_block") != "unavailable" || str(res, "presence_on_unblock") != "available" {
				t.Errorf("presence on block %q, on unblock %q", str(res, "presence_on_block"), str(res, "presence_on_unblock"))
			}
			if !slices.Equal(strs(res, "blocklist"), []string{"bea@" + testDomain}) {
				t.Errorf("blocklist %v", res["blocklist"])
			}
			if str(res, "bounce") != "service-unavailable" || str(res, "refusal") != "not-acceptable" || res["refusal_blocked"] != true {
				t.Errorf("bounce %q, refusal %q (blocked %v)", str(res, "bounce"), str(res, "refusal"), res["refusal_blocked"])
			}
			if str(res, "last_status") != "Heading home" {
				t.Errorf("last activity: %v (error %v)", res["last_status"], res["last_error"])
			}
		})

		t.Run("component", func(t *testing.T) {
			res := runSlixServices(t, srv, "component", "--jid", "cid@"+testDomain, "--password", "pw-cid",
				"--component", testComponent, "--component-secret", testComponentSecret)
			if !slices.Contains(strs(res, "items"), testComponent) {
				t.Errorf("disco items %v lack %s", res["items"], testComponent)
			}
			if str(res, "echo") != "echo: ping" || str(res, "echo_from") != "bot@"+testComponent {
				t.Errorf("echo %q from %q", str(res, "echo"), str(res, "echo_from"))
			}
		})

		t.Run("component-bad-secret", func(t *testing.T) {
			got := rawComponent(t, srv.Addr4(), testComponent, "wrong")
			if !strings.Contains(got, "not-authorized") {
				t.Errorf("wrong secret answered %q", got)
			}
			got = rawComponent(t, srv.Addr4(), "other.localhost", testComponentSecret)
			if !strings.Contains(got, "host-unknown") {
				t.Errorf("unknown domain answered %q", got)
			}
		})

		t.Run("register", func(t *testing.T) {
			res := runSlixServices(t, srv, "register", "--jid", "newbie@"+testDomain, "--password", "first-password",
				"--peer-password", "second-password")
			if res["registered"] != true || res["is_registered"] != true || res["login_new_password"] != true ||
				res["cancelled"] != true || res["login_after_cancel"] != false {
				t.Errorf("registration run: %v", res)
			}
		})
	})
}

// rawComponent opens a component stream for domain, answers the handshake with secret and
// returns what the server sent until it closed the stream.
func rawComponent(t *testing.T, addr, domain, secret string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>", domain)
	r := bufio.NewReader(c)
	var got strings.Builder
	buf := make([]byte, 4096)
	sentHandshake := false
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		s := got.String()
		if !sentHandshake {
			if i := strings.Index(s, "id='"); i >= 0 {
				if j := strings.Index(s[i+4:], "'"); j >= 0 {
					id := s[i+4 : i+4+j]
					fmt.Fprintf(c, "<handshake>%s</handshake>", componentHandshake(id, secret))
					sentHandshake = true
				}
			}
		}
		if err != nil || strings.Contains(s, "</stream:stream>") {
			return s
		}
	}
}

func componentHandshake(id, secret string) string {
	sum := sha1.Sum([]byte(id + secret))
	return hex.EncodeToString(sum[:])
}
