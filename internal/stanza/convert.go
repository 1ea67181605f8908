package stanza

// ConvertNS returns el with every element in namespace from moved to namespace to, copying
// only the elements on the way to one that changes; when nothing changes, el itself is
// returned. Stanzas travel as jabber:client inside the server, and as jabber:server or
// jabber:component:accept on streams to other servers and components; the serializer writes
// whatever namespace an element has.
func ConvertNS(el *Element, from, to string) *Element {
	if !hasNS(el, from) {
		return el
	}
	c := &Element{Space: el.Space, Local: el.Local, Attrs: el.Attrs}
	if c.Space == from {
		c.Space = to
	}
	if len(el.Children) > 0 {
		c.Children = make([]Node, len(el.Children))
		for i, n := range el.Children {
			if n.Elem != nil {
				c.Children[i].Elem = ConvertNS(n.Elem, from, to)
			} else {
				c.Children[i].Text = n.Text
			}
		}
	}
	return c
}

// hasNS reports whether el or any element below it is in namespace ns.
func hasNS(el *Element, ns string) bool {
	if el.Space == ns {
		return true
	}
	for _, n := range el.Children {
		if n.Elem != nil && hasNS(n.Elem, ns) {
			return true
		}
	}
	return false
}
