package stanza

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
)

// xmlNS is the namespace bound to the reserved "xml" prefix.
const xmlNS = "http://www.w3.org/XML/1998/namespace"

// maxDepth bounds the nesting of a stored stanza; the stream reader enforced a limit when the
// stanza arrived, so only a damaged row can exceed it.
const maxDepth = 64

// Parse parses one serialized element, as written by Element.AppendXML (stored stanzas: offline messages,
// archives, PEP items), back into
// an Element with resolved namespaces. Attributes keep their qualified names ("xml:lang"); other
// namespaced attributes come back in Clark notation, as the stream decoder produces them.
func Parse(data []byte) (*Element, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	var stack []*Element
	var root *Element
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if root != nil && len(stack) == 0 {
				return nil, errors.New("stanza: more than one root element")
			}
			if len(stack) >= maxDepth {
				return nil, errors.New("stanza: element nested too deeply")
			}
			el := &Element{Space: t.Name.Space, Local: t.Name.Local}
			for _, a := range t.Attr {
				switch {
				case a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns"):
					continue
				case a.Name.Space == "":
					el.Attrs = append(el.Attrs, Attr{Name: a.Name.Local, Value: a.Value})
				case a.Name.Space == xmlNS:
					el.Attrs = append(el.Attrs, Attr{Name: "xml:" + a.Name.Local, Value: a.Value})
				default:
					el.Attrs = append(el.Attrs, Attr{Name: "{" + a.Name.Space + "}" + a.Name.Local, Value: a.Value})
				}
			}
			if len(stack) > 0 {
				stack[len(stack)-1].AddChild(el)
			} else {
				root = el
			}
			stack = append(stack, el)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].AddText(string(t))
			}
		}
	}
	if root == nil || len(stack) != 0 {
		return nil, errors.New("stanza: no complete element")
	}
	return root, nil
}
