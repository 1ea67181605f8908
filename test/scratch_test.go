package test

import (
	"context"
	"encoding/xml"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp/stanza"
)

func TestScratchMsg(t *testing.T) {
	srv := StartServer(t, ServerOptions{Users: map[string]string{"alice": "a", "bob": "b"}, NoIPv6: true})
	alice := connectMellium(t, srv, families[0], "alice", "a", "a", sasl.ScramSha256Plus)
	bob := connectMellium(t, srv, families[0], "bob", "b", "b", sasl.ScramSha256Plus)
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	t.Logf("presence: %v", bob.Send(ctx, stanza.Presence{}.Wrap(nil)))
	t.Logf("ping: %v", pingStrict(ctx, bob.Session, serverJID))
	msg := stanza.Message{To: bob.LocalAddr(), Type: stanza.ChatMessage}
	err := alice.Send(ctx, msg.Wrap(xmlstream.Wrap(xmlstream.Token(xml.CharData("hello")), xml.StartElement{Name: xml.Name{Local: "body"}})))
	t.Logf("send: %v", err)
	select {
	case m := <-bob.msgs:
		t.Logf("got %+v", m)
	case err := <-bob.served:
		t.Logf("bob served: %v", err)
	case <-time.After(3 * time.Second):
		t.Logf("nothing")
	}
	t.Fail()
}
