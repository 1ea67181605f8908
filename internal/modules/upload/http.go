package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"impetus/internal/storage"
)

// handler serves /upload/<domain>/<day>/<id>/<name> for every domain with the module.
var handler http.Handler = http.HandlerFunc(serveHTTP)

var errQuota = errors.New("upload: quota exceeded")

func serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Web clients upload and show files from pages of other origins (XEP-0363 §6).
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/upload/"), "/", 4)
	if len(parts) != 4 || !validSlotPath(parts[1], parts[2]) {
		http.NotFound(w, r)
		return
	}
	u := service(parts[0])
	if u == nil {
		http.NotFound(w, r)
		return
	}
	slot := parts[1] + "/" + parts[2]
	switch r.Method {
	case http.MethodPut:
		u.put(w, r, slot, parts[3])
	case http.MethodGet, http.MethodHead:
		u.get(w, r, slot, parts[3])
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
	default:
		h.Set("Allow", "GET, HEAD, PUT, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// put stores an upload authorized by a slot token (XEP-0363 §5).
func (u *Upload) put(w http.ResponseWriter, r *http.Request, slot, name string) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		http.Error(w, "missing slot authorization", http.StatusUnauthorized)
		return
	}
	t, err := parseToken(tok, u.key)
	if err != nil || t.Path != slot || t.Name != name {
		http.Error(w, "invalid slot authorization", http.StatusForbidden)
		return
	}
	now := u.now()
	if now.Unix() > t.Expires {
		http.Error(w, "the slot has expired; request a new one", http.StatusForbidden)
		return
	}
	if r.ContentLength < 0 {
		http.Error(w, "Content-Length is required", http.StatusLengthRequired)
		return
	}
	if r.ContentLength != t.Size {
		http.Error(w, fmt.Sprintf("the slot is for %d bytes", t.Size), http.StatusBadRequest)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !sameType(ct, t.Type) {
		http.Error(w, "the slot is for content type "+t.Type, http.StatusBadRequest)
		return
	}
	if u.MaxFileSize > 0 && t.Size > u.MaxFileSize {
		http.Error(w, "file too large", http.StatusRequestEntityTooLarge)
		return
	}
	dir := filepath.Join(u.dir, filepath.FromSlash(slot))
	if _, err := os.Stat(dir); err == nil {
		http.Error(w, "this slot was already used", http.StatusConflict)
		return
	}
	rec := record{User: t.User, Name: t.Name, Size: t.Size, Type: t.Type, Created: now.UTC()}
	ctx := r.Context()
	// The quota is checked again where the upload is recorded, in one transaction, so that
	// parallel uploads of one account cannot pass it together.
	err = u.store.Update(ctx, t.User, func(tx storage.MapTx) error {
		if _, err := tx.Get(slot); err == nil {
			return os.ErrExist
		}
		all, err := tx.All()
		if err != nil {
			return err
		}
		var used int64
		files := 0
		for _, v := range all {
			if o, err := decodeRecord(v); err == nil && !u.expired(o, now) {
				used += o.Size
				files++
			}
		}
		if (u.Quota > 0 && used+t.Size > u.Quota) || (u.MaxFiles > 0 && files >= u.MaxFiles) {
			return errQuota
		}
		return tx.Set(slot, rec.encode())
	})
	switch {
	case errors.Is(err, os.ErrExist):
		http.Error(w, "this slot was already used", http.StatusConflict)
		return
	case errors.Is(err, errQuota):
		http.Error(w, "upload quota reached", http.StatusRequestEntityTooLarge)
		return
	case err != nil:
		u.h.Log.Error("upload: recording failed", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := u.writeFile(dir, r.Body, rec); err != nil {
		_ = u.store.Delete(context.WithoutCancel(ctx), t.User, slot)
		_ = os.RemoveAll(dir)
		u.h.Log.Info("upload failed", "user", t.User, "err", err)
		http.Error(w, "upload incomplete", http.StatusBadRequest)
		return
	}
	u.h.Log.Info("file uploaded", "user", t.User, "slot", slot, "size", t.Size)
	w.WriteHeader(http.StatusCreated)
}

// writeFile writes exactly rec.Size bytes to dir/data, with the record beside it in dir/meta.
func (u *Upload) writeFile(dir string, body io.Reader, rec record) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "meta"), rec.encode(), 0o640); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "data.part")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(body, rec.Size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if n != rec.Size {
		return fmt.Errorf("upload: got %d bytes, want %d", n, rec.Size)
	}
	return os.Rename(tmp, filepath.Join(dir, "data"))
}

// get serves an upload. Types a browser would run (HTML, SVG, scripts) are sent as attachments
// and every answer forbids scripts, so an upload cannot act on this origin.
func (u *Upload) get(w http.ResponseWriter, r *http.Request, slot, name string) {
	dir := filepath.Join(u.dir, filepath.FromSlash(slot))
	b, err := os.ReadFile(filepath.Join(dir, "meta"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	rec, err := decodeRecord(b)
	if err != nil || rec.Name != name || u.expired(rec, u.now()) {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(filepath.Join(dir, "data"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", rec.Type)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	if !inlineType(rec.Type) {
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": rec.Name}))
	}
	if u.ExpireAfter > 0 {
		h.Set("Expires", rec.Created.Add(u.ExpireAfter).UTC().Format(http.TimeFormat))
	}
	http.ServeContent(w, r, "", rec.Created, f)
}

// inlineType reports whether a browser may show the type in place without running anything.
func inlineType(ct string) bool {
	base, _, _ := strings.Cut(strings.ToLower(ct), ";")
	base = strings.TrimSpace(base)
	switch {
	case base == "image/svg+xml":
		return false
	case strings.HasPrefix(base, "image/"), strings.HasPrefix(base, "audio/"), strings.HasPrefix(base, "video/"):
		return true
	case base == "text/plain", base == "application/pdf":
		return true
	}
	return false
}

func sameType(a, b string) bool {
	ba, _, _ := strings.Cut(a, ";")
	bb, _, _ := strings.Cut(b, ";")
	return strings.EqualFold(strings.TrimSpace(ba), strings.TrimSpace(bb))
}

// cleanupLoop removes expired uploads every CleanupInterval until Stop.
func (u *Upload) cleanupLoop() {
	defer close(u.done)
	if u.ExpireAfter <= 0 || u.CleanupInterval <= 0 {
		<-u.stop
		return
	}
	t := time.NewTicker(u.CleanupInterval)
	defer t.Stop()
	for {
		u.cleanup(context.Background())
		select {
		case <-t.C:
		case <-u.stop:
			return
		}
	}
}

// cleanup removes at most CleanupBatch expired uploads, oldest days first, and returns how many
// it removed. Only days old enough to hold an expired upload are read.
func (u *Upload) cleanup(ctx context.Context) int {
	if u.ExpireAfter <= 0 {
		return 0
	}
	cutoff := u.now().Add(-u.ExpireAfter)
	days, err := os.ReadDir(u.dir)
	if err != nil {
		return 0
	}
	removed := 0
	for _, d := range days {
		day, err := time.Parse(dayLayout, d.Name())
		if err != nil || !d.IsDir() {
			continue
		}
		if day.After(cutoff) {
			break // ReadDir sorts by name, so every later day is newer
		}
		dayDir := filepath.Join(u.dir, d.Name())
		slots, err := os.ReadDir(dayDir)
		if err != nil {
			continue
		}
		for _, s := range slots {
			if u.CleanupBatch > 0 && removed >= u.CleanupBatch {
				return removed
			}
			dir := filepath.Join(dayDir, s.Name())
			b, err := os.ReadFile(filepath.Join(dir, "meta"))
			rec, derr := decodeRecord(b)
			if err != nil || derr != nil {
				// An upload interrupted before its record was written: remove it once its day
				// is past the expiry.
				if fi, serr := os.Stat(dir); serr == nil && fi.ModTime().Before(cutoff) {
					_ = os.RemoveAll(dir)
					removed++
				}
				continue
			}
			if !u.expired(rec, u.now()) {
				continue
			}
			if err := u.store.Delete(ctx, rec.User, d.Name()+"/"+s.Name()); err != nil {
				u.h.Log.Error("upload: cleanup failed", "err", err)
				return removed
			}
			_ = os.RemoveAll(dir)
			removed++
		}
		_ = os.Remove(dayDir) // only succeeds once the day is empty
	}
	return removed
}
