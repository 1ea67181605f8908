package stanza

// IQ types (RFC 6120 §8.2.3).
const (
	Get       = "get"
	Set       = "set"
	Result    = "result"
	ErrorType = "error"
)

// ResultReply builds the result response to the iq request orig, carrying payload when it is not nil.
func ResultReply(orig *Element, payload *Element) *Element {
	r := NewElement(orig.Space, "iq", Attr{Name: "type", Value: Result})
	if id := orig.Attr("id"); id != "" {
		r.SetAttr("id", id)
	}
	if from := orig.Attr("from"); from != "" {
		r.SetAttr("to", from)
	}
	if to := orig.Attr("to"); to != "" {
		r.SetAttr("from", to)
	}
	if payload != nil {
		r.AddChild(payload)
	}
	return r
}

// ValidIQ checks the RFC 6120 §8.2.3 rules for an iq: an id, a known type, exactly one payload
// for get and set, at most one for result.
func ValidIQ(e *Element) *Error {
	if e.Attr("id") == "" {
		return NewError("bad-request", "iq without id")
	}
	switch e.Attr("type") {
	case Get, Set:
		if e.ElementCount() != 1 {
			return NewError("bad-request", "iq get or set must carry exactly one payload")
		}
	case Result:
		if e.ElementCount() > 1 {
			return NewError("bad-request", "iq result carries at most one payload")
		}
	case ErrorType:
	default:
		return NewError("bad-request", "invalid iq type")
	}
	return nil
}
