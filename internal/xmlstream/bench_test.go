package xmlstream

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"testing"

	"impetus/internal/stanza"
)

const benchMessage = `<message from='romeo@montague.example/orchard' to='juliet@capulet.example/balcony' ` +
	`type='chat' id='f6b2c0a4-3e1d-4c57-9d0b-7a1e5c2f8b93' xml:lang='en'>` +
	`<body>Wherefore art thou, Romeo? Deny thy father and refuse thy name.</body>` +
	`<active xmlns='http://jabber.org/protocol/chatstates'/>` +
	`<origin-id xmlns='urn:xmpp:sid:0' id='a1b2c3d4-e5f6-4789-8abc-def012345678'/></message>`

const benchPresence = `<presence from='romeo@montague.example/orchard' xml:lang='en'><show>dnd</show>` +
	`<status>Wooing Juliet</status><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' ` +
	`node='http://psi-im.org' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>`

// benchLarge is a roster push of a few hundred items followed by an avatar-sized base64 blob,
// about 64 KiB: many small elements and attributes as well as long text.
var benchLarge = func() string {
	var b strings.Builder
	b.WriteString(`<iq type='result' id='large1' to='juliet@capulet.example/balcony'><query xmlns='jabber:iq:roster' ver='ver42'>`)
	for i := 0; b.Len() < 40000; i++ {
		fmt.Fprintf(&b, `<item jid='contact%d@example.org' name='Contact &amp; friend %d' subscription='both'><group>Friends</group></item>`, i, i)
	}
	b.WriteString(`</query><data xmlns='urn:xmpp:bob'>`)
	blob := make([]byte, 18000)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	enc := base64.StdEncoding.EncodeToString(blob)
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteByte('\n')
		enc = enc[76:]
	}
	b.WriteString(enc)
	b.WriteString(`</data></iq>`)
	return b.String()
}()

// repeatReader serves the same stanza forever, as many copies as each Read asks for.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

func benchDecode(b *testing.B, doc string) {
	d := NewDecoder(io.MultiReader(strings.NewReader(clientHeader), &repeatReader{data: []byte(doc)}), Limits{})
	if _, err := d.ReadHeader(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.ReadElement(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeMessage(b *testing.B)       { benchDecode(b, benchMessage) }
func BenchmarkDecodePresence(b *testing.B)      { benchDecode(b, benchPresence) }
func BenchmarkDecodeLargeStanza(b *testing.B)   { benchDecode(b, benchLarge) }
func BenchmarkStdlibDecodeMessage(b *testing.B) { benchStdlib(b, benchMessage) }
func BenchmarkStdlibDecodePresence(b *testing.B) {
	benchStdlib(b, benchPresence)
}
func BenchmarkStdlibDecodeLargeStanza(b *testing.B) { benchStdlib(b, benchLarge) }

// benchStdlib does the same work with encoding/xml: a token loop that builds the element tree.
func benchStdlib(b *testing.B, doc string) {
	d := xml.NewDecoder(io.MultiReader(strings.NewReader(clientHeader), &repeatReader{data: []byte(doc)}))
	if _, err := d.Token(); err != nil { // the XML declaration
		b.Fatal(err)
	}
	if _, err := d.Token(); err != nil { // the stream header
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := stdElement(d); err != nil {
			b.Fatal(err)
		}
	}
}

// stdElement reads one top-level element from an encoding/xml decoder into a stanza.Element.
func stdElement(d *xml.Decoder) (*stanza.Element, error) {
	var stack []*stanza.Element
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := &stanza.Element{Space: tok.Name.Space, Local: tok.Name.Local}
			for _, a := range tok.Attr {
				if a.Name.Space == "xmlns" || a.Name.Local == "xmlns" {
					continue
				}
				name := a.Name.Local
				if a.Name.Space != "" {
					name = "xml:" + name
				}
				e.Attrs = append(e.Attrs, stanza.Attr{Name: name, Value: a.Value})
			}
			if len(stack) > 0 {
				stack[len(stack)-1].AddChild(e)
			}
			stack = append(stack, e)
		case xml.EndElement:
			e := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return e, nil
			}
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].AddText(string(tok))
			}
		}
	}
}
