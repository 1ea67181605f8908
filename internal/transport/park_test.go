package transport

import (
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func testPoller(t *testing.T) *Poller {
	p := DefaultPoller()
	if p == nil {
		if runtime.GOOS == "linux" {
			t.Fatal("no poller on linux")
		}
		t.Skip("connections are not parked on " + runtime.GOOS)
	}
	return p
}

func waitWake(t *testing.T, woke chan struct{}, what string) {
	t.Helper()
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		t.Fatalf("not woken by %s", what)
	}
}

func TestParkWakesOnInput(t *testing.T) {
	p := testPoller(t)
	server, client := tcpPair(t)
	woke := make(chan struct{}, 2)
	k := p.Park(server.(syscall.Conn), 0, func() { woke <- struct{}{} })
	if k == nil {
		t.Fatal("Park refused a TCP connection")
	}
	select {
	case <-woke:
		t.Fatal("woken without input")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitWake(t, woke, "input")
	// The input is still there for the reader.
	var b [1]byte
	if n, err := server.Read(b[:]); n != 1 || err != nil {
		t.Fatalf("read after wake: %d, %v", n, err)
	}
	if k.Wake() {
		t.Error("Wake after the input woke it reported true")
	}
	select {
	case <-woke:
		t.Fatal("woken twice")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestParkInputAlreadyWaiting(t *testing.T) {
	p := testPoller(t)
	server, client := tcpPair(t)
	if _, err := client.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	woke := make(chan struct{}, 1)
	if p.Park(server.(syscall.Conn), 0, func() { woke <- struct{}{} }) == nil {
		t.Fatal("Park refused")
	}
	waitWake(t, woke, "input that arrived before parking")
}

func TestParkWakesOnPeerClose(t *testing.T) {
	p := testPoller(t)
	server, client := tcpPair(t)
	woke := make(chan struct{}, 1)
	p.Park(server.(syscall.Conn), 0, func() { woke <- struct{}{} })
	client.Close()
	waitWake(t, woke, "the peer's close")
}

func TestParkTimeoutAndWake(t *testing.T) {
	p := testPoller(t)
	server, _ := tcpPair(t)
	woke := make(chan struct{}, 1)
	p.Park(server.(syscall.Conn), 30*time.Millisecond, func() { woke <- struct{}{} })
	waitWake(t, woke, "the timeout")

	server2, _ := tcpPair(t)
	before := p.Parked()
	k := p.Park(server2.(syscall.Conn), time.Hour, func() { woke <- struct{}{} })
	if p.Parked() != before+1 {
		t.Errorf("Parked() = %d, want %d", p.Parked(), before+1)
	}
	if !k.Wake() {
		t.Fatal("Wake of a parked connection reported false")
	}
	waitWake(t, woke, "Wake")
	if p.Parked() != before {
		t.Errorf("Parked() after Wake = %d, want %d", p.Parked(), before)
	}
	if k.Wake() {
		t.Error("second Wake reported true")
	}
}

// A descriptor number reused by a new connection is not confused with the old registration.
func TestParkReusedDescriptor(t *testing.T) {
	p := testPoller(t)
	server, _ := tcpPair(t)
	woke := make(chan string, 2)
	old := p.Park(server.(syscall.Conn), 0, func() { woke <- "old" })
	if !old.Wake() {
		t.Fatal("Wake failed")
	}
	if got := <-woke; got != "old" {
		t.Fatalf("woke %q", got)
	}
	server.Close()
	server2, client2 := tcpPair(t)
	p.Park(server2.(syscall.Conn), 0, func() { woke <- "new" })
	if old.Wake() {
		t.Error("the old registration woke again")
	}
	client2.Write([]byte("x"))
	select {
	case got := <-woke:
		if got != "new" {
			t.Fatalf("woke %q, want new", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("new connection not woken")
	}
}
