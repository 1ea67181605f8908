package stanza

import (
	"slices"
	"testing"
)

func TestElementAppendXML(t *testing.T) {
	const client = "jabber:client"
	tests := []struct {
		name   string
		el     *Element
		parent string
		want   string
	}{
		{
			name:   "empty element in parent namespace",
			el:     NewElement(client, "presence"),
			parent: client,
			want:   `<presence/>`,
		},
		{
			name:   "namespace declared when it differs",
			el:     NewElement("urn:xmpp:ping", "ping"),
			parent: client,
			want:   `<ping xmlns="urn:xmpp:ping"/>`,
		},
		{
			name: "children inherit the written namespace",
			el: NewElement(client, "iq", Attr{"type", "get"}, Attr{"id", "1"}).
				AddChild(NewElement("jabber:iq:roster", "query").
					AddChild(NewElement("jabber:iq:roster", "item", Attr{"jid", "a@b"})).
					AddChild(NewElement(client, "item"))),
			parent: client,
			want:   `<iq type="get" id="1"><query xmlns="jabber:iq:roster"><item jid="a@b"/><item xmlns="jabber:client"/></query></iq>`,
		},
		{
			name:   "String always declares",
			el:     NewElement(client, "message").AddChild(NewElement(client, "body").AddText("hi")),
			parent: "",
			want:   `<message xmlns="jabber:client"><body>hi</body></message>`,
		},
		{
			name: "stream prefix without declaration",
			el: NewElement(elemStreamsNS, "features").
				AddChild(NewElement("urn:ietf:params:xml:ns:xmpp-tls", "starttls").AddChild(NewElement("urn:ietf:params:xml:ns:xmpp-tls", "required"))),
			parent: client,
			want:   `<stream:features><starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"><required/></starttls></stream:features>`,
		},
		{
			name: "children of a prefixed element keep the outer default",
			el: NewElement(elemStreamsNS, "error").
				AddChild(NewElement("urn:ietf:params:xml:ns:xmpp-streams", "conflict")).
				AddChild(NewElement(client, "x")),
			parent: client,
			want:   `<stream:error><conflict xmlns="urn:ietf:params:xml:ns:xmpp-streams"/><x/></stream:error>`,
		},
		{
			name:   "dialback prefix",
			el:     NewElement(elemDialbackNS, "result", Attr{"from", "a.example"}, Attr{"to", "b.example"}).AddText("key"),
			parent: "jabber:server",
			want:   `<db:result from="a.example" to="b.example">key</db:result>`,
		},
		{
			name:   "text escaping",
			el:     NewElement(client, "body").AddText("a < b && c > d \"q\" 's'\r\n\ttab"),
			parent: client,
			want:   "<body>a &lt; b &amp;&amp; c &gt; d \"q\" 's'&#xD;\n\ttab</body>",
		},
		{
			name:   "attribute escaping",
			el:     NewElement(client, "iq", Attr{"id", "a&b<c>d\"e'f\tg\nh\ri"}),
			parent: client,
			want:   `<iq id="a&amp;b&lt;c>d&quot;e'f&#x9;g&#xA;h&#xD;i"/>`,
		},
		{
			name:   "invalid characters replaced",
			el:     NewElement(client, "body", Attr{"id", "a\x00b\xffc"}).AddText("x\x01y\xc3z\uFFFEw\uFFFD"),
			parent: client,
			want:   "<body id=\"a\uFFFDb\uFFFDc\">x\uFFFDy\uFFFDz\uFFFDw\uFFFD</body>",
		},
		{
			name:   "xml:lang kept as written",
			el:     NewElement(client, "message", Attr{"xml:lang", "en"}),
			parent: client,
			want:   `<message xml:lang="en"/>`,
		},
		{
			name:   "namespaced attribute gets a declared prefix",
			el:     NewElement(client, "message", Attr{"id", "1"}, Attr{"{urn:a}b", "c"}, Attr{"{}d", "e"}),
			parent: client,
			want:   `<message id="1" xmlns:ns1="urn:a" ns1:b="c" d="e"/>`,
		},
		{
			name:   "empty namespace undeclares the default",
			el:     NewElement(client, "message").AddChild(NewElement("", "x").AddChild(NewElement("", "y"))),
			parent: client,
			want:   `<message><x xmlns=""><y/></x></message>`,
		},
		{
			name:   "xml namespace uses its predefined prefix",
			el:     NewElement(client, "message").AddChild(NewElement(elemXMLNS, "x").AddChild(NewElement(client, "y"))),
			parent: client,
			want:   `<message><xml:x><y/></xml:x></message>`,
		},
		{
			name:   "mixed content",
			el:     NewElement(client, "p").AddText("a").AddChild(NewElement(client, "b")).AddText("c").AddText(""),
			parent: client,
			want:   `<p>a<b/>c</p>`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(tt.el.AppendXML([]byte("prefix:"), tt.parent))
			if got != "prefix:"+tt.want {
				t.Errorf("AppendXML\n got %s\nwant prefix:%s", got, tt.want)
			}
			if tt.parent == "" {
				if s := tt.el.String(); s != tt.want {
					t.Errorf("String\n got %s\nwant %s", s, tt.want)
				}
			}
		})
	}
}

func TestElementAttrs(t *testing.T) {
	e := NewElement("jabber:client", "message", Attr{"to", "a@b"}, Attr{"type", "chat"})
	tests := []struct {
		name string
		op   func()
		want []Attr
	}{
		{"initial", func() {}, []Attr{{"to", "a@b"}, {"type", "chat"}}},
		{"replace", func() { e.SetAttr("to", "c@d") }, []Attr{{"to", "c@d"}, {"type", "chat"}}},
		{"append", func() { e.SetAttr("id", "x") }, []Attr{{"to", "c@d"}, {"type", "chat"}, {"id", "x"}}},
		{"remove middle", func() { e.RemoveAttr("type") }, []Attr{{"to", "c@d"}, {"id", "x"}}},
		{"remove absent", func() { e.RemoveAttr("nope") }, []Attr{{"to", "c@d"}, {"id", "x"}}},
		{"empty value", func() { e.SetAttr("from", "") }, []Attr{{"to", "c@d"}, {"id", "x"}, {"from", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.op()
			if !slices.Equal(e.Attrs, tt.want) {
				t.Fatalf("attrs = %v, want %v", e.Attrs, tt.want)
			}
			for _, a := range tt.want {
				if !e.HasAttr(a.Name) || e.Attr(a.Name) != a.Value {
					t.Errorf("Attr(%q) = %q, HasAttr %v", a.Name, e.Attr(a.Name), e.HasAttr(a.Name))
				}
			}
		})
	}
	if e.HasAttr("type") || e.Attr("type") != "" {
		t.Error("removed attribute still present")
	}
}

func TestRemoveAttrDoesNotShareArray(t *testing.T) {
	backing := []Attr{{"a", "1"}, {"b", "2"}, {"c", "3"}}
	e := &Element{Local: "x", Attrs: backing[:3:3]}
	e.RemoveAttr("a")
	if backing[0].Name != "a" || backing[1].Name != "b" {
		t.Fatalf("RemoveAttr modified a shared array: %v", backing)
	}
}

func TestElementChildren(t *testing.T) {
	a := NewElement("urn:a", "x")
	b := NewElement("urn:b", "x")
	c := NewElement("urn:b", "y")
	e := NewElement("jabber:client", "message").AddText("one ").AddChild(a).AddText("two").AddChild(b).AddChild(c)
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"child any namespace", e.Child("", "x"), a},
		{"child by namespace", e.Child("urn:b", "x"), b},
		{"child missing", e.Child("urn:c", "x"), (*Element)(nil)},
		{"first element", e.FirstElement(), a},
		{"element count", e.ElementCount(), 3},
		{"text", e.Text(), "one two"},
		{"text of leaf", a.Text(), ""},
		{"single text", NewElement("", "b").AddText("only").Text(), "only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
	var seen []*Element
	for c := range e.Elements() {
		seen = append(seen, c)
		if len(seen) == 2 {
			break
		}
	}
	if !slices.Equal(seen, []*Element{a, b}) {
		t.Errorf("Elements with early break = %v", seen)
	}
	if NewElement("", "empty").FirstElement() != nil {
		t.Error("FirstElement of an empty element is not nil")
	}
}

func TestElementCopy(t *testing.T) {
	orig := NewElement("jabber:client", "message", Attr{"to", "a@b"}).
		AddChild(NewElement("jabber:client", "body").AddText("hi"))
	c := orig.Copy()
	if c.String() != orig.String() {
		t.Fatalf("copy differs: %s vs %s", c, orig)
	}
	c.SetAttr("to", "x@y")
	c.Child("", "body").Children[0].Text = "changed"
	c.Child("", "body").SetAttr("id", "1")
	if want := `<message xmlns="jabber:client" to="a@b"><body>hi</body></message>`; orig.String() != want {
		t.Fatalf("original modified through copy: %s", orig)
	}
	if (*Element)(nil).Copy() != nil {
		t.Error("Copy of nil is not nil")
	}
}

func TestAppendXMLDoesNotAllocate(t *testing.T) {
	e := benchMessage()
	dst := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		dst = e.AppendXML(dst[:0], "jabber:client")
	})
	if allocs != 0 {
		t.Fatalf("AppendXML allocated %v times per run", allocs)
	}
}
