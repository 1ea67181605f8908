package router

import (
	"context"
	"errors"
	"slices"
	"testing"

	"mellium.im/xmpp/jid"

	"impetus/internal/stanza"
)

type fakeSession struct {
	jid       jid.JID
	available bool
	priority  int
	got       []*stanza.Element
	replaced  bool
}

func (f *fakeSession) JID() jid.JID               { return f.jid }
func (f *fakeSession) Available() bool            { return f.available }
func (f *fakeSession) Priority() int              { return f.priority }
func (f *fakeSession) Deliver(el *stanza.Element) { f.got = append(f.got, el) }
func (f *fakeSession) Replaced()                  { f.replaced = true }

type accountSet map[string]bool

func (a accountSet) Exists(_ context.Context, local, domain string) (bool, error) {
	return a[local+"@"+domain], nil
}

// TestMessageRules walks RFC 6121 §8.5 for messages to local accounts.
func TestMessageRules(t *testing.T) {
	tests := []struct {
		name     string
		to       string
		typ      string
		sessions map[string][2]int // resource → {available (0/1), priority}
		want     []string          // resources that receive it
		wantErr  error
	}{
		{name: "chat to bare goes to highest priority", to: "bob@x", typ: "chat", sessions: map[string][2]int{"a": {1, 5}, "b": {1, 1}}, want: []string{"a"}},
		{name: "normal to bare with equal priorities goes to both", to: "bob@x", typ: "", sessions: map[string][2]int{"a": {1, 2}, "b": {1, 2}}, want: []string{"a", "b"}},
		{name: "headline to bare goes to every non-negative resource", to: "bob@x", typ: "headline", sessions: map[string][2]int{"a": {1, 5}, "b": {1, 0}, "c": {1, -1}}, want: []string{"a", "b"}},
		{name: "negative priorities only: offline", to: "bob@x", typ: "chat", sessions: map[string][2]int{"a": {1, -1}}, wantErr: ErrOffline},
		{name: "connected but not available: offline", to: "bob@x", typ: "chat", sessions: map[string][2]int{"a": {0, 0}}, wantErr: ErrOffline},
		{name: "no sessions: offline", to: "bob@x", typ: "normal", wantErr: ErrOffline},
		{name: "headline with no one: dropped", to: "bob@x", typ: "headline"},
		{name: "groupchat to bare: error, never delivered", to: "bob@x", typ: "groupchat", sessions: map[string][2]int{"a": {1, 5}}, wantErr: stanza.ErrServiceUnavailable},
		{name: "error to bare: dropped", to: "bob@x", typ: "error", sessions: map[string][2]int{"a": {1, 5}}},
		{name: "nonexistent user: service-unavailable", to: "nobody@x", typ: "chat", wantErr: stanza.ErrServiceUnavailable},
		{name: "nonexistent user, headline: dropped", to: "nobody@x", typ: "headline"},
		{name: "full JID that exists", to: "bob@x/b", typ: "chat", sessions: map[string][2]int{"a": {1, 5}, "b": {1, 1}}, want: []string{"b"}},
		{name: "full JID even when unavailable", to: "bob@x/b", typ: "normal", sessions: map[string][2]int{"b": {0, 0}}, want: []string{"b"}},
		{name: "chat to missing resource is treated as bare", to: "bob@x/gone", typ: "chat", sessions: map[string][2]int{"a": {1, 5}}, want: []string{"a"}},
		{name: "normal to missing resource: error", to: "bob@x/gone", typ: "normal", sessions: map[string][2]int{"a": {1, 5}}, wantErr: stanza.ErrServiceUnavailable},
		{name: "headline to missing resource: dropped", to: "bob@x/gone", typ: "headline", sessions: map[string][2]int{"a": {1, 5}}},
		{name: "groupchat to missing resource: error", to: "bob@x/gone", typ: "groupchat", sessions: map[string][2]int{"a": {1, 5}}, wantErr: stanza.ErrServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewLocal(accountSet{"bob@x": true})
			byRes := map[string]*fakeSession{}
			for res, st := range tt.sessions {
				s := &fakeSession{jid: jid.MustParse("bob@x/" + res), available: st[0] == 1, priority: st[1]}
				byRes[res] = s
				r.Bind(s)
			}
			el := stanza.NewElement(stanza.NSClient, "message", stanza.Attr{Name: "to", Value: tt.to})
			if tt.typ != "" {
				el.SetAttr("type", tt.typ)
			}
			err := r.Route(context.Background(), el, jid.MustParse(tt.to))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			var got []string
			for res, s := range byRes {
				if len(s.got) > 0 {
					got = append(got, res)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("delivered to %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBindReplacesSameFullJID(t *testing.T) {
	r := NewLocal(nil)
	old := &fakeSession{jid: jid.MustParse("a@x/r")}
	other := &fakeSession{jid: jid.MustParse("a@x/s")}
	r.Bind(old)
	r.Bind(other)
	nu := &fakeSession{jid: jid.MustParse("a@x/r")}
	r.Bind(nu)
	if !old.replaced || other.replaced {
		t.Fatalf("replaced: old %v other %v", old.replaced, other.replaced)
	}
	if r.Session(jid.MustParse("a@x/r")) != Session(nu) || len(r.Sessions(jid.MustParse("a@x"))) != 2 {
		t.Fatal("table does not hold the new session")
	}
	// The replaced session unbinding later must not remove its successor.
	r.Unbind(old)
	if r.Session(jid.MustParse("a@x/r")) != Session(nu) {
		t.Fatal("unbinding the replaced session removed the new one")
	}
	r.Unbind(nu)
	r.Unbind(other)
	if r.Count() != 0 {
		t.Fatalf("%d sessions left", r.Count())
	}
}
