package stanza

// Namespaces used by the core protocol (RFC 6120, RFC 6121).
const (
	NSClient    = "jabber:client"
	NSServer    = "jabber:server"
	NSStream    = "http://etherx.jabber.org/streams"
	NSStreamErr = "urn:ietf:params:xml:ns:xmpp-streams"
	NSStanzaErr = "urn:ietf:params:xml:ns:xmpp-stanzas"
	NSTLS       = "urn:ietf:params:xml:ns:xmpp-tls"
	NSSASL      = "urn:ietf:params:xml:ns:xmpp-sasl"
	NSBind      = "urn:ietf:params:xml:ns:xmpp-bind"
	NSSession   = "urn:ietf:params:xml:ns:xmpp-session"
	NSDialback  = "jabber:server:dialback"
	// NSSASLCB is XEP-0440 SASL channel-binding type capability.
	NSSASLCB = "urn:xmpp:sasl-cb:0"
	// NSStreamLimits is XEP-0478 stream limits advertisement.
	NSStreamLimits = "urn:xmpp:stream-limits:0"
	// NSXMPPErrors carries application-specific error conditions such as stanza-too-big (XEP-0478).
	NSXMPPErrors = "urn:xmpp:errors"
	// NSDelay is XEP-0203 delayed delivery.
	NSDelay = "urn:xmpp:delay"
)

// IsStanza reports whether e is a message, presence or iq in the given stream content namespace.
func IsStanza(e *Element, contentNS string) bool {
	if e.Space != contentNS {
		return false
	}
	switch e.Local {
	case "message", "presence", "iq":
		return true
	}
	return false
}
