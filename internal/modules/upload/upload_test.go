package upload

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/stanza"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

// fixture is a domain with the module on a backend, its HTTP side on a test server, and a
// clock the test moves.
type fixture struct {
	t    *testing.T
	u    *Upload
	srv  *rostertest.Server
	http *httptest.Server
	// now is the fake clock; the module's cleanup goroutine reads it while the test advances it.
	mu  sync.Mutex
	now time.Time
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func newFixture(t *testing.T, b storage.Backend, mod func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, now: rostertest.Clock}
	f.srv = rostertest.New(t, b, rostertest.Config{}, "localhost")
	f.http = httptest.NewServer(handler)
	t.Cleanup(f.http.Close)
	u := &Upload{Config: DefaultConfig(), now: f.clock}
	if mod != nil {
		mod(&u.Config)
	}
	if err := u.start(f.srv.Hosts["localhost"], t.TempDir(), f.http.URL+"/upload"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Stop() })
	f.u = u
	return f
}

// slot requests a slot and returns the reply.
func (f *fixture) slot(who, attrs string) *stanza.Element {
	f.t.Helper()
	s := f.srv.Connect(who)
	defer s.Close()
	s.Input(`<iq type="get" id="s1" to="localhost"><request xmlns="urn:xmpp:http:upload:0" ` + attrs + `/></iq>`)
	els := s.Elements()
	if len(els) != 1 {
		f.t.Fatalf("got %d replies", len(els))
	}
	return els[0]
}

func (f *fixture) put(url, auth, ctype, body string) int {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (f *fixture) get(url string) (int, string, http.Header) {
	f.t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func slotURLs(t *testing.T, reply *stanza.Element) (put, auth, get string) {
	t.Helper()
	slot := reply.Child(NS, "slot")
	if reply.Attr("type") != "result" || slot == nil {
		t.Fatalf("no slot: %s", reply)
	}
	p := slot.Child(NS, "put")
	h := p.Child(NS, "header")
	if h == nil || h.Attr("name") != "Authorization" {
		t.Fatalf("put without Authorization header: %s", reply)
	}
	return p.Attr("url"), h.Text(), slot.Child(NS, "get").Attr("url")
}

func backends(t *testing.T, fn func(t *testing.T, b storage.Backend)) {
	t.Run("memory", func(t *testing.T) { fn(t, memory.New()) })
	t.Run("sqlite", func(t *testing.T) {
		b, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db.sqlite"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		fn(t, b)
	})
}

func TestUploadRoundTrip(t *testing.T) {
	backends(t, func(t *testing.T, b storage.Backend) {
		f := newFixture(t, b, nil)
		put, auth, get := slotURLs(t, f.slot("alice@localhost/a", `filename="photo one.jpg" size="5" content-type="image/jpeg"`))
		if !strings.HasSuffix(put, "/photo%20one.jpg") || put != get {
			t.Fatalf("urls %s %s", put, get)
		}
		if code := f.put(put, "", "image/jpeg", "hello"); code != http.StatusUnauthorized {
			t.Errorf("PUT without token: %d", code)
		}
		if code := f.put(put, "Bearer x.y", "image/jpeg", "hello"); code != http.StatusForbidden {
			t.Errorf("PUT with a forged token: %d", code)
		}
		if code := f.put(put, auth, "image/jpeg", "hell"); code != http.StatusBadRequest {
			t.Errorf("PUT of the wrong size: %d", code)
		}
		if code := f.put(put, auth, "text/html", "hello"); code != http.StatusBadRequest {
			t.Errorf("PUT of another content type: %d", code)
		}
		if code := f.put(put, auth, "image/jpeg", "hello"); code != http.StatusCreated {
			t.Fatalf("PUT: %d", code)
		}
		if code := f.put(put, auth, "image/jpeg", "hello"); code != http.StatusConflict {
			t.Errorf("second PUT: %d", code)
		}
		code, body, h := f.get(get)
		if code != http.StatusOK || body != "hello" || h.Get("Content-Type") != "image/jpeg" || h.Get("Content-Disposition") != "" {
			t.Fatalf("GET: %d %q %v", code, body, h)
		}
		if code, _, _ := f.get(strings.TrimSuffix(get, "one.jpg") + "two.jpg"); code != http.StatusNotFound {
			t.Errorf("GET of another name: %d", code)
		}
		// The record survives in the store and counts against the quota.
		used, files, err := f.u.usage(context.Background(), "alice@localhost")
		if err != nil || used != 5 || files != 1 {
			t.Fatalf("usage %d %d %v", used, files, err)
		}

		// An expired slot's token is refused.
		put2, auth2, _ := slotURLs(t, f.slot("alice@localhost/a", `filename="late.txt" size="1" content-type="text/plain"`))
		f.advance(DefaultSlotLifetime + time.Second)
		if code := f.put(put2, auth2, "text/plain", "x"); code != http.StatusForbidden {
			t.Errorf("PUT after the slot expired: %d", code)
		}

		// After expire_after the file is gone, and the cleanup removes it and its record.
		f.advance(DefaultExpireAfter)
		if code, _, _ := f.get(get); code != http.StatusNotFound {
			t.Errorf("GET of an expired file: %d", code)
		}
		if n := f.u.cleanup(context.Background()); n != 1 {
			t.Fatalf("cleanup removed %d", n)
		}
		all, err := b.Map(mapName).All(context.Background(), "alice@localhost")
		if err != nil || len(all) != 0 {
			t.Fatalf("records after cleanup: %v %v", all, err)
		}
	})
}

func TestUploadErrors(t *testing.T) {
	f := newFixture(t, memory.New(), func(c *Config) {
		c.MaxFileSize = 100
		c.Quota = 150
		c.ContentTypes = []string{"image/*", "text/plain"}
	})
	reply := f.slot("alice@localhost/a", `filename="big.bin" size="101" content-type="image/png"`)
	e := reply.Child(stanza.NSClient, "error")
	if e == nil || e.Attr("type") != "modify" || e.Child(stanza.NSStanzaErr, "not-acceptable") == nil {
		t.Fatalf("too large: %s", reply)
	}
	if m := e.Child(NS, "file-too-large"); m == nil || m.Child(NS, "max-file-size").Text() != "100" {
		t.Fatalf("too large without max-file-size: %s", reply)
	}
	for _, attrs := range []string{
		`size="5" content-type="text/plain"`,
		`filename="a/b" size="5"`,
		`filename=".." size="5"`,
		`filename="a" size="-1"`,
		`filename="a" size="x"`,
	} {
		if r := f.slot("alice@localhost/a", attrs); r.Attr("type") != "error" || !strings.Contains(r.String(), "bad-request") {
			t.Errorf("%s: %s", attrs, r)
		}
	}
	if r := f.slot("alice@localhost/a", `filename="x.html" size="5" content-type="text/html"`); !strings.Contains(r.String(), "not-acceptable") {
		t.Errorf("refused type: %s", r)
	}
	// Quota: 100 bytes stored, another 100 do not fit until the first expires.
	put, auth, _ := slotURLs(t, f.slot("alice@localhost/a", `filename="a.png" size="100" content-type="image/png"`))
	if code := f.put(put, auth, "image/png", strings.Repeat("x", 100)); code != http.StatusCreated {
		t.Fatalf("PUT: %d", code)
	}
	reply = f.slot("alice@localhost/a", `filename="b.png" size="100" content-type="image/png"`)
	e = reply.Child(stanza.NSClient, "error")
	if e == nil || e.Attr("type") != "wait" || e.Child(stanza.NSStanzaErr, "resource-constraint") == nil {
		t.Fatalf("quota: %s", reply)
	}
	if r := e.Child(NS, "retry"); r == nil || r.Attr("stamp") != f.clock().Add(DefaultExpireAfter).UTC().Format(time.RFC3339) {
		t.Fatalf("quota without retry stamp: %s", reply)
	}
	// Another account has its own quota.
	if r := f.slot("bob@localhost/b", `filename="b.png" size="100" content-type="image/png"`); r.Attr("type") != "result" {
		t.Fatalf("bob: %s", r)
	}
	// The disco form advertises the limit.
	forms := f.u.h.InfoForms()
	if len(forms) != 1 || !strings.Contains(forms[0].String(), `<field var="max-file-size"><value>100</value>`) {
		t.Fatalf("info forms: %v", forms)
	}
}

func TestInlineTypes(t *testing.T) {
	for ct, want := range map[string]bool{"image/png": true, "image/svg+xml": false, "text/html": false, "text/plain; charset=utf-8": true, "application/octet-stream": false} {
		if inlineType(ct) != want {
			t.Errorf("%s: %v", ct, !want)
		}
	}
}
