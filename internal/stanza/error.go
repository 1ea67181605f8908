package stanza

import "strings"

// Error is a stanza error (RFC 6120 §8.3): a type, a defined condition and optional text.
// Handlers return it and the core turns it into an error reply, so no handler builds error XML.
type Error struct {
	Type      string // auth, cancel, continue, modify, wait
	Condition string // a defined condition such as service-unavailable
	Text      string
	By        string
	// App is an optional application-specific condition element.
	App *Element
}

func (e *Error) Error() string {
	if e.Text != "" {
		return "stanza: " + e.Condition + ": " + e.Text
	}
	return "stanza: " + e.Condition
}

// errorTypes maps each defined condition to the error type RFC 6120 §8.3.3 gives it.
var errorTypes = map[string]string{
	"bad-request":             "modify",
	"conflict":                "cancel",
	"feature-not-implemented": "cancel",
	"forbidden":               "auth",
	"gone":                    "cancel",
	"internal-server-error":   "cancel",
	"item-not-found":          "cancel",
	"jid-malformed":           "modify",
	"not-acceptable":          "modify",
	"not-allowed":             "cancel",
	"not-authorized":          "auth",
	"policy-violation":        "modify",
	"recipient-unavailable":   "wait",
	"redirect":                "modify",
	"registration-required":   "auth",
	"remote-server-not-found": "cancel",
	"remote-server-timeout":   "wait",
	"resource-constraint":     "wait",
	"service-unavailable":     "cancel",
	"subscription-required":   "auth",
	"undefined-condition":     "cancel",
	"unexpected-request":      "wait",
}

// NewError returns a stanza error for condition with the type RFC 6120 assigns to it.
func NewError(condition, text string) *Error {
	t, ok := errorTypes[condition]
	if !ok {
		t = "cancel"
	}
	return &Error{Type: t, Condition: condition, Text: text}
}

// Common stanza errors. They are shared values: never modify them.
var (
	ErrServiceUnavailable    = NewError("service-unavailable", "")
	ErrBadRequest            = NewError("bad-request", "")
	ErrFeatureNotImplemented = NewError("feature-not-implemented", "")
	ErrItemNotFound          = NewError("item-not-found", "")
	ErrNotAllowed            = NewError("not-allowed", "")
	ErrForbidden             = NewError("forbidden", "")
	ErrJIDMalformed          = NewError("jid-malformed", "")
	ErrInternalServerError   = NewError("internal-server-error", "")
	ErrRemoteServerNotFound  = NewError("remote-server-not-found", "")
	ErrRecipientUnavailable  = NewError("recipient-unavailable", "")
	ErrNotAcceptable         = NewError("not-acceptable", "")
	ErrResourceConstraint    = NewError("resource-constraint", "")
)

// Element returns the <error/> child for this error.
func (e *Error) Element() *Element {
	el := NewElement("", "error", Attr{Name: "type", Value: e.Type})
	if e.By != "" {
		el.SetAttr("by", e.By)
	}
	el.AddChild(NewElement(NSStanzaErr, e.Condition))
	if e.Text != "" {
		el.AddChild(NewElement(NSStanzaErr, "text", Attr{Name: "xml:lang", Value: "en"}).AddText(e.Text))
	}
	if e.App != nil {
		el.AddChild(e.App)
	}
	return el
}

// ErrorReply builds the error response to orig (RFC 6120 §8.3.1): the same kind and id, the
// addresses swapped, type "error", the original payload kept for iq requests and messages.
func ErrorReply(orig *Element, e *Error) *Element {
	r := NewElement(orig.Space, orig.Local)
	if id := orig.Attr("id"); id != "" {
		r.SetAttr("id", id)
	}
	if from := orig.Attr("from"); from != "" {
		r.SetAttr("to", from)
	}
	if to := orig.Attr("to"); to != "" {
		r.SetAttr("from", to)
	}
	r.SetAttr("type", "error")
	if orig.Local != "iq" || orig.Attr("type") == "get" || orig.Attr("type") == "set" {
		for c := range orig.Elements() {
			if c.Local == "error" && c.Space == orig.Space {
				continue
			}
			r.AddChild(c)
		}
	}
	errEl := e.Element()
	errEl.Space = orig.Space
	return r.AddChild(errEl)
}

// StreamError is a stream-level error (RFC 6120 §4.9): sending one closes the stream.
type StreamError struct {
	Condition string
	Text      string
	// App is an optional application-specific condition (e.g. XEP-0478 stanza-too-big).
	App *Element
}

func (e *StreamError) Error() string {
	if e.Text != "" {
		return "stream error: " + e.Condition + ": " + e.Text
	}
	return "stream error: " + e.Condition
}

// Element returns the <stream:error/> element.
func (e *StreamError) Element() *Element {
	el := NewElement(NSStream, "error")
	el.AddChild(NewElement(NSStreamErr, e.Condition))
	if e.Text != "" {
		el.AddChild(NewElement(NSStreamErr, "text", Attr{Name: "xml:lang", Value: "en"}).AddText(e.Text))
	}
	if e.App != nil {
		el.AddChild(e.App)
	}
	return el
}

// NewStreamError returns a stream error for condition.
func NewStreamError(condition, text string) *StreamError {
	return &StreamError{Condition: condition, Text: text}
}

// ParseError extracts the stanza error carried in an error stanza, or nil.
func ParseError(el *Element) *Error {
	errEl := el.Child("", "error")
	if errEl == nil {
		return nil
	}
	out := &Error{Type: errEl.Attr("type"), By: errEl.Attr("by")}
	for c := range errEl.Elements() {
		if c.Space != NSStanzaErr {
			out.App = c
			continue
		}
		if c.Local == "text" {
			out.Text = strings.TrimSpace(c.Text())
		} else {
			out.Condition = c.Local
		}
	}
	return out
}
