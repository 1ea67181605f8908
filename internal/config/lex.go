package config

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

type tokKind int

const (
	tokEOF    tokKind = iota
	tokWord           // a bare value or name
	tokString         // a quoted value
	tokLBrace
	tokRBrace
	tokLBracket
	tokRBracket
	tokLParen
	tokRParen
	tokEq
)

type token struct {
	kind tokKind
	text string // the word, or the string with escapes resolved
	pos  Pos
}

// describe names a token in messages the way the user wrote it.
func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of file"
	case tokWord:
		return strconv.Quote(t.text)
	case tokString:
		return "quoted string " + strconv.Quote(t.text)
	}
	return `"` + t.text + `"`
}

// lexer splits a file into tokens. Comments start with # anywhere outside a
// quoted string and run to the end of the line, or are C-style /* */ blocks,
// which the manual says do not nest.
type lexer struct {
	src  []byte
	off  int
	line int
	col  int
	file string
}

func newLexer(file string, src []byte) *lexer {
	return &lexer{src: src, line: 1, col: 1, file: file}
}

func (l *lexer) pos() Pos { return Pos{File: l.file, Line: l.line, Col: l.col} }

// peekByte returns the byte at off+n, or 0 past the end.
func (l *lexer) peekByte(n int) byte {
	if l.off+n < len(l.src) {
		return l.src[l.off+n]
	}
	return 0
}

// advance moves past one character, keeping line and column.
func (l *lexer) advance() rune {
	r, size := utf8.DecodeRune(l.src[l.off:])
	l.off += size
	if r == '\n' {
		l.line++
		l.col = 1
	} else {
		l.col++
	}
	return r
}

func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' || b == '\v'
}

// isDelim reports whether b ends a bare word. The manual lists these
// characters as the ones that need quoting; '/' is deliberately missing
// because the manual's own examples use bare paths and URIs.
func isDelim(b byte) bool {
	switch b {
	case '{', '}', '[', ']', '(', ')', '=', '"', '\'', '#':
		return true
	}
	return isSpace(b)
}

// skip passes over whitespace and comments.
func (l *lexer) skip() error {
	for l.off < len(l.src) {
		b := l.src[l.off]
		switch {
		case isSpace(b):
			l.advance()
		case b == '#':
			for l.off < len(l.src) && l.src[l.off] != '\n' {
				l.advance()
			}
		case b == '/' && l.peekByte(1) == '*':
			start := l.pos()
			l.advance()
			l.advance()
			for {
				if l.off >= len(l.src) {
					return errorf(start, `expected "*/" to close the comment started here, found end of file`)
				}
				if l.src[l.off] == '*' && l.peekByte(1) == '/' {
					l.advance()
					l.advance()
					break
				}
				l.advance()
			}
		default:
			return nil
		}
	}
	return nil
}

// punct returns the token kind of a one-character token, or tokEOF.
func punct(b byte) tokKind {
	switch b {
	case '{':
		return tokLBrace
	case '}':
		return tokRBrace
	case '[':
		return tokLBracket
	case ']':
		return tokRBracket
	case '(':
		return tokLParen
	case ')':
		return tokRParen
	case '=':
		return tokEq
	}
	return tokEOF
}

func (l *lexer) next() (token, error) {
	if err := l.skip(); err != nil {
		return token{}, err
	}
	p := l.pos()
	if l.off >= len(l.src) {
		return token{kind: tokEOF, pos: p}, nil
	}
	b := l.src[l.off]
	if k := punct(b); k != tokEOF {
		l.advance()
		return token{kind: k, text: string(b), pos: p}, nil
	}
	switch b {
	case '"':
		return l.quoted(p)
	case '\'':
		return token{}, errorf(p, `unexpected "'": quote values with double quotes`)
	}
	start := l.off
	for l.off < len(l.src) && !isDelim(l.src[l.off]) {
		l.advance()
	}
	return token{kind: tokWord, text: string(l.src[start:l.off]), pos: p}, nil
}

// quoted reads a double-quoted string. The manual documents no escapes, but
// its C API notes write \" inside a default value, so \" and \\ are escapes;
// a backslash before any other character is kept as written, which leaves
// regular expressions such as "\d+" intact.
func (l *lexer) quoted(p Pos) (token, error) {
	l.advance() // opening quote
	var sb strings.Builder
	for {
		if l.off >= len(l.src) {
			return token{}, errorf(p, `expected a closing '"' for the string started here, found end of file`)
		}
		b := l.src[l.off]
		switch {
		case b == '"':
			l.advance()
			return token{kind: tokString, text: sb.String(), pos: p}, nil
		case b == '\\' && (l.peekByte(1) == '"' || l.peekByte(1) == '\\'):
			l.advance()
			sb.WriteByte(l.src[l.off])
			l.advance()
		default:
			start := l.off
			l.advance()
			sb.Write(l.src[start:l.off])
		}
	}
}
