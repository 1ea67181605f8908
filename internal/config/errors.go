package config

import (
	"fmt"
	"strings"
)

// Pos is a position in a configuration file. Line and Col count from 1; Col
// counts characters, not bytes.
type Pos struct {
	File string
	Line int
	Col  int
}

// String formats the position as file:line:column, the form editors jump to.
func (p Pos) String() string {
	if p.File == "" {
		return fmt.Sprintf("%d:%d", p.Line, p.Col)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Error is a configuration error at a position in a file.
type Error struct {
	Pos Pos
	Msg string
}

// Error returns the message prefixed with its file:line:column.
func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// ErrorList holds several configuration errors, so one run of a check shows
// every mistake in a file rather than only the first.
type ErrorList []*Error

// Error returns the errors one per line.
func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap returns the individual errors for errors.As and errors.Is.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Warning is a message about a configuration that loads but may not do what
// its author expects, such as a Momentum option Impetus does not act on.
type Warning struct {
	Pos Pos
	Msg string
}

// String returns the message prefixed with its file:line:column.
func (w Warning) String() string { return w.Pos.String() + ": " + w.Msg }

func errorf(p Pos, format string, args ...any) *Error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// maxErrors bounds the list so a badly broken file does not flood the output.
const maxErrors = 50

// diag collects errors and warnings while a configuration is checked.
type diag struct {
	errs     ErrorList
	warnings []Warning
}

func (d *diag) errorf(p Pos, format string, args ...any) {
	if len(d.errs) < maxErrors {
		d.errs = append(d.errs, errorf(p, format, args...))
	}
}

func (d *diag) add(err error) {
	if err == nil {
		return
	}
	if e, ok := err.(*Error); ok {
		if len(d.errs) < maxErrors {
			d.errs = append(d.errs, e)
		}
		return
	}
	d.errorf(Pos{}, "%s", err.Error())
}

func (d *diag) warnf(p Pos, format string, args ...any) {
	d.warnings = append(d.warnings, Warning{Pos: p, Msg: fmt.Sprintf(format, args...)})
}

// err returns nil, the single error, or the whole list.
func (d *diag) err() error {
	switch len(d.errs) {
	case 0:
		return nil
	case 1:
		return d.errs[0]
	}
	return d.errs
}
