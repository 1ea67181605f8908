package stanza

import "testing"

// benchMessage is a typical one-to-one chat message: a body, an active chat state and an
// origin-id, addressed with full JIDs.
func benchMessage() *Element {
	return NewElement("jabber:client", "message",
		Attr{"to", "juliet@capulet.example/balcony"},
		Attr{"from", "romeo@montague.example/orchard"},
		Attr{"type", "chat"},
		Attr{"id", "f6b2c0a4-3e1d-4c57-9d0b-7a1e5c2f8b93"},
		Attr{"xml:lang", "en"},
	).
		AddChild(NewElement("jabber:client", "body").AddText("Wherefore art thou, Romeo? Deny thy father & refuse thy name <3")).
		AddChild(NewElement("http://jabber.org/protocol/chatstates", "active")).
		AddChild(NewElement("urn:xmpp:sid:0", "origin-id", Attr{"id", "a1b2c3d4-e5f6-4789-8abc-def012345678"}))
}

func BenchmarkAppendXML(b *testing.B) {
	e := benchMessage()
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		dst = e.AppendXML(dst[:0], "jabber:client")
	}
	b.SetBytes(int64(len(dst)))
}

func BenchmarkString(b *testing.B) {
	e := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		_ = e.String()
	}
}
