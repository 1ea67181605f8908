// Package component implements XEP-0114: Jabber Component Protocol, the server side of the
// jabber:component:accept stream. An external component connects to a Listen, names the
// domain it serves in the stream header, and proves it knows the domain's secret
// (XMPP_Component_Secret) with a handshake: the hex SHA-1 of the stream id followed by the
// secret. While the stream is up the core routes every stanza for the domain, and for JIDs
// under it, to the component, the component's stanzas enter the core like any others, and
// the account domains list the component in their disco items.
package component

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"impetus/internal/core"
	"impetus/internal/listener"
	"impetus/internal/module"
	"impetus/internal/stanza"
	"impetus/internal/transport"
	"impetus/internal/xmlstream"
)

// NS is the content namespace of component streams.
const NS = "jabber:component:accept"

// Defaults of Config.
const (
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultMaxQueue         = 4 << 20
)

// Config configures the component streams of a server.
type Config struct {
	Core *core.Core
	// Secrets returns the component domains and their secrets; it is called for every new
	// stream, so a configuration reload applies to the next connection.
	Secrets func() map[string]string
	Log     *slog.Logger
	// HandshakeTimeout bounds the time from connect to a completed handshake.
	HandshakeTimeout time.Duration
	// MaxQueue bounds bytes waiting to be written to one component.
	MaxQueue int
	// IdleTime closes component streams that send nothing for this long; 0 means never.
	IdleTime time.Duration
}

// Manager serves component streams and keeps the connected ones.
type Manager struct {
	cfg Config

	mu      sync.Mutex
	streams map[*stream]struct{}
	closed  bool
}

// New returns a manager.
func New(cfg Config) *Manager {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Manager{cfg: cfg, streams: make(map[*stream]struct{})}
}

type stream struct {
	m      *Manager
	nc     net.Conn
	dec    *xmlstream.Decoder
	w      *transport.Writer
	log    *slog.Logger
	id     string
	domain string
	items  []*module.Host // hosts listing the component in their disco items

	mu         sync.Mutex
	headerSent bool
	closeOnce  sync.Once
}

// Connected returns the domains of the connected components.
func (m *Manager) Connected() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for s := range m.streams {
		if s.domain != "" {
			out = append(out, s.domain)
		}
	}
	return out
}

// Close ends every component stream with system-shutdown and refuses new ones.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	list := make([]*stream, 0, len(m.streams))
	for s := range m.streams {
		list = append(list, s)
	}
	m.mu.Unlock()
	for _, s := range list {
		s.closeWith(stanza.NewStreamError("system-shutdown", ""))
	}
}

// Serve runs a component stream whose header dec has already read; it returns when the
// stream ends.
func (m *Manager) Serve(ctx context.Context, nc net.Conn, dec *xmlstream.Decoder, hdr *xmlstream.Header) {
	s := &stream{m: m, nc: nc, dec: dec, log: m.cfg.Log.With("remote_addr", nc.RemoteAddr().String(), "stream", "component")}
	s.w = transport.NewWriter(nc, m.cfg.MaxQueue, 0, func(error) { nc.Close() })
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		nc.Close()
		return
	}
	m.streams[s] = struct{}{}
	m.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("component stream panicked", "panic", r)
			s.closeWith(stanza.NewStreamError("internal-server-error", ""))
		}
		s.closeWith(nil)
		m.mu.Lock()
		delete(m.streams, s)
		m.mu.Unlock()
	}()
	if err := s.run(ctx, hdr); err != nil {
		var serr *stanza.StreamError
		var xerr *xmlstream.Error
		switch {
		case errors.As(err, &serr):
		case errors.As(err, &xerr):
			serr = stanza.NewStreamError(xerr.Condition, xerr.Text)
		default:
			// The connection failed or the peer closed its stream: nothing to tell it.
			return
		}
		s.log.Info("component stream error", "condition", serr.Condition, "text", serr.Text, "domain", s.domain)
		s.closeWith(serr)
	}
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Handshake returns the handshake value of XEP-0114 §3: the lowercase hex SHA-1 of the stream
// id followed by the secret.
func Handshake(id, secret string) string {
	sum := sha1.Sum([]byte(id + secret))
	return hex.EncodeToString(sum[:])
}

func (s *stream) run(ctx context.Context, hdr *xmlstream.Header) error {
	s.id = newID()
	_ = s.nc.SetReadDeadline(time.Now().Add(s.m.cfg.HandshakeTimeout))
	domain := strings.ToLower(hdr.To)
	s.writeHeader(domain)
	if hdr.DefaultNS != NS {
		return stanza.NewStreamError("invalid-namespace", "component streams use "+NS)
	}
	secret, ok := s.m.cfg.Secrets()[domain]
	if domain == "" || !ok {
		return stanza.NewStreamError("host-unknown", "no component is configured for this domain")
	}
	el, err := s.dec.ReadElement()
	if err != nil {
		return err
	}
	if el.Space != NS || el.Local != "handshake" {
		return stanza.NewStreamError("not-authorized", "handshake first")
	}
	want := Handshake(s.id, secret)
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(strings.TrimSpace(el.Text()))), []byte(want)) != 1 {
		return stanza.NewStreamError("not-authorized", "handshake failed")
	}
	if err := s.m.cfg.Core.Attach(domain, s.deliver); err != nil {
		return stanza.NewStreamError("conflict", "the domain is served already")
	}
	s.domain = domain
	defer s.m.cfg.Core.Detach(domain)
	s.write(stanza.NewElement(NS, "handshake"))
	s.log = s.log.With("domain", domain)
	s.log.Info("component connected")
	listener.Established(ctx)
	s.listItems()
	defer s.unlistItems()
	for {
		if s.m.cfg.IdleTime > 0 {
			_ = s.nc.SetReadDeadline(time.Now().Add(s.m.cfg.IdleTime))
		} else {
			_ = s.nc.SetReadDeadline(time.Time{})
		}
		el, err := s.dec.ReadElement()
		if errors.Is(err, xmlstream.ErrStreamClosed) {
			s.log.Info("component disconnected")
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.stanza(ctx, el); err != nil {
			return err
		}
	}
}

// stanza takes a stanza from the component: it must come from the component's domain or a JID
// under it, and name its addressee (XEP-0114 §3.1).
func (s *stream) stanza(ctx context.Context, el *stanza.Element) error {
	if !stanza.IsStanza(el, NS) {
		return stanza.NewStreamError("unsupported-stanza-type", "<"+el.Local+"/> is not a stanza")
	}
	from, err := jid.Parse(el.Attr("from"))
	if err != nil || from.Domainpart() != s.domain {
		return stanza.NewStreamError("invalid-from", "stanzas must come from "+s.domain+" or a JID under it")
	}
	if el.Attr("to") == "" {
		return stanza.NewStreamError("improper-addressing", "stanzas need a 'to' address")
	}
	el.SetAttr("from", from.String())
	in := stanza.ConvertNS(el, NS, stanza.NSClient)
	if err := s.m.cfg.Core.Route(ctx, in); err != nil {
		var serr *stanza.Error
		if !errors.As(err, &serr) {
			serr = stanza.ErrInternalServerError
		}
		if t := in.Attr("type"); t != "error" && t != stanza.Result {
			s.write(stanza.ErrorReply(in, serr))
		}
	}
	return nil
}

// deliver writes a stanza for the component's domain to its stream.
func (s *stream) deliver(_ context.Context, el *stanza.Element, _ jid.JID) error {
	s.write(el)
	return nil
}

func (s *stream) writeHeader(domain string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headerSent {
		return
	}
	s.headerSent = true
	_ = s.w.Append(func(dst []byte) []byte {
		dst = append(dst, "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='"...)
		dst = append(dst, s.id...)
		if domain != "" {
			dst = append(dst, "' from='"...)
			dst = stanza.AppendAttrValue(dst, domain)
		}
		return append(dst, "'>"...)
	})
}

// write queues el in the component namespace.
func (s *stream) write(el *stanza.Element) {
	out := stanza.ConvertNS(el, stanza.NSClient, NS)
	out = stanza.ConvertNS(out, stanza.NSServer, NS)
	_ = s.w.Append(func(dst []byte) []byte { return out.AppendXML(dst, NS) })
}

func (s *stream) closeWith(serr *stanza.StreamError) {
	s.closeOnce.Do(func() {
		s.writeHeader("")
		_ = s.w.Append(func(dst []byte) []byte {
			if serr != nil {
				e := serr.Element()
				dst = e.AppendXML(dst, NS)
			}
			return append(dst, "</stream:stream>"...)
		})
		s.w.Close(2 * time.Second)
		s.nc.Close()
	})
}

// parents returns the account domains that list the component: those it is a subdomain of,
// else every one.
func (s *stream) parents() []*module.Host {
	var all, sub []*module.Host
	for _, h := range s.m.cfg.Core.Hosts() {
		if h.Service() != nil {
			continue
		}
		all = append(all, h)
		if strings.HasSuffix(s.domain, "."+h.Domain) {
			sub = append(sub, h)
		}
	}
	if len(sub) > 0 {
		return sub
	}
	return all
}

func (s *stream) listItems() {
	s.items = s.parents()
	for _, h := range s.items {
		h.AddItem(module.Item{JID: s.domain})
	}
}

func (s *stream) unlistItems() {
	for _, h := range s.items {
		h.RemoveItem(module.Item{JID: s.domain})
	}
}
