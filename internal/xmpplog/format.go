package xmpplog

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"impetus/internal/stanza"
)

// Obfuscated replaces every run of character data in a %so expansion. It is fixed, not a
// hash or a length, so that nothing of the text can be recovered from the log.
const Obfuscated = "***"

// DefaultNamespace is the namespace option's default.
const DefaultNamespace = "xmpp_logger,sieve,custom_logger"

// macro identifies one expansion.
type macro uint8

const (
	literal macro = iota
	macroTime
	macroStanzaType
	macroObfuscated
	macroRaw
	macroFrom
	macroTo
	macroID
	macroType
	macroHost
)

// macroNames maps the names after '%' to macros. Matching takes the longest name, so "%st"
// is the stanza type and never "%s" followed by "t".
var macroNames = []struct {
	name string
	m    macro
}{
	{"st", macroStanzaType},
	{"so", macroObfuscated},
	{"sr", macroRaw},
	{"af", macroFrom},
	{"at", macroTo},
	{"ai", macroID},
	{"ay", macroType},
	{"t", macroTime},
	{"H", macroHost},
}

// knownNamespaces are the macro namespaces Momentum defines. Only xmpp_logger has macros in
// Impetus; the other two are accepted so that Momentum's default value loads.
var knownNamespaces = []string{"xmpp_logger", "sieve", "custom_logger"}

// token is a literal or a macro.
type token struct {
	m   macro
	lit string
}

// Format is a compiled log line format.
type Format struct {
	src    string
	tokens []token
}

// String returns the format as written.
func (f *Format) String() string { return f.src }

// ParseFormat compiles a log line format: literal text and %macros, with %% for a literal
// percent sign. namespace is the namespace option: the macros exist only when it lists
// xmpp_logger, and a name other than Momentum's three is an error.
func ParseFormat(src, namespace string) (*Format, error) {
	hasXMPP, err := checkNamespace(namespace)
	if err != nil {
		return nil, err
	}
	f := &Format{src: src}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			f.tokens = append(f.tokens, token{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c != '%' {
			lit.WriteByte(c)
			continue
		}
		rest := src[i+1:]
		if strings.HasPrefix(rest, "%") {
			lit.WriteByte('%')
			i++
			continue
		}
		m, n := lookupMacro(rest)
		if n == 0 {
			return nil, fmt.Errorf("xmpplog: unknown macro at %q in format %q; the macros are %%t %%st %%so %%sr %%af %%at %%ai %%ay %%H", "%"+firstWord(rest), src)
		}
		if !hasXMPP {
			return nil, fmt.Errorf("xmpplog: macro %%%s needs the xmpp_logger namespace, which namespace %q does not list", rest[:n], namespace)
		}
		flush()
		f.tokens = append(f.tokens, token{m: m})
		i += n
	}
	flush()
	return f, nil
}

func lookupMacro(rest string) (macro, int) {
	for _, mn := range macroNames {
		if strings.HasPrefix(rest, mn.name) {
			return mn.m, len(mn.name)
		}
	}
	return literal, 0
}

func firstWord(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return s[:i]
		}
	}
	return s
}

// checkNamespace validates the namespace option and reports whether it lists xmpp_logger.
func checkNamespace(ns string) (bool, error) {
	if ns == "" {
		ns = DefaultNamespace
	}
	has := false
	for _, n := range strings.Split(ns, ",") {
		n = strings.TrimSpace(n)
		known := false
		for _, k := range knownNamespaces {
			if strings.EqualFold(n, k) {
				known = true
			}
		}
		if !known {
			return false, fmt.Errorf("xmpplog: unknown macro namespace %q in %q; the namespaces are %s", n, ns, strings.Join(knownNamespaces, ", "))
		}
		if strings.EqualFold(n, "xmpp_logger") {
			has = true
		}
	}
	return has, nil
}

// Append expands the format for one event and appends the line, without its newline, to dst.
// el is nil for a heartbeat; the stanza macros then expand to nothing.
func (f *Format) Append(dst []byte, now time.Time, remote string, el *stanza.Element) []byte {
	for _, t := range f.tokens {
		switch t.m {
		case literal:
			dst = append(dst, t.lit...)
		case macroTime:
			dst = strconv.AppendInt(dst, now.Unix(), 10)
		case macroHost:
			dst = appendField(dst, remote)
		default:
			if el != nil {
				dst = appendStanzaMacro(dst, t.m, el)
			}
		}
	}
	return dst
}

func appendStanzaMacro(dst []byte, m macro, el *stanza.Element) []byte {
	switch m {
	case macroStanzaType:
		return append(dst, StanzaType(el)...)
	case macroObfuscated:
		return appendOneLine(dst, obfuscate(el).AppendXML(nil, ""))
	case macroRaw:
		return appendOneLine(dst, el.AppendXML(nil, ""))
	case macroFrom:
		return appendField(dst, el.Attr("from"))
	case macroTo:
		return appendField(dst, el.Attr("to"))
	case macroID:
		return appendField(dst, el.Attr("id"))
	case macroType:
		return appendField(dst, el.Attr("type"))
	}
	return dst
}

// StanzaType is the %st value: iq, message or presence for stanzas, error for a stream
// error, and stream for every other stream-level element (features, SASL, dialback, …).
func StanzaType(el *stanza.Element) string {
	switch {
	case el.Space == stanza.NSStream && el.Local == "error":
		return "error"
	case (el.Space == stanza.NSClient || el.Space == stanza.NSServer) &&
		(el.Local == "iq" || el.Local == "message" || el.Local == "presence"):
		return el.Local
	}
	return "stream"
}

// obfuscate returns a copy of el with every run of character data replaced by Obfuscated, so
// that bodies, subjects and any other text are hidden while the structure, the addresses and
// the ids stay readable.
func obfuscate(el *stanza.Element) *stanza.Element {
	out := &stanza.Element{Space: el.Space, Local: el.Local, Attrs: el.Attrs}
	if len(el.Children) > 0 {
		out.Children = make([]stanza.Node, 0, len(el.Children))
	}
	for _, n := range el.Children {
		if n.Elem != nil {
			out.Children = append(out.Children, stanza.Node{Elem: obfuscate(n.Elem)})
			continue
		}
		if strings.TrimSpace(n.Text) == "" {
			continue // whitespace between elements carries nothing
		}
		if k := len(out.Children); k > 0 && out.Children[k-1].Elem == nil {
			continue // one marker per run of text
		}
		out.Children = append(out.Children, stanza.Node{Text: Obfuscated})
	}
	return out
}

// appendOneLine appends serialized XML with line breaks written as character references, so
// that one event stays one line and the XML stays equivalent.
func appendOneLine(dst, xml []byte) []byte {
	for _, c := range xml {
		switch c {
		case '\n':
			dst = append(dst, "&#10;"...)
		case '\r':
			dst = append(dst, "&#13;"...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// appendField appends an attribute value; control characters, which would break the line,
// become '?'. A missing attribute expands to nothing.
func appendField(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			c = '?'
		}
		dst = append(dst, c)
	}
	return dst
}
