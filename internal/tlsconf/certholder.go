package tlsconf

import (
	"crypto/tls"
	"os"
	"sync/atomic"
	"time"

	"impetus/internal/tlsutil"
)

// certCheckInterval is how often a CertHolder looks at its files: often enough that a renewed
// certificate is served within seconds, rarely enough that busy handshakes cost no system calls.
const certCheckInterval = time.Second

// CertHolder serves a certificate read from files and reads it again when the files change,
// so that a renewed certificate (certbot, an ACME client) is used by new handshakes without a
// restart or reload. Handshakes in progress keep the certificate they started with.
//
// A change is noticed by the files' size and modification time. A certificate that fails to
// load (a renewal caught half-written, a key that does not match) is not used: the holder
// keeps serving the previous one and tries again at the next check.
type CertHolder struct {
	certFile, keyFile string

	cert     atomic.Pointer[tls.Certificate]
	stamp    atomic.Pointer[fileStamp]
	nextTime atomic.Int64 // unix nanoseconds of the next check
	checking atomic.Bool  // one handshake checks; the others use the current certificate
	// Reloads counts the certificates read after the first, for tests and statistics.
	Reloads atomic.Int64
}

type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// NewCertHolder reads the certificate of certFile (and its key from keyFile, or from certFile
// when keyFile is empty).
func NewCertHolder(certFile, keyFile string) (*CertHolder, error) {
	if keyFile == "" {
		keyFile = certFile
	}
	h := &CertHolder{certFile: certFile, keyFile: keyFile}
	st, _ := h.stat()
	cert, err := tlsutil.Load(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	h.cert.Store(&cert)
	h.stamp.Store(&st)
	h.nextTime.Store(time.Now().Add(certCheckInterval).UnixNano())
	return h, nil
}

// Certificate returns the certificate currently served.
func (h *CertHolder) Certificate() *tls.Certificate { return h.cert.Load() }

// GetCertificate implements tls.Config.GetCertificate.
func (h *CertHolder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if time.Now().UnixNano() >= h.nextTime.Load() && h.checking.CompareAndSwap(false, true) {
		h.check()
		h.nextTime.Store(time.Now().Add(certCheckInterval).UnixNano())
		h.checking.Store(false)
	}
	return h.cert.Load(), nil
}

// Reload reads the files again if they changed since the last read; a SIGHUP handler may call
// it to pick up a renewal at once.
func (h *CertHolder) Reload() error { return h.check() }

func (h *CertHolder) check() error {
	st, err := h.stat()
	if err != nil {
		return err
	}
	if old := h.stamp.Load(); old != nil && *old == st {
		return nil
	}
	cert, err := tlsutil.Load(h.certFile, h.keyFile)
	if err != nil {
		return err
	}
	h.cert.Store(&cert)
	h.stamp.Store(&st)
	h.Reloads.Add(1)
	return nil
}

func (h *CertHolder) stat() (fileStamp, error) {
	var st fileStamp
	ci, err := os.Stat(h.certFile)
	if err != nil {
		return st, err
	}
	ki, err := os.Stat(h.keyFile)
	if err != nil {
		return st, err
	}
	st.certMod, st.certSize = ci.ModTime(), ci.Size()
	st.keyMod, st.keySize = ki.ModTime(), ki.Size()
	return st, nil
}
