package xmlstream

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"impetus/internal/stanza"
)

// fuzzHeader declares everything a serialized element may rely on: the default namespace and
// the stream and db prefixes.
const fuzzHeader = `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' ` +
	`xmlns:db='jabber:server:dialback' version='1.0'>`

const maxFuzzElements = 64

var fuzzSeeds = []string{
	`<message to='a@b' type='chat'><body>hi</body></message>`,
	`<message><body>a &lt; b &amp; c &gt; d &quot;&apos; &#x263A;&#65;</body></message>`,
	"<iq id='a\tb\r\nc&#9;' type='get'><query xmlns='jabber:iq:roster'/></iq>",
	"<message><body>x<![CDATA[<y> & ]]]]>z\r\r\n</body></message>",
	`<r:a xmlns:r='urn:r' r:b='1' xmlns:s='urn:r' c='2'><r:c/><d/></r:a>`,
	`<message xmlns:x='urn:a' xmlns:y='urn:a' x:a='1' y:a='2'/>`,
	`<db:result from='a' to='b'>k</db:result><stream:features/>`,
	`<message xmlns:stream='urn:o'><stream:x/><x xmlns='http://etherx.jabber.org/streams'/></message>`,
	`<message><x xmlns=''><y/></x></message>`,
	`<message xml:lang='en'><xml:x/></message>`,
	" \n<presence/> <presence type='unavailable'/>\t</stream:stream>",
	`<!DOCTYPE x [<!ENTITY a "&#38;#38;">]><x>&a;</x>`,
	`<message><!-- c --><?pi?></message>`,
	`<message><body>&lol;</body></message>`,
	"<message><body>\xff\xef\xbf\xbe\x01</body></message>",
	`<a><b><c><d><e/></d></c></b></a>`,
	`<a b='>' c="'"/><a>]]></a>`,
	`<größe attr·1='ü'>😀</größe>`,
	`<a xmlns:p='u'><p:b></b></a>`,
	`<message xmlns='jabber:client' xmlns:xml='http://www.w3.org/XML/1998/namespace'/>`,
	`<a>&#x10FFFF;&#xFFFD;&#x0000041;</a>`,
	`<a><![CDATA[]]><![CDATA[x]]></a>`,
	`</stream:stream>`,
	`<a/`,
	`<a x='1' x='1'/>`,
	"\xef\xbb\xbf<?xml version='1.0' encoding='utf-8'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
	"<?xml version='1.0' encoding='UTF-16'?>",
	"\x00<\x00?",
}

func FuzzDecoder(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := append([]byte(fuzzHeader), data...)
		lim := Limits{MaxStanzaSize: 1 << 16, MaxDepth: 16, MaxAttrs: 16, MaxAttrLen: 1024}
		whole, wholeErr := fuzzDecode(bytes.NewReader(in), lim)
		split, splitErr := fuzzDecode(&oneByteReader{bytes.NewReader(in)}, lim)
		if len(whole) != len(split) || errorKind(wholeErr) != errorKind(splitErr) {
			t.Fatalf("split reads differ: %d elements (%v) vs %d elements (%v)", len(whole), wholeErr, len(split), splitErr)
		}
		// The same bytes as a stream of their own exercise the prolog and header code.
		_, rawErr := fuzzDecode(bytes.NewReader(data), lim)
		_, rawSplitErr := fuzzDecode(&oneByteReader{bytes.NewReader(data)}, lim)
		if errorKind(rawErr) != errorKind(rawSplitErr) {
			t.Fatalf("split reads of a whole stream differ: %v vs %v", rawErr, rawSplitErr)
		}
		for i, el := range whole {
			ser := el.AppendXML(nil, "jabber:client")
			if s := string(split[i].AppendXML(nil, "jabber:client")); s != string(ser) {
				t.Fatalf("split reads differ:\n%s\n%s", ser, s)
			}
			checkReparse(t, el, ser)
		}
	})
}

// fuzzDecode decodes a stream to its end, recovering from nothing: a panic fails the test.
func fuzzDecode(r io.Reader, lim Limits) ([]*stanza.Element, error) {
	d := NewDecoder(r, lim)
	if _, err := d.ReadHeader(); err != nil {
		return nil, err
	}
	var out []*stanza.Element
	for range maxFuzzElements {
		el, err := d.ReadElement()
		if err != nil {
			return out, err
		}
		out = append(out, el)
	}
	return out, nil
}

func errorKind(err error) string {
	var xe *Error
	if errors.As(err, &xe) {
		return xe.Condition
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// checkReparse verifies that a serialized element is well-formed for encoding/xml with the same
// tree, and that this decoder reads it back unchanged.
func checkReparse(t *testing.T, el *stanza.Element, ser []byte) {
	t.Helper()
	ref, err := stdParse(ser)
	if err != nil {
		if strings.Contains(err.Error(), "invalid XML name") && !isASCII(ser) {
			// encoding/xml checks names against XML 1.0 fourth edition; this decoder follows the
			// fifth, which allows more non-ASCII name characters.
		} else {
			t.Fatalf("encoding/xml rejects %s: %v", ser, err)
		}
	} else if diff := diffElement(ref, el); diff != "" {
		t.Fatalf("encoding/xml reads %s differently: %s", ser, diff)
	}
	// The limits are raised above what the fuzzer can build: this checks fidelity, and an
	// escaped attribute value may exceed the default MaxAttrLen (each newline becomes &#xA;).
	d := NewDecoder(io.MultiReader(strings.NewReader(fuzzHeader), bytes.NewReader(ser)), Limits{MaxStanzaSize: 1 << 20, MaxAttrLen: 1 << 20})
	if _, err := d.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	back, err := d.ReadElement()
	if err != nil {
		t.Fatalf("cannot decode own output %s: %v", ser, err)
	}
	if diff := diffElement(back, el); diff != "" {
		t.Fatalf("round trip of %s differs: %s", ser, diff)
	}
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// stdParse reads one serialized element with encoding/xml inside the fuzz header's context.
func stdParse(ser []byte) (*stanza.Element, error) {
	doc := fuzzHeader + string(ser) + `</stream:stream>`
	d := xml.NewDecoder(strings.NewReader(doc))
	var stack []*stanza.Element
	var root *stanza.Element
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			if root == nil {
				return nil, errors.New("no element")
			}
			return root, nil
		}
		if err != nil {
			return nil, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 1 {
				continue
			}
			e := &stanza.Element{Space: tok.Name.Space, Local: tok.Name.Local}
			for _, a := range tok.Attr {
				switch {
				case a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns"):
				case a.Name.Space == "":
					e.Attrs = append(e.Attrs, stanza.Attr{Name: a.Name.Local, Value: a.Value})
				case a.Name.Space == nsXML:
					e.Attrs = append(e.Attrs, stanza.Attr{Name: "xml:" + a.Name.Local, Value: a.Value})
				default:
					e.Attrs = append(e.Attrs, stanza.Attr{Name: "{" + a.Name.Space + "}" + a.Name.Local, Value: a.Value})
				}
			}
			if len(stack) > 0 {
				stack[len(stack)-1].AddChild(e)
			} else if root == nil {
				root = e
			} else {
				return nil, errors.New("more than one element")
			}
			stack = append(stack, e)
		case xml.EndElement:
			depth--
			if depth > 0 {
				stack = stack[:len(stack)-1]
			}
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(tok)) > 0 {
					return nil, errors.New("text outside the element")
				}
				continue
			}
			p := stack[len(stack)-1]
			if n := len(p.Children); n > 0 && p.Children[n-1].Elem == nil {
				p.Children[n-1].Text += string(tok)
			} else {
				p.AddText(string(tok))
			}
		default:
			return nil, errors.New("unexpected token")
		}
	}
}

// diffElement describes the first difference between two trees, treating adjacent text nodes
// as one and ignoring empty ones.
func diffElement(a, b *stanza.Element) string {
	if a.Space != b.Space || a.Local != b.Local {
		return "name {" + a.Space + "}" + a.Local + " vs {" + b.Space + "}" + b.Local
	}
	if len(a.Attrs) != len(b.Attrs) {
		return "attribute count of " + a.Local
	}
	for i := range a.Attrs {
		if a.Attrs[i] != b.Attrs[i] {
			return "attribute " + a.Attrs[i].Name + "=" + a.Attrs[i].Value + " vs " + b.Attrs[i].Name + "=" + b.Attrs[i].Value
		}
	}
	ca, cb := normalizeChildren(a.Children), normalizeChildren(b.Children)
	if len(ca) != len(cb) {
		return "child count of " + a.Local
	}
	for i := range ca {
		switch {
		case (ca[i].Elem == nil) != (cb[i].Elem == nil):
			return "child kind in " + a.Local
		case ca[i].Elem == nil:
			if ca[i].Text != cb[i].Text {
				return "text " + ca[i].Text + " vs " + cb[i].Text
			}
		default:
			if d := diffElement(ca[i].Elem, cb[i].Elem); d != "" {
				return d
			}
		}
	}
	return ""
}

func normalizeChildren(ns []stanza.Node) []stanza.Node {
	var out []stanza.Node
	for _, n := range ns {
		if n.Elem == nil {
			if n.Text == "" {
				continue
			}
			if k := len(out); k > 0 && out[k-1].Elem == nil {
				out[k-1].Text += n.Text
				continue
			}
		}
		out = append(out, n)
	}
	return out
}

// fuzzName turns arbitrary input into a valid NCName.
func fuzzName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf {
			if nameClass[r] == 2 || (nameClass[r] == 1 && b.Len() > 0) {
				b.WriteRune(r)
			}
		} else if isNameRune(r, b.Len() == 0) {
			b.WriteRune(r)
		}
		if b.Len() > 20 {
			break
		}
	}
	if b.Len() == 0 {
		return "x"
	}
	return b.String()
}

// sanitize mirrors AppendXML's replacement of characters XML cannot carry.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || !isXMLChar(r) {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func FuzzElementRoundTrip(f *testing.F) {
	f.Add("jabber:client", "message", "to", "a@b", "hello & <bye>", "urn:x", "x", uint8(0))
	f.Add("", "x", "xml:lang", "en", "\r\n\t]]>", "", "y", uint8(1))
	f.Add(nsStreams, "features", "id", "\"'\t\n\r", "", "jabber:server:dialback", "result", uint8(2))
	f.Add("urn:ü", "größe", "{urn:a}b", "\x00\xff\uFFFE", "\x01\xc3", "urn:a", "ns0", uint8(3))
	f.Add("a&b<c\"d", "y", "{}z", "v", "t", "jabber:client", "body", uint8(4))
	f.Fuzz(func(t *testing.T, space, local, attrName, attrValue, text, childSpace, childLocal string, shape uint8) {
		if !utf8.ValidString(space) || !utf8.ValidString(childSpace) || !utf8.ValidString(attrName) {
			// Namespace names are not sanitized by the serializer: they come from code, not peers.
			return
		}
		for _, ns := range []string{space, childSpace} {
			if ns == nsXML || ns == nsXMLNS || strings.ContainsFunc(ns, func(r rune) bool { return !isXMLChar(r) }) {
				return
			}
		}
		switch {
		case attrName == "xml:lang":
		case strings.HasPrefix(attrName, "{"):
			end := strings.LastIndexByte(attrName, '}')
			if end < 0 {
				return
			}
			uri := attrName[1:end]
			if uri == nsXML || uri == nsXMLNS || strings.ContainsFunc(uri, func(r rune) bool { return !isXMLChar(r) }) {
				return
			}
			if uri == "" {
				attrName = fuzzName(attrName[end+1:])
			} else {
				attrName = "{" + uri + "}" + fuzzName(attrName[end+1:])
			}
		default:
			if attrName = fuzzName(attrName); attrName == "xmlns" {
				return // a declaration, not an attribute
			}
		}
		el := stanza.NewElement(space, fuzzName(local), stanza.Attr{Name: attrName, Value: attrValue})
		child := stanza.NewElement(childSpace, fuzzName(childLocal), stanza.Attr{Name: "id", Value: text})
		switch shape % 4 {
		case 0:
			el.AddText(text).AddChild(child)
		case 1:
			el.AddChild(child.AddText(text)).AddText(text)
		case 2:
			el.AddChild(child.AddChild(stanza.NewElement(space, "z").AddText(text)))
		case 3:
			el.AddText(text).AddText(attrValue)
		}
		checkReparse(t, sanitizeElement(el), el.AppendXML(nil, "jabber:client"))
	})
}

func sanitizeElement(e *stanza.Element) *stanza.Element {
	c := &stanza.Element{Space: e.Space, Local: e.Local}
	for _, a := range e.Attrs {
		c.Attrs = append(c.Attrs, stanza.Attr{Name: a.Name, Value: sanitize(a.Value)})
	}
	for _, n := range e.Children {
		if n.Elem != nil {
			c.AddChild(sanitizeElement(n.Elem))
		} else {
			c.AddText(sanitize(n.Text))
		}
	}
	return c
}
