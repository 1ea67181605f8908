package config

import "strings"

// ValueKind says which of the three shapes a [Value] has.
type ValueKind int

// The value shapes of the language: a scalar written bare or in quotes, an
// array written key = ( a b c ), and a dictionary written key = [ k = v ].
const (
	StringValue ValueKind = iota
	ArrayValue
	DictValue
)

// Value is an option's value as written, with its position so that typed
// decoding done later can still name the file and line.
type Value struct {
	Kind    ValueKind
	Str     string      // for StringValue: the text, quotes and escapes removed
	Items   []Value     // for ArrayValue: the elements in order
	Entries []DictEntry // for DictValue: the entries in order
	Pos     Pos
}

// DictEntry is one key = value pair of a dictionary.
type DictEntry struct {
	Key   string
	Value Value
	Pos   Pos
}

// Lookup returns the dictionary entry whose key matches name
// case-insensitively, as Momentum compares keys.
func (v Value) Lookup(name string) (DictEntry, bool) {
	for _, e := range v.Entries {
		if strings.EqualFold(e.Key, name) {
			return e, true
		}
	}
	return DictEntry{}, false
}

// Option is one key = value statement.
type Option struct {
	Name  string // as written; compare with strings.EqualFold
	Value Value
	Pos   Pos
}

// Scope is a block of statements: the whole file (Kind "global"), an
// anonymous scope such as xmpp_listener { }, or a named one such as
// domain "example.com" { }. Statements from included files are spliced into
// the scope that includes them and keep their own file names.
type Scope struct {
	Kind     string // as written, e.g. "Listen"; compare with strings.EqualFold
	Name     string // the instance name; empty when HasName is false
	HasName  bool   // domain "" { } has an (empty) name, xmpp { } has none
	Pos             // where the scope kind was written
	Options  []*Option
	Children []*Scope

	spec *ScopeSpec // set by the registry check; nil for scopes it ignores
}

// Option returns the first option named name (case-insensitively), or nil.
func (s *Scope) Option(name string) *Option {
	for _, o := range s.Options {
		if strings.EqualFold(o.Name, name) {
			return o
		}
	}
	return nil
}

// Scopes returns the child scopes of the given kind (case-insensitively).
func (s *Scope) Scopes(kind string) []*Scope {
	var out []*Scope
	for _, c := range s.Children {
		if strings.EqualFold(c.Kind, kind) {
			out = append(out, c)
		}
	}
	return out
}

// Spec returns the registry entry the scope was checked against, or nil for
// a scope the registry accepted without checking (a Momentum scope Impetus
// does not implement).
func (s *Scope) Spec() *ScopeSpec { return s.spec }

// String names the scope and its position. It keeps the embedded Pos's
// String from standing in for the whole scope.
func (s *Scope) String() string { return s.label() + " at " + s.Pos.String() }

// label names the scope in messages: its kind, and its name in quotes.
func (s *Scope) label() string {
	if s.HasName {
		return s.Kind + ` "` + s.Name + `"`
	}
	return s.Kind
}
