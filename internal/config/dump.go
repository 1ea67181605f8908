package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// String returns [Config.Dump].
func (c *Config) String() string { return c.Dump() }

// Dump writes the effective configuration in the configuration language:
// every option of every scope Impetus implements with its resolved value,
// defaults included, and options without a value as comments. Includes
// appear spliced in. Listen and Peer scopes show only what they set, since
// everything else falls back to the listener, which shows everything.
// Scopes Impetus ignores are written back as they were. The result parses
// to the same configuration.
func (c *Config) Dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Effective configuration of %s, defaults included.\n", oneLine(c.File))
	w := dumper{b: &b, global: c.Root}
	w.body(c.Root, 0, modeDefaults)
	return b.String()
}

// oneLine keeps a file name from breaking out of its comment line.
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s)
}

type dumpMode int

const (
	modeDefaults dumpMode = iota // print every option, with defaults
	modeListener                 // defaults, with the global scope as fallback
	modeSetOnly                  // print only the options the scope sets
	modeRaw                      // a scope no table describes
)

type dumper struct {
	b      *strings.Builder
	global *Scope
}

func (w *dumper) line(depth int, format string, args ...any) {
	w.b.WriteString(strings.Repeat("  ", depth))
	fmt.Fprintf(w.b, format, args...)
	w.b.WriteByte('\n')
}

func (w *dumper) body(s *Scope, depth int, mode dumpMode) {
	if mode == modeRaw || s.spec == nil {
		for _, o := range s.Options {
			w.line(depth, "%s = %s", o.Name, formatValue(o.Value, nil))
		}
	} else {
		for i := range s.spec.Options {
			os := &s.spec.Options[i]
			var v *Value
			if o := s.Option(os.Name); o != nil {
				v = &o.Value
			} else if mode == modeListener && w.global.spec != nil && w.global.spec.Option(os.Name) != nil {
				if g := w.global.Option(os.Name); g != nil {
					v = &g.Value
				}
			}
			if v == nil && mode != modeSetOnly && os.Default != "" {
				v = &Value{Kind: StringValue, Str: os.Default}
			}
			switch {
			case v != nil:
				w.line(depth, "%s = %s", os.Name, formatValue(*v, os))
			case mode != modeSetOnly && os.Status == Implemented:
				// Unset Momentum options Impetus ignores would only be noise.
				w.line(depth, "# %s is not set", os.Name)
			}
		}
	}
	for _, c := range s.Children {
		head := c.Kind
		if c.HasName {
			head += " " + quote(c.Name)
		}
		cm := modeDefaults
		switch {
		case mode == modeRaw || c.spec == nil:
			cm = modeRaw
		case mode == modeListener || mode == modeSetOnly:
			cm = modeSetOnly
		case c.spec.Kind == "xmpp_listener":
			cm = modeListener
		}
		inner := dumper{b: &strings.Builder{}, global: w.global}
		inner.body(c, depth+1, cm)
		if inner.b.Len() == 0 {
			w.line(depth, "%s {}", head)
			continue
		}
		w.line(depth, "%s {", head)
		w.b.WriteString(inner.b.String())
		w.line(depth, "}")
	}
}

// formatValue writes v canonically for its option type: numbers and
// booleans normalised, everything else quoted.
func formatValue(v Value, os *OptionSpec) string {
	switch v.Kind {
	case ArrayValue:
		parts := []string{"("}
		for _, it := range v.Items {
			parts = append(parts, formatValue(it, nil))
		}
		return strings.Join(append(parts, ")"), " ")
	case DictValue:
		parts := []string{"["}
		for _, e := range v.Entries {
			k := e.Key
			if !isName(k) {
				k = quote(k)
			}
			parts = append(parts, k+" = "+formatValue(e.Value, nil))
		}
		return strings.Join(append(parts, "]"), " ")
	}
	if os != nil {
		switch os.Type {
		case TypeBool:
			if b, ok := parseBool(v.Str); ok {
				return strconv.FormatBool(b)
			}
		case TypeInt:
			if n, ok := parseUint(v.Str); ok {
				return strconv.FormatInt(n, 10)
			}
		case TypeSize:
			if n, ok := parseSize(v.Str); ok {
				return strconv.FormatInt(n, 10)
			}
		case TypeDuration:
			if d, ok := parseSeconds(v.Str); ok {
				return strconv.FormatInt(int64(d/time.Second), 10)
			}
		case TypeMode:
			if m, ok := parseMode(v.Str); ok {
				return fmt.Sprintf("%04o", uint32(m))
			}
		case TypeArray:
			return "( " + quote(v.Str) + " )"
		}
	}
	return quote(v.Str)
}

// quote writes s as a quoted string, escaping the two characters the lexer
// treats as escapes.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
