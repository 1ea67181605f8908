package scriptlet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"impetus/internal/config"
)

// Defaults of the scriptlet scope's Impetus options.
const (
	DefaultScriptPath      = "lua"
	DefaultMaxInstructions = 1000000
	DefaultMaxCallMillis   = 100
	DefaultMaxMemory       = 32 << 20
	DefaultMaxCallDepth    = 200
	DefaultMaxStack        = 65536
)

// builtinSources are Momentum's own scripts. Impetus implements what they did in Go, so a
// configuration that names them loads with a warning instead of failing.
var builtinSources = map[string]string{
	"msys/xmpp/presence": "rosters and presence are built into Impetus (the roster and presence modules); the script is not needed",
}

func init() {
	config.RegisterScope(&config.ScopeSpec{
		Kind:      "scriptlet",
		Name:      config.NameOptional,
		Singleton: true,
		Doc:       "Lua scripts hooked into stanza processing",
		Options: append(config.ModuleOptions(),
			config.OptionSpec{Name: "script_path", Type: config.TypeArray, Default: DefaultScriptPath, Doc: "directories searched for script sources, relative to the configuration file's directory (Impetus)"},
			config.OptionSpec{Name: "pool_size", Type: config.TypeInt, Default: "0", Doc: "Lua states running scripts in parallel; 0 means one per CPU (Impetus)"},
			config.OptionSpec{Name: "max_instructions", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxInstructions), Doc: "Lua VM instructions one handler call may run (Impetus)"},
			config.OptionSpec{Name: "max_call_ms", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxCallMillis), Doc: "milliseconds one handler call may run (Impetus)"},
			config.OptionSpec{Name: "max_memory", Type: config.TypeSize, Default: "32m", Doc: "bytes one handler call may allocate (Impetus)"},
			config.OptionSpec{Name: "max_call_depth", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxCallDepth), Doc: "nested Lua calls (Impetus)"},
			config.OptionSpec{Name: "max_stack", Type: config.TypeInt, Default: fmt.Sprint(DefaultMaxStack), Doc: "Lua data stack slots of one state (Impetus)"},
		),
		Scopes: []*config.ScopeSpec{{
			Kind: "script",
			Name: config.NameRequired,
			Doc:  "one Lua script",
			Options: []config.OptionSpec{
				{Name: "source", Type: config.TypeString, Doc: "the script's module path, with . or / separating directories"},
			},
		}},
	})
}

// Config is the scriptlet scope, decoded.
type Config struct {
	Enabled         bool     `conf:"enabled"`
	ScriptPath      []string `conf:"script_path"`
	PoolSize        int      `conf:"pool_size"`
	MaxInstructions int64    `conf:"max_instructions"`
	MaxCallMillis   int64    `conf:"max_call_ms"`
	MaxMemory       int64    `conf:"max_memory"`
	MaxCallDepth    int      `conf:"max_call_depth"`
	MaxStack        int      `conf:"max_stack"`
	// Scripts are the script scopes in file order.
	Scripts []Script
}

// Script is one script scope.
type Script struct {
	Name   string
	Source string `conf:"source"`
	// Path is the file the source resolved to; empty for a built-in Momentum script.
	Path string
	// Builtin, when set, says why the script is not loaded.
	Builtin string
}

// DefaultConfig returns the limits a scope gets when it sets none, with no scripts.
func DefaultConfig() Config {
	return Config{
		Enabled:         true,
		ScriptPath:      []string{DefaultScriptPath},
		MaxInstructions: DefaultMaxInstructions,
		MaxCallMillis:   DefaultMaxCallMillis,
		MaxMemory:       DefaultMaxMemory,
		MaxCallDepth:    DefaultMaxCallDepth,
		MaxStack:        DefaultMaxStack,
	}
}

// Decode reads the scriptlet scope of cfg and resolves each script's source on the search path.
// It returns nil and no error when the configuration has no scriptlet scope.
func Decode(cfg *config.Config) (*Config, error) {
	if cfg == nil || cfg.Root == nil {
		return nil, nil
	}
	secs := cfg.Sections("scriptlet")
	if len(secs) == 0 {
		return nil, nil
	}
	sec := secs[0]
	out := DefaultConfig()
	if err := sec.Decode(&out); err != nil {
		return nil, err
	}
	base := "."
	if cfg.File != "" {
		base = filepath.Dir(cfg.File)
	}
	for i, p := range out.ScriptPath {
		if !filepath.IsAbs(p) {
			out.ScriptPath[i] = filepath.Join(base, p)
		}
	}
	for _, sc := range sec.Scopes("script") {
		s := Script{Name: sc.Name}
		if err := sc.Decode(&s); err != nil {
			return nil, err
		}
		if s.Source == "" {
			return nil, fmt.Errorf("%s: script %q has no source", sc.Pos, sc.Name)
		}
		if err := out.resolve(&s); err != nil {
			return nil, fmt.Errorf("%s: script %q: %w", sc.Pos, sc.Name, err)
		}
		out.Scripts = append(out.Scripts, s)
	}
	return &out, nil
}

// modulePath turns a source such as msys.xmpp.presence or policy/keywords into a relative
// slash-separated path without the .lua suffix, refusing anything that could leave the
// search path.
func modulePath(source string) (string, error) {
	s := strings.TrimSuffix(source, ".lua")
	s = strings.ReplaceAll(s, ".", "/")
	if s == "" || strings.HasPrefix(s, "/") || strings.Contains(s, `\`) {
		return "", fmt.Errorf("source %q is not a module path such as policy.keywords or policy/keywords", source)
	}
	for _, part := range strings.Split(s, "/") {
		if part == "" {
			return "", fmt.Errorf("source %q has an empty path element", source)
		}
	}
	return s, nil
}

// resolve finds the file of s on the search path.
func (c *Config) resolve(s *Script) error {
	rel, err := modulePath(s.Source)
	if err != nil {
		return err
	}
	if why, ok := builtinSources[rel]; ok {
		s.Builtin = why
		return nil
	}
	for _, dir := range c.ScriptPath {
		p := filepath.Join(dir, filepath.FromSlash(rel)+".lua")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			s.Path = p
			return nil
		}
	}
	return fmt.Errorf("source %q: no %s.lua in script_path (%s)", s.Source, rel, strings.Join(c.ScriptPath, ", "))
}
