// Package xmlstream decodes the XML stream of an XMPP connection (RFC 6120 §4 and §11): the
// stream header, then one complete top-level element at a time.
//
// The decoder is written by hand rather than on top of encoding/xml, because every byte a
// client sends passes through it. encoding/xml allocates for every token, accepts DTDs,
// comments and processing instructions that XMPP forbids (so each would need a filter), cannot
// bound a stanza by the number of input bytes it consumes, and is several times slower. This
// decoder reads straight from the transport into its own buffer, finds where a stanza ends
// before parsing it, rejects oversized stanzas while they are still arriving, and builds
// stanza.Element trees with a handful of allocations per stanza.
//
// It accepts exactly the XML subset RFC 6120 §11 allows: UTF-8 only, no DTD, no comments, no
// processing instructions other than the XML declaration, no entity references other than the
// predefined ones and character references. CDATA sections are accepted and read as text.
//
// The strings of a decoded element share one allocation per stanza with the stanza's input;
// code that keeps a small part of a large stanza for a long time should clone it.
package xmlstream

import (
	"errors"
	"io"
	"unicode/utf8"

	"impetus/internal/stanza"
)

// Limits bounds what a peer can make the decoder hold. Zero fields take their defaults.
type Limits struct {
	MaxStanzaSize int // bytes of input from a top-level element's '<' to its end (default 262144)
	MaxDepth      int // element nesting depth inside a stanza, the stanza itself being 1 (default 32)
	MaxAttrs      int // attributes per element, namespace declarations included (default 64)
	MaxAttrLen    int // bytes of input per attribute value (default 16384)
}

// Default limits. The depth bound leaves room for pubsub payloads and XHTML-IM while keeping
// recursive consumers of the tree safe; the stanza size is the usual XMPP server default.
const (
	DefaultMaxStanzaSize = 262144
	DefaultMaxDepth      = 32
	DefaultMaxAttrs      = 64
	DefaultMaxAttrLen    = 16384
)

func (l Limits) withDefaults() Limits {
	if l.MaxStanzaSize <= 0 {
		l.MaxStanzaSize = DefaultMaxStanzaSize
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxAttrs <= 0 {
		l.MaxAttrs = DefaultMaxAttrs
	}
	if l.MaxAttrLen <= 0 {
		l.MaxAttrLen = DefaultMaxAttrLen
	}
	return l
}

// Header is the opening <stream:stream> tag.
type Header struct {
	Space, Local, Prefix        string            // resolved namespace, local name and prefix of the root element
	DefaultNS                   string            // the default namespace declared (jabber:client, jabber:server, …)
	To, From, ID, Version, Lang string            // Lang from xml:lang
	Namespaces                  map[string]string // prefix → URI declared on the header
}

// ErrStreamClosed is returned by ReadElement once the peer has closed its stream with
// </stream:stream>.
var ErrStreamClosed = errors.New("xmlstream: stream closed")

// Error is a stream-level problem with its RFC 6120 §4.9.3 condition. The decoder reports
// "not-well-formed", "restricted-xml", "unsupported-encoding", "policy-violation" (limits) and
// "bad-namespace-prefix" (a stream header whose prefix is undeclared); "invalid-namespace" and
// "bad-format" are for callers that check the header and the elements. The stream cannot
// continue after one: the decoder returns it again on every later call.
type Error struct {
	Condition string
	TooBig    bool // the stanza exceeded MaxStanzaSize (XEP-0478 stanza-too-big)
	Text      string
}

// Error returns the condition and the description.
func (e *Error) Error() string {
	if e.Text == "" {
		return "xmlstream: " + e.Condition
	}
	return "xmlstream: " + e.Condition + ": " + e.Text
}

func errNotWellFormed(text string) error {
	return &Error{Condition: "not-well-formed", Text: text}
}

func errRestricted(text string) error {
	return &Error{Condition: "restricted-xml", Text: text}
}

func errPolicy(text string) error {
	return &Error{Condition: "policy-violation", Text: text}
}

func errEncoding(text string) error {
	return &Error{Condition: "unsupported-encoding", Text: text}
}

const (
	minBufSize = 512
	// maxIdleBufSize is the largest buffer kept while nothing is buffered.
	maxIdleBufSize = 4096
	// maxDeclSize bounds the XML declaration, which is a few dozen bytes in practice.
	maxDeclSize = 256
	// maxShortReads is how many reads in a row must use less than half the buffer before it
	// shrinks, so one burst does not keep a large buffer on an idle connection.
	maxShortReads = 4
	// maxEmptyReads guards against readers that return neither data nor an error.
	maxEmptyReads = 100
)

const (
	stateProlog = iota // before the stream header
	stateStream        // reading top-level elements
	stateClosed        // the peer closed the stream
)

// Decoder reads an XMPP stream from an io.Reader. It is not safe for concurrent use.
type Decoder struct {
	rd      io.Reader
	lim     Limits
	buf     []byte
	r, w    int   // unread bytes are buf[r:w]
	rerr    error // an error that came with the last data, returned on the next read
	short   int   // consecutive reads that used less than half of the buffer
	maxBuf  int
	state   int
	err     error // the stream error that ended decoding
	atStart bool  // nothing consumed from this transport yet: a byte order mark may follow
	decl    bool  // the XML declaration of the current stream was seen
	root    string
	sc      scanner
	p       parser
}

// NewDecoder returns a decoder reading from r with the given limits. It allocates its buffer on
// the first read.
func NewDecoder(r io.Reader, lim Limits) *Decoder {
	d := &Decoder{rd: r, lim: lim.withDefaults(), atStart: true}
	d.p.lim = &d.lim
	// The buffer never needs to hold more than one stanza's worth of bytes.
	d.maxBuf = max(minBufSize, d.lim.MaxStanzaSize)
	return d
}

// Restart prepares for a new stream header on the same transport (after SASL success), keeping
// bytes already buffered.
func (d *Decoder) Restart() {
	d.state = stateProlog
	d.sc = scanner{}
	d.decl = false
}

// Reset switches to a new reader (after STARTTLS), dropping buffered bytes.
func (d *Decoder) Reset(r io.Reader) {
	d.rd = r
	d.r, d.w = 0, 0
	d.rerr = nil
	d.err = nil
	d.atStart = true
	d.Restart()
}

// SetReader switches to a reader that continues the same byte stream, keeping buffered bytes:
// a wrapper around the transport, such as a rate shaper, installed after the header was read.
func (d *Decoder) SetReader(r io.Reader) {
	d.rd = r
}

// Buffered reports how many unread bytes are buffered.
func (d *Decoder) Buffered() int {
	return d.w - d.r
}

// Idle reports whether the decoder stands between top-level elements with nothing buffered and
// no error pending: all it has read is consumed, so it may wait for input without a goroutine.
func (d *Decoder) Idle() bool {
	return d.state == stateStream && d.r == d.w && !d.sc.active && d.rerr == nil && d.err == nil
}

// Release drops the read buffer of an idle decoder; the next read allocates a small one.
func (d *Decoder) Release() {
	if d.Idle() {
		d.buf = nil
		d.r, d.w = 0, 0
	}
}

func (d *Decoder) fail(err error) error {
	d.err = err
	d.sc.active = false
	return err
}

// fill reads more input into the buffer, making room first. The buffer doubles while reads
// fill it, up to the stanza size limit, and halves after a series of small reads when little is
// buffered.
func (d *Decoder) fill() error {
	if d.rerr != nil {
		err := d.rerr
		d.rerr = nil
		return err
	}
	if d.buf == nil {
		d.buf = make([]byte, minBufSize)
	}
	if d.r == d.w {
		d.r, d.w = 0, 0
		if len(d.buf) > maxIdleBufSize {
			// Nothing is pending and the next read may block for a long time: an idle
			// connection should not keep the buffer a past burst needed. It grows back in a few
			// reads if the burst continues.
			d.buf = make([]byte, minBufSize)
		}
	}
	if d.w == len(d.buf) {
		if d.r > 0 {
			d.w = copy(d.buf, d.buf[d.r:d.w])
			d.r = 0
		} else if len(d.buf) < d.maxBuf {
			d.resize(min(2*len(d.buf), d.maxBuf))
		} else {
			// The scanner reports an oversized stanza before the buffer fills up.
			return d.fail(&Error{Condition: "policy-violation", TooBig: true, Text: "stanza too big"})
		}
	}
	for empty := 0; ; empty++ {
		space := len(d.buf) - d.w
		n, err := d.rd.Read(d.buf[d.w:])
		if n < 0 || n > space {
			return errors.New("xmlstream: reader returned an invalid count")
		}
		d.w += n
		switch {
		case n == space && len(d.buf) < d.maxBuf:
			d.short = 0
			d.resize(min(2*len(d.buf), d.maxBuf))
		case n < len(d.buf)/2:
			d.short++
			if d.short >= maxShortReads && len(d.buf) > minBufSize && d.w-d.r <= len(d.buf)/4 {
				d.short = 0
				d.resize(len(d.buf) / 2)
			}
		default:
			d.short = 0
		}
		if n > 0 {
			d.rerr = err
			return nil
		}
		if err != nil {
			return err
		}
		if empty >= maxEmptyReads {
			return io.ErrNoProgress
		}
	}
}

// resize moves the unread bytes into a new buffer of the given size.
func (d *Decoder) resize(size int) {
	nb := make([]byte, size)
	d.w = copy(nb, d.buf[d.r:d.w])
	d.r = 0
	d.buf = nb
}

// need reads until at least n bytes are buffered.
func (d *Decoder) need(n int) error {
	for d.w-d.r < n {
		if err := d.fill(); err != nil {
			return err
		}
	}
	return nil
}

// skipSpace consumes whitespace and reports whether other input follows in the buffer.
func (d *Decoder) skipSpace() bool {
	for d.r < d.w {
		if !isSpace(d.buf[d.r]) {
			return true
		}
		d.r++
	}
	return false
}

// stray diagnoses input other than markup or whitespace between top-level elements. It reads
// a whole character first so the answer does not depend on how the input was split.
func (d *Decoder) stray() error {
	for !utf8.FullRune(d.buf[d.r:d.w]) {
		if err := d.fill(); err != nil {
			return err
		}
	}
	b := d.buf[d.r:d.w]
	if r, _ := utf8.DecodeRune(b); r == utf8.RuneError {
		return d.fail(errEncoding("invalid UTF-8"))
	}
	if b[0] == 0 {
		return d.fail(errEncoding("the stream is not UTF-8"))
	}
	return d.fail(errNotWellFormed("character data at the stream level"))
}

// ReadHeader skips an optional XML declaration and whitespace, and returns the stream header.
// Any top-level element other than a stream root is returned as a Header with its Space and
// Local so the caller can answer with the right stream error. After Restart it reads the header
// of the new stream.
func (d *Decoder) ReadHeader() (*Header, error) {
	if d.err != nil {
		return nil, d.err
	}
	if d.state != stateProlog {
		d.Restart()
	}
	for {
		if !d.sc.active {
			if err := d.prolog(); err != nil {
				return nil, err
			}
			if !d.sc.active {
				continue
			}
		}
		data := d.buf[d.r:d.w]
		end := d.sc.scan(data)
		if end == 0 {
			if len(data) >= d.lim.MaxStanzaSize {
				return nil, d.fail(errPolicy("stream header too big"))
			}
			if err := d.fill(); err != nil {
				return nil, err
			}
			continue
		}
		d.sc.active = false
		if end > d.lim.MaxStanzaSize {
			return nil, d.fail(errPolicy("stream header too big"))
		}
		h, err := d.header(data[:end])
		if err != nil {
			return nil, d.fail(err)
		}
		d.r += end
		return h, nil
	}
}

// prolog consumes what may precede the stream header (a byte order mark, whitespace, the XML
// declaration) and starts the scanner at the header's '<'. It returns with the scanner inactive
// when it consumed something and should be called again.
func (d *Decoder) prolog() error {
	if d.atStart {
		if err := d.need(1); err != nil {
			return err
		}
		switch d.buf[d.r] {
		case 0x00, 0xFE, 0xFF:
			return d.fail(errEncoding("the stream is not UTF-8"))
		case 0xEF:
			if err := d.need(3); err != nil {
				return err
			}
			if d.buf[d.r+1] == 0xBB && d.buf[d.r+2] == 0xBF {
				d.r += 3
			}
		}
		d.atStart = false
	}
	for !d.skipSpace() {
		if err := d.fill(); err != nil {
			return err
		}
	}
	if d.buf[d.r] != '<' {
		return d.stray()
	}
	if err := d.need(3); err != nil {
		return err
	}
	switch d.buf[d.r+1] {
	case '?':
		return d.xmlDecl()
	case '!':
		return d.fail(bangError(d.buf[d.r:d.w]))
	}
	d.sc.begin(true)
	return nil
}

// xmlDecl consumes the XML declaration, refusing any encoding but UTF-8 and any other
// processing instruction.
func (d *Decoder) xmlDecl() error {
	for {
		data := d.buf[d.r:d.w]
		if len(data) >= 6 && (string(data[:5]) != "<?xml" || !isSpace(data[5])) {
			return d.fail(errRestricted("processing instruction"))
		}
		if end := indexPIEnd(data); end > 0 && len(data) >= 6 {
			if end > maxDeclSize {
				// Judged by length first, as when the end has not arrived yet, so the answer does
				// not depend on how the bytes were split into reads.
				return d.fail(errNotWellFormed("XML declaration too long"))
			}
			if d.decl {
				return d.fail(errRestricted("processing instruction"))
			}
			if !utf8.Valid(data[:end]) {
				return d.fail(errEncoding("invalid UTF-8"))
			}
			if err := checkXMLDecl(data[6 : end-2]); err != nil {
				return d.fail(err)
			}
			d.decl = true
			d.r += end
			return nil
		}
		if len(data) > maxDeclSize {
			return d.fail(errNotWellFormed("XML declaration too long"))
		}
		if err := d.fill(); err != nil {
			return err
		}
	}
}

func indexPIEnd(b []byte) int {
	for i := 2; i+1 < len(b); i++ {
		if b[i] == '?' && b[i+1] == '>' {
			return i + 2
		}
	}
	return 0
}

// checkXMLDecl parses the pseudo-attributes of an XML declaration (XML 1.0 §2.8).
func checkXMLDecl(b []byte) error {
	p := parser{data: b, s: string(b), lim: &Limits{MaxAttrs: 3, MaxAttrLen: 64}}
	seen := 0
	for {
		p.skipSpace()
		if p.pos >= len(b) {
			break
		}
		qs, qc, qe, err := p.qname()
		if err != nil || qc >= 0 {
			return errNotWellFormed("malformed XML declaration")
		}
		p.skipSpace()
		if p.pos >= len(b) || b[p.pos] != '=' {
			return errNotWellFormed("malformed XML declaration")
		}
		p.pos++
		p.skipSpace()
		v, err := p.attrValue()
		if err != nil {
			return errNotWellFormed("malformed XML declaration")
		}
		if p.pos < len(b) && !isSpace(b[p.pos]) {
			return errNotWellFormed("malformed XML declaration")
		}
		switch name := string(b[qs:qe]); {
		case name == "version" && seen == 0:
			if len(v) < 3 || v[:2] != "1." || !allDigits(v[2:]) {
				return errNotWellFormed("unsupported XML version")
			}
			seen = 1
		case name == "encoding" && seen == 1:
			if !equalFold(v, "UTF-8") {
				return errEncoding("only UTF-8 is supported, not " + v)
			}
			seen = 2
		case name == "standalone" && seen >= 1 && seen < 3:
			if v != "yes" && v != "no" {
				return errNotWellFormed("malformed XML declaration")
			}
			seen = 3
		default:
			return errNotWellFormed("malformed XML declaration")
		}
	}
	if seen == 0 {
		return errNotWellFormed("XML declaration without version")
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// header parses the stream root's start tag and makes its declarations the context of the
// stream's elements.
func (d *Decoder) header(data []byte) (*Header, error) {
	if !utf8.Valid(data) {
		return nil, errEncoding("invalid UTF-8")
	}
	p := &d.p
	p.data, p.pos, p.s = data, 0, string(data)
	p.ns, p.baseNS, p.baseDef = p.ns[:0], 0, ""
	p.attrSlab = nil
	defer func() {
		p.data, p.s, p.attrSlab = nil, "", nil
		clear(p.attrs)
		p.attrs = p.attrs[:0]
	}()
	if data[1] == '/' {
		return nil, errNotWellFormed("end tag before the stream header")
	}
	qs, qc, qe, empty, err := p.startTag()
	if err != nil {
		return nil, err
	}
	if p.pos != len(data) {
		return nil, errNotWellFormed("malformed stream header")
	}
	defNS, err := p.declare("")
	if err != nil {
		return nil, err
	}
	h := &Header{DefaultNS: defNS}
	if len(p.ns) > 0 {
		h.Namespaces = make(map[string]string, len(p.ns))
		for _, b := range p.ns {
			h.Namespaces[b.prefix] = b.uri
		}
	}
	if qc < 0 {
		h.Space, h.Local = defNS, p.str(qs, qe)
	} else {
		h.Prefix, h.Local = p.str(qs, qc), p.str(qc+1, qe)
		uri, ok := p.lookup(data[qs:qc])
		if !ok || h.Prefix == "xmlns" {
			return nil, &Error{Condition: "bad-namespace-prefix", Text: "undeclared prefix on the stream header"}
		}
		h.Space = uri
	}
	attrs, err := p.resolveAttrs()
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		switch a.Name {
		case "to":
			h.To = a.Value
		case "from":
			h.From = a.Value
		case "id":
			h.ID = a.Value
		case "version":
			h.Version = a.Value
		case "xml:lang":
			h.Lang = a.Value
		}
	}
	p.baseNS, p.baseDef = len(p.ns), defNS
	d.root = string(data[qs:qe])
	d.state = stateStream
	if empty {
		d.state = stateClosed
	}
	return h, nil
}

// ReadElement returns the next complete top-level element (a stanza or a stream-level element
// such as <starttls/>, <auth/>, <stream:error/>), skipping whitespace between elements
// (whitespace keepalives). Top-level elements inherit the header's default namespace. At
// </stream:stream> it returns ErrStreamClosed. I/O errors are returned as they are; after a
// timeout the call can be repeated and continues where it stopped.
func (d *Decoder) ReadElement() (*stanza.Element, error) {
	if d.err != nil {
		return nil, d.err
	}
	switch d.state {
	case stateProlog:
		return nil, errors.New("xmlstream: ReadElement before ReadHeader")
	case stateClosed:
		return nil, ErrStreamClosed
	}
	for {
		if !d.sc.active {
			if !d.skipSpace() {
				if err := d.fill(); err != nil {
					return nil, err
				}
				continue
			}
			if d.buf[d.r] != '<' {
				return nil, d.stray()
			}
			d.sc.begin(false)
		}
		data := d.buf[d.r:d.w]
		end := d.sc.scan(data)
		if end == 0 {
			if len(data) >= d.lim.MaxStanzaSize {
				return nil, d.fail(&Error{Condition: "policy-violation", TooBig: true, Text: "stanza too big"})
			}
			if err := d.fill(); err != nil {
				return nil, err
			}
			continue
		}
		d.sc.active = false
		if end > d.lim.MaxStanzaSize {
			return nil, d.fail(&Error{Condition: "policy-violation", TooBig: true, Text: "stanza too big"})
		}
		el, err := d.top(data[:end])
		if err != nil {
			if err == ErrStreamClosed {
				d.r += end
				d.state = stateClosed
				return nil, err
			}
			return nil, d.fail(err)
		}
		d.r += end
		return el, nil
	}
}

// top parses a complete top-level construct found by the scanner.
func (d *Decoder) top(data []byte) (*stanza.Element, error) {
	switch data[1] {
	case '/':
		p := parser{data: data, pos: 2}
		qs, _, qe, err := p.qname()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.pos != len(data)-1 || data[p.pos] != '>' {
			return nil, errNotWellFormed("malformed end tag")
		}
		if string(data[qs:qe]) != d.root {
			return nil, errNotWellFormed("end tag does not match the stream header")
		}
		return nil, ErrStreamClosed
	case '!':
		if len(data) >= len(cdataOpen) && string(data[:len(cdataOpen)]) == cdataOpen {
			return nil, errNotWellFormed("character data at the stream level")
		}
		return nil, bangError(data)
	case '?':
		return nil, errRestricted("processing instruction")
	}
	if !utf8.Valid(data) {
		return nil, errEncoding("invalid UTF-8")
	}
	return d.p.element(data, &d.sc)
}
