// Package upload implements XEP-0363: HTTP File Upload.
//
// The hosted domain itself is the upload service: it answers slot requests and advertises the
// store/file identity, the urn:xmpp:http:upload:0 feature and the max-file-size form in its
// disco#info, where clients (Conversations, Gajim, Dino, slixmpp) look first. The PUT and GET
// URLs are served by the http_listener (package httpd) under /upload/. A slot is a signed token
// (HMAC-SHA256) naming the account, file name, size, content type and expiry, so no state is
// kept for slots never used; a finished upload is a file under the data directory and an entry
// in the account's "upload" map, which the per-account quota sums. Files expire after a
// configured time and a periodic cleanup, bounded per run, removes them.
package upload

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"impetus/internal/config"
	"impetus/internal/httpd"
	"impetus/internal/module"
	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// NS is the XEP-0363 namespace.
const NS = "urn:xmpp:http:upload:0"

// Defaults of the http_upload scope.
const (
	DefaultMaxFileSize     = 100 << 20
	DefaultQuota           = 1 << 30
	DefaultExpireAfter     = 7 * 24 * time.Hour
	DefaultSlotLifetime    = 5 * time.Minute
	DefaultCleanupInterval = time.Hour
	DefaultCleanupBatch    = 1000
	DefaultDirectory       = "upload"
	DefaultMaxFiles        = 10000
)

// mapName is the storage map of finished uploads: account → slot path → file record.
const mapName = "upload"

func init() {
	module.Register("upload", func() module.Module { return new(Upload) })
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "http_upload",
		Singleton: true,
		Doc:       "XEP-0363 HTTP file upload, served by the http_listener",
		Options: append(config.ModuleOptions(),
			config.OptionSpec{Name: "max_file_size", Type: config.TypeSize, Default: "100m", Doc: "largest file in bytes, advertised in disco (Impetus)"},
			config.OptionSpec{Name: "quota", Type: config.TypeSize, Default: "1g", Doc: "bytes of unexpired uploads one account may keep; 0 means no bound (Impetus)"},
			config.OptionSpec{Name: "max_files", Type: config.TypeInt, Default: strconv.Itoa(DefaultMaxFiles), Doc: "unexpired uploads one account may keep; 0 means no bound (Impetus)"},
			config.OptionSpec{Name: "expire_after", Type: config.TypeDuration, Default: "604800", Doc: "seconds an upload is kept; 0 keeps uploads forever (Impetus)"},
			config.OptionSpec{Name: "slot_lifetime", Type: config.TypeDuration, Default: "300", Doc: "seconds a slot's PUT URL stays valid (Impetus)"},
			config.OptionSpec{Name: "cleanup_interval", Type: config.TypeDuration, Default: "3600", Doc: "seconds between runs of the expiry cleanup (Impetus)"},
			config.OptionSpec{Name: "cleanup_batch", Type: config.TypeInt, Default: strconv.Itoa(DefaultCleanupBatch), Doc: "uploads one cleanup run removes at most (Impetus)"},
			config.OptionSpec{Name: "directory", Type: config.TypeString, Default: DefaultDirectory, Doc: "where files are kept, relative to the data directory (Impetus)"},
			config.OptionSpec{Name: "url", Type: config.TypeString, Doc: "base URL of the PUT and GET URLs; default the http_listener's public_url or first Listen (Impetus)"},
			config.OptionSpec{Name: "content_types", Type: config.TypeArray, Doc: "allowed content types, e.g. ( image/* video/mp4 ); unset allows any (Impetus)"},
			config.OptionSpec{Name: "secret", Type: config.TypeString, Doc: "key signing slot tokens; default a random key kept in the upload directory (Impetus)"},
		),
	})
}

// Config is the http_upload scope, decoded.
type Config struct {
	Enabled         bool          `conf:"enabled"`
	MaxFileSize     int64         `conf:"max_file_size"`
	Quota           int64         `conf:"quota"`
	MaxFiles        int           `conf:"max_files"`
	ExpireAfter     time.Duration `conf:"expire_after"`
	SlotLifetime    time.Duration `conf:"slot_lifetime"`
	CleanupInterval time.Duration `conf:"cleanup_interval"`
	CleanupBatch    int           `conf:"cleanup_batch"`
	Directory       string        `conf:"directory"`
	URL             string        `conf:"url"`
	ContentTypes    []string      `conf:"content_types"`
	Secret          string        `conf:"secret"`
}

// DefaultConfig is what an http_upload scope that sets nothing means.
func DefaultConfig() Config {
	return Config{
		Enabled: true, MaxFileSize: DefaultMaxFileSize, Quota: DefaultQuota, MaxFiles: DefaultMaxFiles,
		ExpireAfter: DefaultExpireAfter, SlotLifetime: DefaultSlotLifetime, CleanupInterval: DefaultCleanupInterval,
		CleanupBatch: DefaultCleanupBatch, Directory: DefaultDirectory,
	}
}

// Upload is the module on one hosted domain.
type Upload struct {
	Config
	h      *module.Host
	store  storage.Map
	dir    string // absolute directory of this domain's files
	key    []byte
	base   string // URL prefix of PUT and GET URLs, without a trailing slash
	now    func() time.Time
	stop   chan struct{}
	done   chan struct{}
	active bool
}

// Provision implements module.Module. The module is active only when the configuration has an
// http_upload scope and an http_listener to serve the files.
func (u *Upload) Provision(h *module.Host) error {
	u.h = h
	if u.now == nil {
		u.now = time.Now
	}
	if h.Config == nil || len(h.Config.Sections("http_upload")) == 0 {
		return nil
	}
	u.Config = DefaultConfig()
	if err := h.Config.Sections("http_upload")[0].Decode(&u.Config); err != nil {
		return err
	}
	if !u.Enabled {
		return nil
	}
	web, err := httpd.Decode(h.Config)
	if err != nil {
		return err
	}
	if web == nil || !web.Enable {
		return errors.New("upload: http_upload needs an enabled http_listener to serve files")
	}
	base := u.URL
	if base == "" {
		base = web.BaseURL(h.Domain)
	}
	dataDir := h.DataDir
	if dataDir == "" {
		dataDir = "."
	}
	dir := u.Directory
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(dataDir, dir)
	}
	return u.start(h, dir, strings.TrimSuffix(base, "/")+"/upload")
}

// start activates the module with its files under dir/<domain> and URLs under base.
func (u *Upload) start(h *module.Host, dir, base string) error {
	u.h = h
	if u.now == nil {
		u.now = time.Now
	}
	u.dir = filepath.Join(dir, h.Domain)
	if err := os.MkdirAll(u.dir, 0o750); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	key, err := u.loadKey(dir)
	if err != nil {
		return err
	}
	u.key = key
	u.base = base
	u.store = h.Storage.Map(mapName)
	u.active = true
	h.AddIdentity(module.Identity{Category: "store", Type: "file", Name: "HTTP File Upload"})
	h.AddFeature(NS)
	h.AddInfoForm(u.infoForm())
	h.HandleIQ(module.ToServer, stanza.Get, NS, "request", u.request)
	register(h.Domain, u)
	httpd.Handle("/upload/", handler)
	u.stop, u.done = make(chan struct{}), make(chan struct{})
	go u.cleanupLoop()
	return nil
}

// Stop implements module.Stopper.
func (u *Upload) Stop() error {
	if !u.active {
		return nil
	}
	unregister(u.h.Domain, u)
	close(u.stop)
	<-u.done
	return nil
}

// loadKey returns the configured secret, or the random key kept in dir (created once), so that
// slots stay valid across restarts.
func (u *Upload) loadKey(dir string) ([]byte, error) {
	if u.Secret != "" {
		return []byte(u.Secret), nil
	}
	path := filepath.Join(dir, ".secret")
	if b, err := os.ReadFile(path); err == nil && len(b) >= 32 {
		return b, nil
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("upload: key: %w", err)
	}
	return b, nil
}

// infoForm is the XEP-0128 form of XEP-0363 §2 with the maximum file size.
func (u *Upload) infoForm() *stanza.Element {
	x := stanza.NewElement("jabber:x:data", "x", stanza.Attr{Name: "type", Value: "result"})
	x.AddChild(stanza.NewElement("jabber:x:data", "field", stanza.Attr{Name: "var", Value: "FORM_TYPE"}, stanza.Attr{Name: "type", Value: "hidden"}).
		AddChild(stanza.NewElement("jabber:x:data", "value").AddText(NS)))
	if u.MaxFileSize > 0 {
		x.AddChild(stanza.NewElement("jabber:x:data", "field", stanza.Attr{Name: "var", Value: "max-file-size"}).
			AddChild(stanza.NewElement("jabber:x:data", "value").AddText(strconv.FormatInt(u.MaxFileSize, 10))))
	}
	return x
}

// request answers a slot request (XEP-0363 §4).
func (u *Upload) request(ctx context.Context, iq *module.IQ) (*stanza.Element, error) {
	if iq.Session == nil || iq.From.Domainpart() != u.h.Domain || iq.From.Localpart() == "" {
		// Only this domain's own accounts may upload here.
		return nil, stanza.NewError("not-allowed", "only local accounts may upload files here")
	}
	req := iq.Payload
	name := req.Attr("filename")
	if err := checkFilename(name); err != nil {
		return nil, stanza.NewError("bad-request", err.Error())
	}
	size, err := strconv.ParseInt(req.Attr("size"), 10, 64)
	if err != nil || size <= 0 {
		return nil, stanza.NewError("bad-request", "size must be a positive number of bytes")
	}
	if u.MaxFileSize > 0 && size > u.MaxFileSize {
		e := stanza.NewError("not-acceptable", fmt.Sprintf("file too large; the maximum file size is %d bytes", u.MaxFileSize))
		e.App = stanza.NewElement(NS, "file-too-large").AddChild(
			stanza.NewElement(NS, "max-file-size").AddText(strconv.FormatInt(u.MaxFileSize, 10)))
		return nil, e
	}
	ctype := strings.TrimSpace(req.Attr("content-type"))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	if !validContentType(ctype) || !u.allowedType(ctype) {
		return nil, stanza.NewError("not-acceptable", "files of type "+ctype+" are not accepted here")
	}
	user := iq.From.Bare().String()
	used, files, err := u.usage(ctx, user)
	if err != nil {
		return nil, err
	}
	if (u.Quota > 0 && used+size > u.Quota) || (u.MaxFiles > 0 && files >= u.MaxFiles) {
		return nil, u.quotaError(ctx, user)
	}
	now := u.now()
	t := token{
		User: user, Path: newSlotPath(now), Name: name, Size: size, Type: ctype,
		Expires: now.Add(u.SlotLifetime).Unix(),
	}
	url := u.base + "/" + u.h.Domain + "/" + t.Path + "/" + escapeName(name)
	slot := stanza.NewElement(NS, "slot")
	slot.AddChild(stanza.NewElement(NS, "put", stanza.Attr{Name: "url", Value: url}).AddChild(
		stanza.NewElement(NS, "header", stanza.Attr{Name: "name", Value: "Authorization"}).AddText("Bearer " + t.sign(u.key))))
	slot.AddChild(stanza.NewElement(NS, "get", stanza.Attr{Name: "url", Value: url}))
	return slot, nil
}

// quotaError is resource-constraint with, when uploads expire, the time the oldest one does
// (XEP-0363 §4.2 retry).
func (u *Upload) quotaError(ctx context.Context, user string) *stanza.Error {
	e := stanza.NewError("resource-constraint", "upload quota reached")
	if u.ExpireAfter <= 0 {
		e.Type = "cancel"
		return e
	}
	all, err := u.store.All(ctx, user)
	if err != nil {
		return e
	}
	var oldest time.Time
	for _, v := range all {
		if r, err := decodeRecord(v); err == nil && (oldest.IsZero() || r.Created.Before(oldest)) {
			oldest = r.Created
		}
	}
	if !oldest.IsZero() {
		e.App = stanza.NewElement(NS, "retry", stanza.Attr{Name: "stamp", Value: oldest.Add(u.ExpireAfter).UTC().Format(time.RFC3339)})
	}
	return e
}

// usage sums the account's unexpired uploads.
func (u *Upload) usage(ctx context.Context, user string) (bytes int64, files int, err error) {
	all, err := u.store.All(ctx, user)
	if err != nil {
		return 0, 0, err
	}
	now := u.now()
	for _, v := range all {
		r, err := decodeRecord(v)
		if err != nil || u.expired(r, now) {
			continue
		}
		bytes += r.Size
		files++
	}
	return bytes, files, nil
}

func (u *Upload) expired(r record, now time.Time) bool {
	return u.ExpireAfter > 0 && now.Sub(r.Created) >= u.ExpireAfter
}

func (u *Upload) allowedType(ct string) bool {
	if len(u.ContentTypes) == 0 {
		return true
	}
	base, _, _ := strings.Cut(ct, ";")
	base = strings.ToLower(strings.TrimSpace(base))
	for _, p := range u.ContentTypes {
		p = strings.ToLower(p)
		if p == base || (strings.HasSuffix(p, "/*") && strings.HasPrefix(base, strings.TrimSuffix(p, "*"))) {
			return true
		}
	}
	return false
}

// validContentType accepts type/subtype with optional parameters, in printable ASCII.
func validContentType(ct string) bool {
	if len(ct) > 255 {
		return false
	}
	for i := 0; i < len(ct); i++ {
		if ct[i] < 0x20 || ct[i] > 0x7e {
			return false
		}
	}
	base, _, _ := strings.Cut(ct, ";")
	t, s, ok := strings.Cut(strings.TrimSpace(base), "/")
	return ok && t != "" && s != "" && !strings.ContainsAny(t+s, " /\"")
}

// checkFilename refuses names that are empty, too long, or could name another directory.
func checkFilename(name string) error {
	switch {
	case name == "":
		return errors.New("filename is required")
	case len(name) > 255:
		return errors.New("filename is too long")
	case !utf8.ValidString(name):
		return errors.New("filename is not UTF-8")
	case name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00"):
		return errors.New("filename must not contain path separators")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return errors.New("filename contains control characters")
		}
	}
	return nil
}

// The domains whose uploads the shared HTTP handler serves.
var (
	servicesMu sync.RWMutex
	services   = map[string]*Upload{}
)

func register(domain string, u *Upload) {
	servicesMu.Lock()
	services[domain] = u
	servicesMu.Unlock()
}

func unregister(domain string, u *Upload) {
	servicesMu.Lock()
	if services[domain] == u {
		delete(services, domain)
	}
	servicesMu.Unlock()
}

func service(domain string) *Upload {
	servicesMu.RLock()
	defer servicesMu.RUnlock()
	return services[domain]
}

var _ module.Module = (*Upload)(nil)
var _ module.Stopper = (*Upload)(nil)
