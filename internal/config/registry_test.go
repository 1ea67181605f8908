package config

import (
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"
)

func init() {
	// A feature package's section, registered the way its init would.
	RegisterScope(&ScopeSpec{
		Kind: "test_module",
		Name: NameOptional,
		Options: []OptionSpec{
			{Name: "greeting", Type: TypeString, Default: "hello"},
			{Name: "count", Type: TypeInt, Default: "3"},
			{Name: "verbose", Type: TypeBool},
			{Name: "timeout", Type: TypeDuration, Default: "30"},
			{Name: "mode", Type: TypeMode, Default: "0640"},
			{Name: "limit", Type: TypeSize, Default: "1k"},
			{Name: "hosts", Type: TypeArray},
			{Name: "params", Type: TypeDict},
			{Name: "level", Type: TypeString, Values: []string{"low", "high"}},
			{Name: "legacy", Type: TypeBool, Status: Accepted},
		},
		Scopes: []*ScopeSpec{{Kind: "inner", Name: NameRequired, Options: []OptionSpec{{Name: "x", Type: TypeInt, Default: "7"}}}},
	})
}

type testModule struct {
	Greeting string            `conf:"greeting"`
	Count    int               `conf:"count"`
	Verbose  bool              `conf:"verbose"`
	Timeout  time.Duration     `conf:"timeout"`
	Mode     fs.FileMode       `conf:"mode"`
	Limit    int64             `conf:"limit"`
	Hosts    []string          `conf:"hosts"`
	Params   map[string]string `conf:"params"`
	Level    *string           `conf:"level"`
	Level2   DebugLevel        // untagged fields are left alone
}

func TestRegisteredScope(t *testing.T) {
	c, w := mustParse(t, `test_module "a" {
  Verbose = on
  hosts = ( a.example "b example" )
  Params = [ Key = v ]
  count = 9
  level = HIGH
  legacy = true
  inner "i" {}
}`)
	if len(w) != 1 || !strings.Contains(w[0].String(), `t.conf:7:3: option "legacy"`) {
		t.Errorf("warnings %v", w)
	}
	secs := c.Sections("TEST_MODULE")
	if len(secs) != 1 {
		t.Fatalf("%d sections", len(secs))
	}
	var m testModule
	if err := secs[0].Decode(&m); err != nil {
		t.Fatal(err)
	}
	high := "HIGH"
	want := testModule{Greeting: "hello", Count: 9, Verbose: true, Timeout: 30 * time.Second, Mode: 0o640, Limit: 1024,
		Hosts: []string{"a.example", "b example"}, Params: map[string]string{"key": "v"}, Level: &high}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
	var in struct {
		X int `conf:"x"`
	}
	if err := secs[0].Scopes("inner")[0].Decode(&in); err != nil || in.X != 7 {
		t.Errorf("inner: %v %+v", err, in)
	}
	if spec, ok := LookupScope("test_module"); !ok || spec.Option("COUNT") == nil {
		t.Error("LookupScope")
	}
	if secs[0].Spec() == nil || secs[0].Spec().Kind != "test_module" {
		t.Error("Spec")
	}
	roundTrip(t, c)
}

func TestRegisteredScopeErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"unknown option", `test_module { greting = x }`, `t.conf:1:15: unknown option "greting" in test_module; did you mean "greeting"?`},
		{"bad value", `test_module { count = x }`, `t.conf:1:23: option "count": expected a whole number, found "x"`},
		{"bad choice", `test_module { level = mid }`, `t.conf:1:23: option "level": expected one of low, high, found "mid"`},
		{"inner without name", `test_module { inner {} }`, `t.conf:1:15: scope "inner" needs a name; write inner "name" { … }`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse("t.conf", []byte(tt.src))
			if err == nil || err.Error() != tt.want {
				t.Errorf("got  %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	root, err := (&loader{}).parseTree("d.conf", []byte("s {\n  n = big\n  m = 99999999999\n  d = [ a = [ b = c ] ]\n}"))
	if err != nil {
		t.Fatal(err)
	}
	s := root.Children[0] // not checked against any table: types come from the fields
	var v struct {
		N int               `conf:"n"`
		M int8              `conf:"m"`
		D map[string]string `conf:"d"`
	}
	err = s.Decode(&v)
	want := "d.conf:2:7: option \"n\": expected a whole number, found \"big\"\n" +
		"d.conf:3:7: option \"m\": \"99999999999\" is too large\n" +
		"d.conf:4:7: option \"d\": key \"a\": expected a plain value, found a dictionary"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
	if err := s.Decode(v); err == nil || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("non-pointer: %v", err)
	}
}

func TestRegisterScopePanics(t *testing.T) {
	tests := []struct {
		name string
		spec *ScopeSpec
	}{
		{"nil", nil},
		{"bad kind", &ScopeSpec{Kind: "a-b"}},
		{"duplicate", &ScopeSpec{Kind: "test_module"}},
		{"builtin", &ScopeSpec{Kind: "XMPP"}},
		{"bad default", &ScopeSpec{Kind: "test_bad", Options: []OptionSpec{{Name: "n", Type: TypeInt, Default: "x"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			RegisterScope(tt.spec)
		})
	}
}

func TestSuggestions(t *testing.T) {
	tests := []struct{ name, want string }{
		{"idle_tme", "idle_time"},
		{"IDLE_TIME", ""}, // an exact match is not a misspelling
		{"tls_cert", ""},
		{"xyz", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := closest(tt.name, []string{"idle_time", "tls_certificate"}); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
