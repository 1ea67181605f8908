package xmlstream

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"impetus/internal/stanza"
)

const (
	nsStreams = "http://etherx.jabber.org/streams"

	clientHeader = `<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' ` +
		`xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en'>`
	serverHeader = `<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' ` +
		`xmlns:db='jabber:server:dialback' to='b.example' from='a.example' version='1.0'>`
	componentHeader = `<stream:stream xmlns='jabber:component:accept' ` +
		`xmlns:stream='http://etherx.jabber.org/streams' to='comp.example'>`
)

// oneByteReader returns at most one byte per Read, like the worst possible network.
type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

// readers gives each input to the tests through a whole-input reader and a one-byte reader,
// which must produce the same result.
var readers = []struct {
	name string
	wrap func(string) io.Reader
}{
	{"whole", func(s string) io.Reader { return strings.NewReader(s) }},
	{"bytewise", func(s string) io.Reader { return &oneByteReader{strings.NewReader(s)} }},
}

// decodeAll reads the header and then elements until an error, returning the elements
// serialized in the header's default namespace.
func decodeAll(r io.Reader, lim Limits) (*Header, []string, error) {
	d := NewDecoder(r, lim)
	h, err := d.ReadHeader()
	if err != nil {
		return nil, nil, err
	}
	var out []string
	for {
		el, err := d.ReadElement()
		if err != nil {
			return h, out, err
		}
		out = append(out, string(el.AppendXML(nil, h.DefaultNS)))
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		header string
		in     string
		want   string
	}{
		{
			name: "chat message",
			in:   `<message to='juliet@example.com' type='chat' id='m1'><body>hi</body></message>`,
			want: `<message to="juliet@example.com" type="chat" id="m1"><body>hi</body></message>`,
		},
		{
			name: "predefined entities and character references",
			in:   `<message><body>a &lt; b &amp;&amp; c &gt; d &quot;q&quot; &apos;s&apos; &#x263A;&#65;&#x1F600;</body></message>`,
			want: `<message><body>a &lt; b &amp;&amp; c &gt; d "q" 's' ☺A😀</body></message>`,
		},
		{
			name: "attribute escaping",
			in:   `<iq id="a&amp;b&lt;c&quot;d'e&gt;" type='get'/>`,
			want: `<iq id="a&amp;b&lt;c&quot;d'e>" type="get"/>`,
		},
		{
			name: "attribute value normalization",
			in:   "<iq id='a\tb\nc\r\nd\re&#9;f&#10;g&#13;'/>",
			want: `<iq id="a b c d e&#x9;f&#xA;g&#xD;"/>`,
		},
		{
			name: "line ends in text",
			in:   "<message><body>a\r\nb\rc&#13;d\n</body></message>",
			want: "<message><body>a\nb\nc&#xD;d\n</body></message>",
		},
		{
			name: "CDATA is text",
			in:   "<message><body>x<![CDATA[<y> & ]]>z<![CDATA[]]><![CDATA[\r\n]]></body></message>",
			want: "<message><body>x&lt;y&gt; &amp; z\n</body></message>",
		},
		{
			name: "greater-than in text and attributes",
			in:   `<message a='x>y'><body>a>b]>]</body></message>`,
			want: `<message a="x>y"><body>a&gt;b]&gt;]</body></message>`,
		},
		{
			name: "payload namespace",
			in:   `<iq type='get' id='1'><query xmlns='jabber:iq:roster'><item jid='a@b'/></query></iq>`,
			want: `<iq type="get" id="1"><query xmlns="jabber:iq:roster"><item jid="a@b"/></query></iq>`,
		},
		{
			name: "prefixed payload does not change the default namespace",
			in:   `<iq type='get' id='1'><r:query xmlns:r='jabber:iq:roster'><r:item/><item/></r:query></iq>`,
			want: `<iq type="get" id="1"><query xmlns="jabber:iq:roster"><item/><item xmlns="jabber:client"/></query></iq>`,
		},
		{
			name: "prefix declared on an ancestor",
			in:   `<message xmlns:e='urn:e'><x><e:y><e:z/></e:y></x><e:w/></message>`,
			want: `<message><x><y xmlns="urn:e"><z/></y></x><w xmlns="urn:e"/></message>`,
		},
		{
			name: "default namespace undeclared",
			in:   `<message><x xmlns=''><y/></x></message>`,
			want: `<message><x xmlns=""><y/></x></message>`,
		},
		{
			name: "stream features",
			in: `<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>` +
				`<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>`,
			want: `<stream:features><starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"><required/></starttls>` +
				`<mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>PLAIN</mechanism></mechanisms></stream:features>`,
		},
		{
			name: "stream error",
			in:   `<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`,
			want: `<stream:error><conflict xmlns="urn:ietf:params:xml:ns:xmpp-streams"/></stream:error>`,
		},
		{
			name: "stream prefix redeclared in a stanza",
			in:   `<message xmlns:stream='urn:other'><stream:x/></message>`,
			want: `<message><x xmlns="urn:other"/></message>`,
		},
		{
			name: "xml prefix predefined",
			in:   `<message xml:lang='de'><body xml:lang='en'>x</body><xml:y/></message>`,
			want: `<message xml:lang="de"><body xml:lang="en">x</body><xml:y/></message>`,
		},
		{
			name: "xml prefix may be declared with its own namespace",
			in:   `<message xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='de'/>`,
			want: `<message xml:lang="de"/>`,
		},
		{
			name: "namespaced attribute",
			in:   `<message xmlns:a='urn:a' a:b='1' c='2'/>`,
			want: `<message xmlns:ns0="urn:a" ns0:b="1" c="2"/>`,
		},
		{
			name: "whitespace and mixed content preserved",
			in:   "<message>\n  <body>x</body>\n  t<b/>u\n</message>",
			want: "<message>\n  <body>x</body>\n  t<b/>u\n</message>",
		},
		{
			name: "unicode text and names",
			in:   `<message><body>Grüße 😀 ☃</body><größe xmlns='urn:ü' attr·1='ü'/></message>`,
			want: `<message><body>Grüße 😀 ☃</body><größe xmlns="urn:ü" attr·1="ü"/></message>`,
		},
		{
			name: "whitespace inside tags",
			in:   "<presence \n type = 'away'\t id=\"p1\" ><show >away</show\n></presence  >",
			want: `<presence type="away" id="p1"><show>away</show></presence>`,
		},
		{
			name:   "dialback with the header prefix",
			header: serverHeader,
			in:     `<db:result from='a.example' to='b.example'>key</db:result><db:verify from='a.example' to='b.example' id='i1' type='valid'/>`,
			want:   `<db:result from="a.example" to="b.example">key</db:result>` + "\n" + `<db:verify from="a.example" to="b.example" id="i1" type="valid"/>`,
		},
		{
			name:   "server stanza",
			header: serverHeader,
			in:     `<message from='a@a.example' to='b@b.example'><body>s2s</body></message>`,
			want:   `<message from="a@a.example" to="b@b.example"><body>s2s</body></message>`,
		},
		{
			name:   "component handshake",
			header: componentHeader,
			in:     `<handshake>aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e</handshake>`,
			want:   `<handshake>aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e</handshake>`,
		},
		{
			name: "whitespace keepalives between stanzas",
			in:   " \n<presence/>\n\n \t\r\n<presence type='unavailable'/> ",
			want: "<presence/>\n<presence type=\"unavailable\"/>",
		},
		{
			name: "element in another namespace at the top level",
			in:   `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAByMG0zMG15cjBtMzA=</auth>`,
			want: `<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">AGp1bGlldAByMG0zMG15cjBtMzA=</auth>`,
		},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				header := tt.header
				if header == "" {
					header = clientHeader
				}
				_, got, err := decodeAll(rd.wrap(header+tt.in), Limits{})
				if !errors.Is(err, io.EOF) {
					t.Fatalf("error = %v, want EOF", err)
				}
				if s := strings.Join(got, "\n"); s != tt.want {
					t.Errorf("\n got %s\nwant %s", s, tt.want)
				}
			})
		}
	}
}

func TestNamespaces(t *testing.T) {
	tests := []struct {
		name   string
		header string
		in     string
		check  func(*stanza.Element) string // returns what differs
	}{
		{
			name: "stanza inherits the header default",
			in:   `<message><body/></message>`,
			check: func(e *stanza.Element) string {
				return expect(e.Space, "jabber:client") + expect(e.Child("", "body").Space, "jabber:client")
			},
		},
		{
			name:   "db:result under a header declaring db",
			header: serverHeader,
			in:     `<db:result to='b.example' from='a.example'>k</db:result>`,
			check: func(e *stanza.Element) string {
				return expect(e.Space, "jabber:server:dialback") + expect(e.Local, "result") + expect(e.Text(), "k")
			},
		},
		{
			name: "stream prefix at the top level",
			in:   `<stream:features/>`,
			check: func(e *stanza.Element) string {
				return expect(e.Space, nsStreams) + expect(e.Local, "features")
			},
		},
		{
			name: "declarations are not attributes",
			in:   `<message xmlns:x='urn:x' xmlns='jabber:client' id='1'/>`,
			check: func(e *stanza.Element) string {
				if len(e.Attrs) != 1 || e.Attrs[0] != (stanza.Attr{Name: "id", Value: "1"}) {
					return "attrs " + e.String()
				}
				return ""
			},
		},
		{
			name: "prefix scope ends with its element",
			in:   `<message><a xmlns:p='urn:1'><p:b/></a><c xmlns:p='urn:2'><p:d/></c></message>`,
			check: func(e *stanza.Element) string {
				b := e.Child("", "a").Child("", "b")
				d := e.Child("", "c").Child("", "d")
				return expect(b.Space, "urn:1") + expect(d.Space, "urn:2")
			},
		},
		{
			name: "inner declaration shadows the header",
			in:   `<x:message xmlns:x='jabber:client'><stream:y xmlns:stream='urn:s'/></x:message>`,
			check: func(e *stanza.Element) string {
				return expect(e.Space, "jabber:client") + expect(e.FirstElement().Space, "urn:s")
			},
		},
		{
			name: "xml attributes keep their qualified name",
			in:   `<message xml:lang='fr'/>`,
			check: func(e *stanza.Element) string {
				return expect(e.Attr("xml:lang"), "fr")
			},
		},
		{
			name: "other namespaced attributes use Clark notation",
			in:   `<message xmlns:a='urn:a' a:b='1'/>`,
			check: func(e *stanza.Element) string {
				return expect(e.Attr("{urn:a}b"), "1")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := tt.header
			if header == "" {
				header = clientHeader
			}
			d := NewDecoder(strings.NewReader(header+tt.in), Limits{})
			if _, err := d.ReadHeader(); err != nil {
				t.Fatal(err)
			}
			el, err := d.ReadElement()
			if err != nil {
				t.Fatal(err)
			}
			if diff := tt.check(el); diff != "" {
				t.Error(diff)
			}
		})
	}
}

func expect(got, want string) string {
	if got != want {
		return "got " + got + ", want " + want + "; "
	}
	return ""
}

func TestHeader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Header
	}{
		{
			name: "client header with declaration",
			in:   clientHeader,
			want: Header{Space: nsStreams, Local: "stream", Prefix: "stream", DefaultNS: "jabber:client",
				To: "example.com", Version: "1.0", Lang: "en", Namespaces: map[string]string{"stream": nsStreams}},
		},
		{
			name: "server header declares db",
			in:   serverHeader,
			want: Header{Space: nsStreams, Local: "stream", Prefix: "stream", DefaultNS: "jabber:server",
				To: "b.example", From: "a.example", Version: "1.0",
				Namespaces: map[string]string{"stream": nsStreams, "db": "jabber:server:dialback"}},
		},
		{
			name: "byte order mark, full declaration and whitespace",
			in: "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\" standalone='yes' ?>\n\n" +
				`<stream:stream xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams" id="abc" from="x@y">`,
			want: Header{Space: nsStreams, Local: "stream", Prefix: "stream", DefaultNS: "jabber:client",
				ID: "abc", From: "x@y", Namespaces: map[string]string{"stream": nsStreams}},
		},
		{
			name: "wrong stream namespace is reported, not refused",
			in:   `<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:client'>`,
			want: Header{Space: "urn:wrong", Local: "stream", Prefix: "stream", DefaultNS: "jabber:client",
				Namespaces: map[string]string{"stream": "urn:wrong"}},
		},
		{
			name: "another root element",
			in:   `<message xmlns='jabber:client' to='a@b'>`,
			want: Header{Space: "jabber:client", Local: "message", DefaultNS: "jabber:client", To: "a@b"},
		},
		{
			name: "unprefixed stream root",
			in:   `<stream xmlns='http://etherx.jabber.org/streams'>`,
			want: Header{Space: nsStreams, Local: "stream", DefaultNS: nsStreams},
		},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				d := NewDecoder(rd.wrap(tt.in), Limits{})
				h, err := d.ReadHeader()
				if err != nil {
					t.Fatal(err)
				}
				if !equalHeader(h, &tt.want) {
					t.Errorf("\n got %+v\nwant %+v", *h, tt.want)
				}
			})
		}
	}
}

func equalHeader(a, b *Header) bool {
	if a.Space != b.Space || a.Local != b.Local || a.Prefix != b.Prefix || a.DefaultNS != b.DefaultNS ||
		a.To != b.To || a.From != b.From || a.ID != b.ID || a.Version != b.Version || a.Lang != b.Lang ||
		len(a.Namespaces) != len(b.Namespaces) {
		return false
	}
	for k, v := range a.Namespaces {
		if b.Namespaces[k] != v {
			return false
		}
	}
	return true
}

func TestRejections(t *testing.T) {
	tests := []struct {
		name      string
		header    string // clientHeader when empty; "-" for none
		in        string
		lim       Limits
		condition string
		tooBig    bool
	}{
		// Restricted XML (RFC 6120 §11.1).
		{name: "doctype before the header", header: "-", in: `<!DOCTYPE stream>` + clientHeader, condition: "restricted-xml"},
		{name: "comment before the header", header: "-", in: `<!-- hi -->` + clientHeader, condition: "restricted-xml"},
		{name: "processing instruction before the header", header: "-", in: `<?php echo 1; ?>` + clientHeader, condition: "restricted-xml"},
		{name: "stylesheet instruction", header: "-", in: `<?xml-stylesheet href='a'?>` + clientHeader, condition: "restricted-xml"},
		{name: "second XML declaration", header: "-", in: `<?xml version='1.0'?><?xml version='1.0'?>` + clientHeader, condition: "restricted-xml"},
		{name: "doctype after the header", in: `<!DOCTYPE x [<!ENTITY a 'b'>]>`, condition: "restricted-xml"},
		{name: "comment at the stream level", in: `<!-- keepalive -->`, condition: "restricted-xml"},
		{name: "comment in a stanza", in: `<message><!-- c --></message>`, condition: "restricted-xml"},
		{name: "entity declaration in a stanza", in: `<message><!ENTITY x 'y'></message>`, condition: "restricted-xml"},
		{name: "processing instruction at the stream level", in: `<?pi x?>`, condition: "restricted-xml"},
		{name: "processing instruction in a stanza", in: `<message><?pi?></message>`, condition: "restricted-xml"},
		{name: "XML declaration after the header", in: `<?xml version='1.0'?>`, condition: "restricted-xml"},
		{name: "undeclared entity in text", in: `<message><body>&lol9;</body></message>`, condition: "restricted-xml"},
		{name: "undeclared entity in an attribute", in: `<message to='&foo;'/>`, condition: "restricted-xml"},
		{name: "undeclared entity with a long name", in: `<message><body>&averyveryverylongentityname;</body></message>`, condition: "restricted-xml"},

		// Encoding (RFC 6120 §11.6).
		{name: "declared encoding other than UTF-8", header: "-", in: `<?xml version='1.0' encoding='ISO-8859-1'?>` + clientHeader, condition: "unsupported-encoding"},
		{name: "UTF-16 byte order mark", header: "-", in: "\xfe\xff\x00<", condition: "unsupported-encoding"},
		{name: "UTF-16 without byte order mark", header: "-", in: "\x00<\x00s", condition: "unsupported-encoding"},
		{name: "invalid UTF-8 in text", in: "<message><body>\xff</body></message>", condition: "unsupported-encoding"},
		{name: "truncated UTF-8 in an attribute", in: "<message to='\xc3'/>", condition: "unsupported-encoding"},
		{name: "encoded surrogate", in: "<message><body>\xed\xa0\x80</body></message>", condition: "unsupported-encoding"},
		{name: "invalid UTF-8 in the header", header: "-", in: "<stream:stream to='\xff'>", condition: "unsupported-encoding"},
		{name: "invalid UTF-8 at the stream level", in: "\xff\xfe", condition: "unsupported-encoding"},

		// Characters XML does not allow.
		{name: "control character in text", in: "<message><body>\x01</body></message>", condition: "not-well-formed"},
		{name: "NUL in an attribute", in: "<message id='\x00'/>", condition: "not-well-formed"},
		{name: "control character in CDATA", in: "<message><![CDATA[\x1b]]></message>", condition: "not-well-formed"},
		{name: "U+FFFE in text", in: "<message><body>\xef\xbf\xbe</body></message>", condition: "not-well-formed"},
		{name: "U+FFFF in an attribute", in: "<message id='\xef\xbf\xbf'/>", condition: "not-well-formed"},
		{name: "reference to NUL", in: `<message><body>&#0;</body></message>`, condition: "not-well-formed"},
		{name: "reference to a control character", in: `<message><body>&#x1;</body></message>`, condition: "not-well-formed"},
		{name: "reference to a surrogate", in: `<message><body>&#xD800;</body></message>`, condition: "not-well-formed"},
		{name: "reference out of range", in: `<message><body>&#x110000;</body></message>`, condition: "not-well-formed"},
		{name: "huge reference", in: `<message><body>&#99999999999999999999;</body></message>`, condition: "not-well-formed"},
		{name: "reference to U+FFFE in an attribute", in: `<message id='&#xFFFE;'/>`, condition: "not-well-formed"},

		// Malformed syntax.
		{name: "mismatched end tag", in: `<message></presence>`, condition: "not-well-formed"},
		{name: "mismatched prefix in end tag", in: `<stream:features></features>`, condition: "not-well-formed"},
		{name: "duplicate attribute", in: `<message a='1' a='2'/>`, condition: "not-well-formed"},
		{name: "duplicate declaration", in: `<message xmlns='a' xmlns='b'/>`, condition: "not-well-formed"},
		{name: "duplicate attribute through two prefixes", in: `<message xmlns:x='urn:a' xmlns:y='urn:a' x:a='1' y:a='2'/>`, condition: "not-well-formed"},
		{name: "undeclared element prefix", in: `<message><x:y/></message>`, condition: "not-well-formed"},
		{name: "undeclared attribute prefix", in: `<message x:a='1'/>`, condition: "not-well-formed"},
		{name: "prefix used outside its scope", in: `<message><a xmlns:p='u'/><p:b/></message>`, condition: "not-well-formed"},
		{name: "xml prefix rebound", in: `<message xmlns:xml='urn:x'/>`, condition: "not-well-formed"},
		{name: "xmlns prefix declared", in: `<message xmlns:xmlns='urn:x'/>`, condition: "not-well-formed"},
		{name: "prefix undeclared", in: `<message xmlns:p=''/>`, condition: "not-well-formed"},
		{name: "xml namespace as default", in: `<message xmlns='http://www.w3.org/XML/1998/namespace'/>`, condition: "not-well-formed"},
		{name: "element with the xmlns prefix", in: `<xmlns:foo/>`, condition: "not-well-formed"},
		{name: "two colons in a name", in: `<message><a:b:c xmlns:a='u'/></message>`, condition: "not-well-formed"},
		{name: "name starting with a digit", in: `<1message/>`, condition: "not-well-formed"},
		{name: "empty name", in: `< message/>`, condition: "not-well-formed"},
		{name: "unquoted attribute", in: `<message a=1/>`, condition: "not-well-formed"},
		{name: "attributes without whitespace", in: `<message a='1'b='2'/>`, condition: "not-well-formed"},
		{name: "attribute without value", in: `<message a/>`, condition: "not-well-formed"},
		{name: "less-than in an attribute", in: `<message a='<'/>`, condition: "not-well-formed"},
		{name: "less-than in a start tag", in: `<message <body/>`, condition: "not-well-formed"},
		{name: "CDATA end in text", in: `<message><body>]]></body></message>`, condition: "not-well-formed"},
		{name: "bare ampersand", in: `<message><body>a & b</body></message>`, condition: "not-well-formed"},
		{name: "unterminated entity", in: `<message><body>&amp</body></message>`, condition: "not-well-formed"},
		{name: "empty character reference", in: `<message><body>&#;</body></message>`, condition: "not-well-formed"},
		{name: "text at the stream level", in: `hello`, condition: "not-well-formed"},
		{name: "text after a stanza", in: `<presence/>x`, condition: "not-well-formed"},
		{name: "CDATA at the stream level", in: `<![CDATA[ ]]>`, condition: "not-well-formed"},
		{name: "wrong stream end tag", in: `</stream:foo>`, condition: "not-well-formed"},
		{name: "malformed stream end tag", in: `</stream:stream x>`, condition: "not-well-formed"},
		{name: "slash in the middle of a tag", in: `<message / >`, condition: "not-well-formed"},
		{name: "markup declaration garbage", in: `<message><!x></message>`, condition: "not-well-formed"},
		{name: "end tag before the header", header: "-", in: `</stream:stream>`, condition: "not-well-formed"},
		{name: "text before the header", header: "-", in: `hello`, condition: "not-well-formed"},
		{name: "malformed XML declaration", header: "-", in: `<?xml encoding='UTF-8'?>` + clientHeader, condition: "not-well-formed"},
		{name: "XML 2.0", header: "-", in: `<?xml version='2.0'?>` + clientHeader, condition: "not-well-formed"},
		{name: "header with undeclared prefix", header: "-", in: `<stream:stream xmlns='jabber:client'>`, condition: "bad-namespace-prefix"},
		{name: "header with duplicate attribute", header: "-", in: `<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='a' to='b'>`, condition: "not-well-formed"},

		// Limits.
		{name: "stanza too big", in: `<message><body>` + strings.Repeat("x", 2000) + `</body></message>`, lim: Limits{MaxStanzaSize: 1000}, condition: "policy-violation", tooBig: true},
		{name: "stanza one byte too big", in: `<message>` + strings.Repeat("x", 990) + `</message>`, lim: Limits{MaxStanzaSize: 1008}, condition: "policy-violation", tooBig: true},
		{name: "header too big", header: "-", in: `<stream:stream a='` + strings.Repeat("x", 2000) + `'>`, lim: Limits{MaxStanzaSize: 1000}, condition: "policy-violation"},
		{name: "nesting too deep", in: strings.Repeat("<a>", 5) + strings.Repeat("</a>", 5), lim: Limits{MaxDepth: 4}, condition: "policy-violation"},
		{name: "too many attributes", in: `<message a='1' b='2' c='3' d='4' e='5' f='6'/>`, lim: Limits{MaxAttrs: 5}, condition: "policy-violation"},
		{name: "declarations count as attributes", in: `<message xmlns='jabber:client' xmlns:a='a' xmlns:b='b' xmlns:c='c' xmlns:d='d' e='5'/>`, lim: Limits{MaxAttrs: 5}, condition: "policy-violation"},
		{name: "attribute too long", in: `<message id='` + strings.Repeat("x", 101) + `'/>`, lim: Limits{MaxAttrLen: 100}, condition: "policy-violation"},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				header := tt.header
				switch header {
				case "":
					header = clientHeader
				case "-":
					header = ""
				}
				_, _, err := decodeAll(rd.wrap(header+tt.in+"</stream:stream>"), tt.lim)
				var xe *Error
				if !errors.As(err, &xe) {
					t.Fatalf("error = %v, want %s", err, tt.condition)
				}
				if xe.Condition != tt.condition || xe.TooBig != tt.tooBig {
					t.Fatalf("error = %v (TooBig %v), want %s (TooBig %v)", err, xe.TooBig, tt.condition, tt.tooBig)
				}
				if !strings.HasPrefix(xe.Error(), "xmlstream: "+tt.condition) {
					t.Errorf("message %q", xe.Error())
				}
			})
		}
	}
}

func TestLimitsAccepted(t *testing.T) {
	tests := []struct {
		name string
		in   string
		lim  Limits
	}{
		{name: "stanza exactly at the size limit", in: `<message>` + strings.Repeat("x", 990) + `</message>`, lim: Limits{MaxStanzaSize: 1009}},
		{name: "depth at the limit", in: strings.Repeat("<a>", 4) + strings.Repeat("</a>", 4), lim: Limits{MaxDepth: 4}},
		{name: "attributes at the limit", in: `<message a='1' b='2' c='3' d='4' e='5'/>`, lim: Limits{MaxAttrs: 5}},
		{name: "attribute at the length limit", in: `<message id='` + strings.Repeat("x", 100) + `'/>`, lim: Limits{MaxAttrLen: 100}},
		{name: "keepalives do not count toward the size", in: strings.Repeat(" ", 5000) + `<presence/>`, lim: Limits{MaxStanzaSize: 200}},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				_, got, err := decodeAll(rd.wrap(clientHeader+tt.in+"</stream:stream>"), tt.lim)
				if err != ErrStreamClosed || len(got) != 1 {
					t.Fatalf("got %d elements, error %v", len(got), err)
				}
			})
		}
	}
}

func TestStreamClose(t *testing.T) {
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			d := NewDecoder(rd.wrap(clientHeader+"<presence/>\n</stream:stream >trailing"), Limits{})
			if _, err := d.ReadHeader(); err != nil {
				t.Fatal(err)
			}
			if _, err := d.ReadElement(); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if _, err := d.ReadElement(); err != ErrStreamClosed {
					t.Fatalf("error = %v, want ErrStreamClosed", err)
				}
			}
		})
	}
	t.Run("empty stream", func(t *testing.T) {
		d := NewDecoder(strings.NewReader(`<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>`), Limits{})
		if _, err := d.ReadHeader(); err != nil {
			t.Fatal(err)
		}
		if _, err := d.ReadElement(); err != ErrStreamClosed {
			t.Fatalf("error = %v, want ErrStreamClosed", err)
		}
	})
	t.Run("EOF inside a stanza", func(t *testing.T) {
		_, _, err := decodeAll(strings.NewReader(clientHeader+"<message><body>"), Limits{})
		if err != io.EOF {
			t.Fatalf("error = %v, want io.EOF", err)
		}
	})
	t.Run("ReadElement before ReadHeader", func(t *testing.T) {
		d := NewDecoder(strings.NewReader(clientHeader), Limits{})
		if _, err := d.ReadElement(); err == nil || !strings.HasPrefix(err.Error(), "xmlstream: ") {
			t.Fatalf("error = %v", err)
		}
	})
}

func TestRestart(t *testing.T) {
	// After SASL success the client pipelines the new header; the decoder must keep those bytes.
	in := clientHeader + `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHUAcA==</auth>` +
		`<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' ` +
		`xmlns:stream='http://etherx.jabber.org/streams' version='1.0' id='second'>` +
		`<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq></stream:stream>`
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			d := NewDecoder(rd.wrap(in), Limits{})
			if _, err := d.ReadHeader(); err != nil {
				t.Fatal(err)
			}
			auth, err := d.ReadElement()
			if err != nil || auth.Local != "auth" {
				t.Fatalf("auth: %v %v", auth, err)
			}
			if rd.name == "whole" && d.Buffered() == 0 {
				t.Error("pipelined bytes not buffered")
			}
			d.Restart()
			h, err := d.ReadHeader()
			if err != nil || h.ID != "second" {
				t.Fatalf("second header: %+v %v", h, err)
			}
			iq, err := d.ReadElement()
			if err != nil || iq.Child("urn:ietf:params:xml:ns:xmpp-bind", "bind") == nil {
				t.Fatalf("iq: %v %v", iq, err)
			}
			if _, err := d.ReadElement(); err != ErrStreamClosed {
				t.Fatalf("error = %v, want ErrStreamClosed", err)
			}
		})
	}
}

func TestReset(t *testing.T) {
	d := NewDecoder(strings.NewReader(clientHeader+`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><garbage`), Limits{})
	if _, err := d.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	if el, err := d.ReadElement(); err != nil || el.Local != "starttls" {
		t.Fatalf("starttls: %v %v", el, err)
	}
	if d.Buffered() != len("<garbage") {
		t.Fatalf("Buffered = %d", d.Buffered())
	}
	d.Reset(strings.NewReader(clientHeader + `<presence/>`))
	if d.Buffered() != 0 {
		t.Fatalf("Buffered after Reset = %d", d.Buffered())
	}
	if _, err := d.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	if el, err := d.ReadElement(); err != nil || el.Local != "presence" {
		t.Fatalf("presence: %v %v", el, err)
	}
}

// scriptReader returns its chunks one per Read, and an error for a nil chunk.
type scriptReader struct {
	chunks []string
	err    error
}

func (s *scriptReader) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	if c == "" {
		return 0, s.err
	}
	n := copy(p, c)
	if n < len(c) {
		s.chunks = append([]string{c[n:]}, s.chunks...)
	}
	return n, nil
}

func TestTimeoutResumes(t *testing.T) {
	r := &scriptReader{
		chunks: []string{clientHeader[:40], "", clientHeader[40:] + "<message><bo", "", "dy>x</body></mess", "", "age>"},
		err:    os.ErrDeadlineExceeded,
	}
	d := NewDecoder(r, Limits{})
	var h *Header
	var err error
	for h, err = d.ReadHeader(); err != nil; h, err = d.ReadHeader() {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal(err)
		}
	}
	if h.To != "example.com" {
		t.Fatalf("header %+v", h)
	}
	timeouts := 0
	for {
		el, err := d.ReadElement()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			timeouts++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := string(el.AppendXML(nil, "jabber:client")); got != `<message><body>x</body></message>` {
			t.Fatalf("got %s", got)
		}
		break
	}
	if timeouts != 2 {
		t.Fatalf("saw %d timeouts, want 2", timeouts)
	}
}

func TestStickyError(t *testing.T) {
	d := NewDecoder(strings.NewReader(clientHeader+`<a></b><presence/>`), Limits{})
	if _, err := d.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	_, err1 := d.ReadElement()
	_, err2 := d.ReadElement()
	if err1 == nil || err1 != err2 {
		t.Fatalf("errors %v then %v", err1, err2)
	}
}

// countingReader counts the bytes handed out and never ends.
type countingReader struct {
	n   int
	pat []byte
}

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.pat[(c.n+i)%len(c.pat)]
	}
	c.n += len(p)
	return len(p), nil
}

func TestHugeStanzaNotBuffered(t *testing.T) {
	const limit = 100000
	r := io.MultiReader(strings.NewReader(clientHeader+"<message><body>"), &countingReader{pat: []byte("abcdefgh")})
	d := NewDecoder(r, Limits{MaxStanzaSize: limit})
	if _, err := d.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	_, err := d.ReadElement()
	var xe *Error
	if !errors.As(err, &xe) || !xe.TooBig {
		t.Fatalf("error = %v, want stanza too big", err)
	}
	if len(d.buf) > limit {
		t.Fatalf("buffer grew to %d bytes past the %d limit", len(d.buf), limit)
	}
}

func TestBufferAdapts(t *testing.T) {
	big := `<message><body>` + strings.Repeat("y", 100000) + `</body></message>`
	chunks := []string{clientHeader, big}
	for range 20 {
		chunks = append(chunks, `<presence/>`)
	}
	r := &scriptReader{chunks: chunks}
	d := NewDecoder(r, Limits{})
	if _, err := d.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	if len(d.buf) != minBufSize {
		t.Fatalf("initial buffer %d bytes", len(d.buf))
	}
	el, err := d.ReadElement()
	if err != nil || len(el.Child("", "body").Text()) != 100000 {
		t.Fatalf("big stanza: %v", err)
	}
	grown := len(d.buf)
	if grown < 100000 {
		t.Fatalf("buffer only %d bytes after a 100 KB stanza", grown)
	}
	for range 20 {
		if _, err := d.ReadElement(); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.buf) >= grown/8 {
		t.Fatalf("buffer still %d bytes after small reads (was %d)", len(d.buf), grown)
	}
}

func TestDecodedStringsIndependentOfBuffer(t *testing.T) {
	// Elements must not alias the decoder's buffer, which later reads overwrite.
	in := clientHeader + `<message id='first'><body>one</body></message>` + strings.Repeat(`<message id='later'><body>two</body></message>`, 50)
	d := NewDecoder(&oneByteReader{strings.NewReader(in)}, Limits{})
	if _, err := d.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	first, err := d.ReadElement()
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if _, err := d.ReadElement(); err != nil {
			t.Fatal(err)
		}
	}
	if got := first.String(); got != `<message xmlns="jabber:client" id="first"><body>one</body></message>` {
		t.Fatalf("first element changed: %s", got)
	}
}

func TestNeverPanicsOnTruncation(t *testing.T) {
	// Every prefix of a rich stream must give an error or EOF, never a panic.
	in := "\xef\xbb\xbf<?xml version='1.0' encoding='UTF-8'?>" + serverHeader +
		`<db:result to='b' from='a'>k</db:result><message xmlns:p='urn:p' p:a='&#x41;' b="&quot;">` +
		`<body>t&amp;<![CDATA[c]]>&#10;</body><p:x/></message></stream:stream>`
	for i := range len(in) {
		for _, rd := range readers {
			_, _, err := decodeAll(rd.wrap(in[:i]), Limits{})
			if err == nil {
				t.Fatalf("prefix %q: no error", in[:i])
			}
		}
	}
	_, got, err := decodeAll(bytes.NewReader([]byte(in)), Limits{})
	if err != ErrStreamClosed || len(got) != 2 {
		t.Fatalf("full input: %d elements, %v", len(got), err)
	}
}

// chunkReader returns reads of pseudo-random sizes, exercising compaction and buffer growth.
type chunkReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	n := 1 + c.rng.IntN(min(len(p), 3000))
	return c.r.Read(p[:n])
}

func TestRandomChunks(t *testing.T) {
	var b strings.Builder
	b.WriteString(clientHeader)
	for i := range 300 {
		switch i % 4 {
		case 0:
			b.WriteString(`<message id='m` + strings.Repeat("x", i) + `'><body>` + strings.Repeat("text &amp; ", i*3) + `</body></message>`)
		case 1:
			b.WriteString(" \n ")
		case 2:
			b.WriteString(`<presence><status><![CDATA[` + strings.Repeat("]", i%7) + `]]></status></presence>`)
		case 3:
			b.WriteString(`<iq type='get' id='q'><query xmlns='jabber:iq:roster'/></iq>`)
		}
	}
	b.WriteString(`</stream:stream>`)
	_, want, err := decodeAll(strings.NewReader(b.String()), Limits{})
	if err != ErrStreamClosed {
		t.Fatal(err)
	}
	for seed := range uint64(20) {
		r := &chunkReader{r: strings.NewReader(b.String()), rng: rand.New(rand.NewPCG(seed, 1))}
		_, got, err := decodeAll(r, Limits{})
		if err != ErrStreamClosed || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("seed %d: %d elements, %v; want %d", seed, len(got), err, len(want))
		}
	}
}

func TestIdleBufferReleased(t *testing.T) {
	big := `<message><body>` + strings.Repeat("z", 200000) + `</body></message>`
	d := NewDecoder(&scriptReader{chunks: []string{clientHeader, big}}, Limits{})
	if _, err := d.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadElement(); err != nil {
		t.Fatal(err)
	}
	if len(d.buf) < 200000 {
		t.Fatalf("buffer %d bytes after a 200 KB stanza", len(d.buf))
	}
	// The next read finds nothing pending; the buffer it blocks with must be small.
	if _, err := d.ReadElement(); err != io.EOF {
		t.Fatalf("error = %v, want EOF", err)
	}
	if len(d.buf) > maxIdleBufSize {
		t.Fatalf("idle buffer %d bytes", len(d.buf))
	}
}

func TestDecodeAllocations(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  float64
	}{
		// One string for the input, one array each for elements, attributes and children.
		{"message", benchMessage, 4},
		{"presence", benchPresence, 4},
		// Each value with an entity reference needs its own string.
		{"entities", `<message><body>don&apos;t</body></message>`, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(io.MultiReader(strings.NewReader(clientHeader), &repeatReader{data: []byte(tt.in)}), Limits{})
			if _, err := d.ReadHeader(); err != nil {
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(200, func() {
				if _, err := d.ReadElement(); err != nil {
					t.Fatal(err)
				}
			})
			if allocs > tt.max {
				t.Errorf("%v allocations per element, want at most %v", allocs, tt.max)
			}
		})
	}
}
