package xmlstream

import "unicode/utf8"

// Byte classes for the parser's inner loops. A zero class means "plain byte, keep scanning";
// the loops only leave their fast path for the few bytes that need attention. Bytes from 0x80 up
// are plain except 0xEF, which starts the UTF-8 encodings of U+FFFE and U+FFFF, the only
// non-characters that valid UTF-8 can carry and XML forbids.
const (
	clPlain = iota
	clLT
	clAmp
	clCR
	clGT    // text only: "]]>" is not allowed in character data
	clEF    // possible U+FFFE or U+FFFF
	clQuote // attribute values only
	clWS    // attribute values only: tab and newline are normalized to a space
	clBad   // a control character XML does not allow
)

var textClass, attrClass [256]uint8

// nameClass marks ASCII bytes that may start a name (2) or continue one (1). Non-ASCII name
// characters are checked rune by rune in isNameRune.
var nameClass [utf8.RuneSelf]uint8

func init() {
	for c := 0; c < 0x20; c++ {
		textClass[c] = clBad
		attrClass[c] = clBad
	}
	textClass['\t'] = clPlain
	textClass['\n'] = clPlain
	textClass['\r'] = clCR
	textClass['<'] = clLT
	textClass['&'] = clAmp
	textClass['>'] = clGT
	textClass[0xEF] = clEF

	attrClass['\t'] = clWS
	attrClass['\n'] = clWS
	attrClass['\r'] = clCR
	attrClass['<'] = clLT
	attrClass['&'] = clAmp
	attrClass['"'] = clQuote
	attrClass['\''] = clQuote
	attrClass[0xEF] = clEF

	for c := 'a'; c <= 'z'; c++ {
		nameClass[c] = 2
		nameClass[c-'a'+'A'] = 2
	}
	nameClass['_'] = 2
	for c := '0'; c <= '9'; c++ {
		nameClass[c] = 1
	}
	nameClass['-'] = 1
	nameClass['.'] = 1
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\t' || c == '\r'
}

// isXMLChar reports whether r is a Char in the sense of XML 1.0 §2.2.
func isXMLChar(r rune) bool {
	switch {
	case r >= 0x20 && r <= 0xD7FF:
		return true
	case r == '\t' || r == '\n' || r == '\r':
		return true
	case r >= 0xE000 && r <= 0xFFFD:
		return true
	case r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}

// isNameRune reports whether a non-ASCII rune may appear in a name (XML 1.0 fifth edition,
// productions [4] and [4a]); first selects NameStartChar.
func isNameRune(r rune, first bool) bool {
	switch {
	case r >= 0xC0 && r <= 0xD6, r >= 0xD8 && r <= 0xF6, r >= 0xF8 && r <= 0x2FF,
		r >= 0x370 && r <= 0x37D, r >= 0x37F && r <= 0x1FFF, r == 0x200C, r == 0x200D,
		r >= 0x2070 && r <= 0x218F, r >= 0x2C00 && r <= 0x2FEF, r >= 0x3001 && r <= 0xD7FF,
		r >= 0xF900 && r <= 0xFDCF, r >= 0xFDF0 && r <= 0xFFFD, r >= 0x10000 && r <= 0xEFFFF:
		return true
	}
	if first {
		return false
	}
	return r == 0xB7 || (r >= 0x300 && r <= 0x36F) || r == 0x203F || r == 0x2040
}

// internTab holds names, namespaces and values that nearly every stanza carries, so decoded
// elements do not pin their stanza's memory through them. It is an open-addressing table
// rather than a map because a lookup happens for every name in every stanza and hashing a few
// sampled bytes is much cheaper than hashing the whole key.
var internTab [1 << internBits]string

const internBits = 10

func internHash(b []byte) uint {
	n := uint(len(b))
	h := n*0x9E3779B1 ^ uint(b[0])*0x85EBCA6B ^ uint(b[n-1])*0xC2B2AE35 ^ uint(b[n/2])*0x27D4EB2F
	return (h ^ h>>15) & (1<<internBits - 1)
}

// interned returns the interned copy of b, if there is one.
func interned(b []byte) (string, bool) {
	if len(b) == 0 {
		return "", false
	}
	for i := internHash(b); ; i = (i + 1) & (1<<internBits - 1) {
		s := internTab[i]
		if s == "" {
			return "", false
		}
		if s == string(b) {
			return s, true
		}
	}
}

func init() {
	for _, s := range []string{
		// Stream-level elements and core stanza names.
		"stream", "features", "error", "message", "presence", "iq", "body", "subject", "thread",
		"show", "status", "priority", "query", "item", "x", "c", "text", "starttls", "proceed",
		"auth", "response", "challenge", "success", "failure", "abort", "mechanism", "mechanisms",
		"bind", "resource", "jid", "session", "result", "verify", "required", "optional",
		"enable", "enabled", "resume", "resumed", "r", "a", "sm", "ping", "delay", "forwarded",
		"sent", "received", "request", "markable", "displayed", "acknowledged", "active",
		"composing", "paused", "inactive", "gone", "origin-id", "stanza-id", "store", "no-store",
		"no-copy", "no-permanent-store", "private", "pubsub", "event", "items", "publish",
		"retract", "encrypted", "header", "key", "iv", "payload", "nick", "group", "limits",
		"max-bytes", "idle-seconds", "fin", "set", "first", "last", "count", "before", "after",
		"reference", "reactions", "reaction", "reply", "fallback", "html", "span", "p", "br",
		// Attribute names.
		"to", "from", "id", "type", "xml:lang", "version", "by", "node", "name", "subscription",
		"ask", "hash", "ver", "ext", "h", "var", "label", "stamp", "code", "category", "xmlns",
		"rid", "sid", "for", "queryid", "max", "location", "previd", "seq", "xml:space",
		// Namespaces.
		"jabber:client", "jabber:server", "jabber:component:accept", "jabber:server:dialback",
		"http://etherx.jabber.org/streams", "urn:ietf:params:xml:ns:xmpp-streams",
		"urn:ietf:params:xml:ns:xmpp-stanzas", "urn:ietf:params:xml:ns:xmpp-tls",
		"urn:ietf:params:xml:ns:xmpp-sasl", "urn:ietf:params:xml:ns:xmpp-bind",
		"urn:ietf:params:xml:ns:xmpp-session", "urn:xmpp:sasl:2", "urn:xmpp:bind:0",
		"http://jabber.org/protocol/chatstates", "urn:xmpp:sid:0", "urn:xmpp:delay",
		"jabber:iq:roster", "http://jabber.org/protocol/caps", "urn:xmpp:ping",
		"http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items",
		"urn:xmpp:receipts", "urn:xmpp:chat-markers:0", "urn:xmpp:carbons:2", "urn:xmpp:forward:0",
		"urn:xmpp:mam:2", "urn:xmpp:sm:3", "http://jabber.org/protocol/pubsub",
		"http://jabber.org/protocol/pubsub#event", "http://jabber.org/protocol/muc",
		"http://jabber.org/protocol/muc#user", "vcard-temp", "vcard-temp:x:update",
		"urn:xmpp:hints", "jabber:x:data", "jabber:iq:version", "jabber:iq:private",
		"jabber:iq:last", "urn:xmpp:time", "urn:xmpp:csi:0", "urn:xmpp:idle:1",
		"eu.siacs.conversations.axolotl", "urn:xmpp:omemo:2", "urn:xmpp:reactions:0",
		"urn:xmpp:reply:0", "urn:xmpp:fallback:0", "urn:xmpp:message-correct:0",
		"http://jabber.org/protocol/rsm", "urn:xmpp:stream-limits:0", "urn:xmpp:errors",
		"http://jabber.org/protocol/xhtml-im", "http://www.w3.org/1999/xhtml",
		"http://www.w3.org/XML/1998/namespace",
		// Frequent attribute values.
		"chat", "normal", "groupchat", "headline", "get", "unavailable", "subscribe",
		"subscribed", "unsubscribe", "unsubscribed", "probe", "away", "xa", "dnd", "en", "1.0",
		"both", "none", "remove", "cancel", "modify", "wait", "continue", "true", "false",
		"sha-1", "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "=",
	} {
		i := internHash([]byte(s))
		for internTab[i] != "" && internTab[i] != s {
			i = (i + 1) & (1<<internBits - 1)
		}
		internTab[i] = s
	}
}
