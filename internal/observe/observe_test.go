package observe

import (
	"testing"

	"impetus/internal/stanza"
)

type count struct{ in, out int }

func (c *count) StanzaReceived(string, *stanza.Element)  { c.in++ }
func (c *count) StanzaDelivered(string, *stanza.Element) { c.out++ }

func TestSwapAndMulti(t *testing.T) {
	el := stanza.NewElement(stanza.NSClient, "message")
	var s Swap
	s.StanzaReceived("r", el) // the zero Swap observes nothing and does not fail
	a, b := &count{}, &count{}
	s.Store(Multi{a, nil, b})
	s.StanzaReceived("r", el)
	s.StanzaDelivered("r", el)
	s.Store(a)
	s.StanzaDelivered("r", el)
	s.Store(nil)
	s.StanzaDelivered("r", el)
	if *a != (count{1, 2}) || *b != (count{1, 1}) {
		t.Errorf("a = %+v, b = %+v", *a, *b)
	}
	if s.Load() != nil {
		t.Error("Load after Store(nil) is not nil")
	}
}

func BenchmarkSwapEmpty(b *testing.B) {
	var s Swap
	el := stanza.NewElement(stanza.NSClient, "message")
	for b.Loop() {
		s.StanzaReceived("r", el)
	}
}
