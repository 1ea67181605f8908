package httpd

import (
	"bytes"
	"errors"
	"io"
	"strings"

	"impetus/internal/stanza"
	"impetus/internal/xmlstream"
)

// The translation between the byte stream a client stream (package c2s) reads and writes and
// the framed transports: WebSocket messages (RFC 7395) and BOSH bodies (XEP-0206). c2s speaks
// RFC 6120 over a byte stream; these functions turn a framed <open/> into a stream header and
// <close/> into </stream:stream> on the way in, and on the way out split c2s's bytes into
// self-contained top-level elements, with the stream header and its end reported separately.

// NSFraming is the RFC 7395 framing namespace of <open/> and <close/>.
const NSFraming = "urn:ietf:params:xml:ns:xmpp-framing"

// streamHead gives a framed element the namespace context of a client stream, so that the
// stream decoder can parse it on its own.
const streamHead = `<stream:stream xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams">`

// errNotOneElement is reported for a framed message that is not exactly one element.
var errNotOneElement = &xmlstream.Error{Condition: "not-well-formed", Text: "a WebSocket message must hold exactly one XML element (RFC 7395 §3.3.3)"}

// parseFramed parses one framed element (a WebSocket message) with the stream limits and
// checks that nothing but white space follows it. It returns the element and the bytes of the
// element without any XML declaration before it.
func parseFramed(msg []byte, lim xmlstream.Limits) (*stanza.Element, []byte, error) {
	body := skipDecl(bytes.TrimSpace(msg))
	if len(body) == 0 || body[0] != '<' {
		return nil, nil, errNotOneElement
	}
	end := topElementEnd(body)
	if end < 0 || len(bytes.TrimSpace(body[end:])) != 0 {
		return nil, nil, errNotOneElement
	}
	d := xmlstream.NewDecoder(io.MultiReader(strings.NewReader(streamHead), bytes.NewReader(body)), lim)
	if _, err := d.ReadHeader(); err != nil {
		return nil, nil, err
	}
	el, err := d.ReadElement()
	if err != nil {
		if errors.Is(err, xmlstream.ErrStreamClosed) {
			return nil, nil, errNotOneElement
		}
		return nil, nil, err
	}
	return el, body[:end], nil
}

// skipDecl drops a leading XML declaration, which a framed message may carry.
func skipDecl(b []byte) []byte {
	if bytes.HasPrefix(b, []byte("<?xml")) {
		if i := bytes.Index(b, []byte("?>")); i >= 0 {
			return bytes.TrimSpace(b[i+2:])
		}
	}
	return b
}

// openToHeader turns an RFC 7395 <open/> into the stream header c2s expects.
func openToHeader(open *stanza.Element) []byte {
	b := []byte(`<stream:stream xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams"`)
	for _, name := range []string{"to", "from", "version", "xml:lang", "id"} {
		if v := open.Attr(name); v != "" || open.HasAttr(name) {
			b = append(b, ' ')
			b = append(b, name...)
			b = append(b, `="`...)
			b = stanza.AppendAttrValue(b, v)
			b = append(b, '"')
		}
	}
	return append(b, '>')
}

// streamClose is the end of a client stream.
const streamClose = "</stream:stream>"

// chunkKind says what one piece of c2s output is.
type chunkKind uint8

const (
	chunkElement chunkKind = iota // a top-level element, made self-contained
	chunkHeader                   // the stream header, parsed
	chunkClose                    // </stream:stream>
)

// chunk is one piece of c2s output.
type chunk struct {
	kind   chunkKind
	data   []byte            // chunkElement: the element with its namespaces declared
	header *xmlstream.Header // chunkHeader
	el     *stanza.Element   // chunkElement, when the caller asked for parsed elements
}

// splitter cuts the byte stream c2s writes into chunks. c2s writes whole elements, but the
// splitter keeps an incomplete tail for the next write all the same.
type splitter struct {
	rest []byte
	// max bounds the incomplete tail kept between writes.
	max int
}

var errSplitOverflow = errors.New("httpd: output element too large to frame")

// split appends p to what is pending and returns the complete chunks.
func (s *splitter) split(p []byte) ([]chunk, error) {
	var buf []byte
	if len(s.rest) > 0 {
		buf = append(s.rest, p...)
	} else {
		buf = p
	}
	var out []chunk
	i := 0
	for {
		for i < len(buf) && isSpace(buf[i]) {
			i++
		}
		if i >= len(buf) {
			break
		}
		rest := buf[i:]
		switch {
		case bytes.HasPrefix(rest, []byte("<?")):
			j := bytes.Index(rest, []byte("?>"))
			if j < 0 {
				goto incomplete
			}
			i += j + 2
			continue
		case bytes.HasPrefix(rest, []byte(streamClose)):
			out = append(out, chunk{kind: chunkClose})
			i += len(streamClose)
			continue
		case bytes.HasPrefix(rest, []byte("<stream:stream")):
			j := tagEnd(rest)
			if j < 0 {
				goto incomplete
			}
			d := xmlstream.NewDecoder(bytes.NewReader(rest[:j]), xmlstream.Limits{})
			h, err := d.ReadHeader()
			if err != nil {
				return out, err
			}
			out = append(out, chunk{kind: chunkHeader, header: h})
			i += j
			continue
		}
		end := topElementEnd(rest)
		if end < 0 {
			goto incomplete
		}
		out = append(out, chunk{kind: chunkElement, data: selfContained(rest[:end])})
		i += end
	}
	s.rest = s.rest[:0]
	return out, nil
incomplete:
	if len(buf)-i > s.max && s.max > 0 {
		return out, errSplitOverflow
	}
	s.rest = append(s.rest[:0], buf[i:]...)
	return out, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// tagEnd returns the index just after the '>' that ends the tag b starts with, or -1.
func tagEnd(b []byte) int {
	var quote byte
	for i := 1; i < len(b); i++ {
		c := b[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '>':
			return i + 1
		}
	}
	return -1
}

// topElementEnd returns the index just after the element b starts with, or -1 when b holds
// only part of it. It follows tags, quoted attribute values, CDATA sections and comments, which
// is all it needs to find the end of well-formed input; the stream decoder checks the rest.
func topElementEnd(b []byte) int {
	depth := 0
	i := 0
	for i < len(b) {
		if b[i] != '<' {
			j := bytes.IndexByte(b[i:], '<')
			if j < 0 {
				return -1
			}
			i += j
			continue
		}
		r := b[i:]
		switch {
		case bytes.HasPrefix(r, []byte("<![CDATA[")):
			j := bytes.Index(r, []byte("]]>"))
			if j < 0 {
				return -1
			}
			i += j + 3
			continue
		case bytes.HasPrefix(r, []byte("<!--")):
			j := bytes.Index(r, []byte("-->"))
			if j < 0 {
				return -1
			}
			i += j + 3
			continue
		case bytes.HasPrefix(r, []byte("<?")):
			j := bytes.Index(r, []byte("?>"))
			if j < 0 {
				return -1
			}
			i += j + 2
			continue
		}
		j := tagEnd(r)
		if j < 0 {
			return -1
		}
		switch {
		case len(r) > 1 && r[1] == '/':
			depth--
		case r[j-2] == '/':
			// An empty-element tag: depth is unchanged.
		default:
			depth++
		}
		i += j
		if depth <= 0 {
			return i
		}
	}
	return -1
}

// selfContained returns a top-level element as c2s serialized it (inside a client stream whose
// header declares jabber:client as the default namespace and the stream: prefix) with those
// declarations added, so that it parses on its own as RFC 7395 §3.3.3 requires of every
// message.
func selfContained(el []byte) []byte {
	n := 1
	for n < len(el) && !isSpace(el[n]) && el[n] != '/' && el[n] != '>' {
		n++
	}
	name := el[1:n]
	var decl []byte
	if bytes.Contains(el, []byte("<stream:")) {
		decl = append(decl, ` xmlns:stream="http://etherx.jabber.org/streams"`...)
	}
	if bytes.Contains(el, []byte("<db:")) {
		decl = append(decl, ` xmlns:db="jabber:server:dialback"`...)
	}
	if bytes.IndexByte(name, ':') < 0 && !bytes.HasPrefix(el[n:], []byte(` xmlns="`)) {
		decl = append(decl, ` xmlns="jabber:client"`...)
	}
	if len(decl) == 0 {
		return bytes.Clone(el)
	}
	out := make([]byte, 0, len(el)+len(decl))
	out = append(out, el[:n]...)
	out = append(out, decl...)
	return append(out, el[n:]...)
}

// openElement is the RFC 7395 <open/> answering a stream header of c2s.
func openElement(h *xmlstream.Header) []byte {
	b := []byte(`<open xmlns="urn:ietf:params:xml:ns:xmpp-framing"`)
	add := func(name, v string) {
		if v == "" {
			return
		}
		b = append(b, ' ')
		b = append(b, name...)
		b = append(b, `="`...)
		b = stanza.AppendAttrValue(b, v)
		b = append(b, '"')
	}
	add("from", h.From)
	add("to", h.To)
	add("id", h.ID)
	add("version", h.Version)
	add("xml:lang", h.Lang)
	return append(b, "/>"...)
}

// closeElement is the RFC 7395 <close/>.
const closeElement = `<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>`
