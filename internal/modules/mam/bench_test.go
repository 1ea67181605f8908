package mam_test

import (
	"context"
	"testing"

	"impetus/internal/modules/mam"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage/memory"
)

// BenchmarkChatMessage sends one chat message between two local accounts through the core
// with the archive module, archiving on (the default policy) and off: the archive hooks'
// share of a message's CPU and allocations. The stanza is copied per message because the
// hooks stamp it; the copy is part of every figure.
func BenchmarkChatMessage(b *testing.B) {
	for _, policy := range []string{mam.Never, mam.Always} {
		b.Run(policy, func(b *testing.B) {
			be := memory.New()
			defer be.Close()
			srv := rostertest.New(b, be, rostertest.Config{}, "example.com")
			m := &mam.MAM{Default: policy}
			if err := m.Provision(srv.Hosts["example.com"]); err != nil {
				b.Fatal(err)
			}
			defer m.Stop()
			romeo := srv.Connect("romeo@example.com/orchard")
			romeo.Input(`<presence/>`)
			juliet := srv.Connect("juliet@example.com/balcony")
			juliet.Input(`<presence/>`)
			msg, err := rostertest.Parse(`<message xmlns="jabber:client" to="juliet@example.com/balcony" type="chat" id="m1">` +
				`<body>But soft, what light through yonder window breaks?</body>` +
				`<active xmlns="http://jabber.org/protocol/chatstates"/>` +
				`<origin-id xmlns="urn:xmpp:sid:0" id="5c2a6f1e-origin"/></message>`)
			if err != nil {
				b.Fatal(err)
			}
			msg.SetAttr("from", "romeo@example.com/orchard")
			ctx := context.Background()
			juliet.Elements()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				srv.Core.FromClient(ctx, romeo, msg.Copy())
				if i++; i%1024 == 0 {
					juliet.Elements()
				}
			}
			if got := juliet.Elements(); i%1024 != 0 && len(got) == 0 {
				b.Fatal("juliet received nothing")
			}
		})
	}
}
