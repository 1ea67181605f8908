package c2s

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"impetus/internal/xmlstream"
)

// chunkConn returns its data in reads of the given sizes, in turn.
type chunkConn struct {
	net.Conn
	data   []byte
	chunks []int
	i      int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data), c.chunks[c.i%len(c.chunks)])
	c.i++
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// TestRecordReaderBoundaries checks that a recordReader passes every byte on, in order, and
// never returns bytes of two records (or of a header and a body) in one read.
func TestRecordReaderBoundaries(t *testing.T) {
	var stream []byte
	var bounds []int // offsets where a header or a body ends
	for i, size := range []int{0, 1, 17, 300, 4096, 5000, 2, 16384} {
		stream = append(stream, 23, 3, 3, byte(size>>8), byte(size))
		bounds = append(bounds, len(stream))
		stream = append(stream, bytes.Repeat([]byte{byte(i)}, size)...)
		bounds = append(bounds, len(stream))
	}
	for _, chunks := range [][]int{{1}, {3, 7}, {4096}, {100000}, {5, 1, 9000}} {
		rr := newRecordReader(&chunkConn{data: stream, chunks: chunks})
		var got []byte
		buf := make([]byte, 700)
		for {
			n, err := rr.Read(buf)
			start, end := len(got), len(got)+n
			for _, b := range bounds {
				if b > start && b < end {
					t.Fatalf("chunks %v: a read of [%d, %d) crosses the boundary at %d", chunks, start, end, b)
				}
			}
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("chunks %v: the bytes differ", chunks)
		}
		if rr.buf != nil {
			t.Errorf("chunks %v: the buffer is kept after the last byte", chunks)
		}
	}
}

func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// TestIdleReaderTLS sends stanzas in bursts of several TLS records per write, with pauses, and
// checks that a decoder waiting through an idleReader reads every stanza: nothing may be left
// in a buffer above the socket while it waits.
func TestIdleReaderTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const bursts, perBurst = 20, 7
	done := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		if _, err := tc.Write([]byte("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")); err != nil {
			done <- err
			return
		}
		for b := 0; b < bursts; b++ {
			// Each Write is one record; Nagle and the kernel coalesce them into few segments.
			for i := 0; i < perBurst; i++ {
				if _, err := tc.Write([]byte("<message><body>x</body></message>")); err != nil {
					done <- err
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		done <- nil
		// Keep the connection open until the reader is done.
		_, _ = io.Copy(io.Discard, tc)
	}()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second)) // a bound, not a timing assertion
	s := &Session{raw: nc, nc: nc}
	s.rec = newRecordReader(nc)
	tc := tls.Server(s.rec, &tls.Config{Certificates: []tls.Certificate{testCert(t)}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	s.nc = tc
	s.tlsState = &tls.ConnectionState{}
	dec := xmlstream.NewDecoder(tc, xmlstream.Limits{})
	if _, err := dec.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	ir := s.idleReaderFor()
	if ir == nil {
		t.Fatal("no idle reader for a TCP connection with STARTTLS")
	}
	dec.SetReader(ir)
	for i := 0; i < bursts*perBurst; i++ {
		el, err := dec.ReadElement()
		if err != nil {
			t.Fatalf("stanza %d: %v", i, err)
		}
		if el.Local != "message" {
			t.Fatalf("stanza %d: %s", i, el)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
