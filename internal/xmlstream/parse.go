package xmlstream

import (
	"bytes"
	"unicode/utf8"

	"impetus/internal/stanza"
)

const (
	nsXML   = "http://www.w3.org/XML/1998/namespace"
	nsXMLNS = "http://www.w3.org/2000/xmlns/"
)

type binding struct{ prefix, uri string }

// frame is an open element while its content is parsed.
type frame struct {
	el       *stanza.Element
	qs, qe   int // the start tag's qualified name, to match the end tag
	nsMark   int // bindings to drop when the element ends
	nodeMark int // where the element's children start on the node stack
	defNS    string
}

// rawAttr is an attribute as it appears in a start tag, before namespace processing.
type rawAttr struct {
	ns, colon, ne int // name start, position of the colon (-1 if none), name end
	value         string
}

// parser turns one complete element, held contiguously in data, into a stanza.Element. All its
// stacks are kept between stanzas so steady-state decoding allocates only what the result keeps:
// one string holding the stanza's input (every name, value and text that needs no unescaping is
// a substring of it), and one array each for the elements, attributes and child lists.
type parser struct {
	lim  *Limits
	data []byte
	s    string
	pos  int

	ns      []binding // prefix bindings in scope; the stream header's come first
	baseNS  int       // number of bindings declared on the stream header
	baseDef string    // the stream's default namespace

	frames  []frame
	nodes   []stanza.Node
	attrs   []rawAttr
	scratch []byte

	elemSlab []stanza.Element
	attrSlab []stanza.Attr
	nodeSlab []stanza.Node
}

// str returns data[a:b] as a string without copying, interned when it is a common name.
func (p *parser) str(a, b int) string {
	if s, ok := interned(p.data[a:b]); ok {
		return s
	}
	return p.s[a:b]
}

// skipSpace skips whitespace and reports whether there was any.
func (p *parser) skipSpace() bool {
	start := p.pos
	for p.pos < len(p.data) && isSpace(p.data[p.pos]) {
		p.pos++
	}
	return p.pos > start
}

// qname parses a qualified name at p.pos: an NCName, optionally a colon and another NCName.
func (p *parser) qname() (start, colon, end int, err error) {
	data := p.data
	i := p.pos
	start, colon = i, -1
	first := true
	for i < len(data) {
		c := data[i]
		if c < utf8.RuneSelf {
			cl := nameClass[c]
			if c == ':' {
				if first || colon >= 0 {
					return 0, 0, 0, errNotWellFormed("malformed qualified name")
				}
				colon = i
				first = true
				i++
				continue
			}
			if cl == 0 || (first && cl != 2) {
				break
			}
			first = false
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		if !isNameRune(r, first) {
			break
		}
		first = false
		i += size
	}
	if first {
		// Empty name, or a colon with nothing after it.
		if i == start && i < len(data) && data[i] >= utf8.RuneSelf {
			return 0, 0, 0, errNotWellFormed("invalid character in name")
		}
		return 0, 0, 0, errNotWellFormed("expected a name")
	}
	p.pos = i
	return start, colon, i, nil
}

// startTag parses a start tag from its '<' into p.attrs and reports whether it is an empty-element
// tag.
func (p *parser) startTag() (qs, qc, qe int, empty bool, err error) {
	p.pos++
	qs, qc, qe, err = p.qname()
	if err != nil {
		return
	}
	p.attrs = p.attrs[:0]
	data := p.data
	for {
		space := p.skipSpace()
		if p.pos >= len(data) {
			err = errNotWellFormed("unexpected end of start tag")
			return
		}
		switch data[p.pos] {
		case '>':
			p.pos++
			return
		case '/':
			if p.pos+1 < len(data) && data[p.pos+1] == '>' {
				p.pos += 2
				empty = true
				return
			}
			err = errNotWellFormed("malformed empty-element tag")
			return
		}
		if !space {
			err = errNotWellFormed("attributes must be separated by whitespace")
			return
		}
		var a rawAttr
		if a.ns, a.colon, a.ne, err = p.qname(); err != nil {
			return
		}
		p.skipSpace()
		if p.pos >= len(data) || data[p.pos] != '=' {
			err = errNotWellFormed("expected '=' after attribute name")
			return
		}
		p.pos++
		p.skipSpace()
		if a.value, err = p.attrValue(); err != nil {
			return
		}
		if len(p.attrs) >= p.lim.MaxAttrs {
			err = errPolicy("too many attributes")
			return
		}
		for i := range p.attrs {
			if bytes.Equal(data[p.attrs[i].ns:p.attrs[i].ne], data[a.ns:a.ne]) {
				err = errNotWellFormed("duplicate attribute")
				return
			}
		}
		p.attrs = append(p.attrs, a)
	}
}

// attrValue parses a quoted attribute value with entity expansion and the normalization of
// XML 1.0 §3.3.3: literal tabs, newlines and carriage returns become spaces.
func (p *parser) attrValue() (string, error) {
	data := p.data
	if p.pos >= len(data) || (data[p.pos] != '"' && data[p.pos] != '\'') {
		return "", errNotWellFormed("expected a quoted attribute value")
	}
	q := data[p.pos]
	i := p.pos + 1
	start, last := i, i
	copying := false
	b := p.scratch[:0]
	for i < len(data) {
		// Values are mostly plain: test four bytes per iteration.
		for i+4 <= len(data) && attrClass[data[i]]|attrClass[data[i+1]]|attrClass[data[i+2]]|attrClass[data[i+3]] == clPlain {
			i += 4
		}
		if i >= len(data) {
			// The fast loop can consume the input to its end when no closing quote follows,
			// as in an XML declaration cut off inside a value.
			break
		}
		c := data[i]
		cl := attrClass[c]
		if cl == clPlain {
			i++
			continue
		}
		switch cl {
		case clQuote:
			if c != q {
				i++
				continue
			}
			if i-start > p.lim.MaxAttrLen {
				return "", errPolicy("attribute value too long")
			}
			p.pos = i + 1
			if !copying {
				return p.s[start:i], nil
			}
			b = append(b, data[last:i]...)
			p.scratch = b
			return string(b), nil
		case clLT:
			return "", errNotWellFormed("'<' in attribute value")
		case clAmp:
			b = append(b, data[last:i]...)
			copying = true
			var err error
			if b, i, err = p.entity(b, i); err != nil {
				return "", err
			}
			last = i
		case clWS, clCR:
			b = append(b, data[last:i]...)
			copying = true
			b = append(b, ' ')
			i++
			if c == '\r' && i < len(data) && data[i] == '\n' {
				i++
			}
			last = i
		case clEF:
			if err := checkEF(data, i); err != nil {
				return "", err
			}
			i++
		default:
			return "", errNotWellFormed("control character in attribute value")
		}
	}
	return "", errNotWellFormed("unterminated attribute value")
}

// checkEF rejects U+FFFE and U+FFFF, whose UTF-8 encodings start with 0xEF at data[i].
func checkEF(data []byte, i int) error {
	if i+2 < len(data) && data[i+1] == 0xBF && (data[i+2] == 0xBE || data[i+2] == 0xBF) {
		return errNotWellFormed("character U+FFFE or U+FFFF is not allowed")
	}
	return nil
}

// entity expands the reference at data[i] ('&') onto b. Only the five predefined entities and
// character references exist in XMPP: with no DTD nothing else can be declared, which is also
// what rules out entity expansion attacks.
func (p *parser) entity(b []byte, i int) ([]byte, int, error) {
	data := p.data
	j := i + 1
	if j < len(data) && data[j] == '#' {
		j++
		hex := j < len(data) && data[j] == 'x'
		if hex {
			j++
		}
		var r rune
		digits := 0
		for ; j < len(data); j++ {
			c := data[j]
			var v rune
			switch {
			case c >= '0' && c <= '9':
				v = rune(c - '0')
			case hex && c >= 'a' && c <= 'f':
				v = rune(c-'a') + 10
			case hex && c >= 'A' && c <= 'F':
				v = rune(c-'A') + 10
			default:
				goto end
			}
			if hex {
				r = r*16 + v
			} else {
				r = r*10 + v
			}
			if r > utf8.MaxRune {
				return b, 0, errNotWellFormed("character reference out of range")
			}
			digits++
		}
	end:
		if digits == 0 || j >= len(data) || data[j] != ';' {
			return b, 0, errNotWellFormed("malformed character reference")
		}
		if !isXMLChar(r) {
			return b, 0, errNotWellFormed("character reference to a character XML does not allow")
		}
		return utf8.AppendRune(b, r), j + 1, nil
	}
	for j < len(data) && j-i <= 5 && data[j] != ';' {
		j++
	}
	if j < len(data) && data[j] == ';' {
		var c byte
		switch string(data[i+1 : j]) {
		case "lt":
			c = '<'
		case "gt":
			c = '>'
		case "amp":
			c = '&'
		case "quot":
			c = '"'
		case "apos":
			c = '\''
		}
		if c != 0 {
			return append(b, c), j + 1, nil
		}
	}
	// Tell an undeclared entity from a stray ampersand: only the first is restricted XML.
	p.pos = i + 1
	if _, _, _, err := p.qname(); err == nil && p.pos < len(data) && data[p.pos] == ';' {
		return b, 0, errRestricted("undeclared entity reference")
	}
	return b, 0, errNotWellFormed("malformed entity reference")
}

// text parses a run of character data, entity references and CDATA sections up to the next tag
// and pushes it as one text node, so that the tree does not depend on how the text was written.
func (p *parser) text() error {
	data := p.data
	i := p.pos
	start, last := i, i
	copying := false
	b := p.scratch[:0]
loop:
	for i < len(data) {
		for i+4 <= len(data) && textClass[data[i]]|textClass[data[i+1]]|textClass[data[i+2]]|textClass[data[i+3]] == clPlain {
			i += 4
		}
		c := data[i]
		cl := textClass[c]
		if cl == clPlain {
			i++
			continue
		}
		switch cl {
		case clLT:
			if !bytes.HasPrefix(data[i:], []byte(cdataOpen)) {
				break loop
			}
			b = append(b, data[last:i]...)
			copying = true
			i += len(cdataOpen)
			end := bytes.Index(data[i:], []byte("]]>"))
			if end < 0 {
				return errNotWellFormed("unterminated CDATA section")
			}
			end += i
			var err error
			if b, err = appendCDATA(b, data[i:end]); err != nil {
				return err
			}
			i = end + 3
			last = i
		case clAmp:
			b = append(b, data[last:i]...)
			copying = true
			var err error
			if b, i, err = p.entity(b, i); err != nil {
				return err
			}
			last = i
		case clCR:
			b = append(b, data[last:i]...)
			copying = true
			b = append(b, '\n')
			i++
			if i < len(data) && data[i] == '\n' {
				i++
			}
			last = i
		case clGT:
			if i >= 2 && data[i-1] == ']' && data[i-2] == ']' {
				return errNotWellFormed("']]>' in character data")
			}
			i++
		case clEF:
			if err := checkEF(data, i); err != nil {
				return err
			}
			i++
		default:
			return errNotWellFormed("control character in character data")
		}
	}
	p.pos = i
	var s string
	if copying {
		b = append(b, data[last:i]...)
		p.scratch = b
		if len(b) == 0 {
			return nil // only empty CDATA sections
		}
		s = string(b)
	} else {
		s = p.s[start:i]
	}
	p.nodes = append(p.nodes, stanza.Node{Text: s})
	return nil
}

// appendCDATA appends a CDATA section's content, checking its characters and normalizing line
// ends like any other character data.
func appendCDATA(b, cd []byte) ([]byte, error) {
	last := 0
	for i := 0; i < len(cd); i++ {
		switch textClass[cd[i]] {
		case clBad:
			return b, errNotWellFormed("control character in CDATA section")
		case clEF:
			if err := checkEF(cd, i); err != nil {
				return b, err
			}
		case clCR:
			b = append(b, cd[last:i]...)
			b = append(b, '\n')
			if i+1 < len(cd) && cd[i+1] == '\n' {
				i++
			}
			last = i + 1
		}
	}
	return append(b, cd[last:]...), nil
}

// lookup resolves a prefix among the bindings in scope.
func (p *parser) lookup(prefix []byte) (string, bool) {
	for i := len(p.ns) - 1; i >= 0; i-- {
		if p.ns[i].prefix == string(prefix) {
			return p.ns[i].uri, true
		}
	}
	if string(prefix) == "xml" {
		return nsXML, true
	}
	return "", false
}

// declare processes the namespace declarations among p.attrs, pushing prefix bindings, and
// returns the default namespace for the element.
func (p *parser) declare(defNS string) (string, error) {
	data := p.data
	for i := range p.attrs {
		a := &p.attrs[i]
		if a.colon < 0 {
			if string(data[a.ns:a.ne]) != "xmlns" {
				continue
			}
			if a.value == nsXML || a.value == nsXMLNS {
				return "", errNotWellFormed("reserved namespace declared as default")
			}
			defNS = p.intern(a.value)
			continue
		}
		if string(data[a.ns:a.colon]) != "xmlns" {
			continue
		}
		local := data[a.colon+1 : a.ne]
		switch {
		case string(local) == "xmlns":
			return "", errNotWellFormed("the xmlns prefix cannot be declared")
		case string(local) == "xml":
			if a.value != nsXML {
				return "", errNotWellFormed("the xml prefix cannot be rebound")
			}
			continue
		case a.value == "":
			return "", errNotWellFormed("a prefix cannot be undeclared")
		case a.value == nsXML || a.value == nsXMLNS:
			return "", errNotWellFormed("reserved namespace bound to another prefix")
		}
		p.ns = append(p.ns, binding{prefix: p.str(a.colon+1, a.ne), uri: p.intern(a.value)})
	}
	return defNS, nil
}

// intern returns the interned copy of a value when there is one.
func (p *parser) intern(v string) string {
	if s, ok := interned([]byte(v)); ok {
		return s
	}
	return v
}

func isDecl(data []byte, a *rawAttr) bool {
	if a.colon < 0 {
		return string(data[a.ns:a.ne]) == "xmlns"
	}
	return string(data[a.ns:a.colon]) == "xmlns"
}

// resolveAttrs builds an element's attributes from p.attrs after its declarations are in scope.
func (p *parser) resolveAttrs() ([]stanza.Attr, error) {
	data := p.data
	n := 0
	for i := range p.attrs {
		if !isDecl(data, &p.attrs[i]) {
			n++
		}
	}
	if n == 0 {
		return nil, nil
	}
	if len(p.attrSlab) < n {
		p.attrSlab = make([]stanza.Attr, max(n, 16))
	}
	out := p.attrSlab[:n:n]
	p.attrSlab = p.attrSlab[n:]
	k, clark := 0, 0
	for i := range p.attrs {
		a := &p.attrs[i]
		if isDecl(data, a) {
			continue
		}
		out[k].Value = a.value
		if a.colon < 0 || string(data[a.ns:a.colon]) == "xml" {
			out[k].Name = p.str(a.ns, a.ne)
		} else {
			uri, ok := p.lookup(data[a.ns:a.colon])
			if !ok {
				return nil, errNotWellFormed("undeclared namespace prefix " + string(data[a.ns:a.colon]))
			}
			out[k].Name = "{" + uri + "}" + string(data[a.colon+1:a.ne])
			clark++
		}
		k++
	}
	if clark > 1 {
		// Two prefixes bound to one namespace can name the same attribute twice.
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if out[i].Name == out[j].Name {
					return nil, errNotWellFormed("duplicate attribute")
				}
			}
		}
	}
	return out, nil
}

func (p *parser) newElement() *stanza.Element {
	if len(p.elemSlab) == 0 {
		p.elemSlab = make([]stanza.Element, 8)
	}
	el := &p.elemSlab[0]
	p.elemSlab = p.elemSlab[1:]
	return el
}

// element parses the complete top-level element in data. The stanza's namespace context is the
// stream header's.
func (p *parser) element(data []byte, sc *scanner) (el *stanza.Element, err error) {
	p.data, p.pos = data, 0
	p.s = string(data)
	p.elemSlab = make([]stanza.Element, sc.elems)
	if sc.attrs > 0 {
		p.attrSlab = make([]stanza.Attr, sc.attrs)
	}
	if nodes := sc.elems - 1 + sc.texts; nodes > 0 {
		p.nodeSlab = make([]stanza.Node, nodes)
	}
	p.ns = p.ns[:p.baseNS]
	p.frames = p.frames[:0]
	p.nodes = p.nodes[:0]
	defer p.release()

	var root *stanza.Element
	for {
		if p.pos >= len(data) {
			return nil, errNotWellFormed("unexpected end of element")
		}
		if data[p.pos] != '<' {
			if err := p.text(); err != nil {
				return nil, err
			}
			continue
		}
		if p.pos+1 >= len(data) {
			return nil, errNotWellFormed("unexpected end of element")
		}
		switch data[p.pos+1] {
		case '/':
			if err := p.endTag(); err != nil {
				return nil, err
			}
			if len(p.frames) == 0 {
				return root, p.finish()
			}
			continue
		case '!':
			if bytes.HasPrefix(data[p.pos:], []byte(cdataOpen)) {
				if err := p.text(); err != nil {
					return nil, err
				}
				continue
			}
			return nil, bangError(data[p.pos:])
		case '?':
			return nil, errRestricted("processing instruction")
		}
		qs, qc, qe, empty, err := p.startTag()
		if err != nil {
			return nil, err
		}
		if len(p.frames) >= p.lim.MaxDepth {
			return nil, errPolicy("elements nested too deeply")
		}
		defNS := p.baseDef
		if len(p.frames) > 0 {
			defNS = p.frames[len(p.frames)-1].defNS
		}
		nsMark := len(p.ns)
		if defNS, err = p.declare(defNS); err != nil {
			return nil, err
		}
		e := p.newElement()
		if qc < 0 {
			e.Space = defNS
			e.Local = p.str(qs, qe)
		} else {
			prefix := data[qs:qc]
			if string(prefix) == "xmlns" {
				return nil, errNotWellFormed("element with the xmlns prefix")
			}
			uri, ok := p.lookup(prefix)
			if !ok {
				return nil, errNotWellFormed("undeclared namespace prefix " + string(prefix))
			}
			e.Space = uri
			e.Local = p.str(qc+1, qe)
		}
		if e.Attrs, err = p.resolveAttrs(); err != nil {
			return nil, err
		}
		if root == nil {
			root = e
		}
		if empty {
			p.ns = p.ns[:nsMark]
			if len(p.frames) == 0 {
				return root, p.finish()
			}
			p.nodes = append(p.nodes, stanza.Node{Elem: e})
			continue
		}
		p.frames = append(p.frames, frame{el: e, qs: qs, qe: qe, nsMark: nsMark, nodeMark: len(p.nodes), defNS: defNS})
	}
}

// finish checks that the element ended exactly where the scanner said it would.
func (p *parser) finish() error {
	if p.pos != len(p.data) {
		return errNotWellFormed("malformed markup")
	}
	return nil
}

// endTag parses an end tag and closes the innermost element.
func (p *parser) endTag() error {
	data := p.data
	p.pos += 2
	qs, _, qe, err := p.qname()
	if err != nil {
		return err
	}
	p.skipSpace()
	if p.pos >= len(data) || data[p.pos] != '>' {
		return errNotWellFormed("malformed end tag")
	}
	p.pos++
	f := &p.frames[len(p.frames)-1]
	if !bytes.Equal(data[qs:qe], data[f.qs:f.qe]) {
		return errNotWellFormed("end tag does not match start tag")
	}
	if n := len(p.nodes) - f.nodeMark; n > 0 {
		if len(p.nodeSlab) < n {
			p.nodeSlab = make([]stanza.Node, max(n, 16))
		}
		children := p.nodeSlab[:n:n]
		p.nodeSlab = p.nodeSlab[n:]
		copy(children, p.nodes[f.nodeMark:])
		f.el.Children = children
		clear(p.nodes[f.nodeMark:])
		p.nodes = p.nodes[:f.nodeMark]
	}
	p.ns = p.ns[:f.nsMark]
	el := f.el
	p.frames = p.frames[:len(p.frames)-1]
	if len(p.frames) > 0 {
		p.nodes = append(p.nodes, stanza.Node{Elem: el})
	}
	return nil
}

// release drops references into the finished stanza and gives back stacks that a large stanza
// grew, so an idle stream holds little memory.
func (p *parser) release() {
	p.data, p.s = nil, ""
	p.elemSlab, p.attrSlab, p.nodeSlab = nil, nil, nil
	clear(p.frames)
	p.frames = p.frames[:0]
	clear(p.nodes)
	p.nodes = p.nodes[:0]
	clear(p.attrs)
	p.attrs = p.attrs[:0]
	if cap(p.nodes) > 64 {
		p.nodes = nil
	}
	if cap(p.frames) > 16 {
		p.frames = nil
	}
	if cap(p.attrs) > 16 {
		p.attrs = nil
	}
	if cap(p.scratch) > 1024 {
		p.scratch = nil
	}
	if len(p.ns) > p.baseNS {
		clear(p.ns[p.baseNS:])
		p.ns = p.ns[:p.baseNS]
	}
}

// bangError classifies markup starting with "<!" that is not a CDATA section.
func bangError(b []byte) error {
	if len(b) > 2 && (b[2] == '-' || (b[2] >= 'A' && b[2] <= 'Z')) {
		return errRestricted("comments and document type declarations are not allowed")
	}
	return errNotWellFormed("malformed markup")
}
