package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Limits that keep hostile or broken input from exhausting memory or stack.
const (
	maxDepth        = 64       // nesting of scopes, dictionaries and arrays
	maxIncludeDepth = 32       // nesting of includes
	maxFiles        = 1000     // files read for one configuration
	maxFileSize     = 16 << 20 // bytes in one file
)

// fileSystem is what includes read. Tests of the parser alone (the fuzz
// target) pass nil so that arbitrary input cannot make them read the disk.
type fileSystem interface {
	Stat(name string) (fs.FileInfo, error)
	ReadFile(name string) ([]byte, error)
	ReadDir(name string) ([]fs.DirEntry, error)
}

type osFS struct{}

func (osFS) Stat(name string) (fs.FileInfo, error)      { return os.Stat(name) }
func (osFS) ReadFile(name string) ([]byte, error)       { return os.ReadFile(name) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error) { return os.ReadDir(name) }

// loader holds the state shared by a file and everything it includes.
type loader struct {
	fsys  fileSystem
	stack []string // absolute paths of the files being parsed, outermost first
	files int
}

// parseTree parses src, named name, into a global scope, reading included
// files through l.
func (l *loader) parseTree(name string, src []byte) (*Scope, error) {
	root := &Scope{Kind: "global", Pos: Pos{File: name, Line: 1, Col: 1}}
	if err := l.parseFile(root, name, src, 0); err != nil {
		return nil, err
	}
	return root, nil
}

func (l *loader) parseFile(into *Scope, name string, src []byte, depth int) error {
	l.files++
	if l.files > maxFiles {
		return errorf(Pos{File: name, Line: 1, Col: 1}, "too many configuration files (more than %d)", maxFiles)
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		abs = filepath.Clean(name)
	}
	l.stack = append(l.stack, abs)
	defer func() { l.stack = l.stack[:len(l.stack)-1] }()
	p := &parser{lex: newLexer(name, src), ld: l, depth: depth}
	return p.body(into, Pos{}, false, 0)
}

type parser struct {
	lex    *lexer
	ld     *loader
	depth  int // include depth of this file
	peeked *token
}

func (p *parser) next() (token, error) {
	if p.peeked != nil {
		t := *p.peeked
		p.peeked = nil
		return t, nil
	}
	return p.lex.next()
}

func (p *parser) unread(t token) { p.peeked = &t }

// isName reports whether s can name an option or scope kind: the C API says
// only letters, digits and underscore are valid there.
func isName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// body parses statements into s until the closing brace (when closed) or the
// end of the file.
func (p *parser) body(s *Scope, open Pos, closed bool, nest int) error {
	for {
		t, err := p.next()
		if err != nil {
			return err
		}
		switch t.kind {
		case tokEOF:
			if closed {
				return errorf(t.pos, `expected "}" to close %s opened at %s, found end of file`, s.label(), open)
			}
			return nil
		case tokRBrace:
			if closed {
				return nil
			}
			return errorf(t.pos, `unexpected "}" with no scope open`)
		case tokWord:
			if err := p.statement(s, t, nest); err != nil {
				return err
			}
		default:
			return errorf(t.pos, "expected an option or scope name, found %s", t.describe())
		}
	}
}

// statement parses one statement that starts with the name token.
func (p *parser) statement(s *Scope, name token, nest int) error {
	if !isName(name.text) {
		return errorf(name.pos, `expected an option or scope name (letters, digits and "_"), found %s`, name.describe())
	}
	if strings.EqualFold(name.text, "include") || strings.EqualFold(name.text, "readonly_include") {
		return p.include(s, name)
	}
	t, err := p.next()
	if err != nil {
		return err
	}
	switch t.kind {
	case tokEq:
		v, err := p.next()
		if err != nil {
			return err
		}
		if v.kind == tokLBrace {
			// One manual example writes "Esmtp_Listener = {"; accept it.
			return p.scope(s, name, token{}, false, nest)
		}
		val, err := p.value(v, name, nest)
		if err != nil {
			return err
		}
		s.Options = append(s.Options, &Option{Name: name.text, Value: val, Pos: name.pos})
		return nil
	case tokLBracket:
		// The manual once writes "AuthDigestMD5Parameters [" without "=".
		val, err := p.value(t, name, nest)
		if err != nil {
			return err
		}
		s.Options = append(s.Options, &Option{Name: name.text, Value: val, Pos: name.pos})
		return nil
	case tokLBrace:
		return p.scope(s, name, token{}, false, nest)
	case tokWord, tokString:
		brace, err := p.next()
		if err != nil {
			return err
		}
		if brace.kind == tokLBrace {
			return p.scope(s, name, t, true, nest)
		}
		if t.kind == tokString {
			return errorf(brace.pos, `expected "{" after scope name %q, found %s`, t.text, brace.describe())
		}
		return errorf(t.pos, `expected "=" or "{" after option name %q, found %s`, name.text, t.describe())
	}
	return errorf(t.pos, `expected "=" or "{" after option name %q, found %s`, name.text, t.describe())
}

// scope parses the body of a scope whose opening brace has been read.
func (p *parser) scope(parent *Scope, kind, name token, named bool, nest int) error {
	if nest+1 > maxDepth {
		return errorf(kind.pos, "scopes nested more than %d deep", maxDepth)
	}
	s := &Scope{Kind: kind.text, Name: name.text, HasName: named, Pos: kind.pos}
	parent.Children = append(parent.Children, s)
	return p.body(s, kind.pos, true, nest+1)
}

// value parses the value that starts with token t, for option name.
func (p *parser) value(t, name token, nest int) (Value, error) {
	if nest+1 > maxDepth {
		return Value{}, errorf(t.pos, "values nested more than %d deep", maxDepth)
	}
	switch t.kind {
	case tokWord, tokString:
		return Value{Kind: StringValue, Str: t.text, Pos: t.pos}, nil
	case tokLBracket:
		v := Value{Kind: DictValue, Pos: t.pos, Entries: []DictEntry{}}
		for {
			k, err := p.next()
			if err != nil {
				return Value{}, err
			}
			switch k.kind {
			case tokRBracket:
				return v, nil
			case tokWord, tokString:
			case tokEOF:
				return Value{}, errorf(k.pos, `expected "]" to close the dictionary opened at %s, found end of file`, t.pos)
			default:
				return Value{}, errorf(k.pos, `expected a key or "]" in the dictionary of %q, found %s`, name.text, k.describe())
			}
			eq, err := p.next()
			if err != nil {
				return Value{}, err
			}
			if eq.kind != tokEq {
				return Value{}, errorf(eq.pos, `expected "=" after dictionary key %q, found %s`, k.text, eq.describe())
			}
			vt, err := p.next()
			if err != nil {
				return Value{}, err
			}
			ev, err := p.value(vt, k, nest+1)
			if err != nil {
				return Value{}, err
			}
			v.Entries = append(v.Entries, DictEntry{Key: k.text, Value: ev, Pos: k.pos})
		}
	case tokLParen:
		v := Value{Kind: ArrayValue, Pos: t.pos, Items: []Value{}}
		for {
			it, err := p.next()
			if err != nil {
				return Value{}, err
			}
			switch it.kind {
			case tokRParen:
				return v, nil
			case tokWord, tokString:
				v.Items = append(v.Items, Value{Kind: StringValue, Str: it.text, Pos: it.pos})
			case tokEOF:
				return Value{}, errorf(it.pos, `expected ")" to close the array opened at %s, found end of file`, t.pos)
			default:
				return Value{}, errorf(it.pos, `expected a value or ")" in the array of %q, found %s`, name.text, it.describe())
			}
		}
	}
	return Value{}, errorf(t.pos, "expected a value for %q, found %s", name.text, t.describe())
}

// include splices the named file, or every file of the named directory, into
// s. Relative paths are taken from the including file's directory, which the
// manual says is searched first; Impetus has no default search path.
func (p *parser) include(s *Scope, dir token) error {
	t, err := p.next()
	if err != nil {
		return err
	}
	if t.kind != tokWord && t.kind != tokString {
		return errorf(t.pos, "expected a path after %s, found %s", dir.text, t.describe())
	}
	if p.ld.fsys == nil {
		return errorf(dir.pos, "%s is not available here", dir.text)
	}
	if p.depth+1 > maxIncludeDepth {
		return errorf(dir.pos, "includes nested more than %d deep", maxIncludeDepth)
	}
	path := t.text
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(p.lex.file), path)
	}
	fi, err := p.ld.fsys.Stat(path)
	if err != nil {
		return errorf(t.pos, "%s %q: %v", dir.text, t.text, unwrapPathError(err))
	}
	if !fi.IsDir() {
		return p.includeFile(s, dir, t, path)
	}
	// The manual: files in lexical order, hidden files skipped, no recursion.
	entries, err := p.ld.fsys.ReadDir(path)
	if err != nil {
		return errorf(t.pos, "%s %q: %v", dir.text, t.text, unwrapPathError(err))
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
			continue
		}
		if err := p.includeFile(s, dir, t, filepath.Join(path, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) includeFile(s *Scope, dir, t token, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = filepath.Clean(path)
	}
	for _, f := range p.ld.stack {
		if f == abs {
			return errorf(t.pos, "%s %q: include cycle: %s", dir.text, t.text, strings.Join(append(append([]string{}, p.ld.stack...), abs), " -> "))
		}
	}
	fi, err := p.ld.fsys.Stat(path)
	if err != nil {
		return errorf(t.pos, "%s %q: %v", dir.text, t.text, unwrapPathError(err))
	}
	// Only regular files: a device such as /dev/zero would never end.
	if !fi.Mode().IsRegular() {
		return errorf(t.pos, "%s %q: %s is not a regular file", dir.text, t.text, path)
	}
	if fi.Size() > maxFileSize {
		return errorf(t.pos, "%s %q: %s is larger than %d bytes", dir.text, t.text, path, maxFileSize)
	}
	src, err := p.ld.fsys.ReadFile(path)
	if err != nil {
		return errorf(t.pos, "%s %q: %v", dir.text, t.text, unwrapPathError(err))
	}
	return p.ld.parseFile(s, path, src, p.depth+1)
}

// unwrapPathError drops the "open /path:" prefix the caller already shows.
func unwrapPathError(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}
