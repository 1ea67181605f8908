package stanza

import (
	"iter"
	"strings"
	"unicode/utf8"
)

// The serializer writes these two namespaces with fixed prefixes because the stream header
// declares them once for the whole stream; the names are private to this file so they cannot
// collide with the package's exported namespace constants.
const (
	elemStreamsNS  = "http://etherx.jabber.org/streams"
	elemDialbackNS = "jabber:server:dialback"
	elemXMLNS      = "http://www.w3.org/XML/1998/namespace"
)

// Attr is an attribute as written, with its qualified name ("to", "xml:lang", "type").
// Namespace declarations are not attributes. An attribute in a namespace other than the xml one
// has no stable prefix once its declaration is dropped, so it is named in Clark notation,
// "{namespace-uri}local", and AppendXML declares a prefix for it.
type Attr struct{ Name, Value string }

// Node is one child of an element: an element, or character data when Elem is nil.
type Node struct {
	Elem *Element
	Text string
}

// Element is an XML element with its namespace resolved.
//
// Elements produced by the stream decoder share backing arrays and string memory per stanza, so
// keeping any part of a decoded element keeps that stanza's input bytes alive.
type Element struct {
	Space    string // namespace URI
	Local    string // local name
	Attrs    []Attr
	Children []Node
}

// NewElement returns an element with the given namespace, local name and attributes.
func NewElement(space, local string, attrs ...Attr) *Element {
	e := &Element{Space: space, Local: local}
	if len(attrs) > 0 {
		e.Attrs = append([]Attr(nil), attrs...)
	}
	return e
}

// Attr returns the value of the attribute with the given qualified name, or "" when it is absent.
func (e *Element) Attr(name string) string {
	for i := range e.Attrs {
		if e.Attrs[i].Name == name {
			return e.Attrs[i].Value
		}
	}
	return ""
}

// HasAttr reports whether the element has an attribute with the given qualified name.
func (e *Element) HasAttr(name string) bool {
	for i := range e.Attrs {
		if e.Attrs[i].Name == name {
			return true
		}
	}
	return false
}

// SetAttr replaces the value of the named attribute, or appends the attribute when it is absent.
func (e *Element) SetAttr(name, value string) {
	for i := range e.Attrs {
		if e.Attrs[i].Name == name {
			e.Attrs[i].Value = value
			return
		}
	}
	e.Attrs = append(e.Attrs, Attr{Name: name, Value: value})
}

// RemoveAttr removes the named attribute, keeping the order of the others.
func (e *Element) RemoveAttr(name string) {
	for i := range e.Attrs {
		if e.Attrs[i].Name == name {
			// A fresh slice keeps arrays that decoded elements may share untouched.
			attrs := make([]Attr, 0, len(e.Attrs)-1)
			attrs = append(attrs, e.Attrs[:i]...)
			e.Attrs = append(attrs, e.Attrs[i+1:]...)
			return
		}
	}
}

// Child returns the first child element with the given namespace and local name, or nil.
// An empty space matches any namespace.
func (e *Element) Child(space, local string) *Element {
	for _, n := range e.Children {
		if n.Elem != nil && n.Elem.Local == local && (space == "" || n.Elem.Space == space) {
			return n.Elem
		}
	}
	return nil
}

// Elements returns an iterator over the child elements in document order.
func (e *Element) Elements() iter.Seq[*Element] {
	return func(yield func(*Element) bool) {
		for _, n := range e.Children {
			if n.Elem != nil && !yield(n.Elem) {
				return
			}
		}
	}
}

// FirstElement returns the first child element, or nil when there is none.
func (e *Element) FirstElement() *Element {
	for _, n := range e.Children {
		if n.Elem != nil {
			return n.Elem
		}
	}
	return nil
}

// ElementCount returns the number of child elements.
func (e *Element) ElementCount() int {
	c := 0
	for _, n := range e.Children {
		if n.Elem != nil {
			c++
		}
	}
	return c
}

// Text returns the concatenated character data that are direct children of the element.
func (e *Element) Text() string {
	var only string
	count := 0
	for _, n := range e.Children {
		if n.Elem == nil && n.Text != "" {
			only = n.Text
			count++
		}
	}
	if count <= 1 {
		// The common case, a single text node, costs no allocation.
		return only
	}
	var b strings.Builder
	for _, n := range e.Children {
		if n.Elem == nil {
			b.WriteString(n.Text)
		}
	}
	return b.String()
}

// AddChild appends c as the last child and returns e.
func (e *Element) AddChild(c *Element) *Element {
	e.Children = append(e.Children, Node{Elem: c})
	return e
}

// AddText appends character data as the last child and returns e. Empty text is ignored.
func (e *Element) AddText(s string) *Element {
	if s != "" {
		e.Children = append(e.Children, Node{Text: s})
	}
	return e
}

// Copy returns a deep copy of e that shares no slices with it.
func (e *Element) Copy() *Element {
	if e == nil {
		return nil
	}
	c := &Element{Space: e.Space, Local: e.Local}
	if len(e.Attrs) > 0 {
		c.Attrs = append([]Attr(nil), e.Attrs...)
	}
	if len(e.Children) > 0 {
		c.Children = make([]Node, len(e.Children))
		for i, n := range e.Children {
			if n.Elem != nil {
				c.Children[i].Elem = n.Elem.Copy()
			} else {
				c.Children[i].Text = n.Text
			}
		}
	}
	return c
}

// String returns the serialization of e with its namespace always declared.
func (e *Element) String() string {
	// A stanza-sized first buffer avoids most of the growth steps.
	return string(e.AppendXML(make([]byte, 0, 512), ""))
}

// AppendXML appends e's serialization to dst. parentSpace is the default namespace in scope
// where e is written: xmlns is written only when e.Space differs from it. Elements in the
// streams namespace (http://etherx.jabber.org/streams) are written with the "stream:" prefix
// and elements in jabber:server:dialback with the "db:" prefix, without declarations (the stream
// header declares both); elements in the xml namespace get the predefined "xml:" prefix.
// Characters that XML cannot carry (invalid UTF-8, control characters) are written as U+FFFD
// so the output is always well-formed.
func (e *Element) AppendXML(dst []byte, parentSpace string) []byte {
	dst = append(dst, '<')
	inner := parentSpace // the default namespace in scope for the children
	prefix := elemPrefix(e.Space)
	dst = append(dst, prefix...)
	dst = append(dst, e.Local...)
	if prefix == "" {
		if e.Space != parentSpace {
			dst = append(dst, ` xmlns="`...)
			dst = elemAppendAttrValue(dst, e.Space)
			dst = append(dst, '"')
		}
		inner = e.Space
	}
	for i := range e.Attrs {
		dst = elemAppendAttr(dst, i, &e.Attrs[i])
	}
	if len(e.Children) == 0 {
		return append(dst, "/>"...)
	}
	dst = append(dst, '>')
	for _, n := range e.Children {
		if n.Elem != nil {
			dst = n.Elem.AppendXML(dst, inner)
		} else {
			dst = elemAppendText(dst, n.Text)
		}
	}
	dst = append(dst, "</"...)
	dst = append(dst, prefix...)
	dst = append(dst, e.Local...)
	return append(dst, '>')
}

// elemPrefix returns the fixed prefix of the namespaces that are written without declaring
// them: the stream header declares the first two, and XML predefines the last, which cannot be
// declared as a default namespace at all.
func elemPrefix(space string) string {
	switch space {
	case elemStreamsNS:
		return "stream:"
	case elemDialbackNS:
		return "db:"
	case elemXMLNS:
		return "xml:"
	}
	return ""
}

// elemAppendAttr writes one attribute. A Clark-notation name gets a prefix of its own, "nsN"
// with N the attribute's index, declared on the same element so it cannot clash with anything
// in scope.
func elemAppendAttr(dst []byte, i int, a *Attr) []byte {
	name := a.Name
	if len(name) > 0 && name[0] == '{' {
		if end := strings.LastIndexByte(name, '}'); end > 0 {
			space, local := name[1:end], name[end+1:]
			if space == "" {
				name = local
			} else {
				dst = append(dst, " xmlns:ns"...)
				dst = elemAppendInt(dst, i)
				dst = append(dst, `="`...)
				dst = elemAppendAttrValue(dst, space)
				dst = append(dst, `" ns`...)
				dst = elemAppendInt(dst, i)
				dst = append(dst, ':')
				dst = append(dst, local...)
				dst = append(dst, `="`...)
				dst = elemAppendAttrValue(dst, a.Value)
				return append(dst, '"')
			}
		}
	}
	dst = append(dst, ' ')
	dst = append(dst, name...)
	dst = append(dst, `="`...)
	dst = elemAppendAttrValue(dst, a.Value)
	return append(dst, '"')
}

func elemAppendInt(dst []byte, i int) []byte {
	if i >= 10 {
		dst = elemAppendInt(dst, i/10)
	}
	return append(dst, byte('0'+i%10))
}

// Escape classes for bytes below utf8.RuneSelf: 0 is written as is, 1 needs the slow path
// (an escape or a replacement). Bytes from utf8.RuneSelf up are checked as UTF-8 sequences.
var elemTextClass, elemAttrClass [utf8.RuneSelf]bool

func init() {
	for c := 0; c < 0x20; c++ {
		elemTextClass[c] = true
		elemAttrClass[c] = true
	}
	elemTextClass['\t'] = false
	elemTextClass['\n'] = false
	for _, c := range "&<>\r" {
		elemTextClass[c] = true
	}
	for _, c := range "&<\"" {
		elemAttrClass[c] = true
	}
}

func elemAppendText(dst []byte, s string) []byte {
	return elemAppendEscaped(dst, s, &elemTextClass)
}

// AppendAttrValue appends s escaped for use inside a quoted attribute value (either quote).
func AppendAttrValue(dst []byte, s string) []byte { return elemAppendAttrValue(dst, s) }

func elemAppendAttrValue(dst []byte, s string) []byte {
	return elemAppendEscaped(dst, s, &elemAttrClass)
}

const elemReplacement = "\uFFFD"

// elemAppendEscaped writes s with the bytes its class table marks escaped. Literal tabs and
// newlines in attribute values and carriage returns anywhere become character references because
// a parser would otherwise normalize them away.
func elemAppendEscaped(dst []byte, s string, class *[utf8.RuneSelf]bool) []byte {
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if !class[c] {
				i++
				continue
			}
			var esc string
			switch c {
			case '&':
				esc = "&amp;"
			case '<':
				esc = "&lt;"
			case '>':
				esc = "&gt;"
			case '"':
				esc = "&quot;"
			case '\t':
				esc = "&#x9;"
			case '\n':
				esc = "&#xA;"
			case '\r':
				esc = "&#xD;"
			default:
				esc = elemReplacement
			}
			dst = append(dst, s[last:i]...)
			dst = append(dst, esc...)
			i++
			last = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == 0xFFFE || r == 0xFFFF {
			dst = append(dst, s[last:i]...)
			dst = append(dst, elemReplacement...)
			i += size
			last = i
			continue
		}
		i += size
	}
	return append(dst, s[last:]...)
}
