package caps

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"hash"
	"slices"
	"strings"

	"impetus/internal/stanza"
)

// Namespaces used by entity capabilities.
const (
	NS       = "http://jabber.org/protocol/caps"
	NSInfo   = "http://jabber.org/protocol/disco#info"
	NSData   = "jabber:x:data"
	formType = "FORM_TYPE"
)

// Identity is a disco identity as the verification string sees it.
type Identity struct {
	Category, Type, Lang, Name string
}

// Info is what a disco#info result says about an entity.
type Info struct {
	Identities []Identity
	Features   []string
	// Forms are the XEP-0128 extended information forms of the result.
	Forms []*stanza.Element
}

// Errors of ParseInfo: a result that fails the checks of XEP-0115 §5.4 is not cached.
var (
	errDupIdentity = errors.New("caps: duplicate identity")
	errDupFeature  = errors.New("caps: duplicate feature")
	errDupForm     = errors.New("caps: duplicate FORM_TYPE")
	errUnknownHash = errors.New("caps: unsupported hash function")
)

// newHash returns the hash function with the IANA name XEP-0115 §5.1 uses, or nil.
func newHash(name string) hash.Hash {
	switch name {
	case "sha-1":
		return sha1.New()
	case "sha-224":
		return sha256.New224()
	case "sha-256":
		return sha256.New()
	case "sha-384":
		return sha512.New384()
	case "sha-512":
		return sha512.New()
	}
	return nil
}

// Supported reports whether the hash function name can be verified.
func Supported(name string) bool { return newHash(name) != nil }

// ParseInfo reads a disco#info query element and applies the checks of XEP-0115 §5.4: a result
// with two equal identities, two equal features or two forms of the same FORM_TYPE is refused;
// a form without a hidden FORM_TYPE field is left out, the rest of the result kept.
func ParseInfo(q *stanza.Element) (*Info, error) {
	info := &Info{}
	seenID := map[Identity]bool{}
	seenFeature := map[string]bool{}
	seenForm := map[string]bool{}
	for c := range q.Elements() {
		switch {
		case c.Space == NSInfo && c.Local == "identity":
			id := Identity{Category: c.Attr("category"), Type: c.Attr("type"), Lang: c.Attr("xml:lang"), Name: c.Attr("name")}
			if seenID[id] {
				return nil, errDupIdentity
			}
			seenID[id] = true
			info.Identities = append(info.Identities, id)
		case c.Space == NSInfo && c.Local == "feature":
			v := c.Attr("var")
			if seenFeature[v] {
				return nil, errDupFeature
			}
			seenFeature[v] = true
			info.Features = append(info.Features, v)
		case c.Space == NSData && c.Local == "x":
			ft, ok := hiddenFormType(c)
			if !ok {
				continue
			}
			if seenForm[ft] {
				return nil, errDupForm
			}
			seenForm[ft] = true
			info.Forms = append(info.Forms, c)
		}
	}
	return info, nil
}

// hiddenFormType returns the value of a form's FORM_TYPE field when it is of type hidden.
func hiddenFormType(form *stanza.Element) (string, bool) {
	for f := range form.Elements() {
		if f.Local == "field" && f.Attr("var") == formType {
			if f.Attr("type") != "hidden" {
				return "", false
			}
			v := f.Child(NSData, "value")
			if v == nil {
				return "", false
			}
			return v.Text(), true
		}
	}
	return "", false
}

// String returns the verification string of XEP-0115 §5.1.
func (info *Info) String() string {
	var b strings.Builder
	ids := slices.Clone(info.Identities)
	slices.SortFunc(ids, func(a, b Identity) int {
		if c := strings.Compare(a.Category, b.Category); c != 0 {
			return c
		}
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		if c := strings.Compare(a.Lang, b.Lang); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, id := range ids {
		b.WriteString(id.Category + "/" + id.Type + "/" + id.Lang + "/" + id.Name + "<")
	}
	features := slices.Clone(info.Features)
	slices.Sort(features)
	for _, f := range features {
		b.WriteString(f + "<")
	}
	type field struct {
		name   string
		values []string
	}
	type form struct {
		typ    string
		fields []field
	}
	forms := make([]form, 0, len(info.Forms))
	for _, x := range info.Forms {
		ft, _ := hiddenFormType(x)
		fm := form{typ: ft}
		for f := range x.Elements() {
			if f.Local != "field" || f.Attr("var") == formType {
				continue
			}
			fd := field{name: f.Attr("var")}
			for v := range f.Elements() {
				if v.Local == "value" {
					fd.values = append(fd.values, v.Text())
				}
			}
			slices.Sort(fd.values)
			fm.fields = append(fm.fields, fd)
		}
		slices.SortFunc(fm.fields, func(a, b field) int { return strings.Compare(a.name, b.name) })
		forms = append(forms, fm)
	}
	slices.SortFunc(forms, func(a, b form) int { return strings.Compare(a.typ, b.typ) })
	for _, fm := range forms {
		b.WriteString(fm.typ + "<")
		for _, fd := range fm.fields {
			b.WriteString(fd.name + "<")
			for _, v := range fd.values {
				b.WriteString(v + "<")
			}
		}
	}
	return b.String()
}

// Ver returns the verification string hashed with the named function and encoded in Base64
// (XEP-0115 §5.1 steps 7 and 8).
func (info *Info) Ver(hashName string) (string, error) {
	h := newHash(hashName)
	if h == nil {
		return "", errUnknownHash
	}
	h.Write([]byte(info.String()))
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

// Query returns the disco#info query element describing info, forms included.
func (info *Info) Query(node string) *stanza.Element {
	q := stanza.NewElement(NSInfo, "query")
	if node != "" {
		q.SetAttr("node", node)
	}
	for _, id := range info.Identities {
		el := stanza.NewElement(NSInfo, "identity", stanza.Attr{Name: "category", Value: id.Category}, stanza.Attr{Name: "type", Value: id.Type})
		if id.Lang != "" {
			el.SetAttr("xml:lang", id.Lang)
		}
		if id.Name != "" {
			el.SetAttr("name", id.Name)
		}
		q.AddChild(el)
	}
	for _, f := range info.Features {
		q.AddChild(stanza.NewElement(NSInfo, "feature", stanza.Attr{Name: "var", Value: f}))
	}
	for _, x := range info.Forms {
		q.AddChild(x)
	}
	return q
}
