package config

import (
	"fmt"
	"io/fs"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// parseBool accepts the spellings Momentum's C API lists for booleans.
func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "true", "yes", "on":
		return true, true
	case "false", "no", "off":
		return false, true
	}
	return false, false
}

// parseUint parses a whole number ≥ 0 in base 10.
func parseUint(s string) (int64, bool) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// parseMode parses permissions in octal. A leading 0 is customary (0644)
// but not required, since the value is always octal.
func parseMode(s string) (fs.FileMode, bool) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, false
	}
	return fs.FileMode(n), true
}

// parseSize parses a byte count with an optional k, m or g suffix.
func parseSize(s string) (int64, bool) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult != 1 {
			s = s[:n-1]
		}
	}
	n, ok := parseUint(s)
	if !ok || n > math.MaxInt64/mult {
		return 0, false
	}
	return n * mult, true
}

// parseSeconds parses a duration written as whole seconds.
func parseSeconds(s string) (time.Duration, bool) {
	n, ok := parseUint(s)
	if !ok || n > int64(math.MaxInt64/time.Second) {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// checkValue returns why v is not a valid value for the option, or "".
func checkValue(o *OptionSpec, v Value) string {
	switch o.Type {
	case TypeDict:
		if v.Kind != DictValue {
			return "expected a dictionary [ key = value … ], found " + describeValue(v)
		}
		return ""
	case TypeArray:
		if v.Kind == DictValue {
			return "expected an array ( value … ), found " + describeValue(v)
		}
		return ""
	}
	if v.Kind != StringValue {
		return "expected " + article(o.Type) + ", found " + describeValue(v)
	}
	ok := true
	switch o.Type {
	case TypeString:
		if len(o.Values) > 0 {
			ok = false
			for _, a := range o.Values {
				ok = ok || strings.EqualFold(a, v.Str)
			}
			if !ok {
				return fmt.Sprintf("expected one of %s, found %q", strings.Join(o.Values, ", "), v.Str)
			}
		}
	case TypeInt:
		_, ok = parseUint(v.Str)
	case TypeBool:
		_, ok = parseBool(v.Str)
	case TypeMode:
		_, ok = parseMode(v.Str)
	case TypeSize:
		_, ok = parseSize(v.Str)
	case TypeDuration:
		_, ok = parseSeconds(v.Str)
	}
	if !ok {
		return fmt.Sprintf("expected %s, found %q", article(o.Type), v.Str)
	}
	return ""
}

func article(t Type) string {
	switch t {
	case TypeInt:
		return "a whole number"
	case TypeBool:
		return "a boolean (true, false, yes, no, on or off)"
	case TypeMode:
		return "an octal file mode such as 0644"
	case TypeSize:
		return "a size in bytes (optionally with k, m or g)"
	case TypeDuration:
		return "a number of seconds"
	case TypeDict:
		return "a dictionary"
	case TypeArray:
		return "an array"
	}
	return "a value"
}

func describeValue(v Value) string {
	switch v.Kind {
	case ArrayValue:
		return "an array"
	case DictValue:
		return "a dictionary"
	}
	return strconv.Quote(v.Str)
}

// Unmarshaler is implemented by types that decode themselves from an option
// value, such as [AuthParams]. [Scope.Decode] calls it through a pointer.
type Unmarshaler interface {
	UnmarshalConfig(v Value) error
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	modeType        = reflect.TypeFor[fs.FileMode]()
	unmarshalerType = reflect.TypeFor[Unmarshaler]()
)

// Decode fills the fields of the struct dst points to from the scope's
// options. A field is bound to an option by the tag conf:"option_name".
// Options that are not set take the default from the scope's registered
// table; options with neither a value nor a default leave the field as it
// was, so callers may preset their own. Field types: string, bool, the
// integer types, time.Duration (seconds), fs.FileMode (octal), []string,
// map[string]string (keys lower-cased), pointers to these, and any type
// whose pointer implements [Unmarshaler]. Errors name the file, line and
// option.
func (s *Scope) Decode(dst any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: Decode needs a pointer to a struct, got %T", dst)
	}
	rv = rv.Elem()
	rt := rv.Type()
	var d diag
	for i := 0; i < rt.NumField(); i++ {
		name, ok := rt.Field(i).Tag.Lookup("conf")
		if !ok || name == "" || name == "-" {
			continue
		}
		var spec *OptionSpec
		if s.spec != nil {
			spec = s.spec.Option(name)
		}
		v, set := Value{}, false
		if o := s.Option(name); o != nil {
			v, set = o.Value, true
		} else if spec != nil && spec.Default != "" {
			v, set = Value{Kind: StringValue, Str: spec.Default, Pos: s.Pos}, true
		}
		if !set {
			continue
		}
		if err := decodeField(rv.Field(i), spec, v); err != nil {
			if e, ok := err.(*Error); ok {
				d.add(e)
			} else {
				d.errorf(v.Pos, "option %q: %v", name, err)
			}
		}
	}
	return d.err()
}

// decodeField stores v in f. The option's table row, when there is one,
// decides how the text is read; otherwise the field's Go type does.
func decodeField(f reflect.Value, spec *OptionSpec, v Value) error {
	if f.CanAddr() && f.Addr().Type().Implements(unmarshalerType) {
		return f.Addr().Interface().(Unmarshaler).UnmarshalConfig(v)
	}
	if f.Kind() == reflect.Pointer {
		p := reflect.New(f.Type().Elem())
		if err := decodeField(p.Elem(), spec, v); err != nil {
			return err
		}
		f.Set(p)
		return nil
	}
	t := inferType(f.Type())
	if spec != nil {
		t = spec.Type
		if msg := checkValue(spec, v); msg != "" {
			return fmt.Errorf("%s", msg)
		}
	} else if msg := checkValue(&OptionSpec{Type: t}, v); msg != "" {
		return fmt.Errorf("%s", msg)
	}
	switch t {
	case TypeArray:
		if f.Type() != reflect.TypeFor[[]string]() {
			break
		}
		items := v.Items
		if v.Kind == StringValue {
			items = []Value{v}
		}
		out := make([]string, len(items))
		for i, it := range items {
			out[i] = it.Str
		}
		f.Set(reflect.ValueOf(out))
		return nil
	case TypeDict:
		if f.Type() != reflect.TypeFor[map[string]string]() {
			break
		}
		out := make(map[string]string, len(v.Entries))
		for _, e := range v.Entries {
			if e.Value.Kind != StringValue {
				return fmt.Errorf("key %q: expected a plain value, found %s", e.Key, describeValue(e.Value))
			}
			out[strings.ToLower(e.Key)] = e.Value.Str
		}
		f.Set(reflect.ValueOf(out))
		return nil
	case TypeBool:
		if f.Kind() != reflect.Bool {
			break
		}
		b, _ := parseBool(v.Str)
		f.SetBool(b)
		return nil
	case TypeString:
		if f.Kind() != reflect.String {
			break
		}
		f.SetString(v.Str)
		return nil
	case TypeInt, TypeSize, TypeMode, TypeDuration:
		var n int64
		switch t {
		case TypeInt:
			n, _ = parseUint(v.Str)
		case TypeSize:
			n, _ = parseSize(v.Str)
		case TypeMode:
			m, _ := parseMode(v.Str)
			n = int64(m)
		case TypeDuration:
			d, _ := parseSeconds(v.Str)
			n = int64(d)
			if f.Type() != durationType {
				n = int64(d / time.Second)
			}
		}
		switch f.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			if f.OverflowInt(n) {
				return fmt.Errorf("%q is too large", v.Str)
			}
			f.SetInt(n)
			return nil
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			if f.OverflowUint(uint64(n)) {
				return fmt.Errorf("%q is too large", v.Str)
			}
			f.SetUint(uint64(n))
			return nil
		}
	}
	return fmt.Errorf("config: cannot decode %s into a field of type %s", t, f.Type())
}

func inferType(t reflect.Type) Type {
	switch {
	case t == durationType:
		return TypeDuration
	case t == modeType:
		return TypeMode
	case t.Kind() == reflect.Bool:
		return TypeBool
	case t.Kind() == reflect.Slice:
		return TypeArray
	case t.Kind() == reflect.Map:
		return TypeDict
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uintptr:
		return TypeInt
	}
	return TypeString
}
