package c2s

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// An idle client stream should cost little memory: most sessions of a large server send nothing
// for minutes. Blocked in a TLS read, a goroutine needs an 8 KiB stack and the decoder its read
// buffer; blocked in a readiness wait on the socket, it needs a fraction of that and no buffer.
// The decoder (xmlstream.IdleWaiter) waits through idleReader when it holds nothing unread.
//
// That wait is only correct when nothing above the socket holds input that was already read:
// crypto/tls reads ahead into its own buffer, so TLS streams read the socket through a
// recordReader, which hands TLS one record at a time and keeps the rest where the wait can see it.

// recordBufSize is the read buffer of a recordReader while data is pending; it is returned to a
// pool when empty, so idle streams hold none.
const recordBufSize = 4096

var recordBufs = sync.Pool{New: func() any { return new([recordBufSize]byte) }}

// tlsHeaderLen is the length of a TLS record header: type, version, length.
const tlsHeaderLen = 5

// recordReader reads a connection that carries TLS records and returns data to its reader
// (crypto/tls) no further than the end of the current record.
type recordReader struct {
	net.Conn
	buf  *[recordBufSize]byte
	r, w int
	err  error // an error that came with the last data, returned once the data is consumed
	hdr  [tlsHeaderLen]byte
	nhdr int // bytes of the current record header seen
	left int // bytes of the current record body not yet returned
}

func newRecordReader(c net.Conn) *recordReader { return &recordReader{Conn: c} }

// Read implements io.Reader.
func (rr *recordReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if rr.r == rr.w {
		if rr.err != nil {
			err := rr.err
			rr.err = nil
			return 0, err
		}
		if rr.buf == nil {
			rr.buf = recordBufs.Get().(*[recordBufSize]byte)
		}
		n, err := rr.Conn.Read(rr.buf[:])
		rr.r, rr.w = 0, n
		if n == 0 {
			rr.release()
			return 0, err
		}
		rr.err = err
	}
	avail := rr.buf[rr.r:rr.w]
	var n int
	if rr.left == 0 {
		// Inside a record header: return header bytes only, learning the body length.
		n = copy(p, avail[:min(len(avail), tlsHeaderLen-rr.nhdr)])
		copy(rr.hdr[rr.nhdr:], p[:n])
		rr.nhdr += n
		if rr.nhdr == tlsHeaderLen {
			rr.left = int(rr.hdr[3])<<8 | int(rr.hdr[4])
			rr.nhdr = 0
		}
	} else {
		n = copy(p, avail[:min(len(avail), rr.left)])
		rr.left -= n
	}
	rr.r += n
	if rr.r == rr.w {
		rr.release()
	}
	return n, nil
}

// release returns the empty buffer to the pool.
func (rr *recordReader) release() {
	if rr.buf != nil {
		recordBufs.Put(rr.buf)
		rr.buf = nil
	}
	rr.r, rr.w = 0, 0
}

// pending reports whether data or an error waits to be read.
func (rr *recordReader) pending() bool { return rr.r < rr.w || rr.err != nil }

// idleReader is the reader of a bound stream's decoder: it reads through r and waits for input
// on the socket raw (xmlstream.IdleWaiter).
type idleReader struct {
	io.Reader
	raw syscall.RawConn
	rec *recordReader // under TLS: input it holds counts as readable
}

// WaitReadable implements xmlstream.IdleWaiter: it blocks until the socket has data, reports
// end of stream or an error, or its read deadline passes.
func (ir *idleReader) WaitReadable() error {
	if ir.rec != nil && ir.rec.pending() {
		return nil
	}
	var b [1]byte
	return ir.raw.Read(func(fd uintptr) bool {
		// A peek does not consume: the Read that follows returns the data, the end of the
		// stream or the error.
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR)
	})
}

// idleReaderFor returns the reader a bound stream's decoder should use, or nil when the
// connection is not a socket this package reads directly (TLS done by the listener, WebSocket,
// BOSH): then the decoder reads as before.
func (s *Session) idleReaderFor() *idleReader {
	sc, ok := s.raw.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return nil
	}
	switch s.raw.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	if s.tlsState != nil && s.rec == nil {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &idleReader{Reader: s.nc, raw: rc, rec: s.rec}
}
