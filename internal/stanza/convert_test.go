package stanza

import "testing"

func TestConvertNS(t *testing.T) {
	body := NewElement(NSClient, "body").AddText("hi")
	ext := NewElement("urn:example", "x")
	msg := NewElement(NSClient, "message", Attr{Name: "to", Value: "a@b"}).AddChild(body).AddChild(ext)

	out := ConvertNS(msg, NSClient, NSServer)
	if out == msg {
		t.Fatal("a converted element must be a copy")
	}
	if out.Space != NSServer || out.Child(NSServer, "body") == nil || out.Child(NSServer, "body").Text() != "hi" {
		t.Fatalf("not converted: %s", out.AppendXML(nil, NSServer))
	}
	if out.Child("urn:example", "x") != ext {
		t.Error("an element with nothing to convert must be shared, not copied")
	}
	if msg.Space != NSClient || body.Space != NSClient {
		t.Error("the original was modified")
	}
	if ConvertNS(ext, NSClient, NSServer) != ext {
		t.Error("an element with nothing to convert must be returned as is")
	}
}
