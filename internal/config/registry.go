package config

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Type is the type of an option's value.
type Type int

// The option types. The scalar ones follow Momentum's C API
// (ECCFGTYPE_STRING, _INT, _BOOL, _PERMS, _SIZE_T) plus durations, which
// Momentum writes as whole seconds.
const (
	TypeString   Type = iota // any scalar; OptionSpec.Values may restrict it
	TypeInt                  // a whole number ≥ 0
	TypeBool                 // true/false, yes/no, on/off, quoted or not
	TypeMode                 // file permissions in octal, e.g. 0644
	TypeSize                 // bytes, optionally with a k, m or g suffix (powers of 1024)
	TypeDuration             // whole seconds
	TypeDict                 // key = [ k = v … ]
	TypeArray                // key = ( a b … ); a single scalar is taken as a one-element array
)

var typeNames = [...]string{"string", "integer", "boolean", "octal mode", "size", "duration in seconds", "dictionary", "array"}

// String names the type in messages.
func (t Type) String() string {
	if t >= 0 && int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", int(t))
}

// Status says whether Impetus acts on an option or scope.
type Status int

const (
	// Implemented options and scopes take effect.
	Implemented Status = iota
	// Accepted ones are real Momentum configuration that Impetus does not
	// act on yet: they load, with a warning naming the file, line and option,
	// so an existing Momentum configuration can be used unchanged.
	Accepted
)

// NameRule says whether a scope kind takes an instance name.
type NameRule int

// The name rules.
const (
	NameNone     NameRule = iota // xmpp { }
	NameRequired                 // domain "example.com" { }
	NameOptional                 // xmpp_logger { } or xmpp_logger "one" { }
)

// OptionSpec is one row of a scope's option table.
type OptionSpec struct {
	Name    string   // canonical lower-case name
	Type    Type     // type of the value
	Default string   // default in configuration syntax; "" when the option has none
	Values  []string // for TypeString: the allowed values, compared case-insensitively
	Status  Status
	Doc     string // one line for documentation and the dump
}

// ScopeSpec describes one scope kind: the options it accepts and the scopes
// it may contain.
type ScopeSpec struct {
	Kind      string // canonical lower-case kind, e.g. "xmpp_listener"
	Name      NameRule
	Singleton bool // at most one per enclosing scope
	Status    Status
	Doc       string
	Options   []OptionSpec
	Scopes    []*ScopeSpec
}

// Option returns the row for the named option (case-insensitively), or nil.
func (s *ScopeSpec) Option(name string) *OptionSpec {
	for i := range s.Options {
		if strings.EqualFold(s.Options[i].Name, name) {
			return &s.Options[i]
		}
	}
	return nil
}

// Scope returns the spec of the named nested scope kind, or nil.
func (s *ScopeSpec) Scope(kind string) *ScopeSpec {
	for _, c := range s.Scopes {
		if strings.EqualFold(c.Kind, kind) {
			return c
		}
	}
	return nil
}

// registry holds the global scope spec; feature packages add top-level
// scopes to it from their init functions.
var registry = struct {
	sync.RWMutex
	global *ScopeSpec
}{global: newGlobalSpec()}

// RegisterScope adds a top-level scope kind with its option table, so a
// feature package owns its section: Load checks the section against the
// table and keeps it raw in [Config.Sections], and the package decodes it
// with [Scope.Decode]. A kind listed among the Momentum scopes Impetus
// ignores becomes checked instead. RegisterScope is meant for init
// functions and panics when the kind is already registered or malformed,
// as database/sql.Register does.
func RegisterScope(spec *ScopeSpec) {
	if spec == nil || !isName(spec.Kind) {
		panic("config: RegisterScope: invalid scope kind")
	}
	for _, o := range spec.Options {
		if !isName(o.Name) {
			panic(fmt.Sprintf("config: RegisterScope %s: invalid option name %q", spec.Kind, o.Name))
		}
		if o.Default != "" {
			if err := checkValue(&o, Value{Kind: StringValue, Str: o.Default}); err != "" {
				panic(fmt.Sprintf("config: RegisterScope %s: default of %s: %s", spec.Kind, o.Name, err))
			}
		}
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.global.Scope(spec.Kind) != nil {
		panic(fmt.Sprintf("config: RegisterScope: scope %q already registered", spec.Kind))
	}
	registry.global.Scopes = append(registry.global.Scopes, spec)
}

// LookupScope returns the spec of a registered top-level scope kind.
func LookupScope(kind string) (*ScopeSpec, bool) {
	registry.RLock()
	defer registry.RUnlock()
	s := registry.global.Scope(kind)
	return s, s != nil
}

// momentumScopes are scope kinds of Momentum that Impetus does not
// implement. A configuration written for Momentum may contain them; they are
// accepted with a warning and their contents are not checked.
var momentumScopes = []string{
	"adaptive", "alerting", "as_logger", "auth_ds", "authorization",
	"binding", "binding_group", "bounce_logger", "cluster", "control_listener",
	"custom_logger", "debug_flags", "dkim_sign", "ds_core", "ec_logger",
	"ecstream_listener", "esmtp_listener", "fbl", "http_listener",
	"inbound_audit", "mailloop", "mm7", "mms_logger", "opendkim",
	"outbound_audit", "pathway", "pathway_group", "scriptlet", "security",
	"sieve", "smpp", "smpp_logger", "spf",
}

func isMomentumScope(kind string) bool {
	for _, k := range momentumScopes {
		if strings.EqualFold(k, kind) {
			return true
		}
	}
	return false
}

// checkTree checks root and everything under it against the registry,
// recording the spec of each scope it checks.
func checkTree(root *Scope, d *diag) {
	registry.RLock()
	defer registry.RUnlock()
	checkScope(root, registry.global, registry.global, d)
}

func checkScope(s *Scope, spec, global *ScopeSpec, d *diag) {
	s.spec = spec
	seen := map[string]*Option{}
	for _, o := range s.Options {
		os := spec.Option(o.Name)
		if os == nil {
			d.errorf(o.Pos, "%s", unknownOption(o.Name, s, spec, global))
			continue
		}
		if first, dup := seen[os.Name]; dup {
			d.errorf(o.Pos, "option %q is set twice in %s (first at %s)", o.Name, s.label(), first.Pos)
			continue
		}
		seen[os.Name] = o
		if msg := checkValue(os, o.Value); msg != "" {
			d.errorf(o.Value.Pos, "option %q: %s", o.Name, msg)
			continue
		}
		if os.Status == Accepted {
			d.warnf(o.Pos, "option %q is a Momentum option Impetus does not implement yet; it has no effect", o.Name)
		}
	}
	type key struct{ kind, name string }
	scopes := map[key]*Scope{}
	for _, c := range s.Children {
		cs := spec.Scope(c.Kind)
		if cs == nil {
			if spec == global && isMomentumScope(c.Kind) {
				d.warnf(c.Pos, "scope %q is a Momentum scope Impetus does not implement; its contents are ignored", c.Kind)
				continue
			}
			d.errorf(c.Pos, "%s", unknownScope(c.Kind, s, spec, global))
			continue
		}
		switch {
		case cs.Name == NameNone && c.HasName:
			d.errorf(c.Pos, "scope %q takes no name; write %s { … }", c.Kind, c.Kind)
			continue
		case cs.Name == NameRequired && !c.HasName:
			d.errorf(c.Pos, "scope %q needs a name; write %s \"name\" { … }", c.Kind, c.Kind)
			continue
		}
		k := key{cs.Kind, strings.ToLower(c.Name)}
		if cs.Singleton {
			k.name = ""
		}
		if first, dup := scopes[k]; dup {
			d.errorf(c.Pos, "%s appears twice in %s (first at %s)", c.label(), scopeWhere(s), first.Pos)
			continue
		}
		scopes[k] = c
		if cs.Status == Accepted {
			d.warnf(c.Pos, "scope %q is a Momentum scope Impetus does not implement yet; it has no effect", c.Kind)
		}
		checkScope(c, cs, global, d)
	}
}

func scopeWhere(s *Scope) string {
	if s.Kind == "global" && s.spec != nil && s.spec.Kind == "global" {
		return "the global scope"
	}
	return s.label()
}

func unknownOption(name string, s *Scope, spec, global *ScopeSpec) string {
	var cands []string
	for _, o := range spec.Options {
		cands = append(cands, o.Name)
	}
	hint := ""
	if c := closest(name, cands); c != "" {
		hint = fmt.Sprintf("; did you mean %q?", c)
	}
	if where := validIn(global, name, nil, map[*ScopeSpec]bool{}); len(where) > 0 {
		// For example "enabled", which modules take, in a listener, which
		// takes "enable": say both.
		return fmt.Sprintf("option %q is not valid in %s%s (it is valid in: %s)", name, scopeWhere(s), hint, strings.Join(where, ", "))
	}
	return fmt.Sprintf("unknown option %q in %s%s", name, scopeWhere(s), hint)
}

func unknownScope(kind string, s *Scope, spec, global *ScopeSpec) string {
	var cands []string
	for _, c := range spec.Scopes {
		cands = append(cands, c.Kind)
	}
	if spec == global {
		cands = append(cands, momentumScopes...)
	}
	for _, o := range spec.Options {
		cands = append(cands, o.Name)
	}
	msg := fmt.Sprintf("unknown scope %q in %s", kind, scopeWhere(s))
	if c := closest(kind, cands); c != "" {
		msg += fmt.Sprintf("; did you mean %q?", c)
	}
	return msg
}

// validIn lists the scope kinds under spec whose tables have the option.
func validIn(spec *ScopeSpec, name string, out []string, seen map[*ScopeSpec]bool) []string {
	if seen[spec] {
		return out
	}
	seen[spec] = true
	if spec.Option(name) != nil {
		k := spec.Kind
		if k == "global" {
			k = "the global scope"
		}
		if !contains(out, k) {
			out = append(out, k)
		}
	}
	for _, c := range spec.Scopes {
		out = validIn(c, name, out, seen)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// closest returns the candidate nearest to name, or "" when none is near
// enough to be a plausible misspelling.
func closest(name string, cands []string) string {
	name = strings.ToLower(name)
	best, bestD := "", 1<<30
	sort.Strings(cands)
	for _, c := range cands {
		d := editDistance(name, strings.ToLower(c))
		if d < bestD {
			best, bestD = c, d
		}
	}
	limit := 2
	if len(name) > 12 {
		limit = 3
	}
	if bestD == 0 || bestD > limit {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 20 // too long to be a misspelling worth the work
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
