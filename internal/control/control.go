// Package control is the server's control socket, the counterpart of Momentum's console:
// a unix socket, readable only by the server's user, on which `impetus ctl` sends one
// command per connection and reads one reply.
//
// The protocol is a single JSON object each way, newline-terminated:
//
//	→ {"command":"kick","args":["alice@example.com/phone"]}
//	← {"ok":true,"output":"kicked alice@example.com/phone\n"}
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Request is one command.
type Request struct {
	Command string   `json:"command"`
	Args    []string `json:"args,omitempty"`
}

// Response is the reply to a Request.
type Response struct {
	OK     bool   `json:"ok"`
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Handler runs a command and returns its output.
type Handler func(ctx context.Context, command string, args []string) (string, error)

// maxRequest bounds a request; commands are short.
const maxRequest = 64 << 10

// ioTimeout bounds reading a request and writing a reply, so a stuck client cannot hold a
// goroutine forever. Commands themselves (a reload) may take longer.
const ioTimeout = 10 * time.Second

// Server is a listening control socket.
type Server struct {
	path    string
	ln      net.Listener
	handler Handler
	log     *slog.Logger
	wg      sync.WaitGroup
	// mu orders each connection's wg.Add before Close's wg.Wait, as WaitGroup requires.
	mu     sync.Mutex
	closed bool
}

// Listen creates the socket at path with mode 0600. A socket left by a server that is gone
// is replaced; one that still answers is an error, since two servers would share the path.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control: %s is in use by another process", path)
		}
		_ = os.Remove(path)
	}
	// Bind under a temporary name and rename once the mode is set, so that the socket is
	// never reachable at its real path with the umask's wider permissions.
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("control: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("control: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{path: path, ln: ln, handler: h, log: log}, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts commands until Close.
func (s *Server) Serve(ctx context.Context) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("control socket accept failed", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	line, err := bufio.NewReaderSize(c, 4096).ReadSlice('\n')
	var resp Response
	var req Request
	switch {
	case err != nil && !errors.Is(err, bufio.ErrBufferFull):
		return
	case errors.Is(err, bufio.ErrBufferFull) || len(line) > maxRequest:
		resp.Error = "control: request too long"
	default:
		if jerr := json.Unmarshal(line, &req); jerr != nil || req.Command == "" {
			resp.Error = "control: malformed request"
			break
		}
		out, herr := s.handler(ctx, req.Command, req.Args)
		resp.Output = out
		if herr != nil {
			resp.Error = herr.Error()
		} else {
			resp.OK = true
		}
		s.log.Info("control command", "command", req.Command, "args", req.Args, "ok", resp.OK)
	}
	b, _ := json.Marshal(resp)
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, _ = c.Write(append(b, '\n'))
}

// Close stops accepting, waits for commands in progress and removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	_ = os.Remove(s.path)
	return err
}

// Call sends one command to the socket at path and returns the reply.
func Call(ctx context.Context, path, command string, args ...string) (*Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	b, err := json.Marshal(Request{Command: command, Args: args})
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	var resp Response
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil {
		return nil, fmt.Errorf("control: reading the reply: %w", err)
	}
	return &resp, nil
}
