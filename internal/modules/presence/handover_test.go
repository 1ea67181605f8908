package presence_test

import (
	"context"
	"testing"

	"impetus/internal/module"
	"impetus/internal/modules/roster"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/storage/memory"
)

// TestHandover moves a session between two nodes of a cluster as XEP-0198 resumption does:
// its closing on the old node and its presence recorded on the new one are not broadcast, and
// the moved session still announces itself unavailable when it really ends.
func TestHandover(t *testing.T) {
	srv := rostertest.New(t, memory.New(), rostertest.Config{}, "example.com")
	ctx := context.Background()
	st := srv.Rosters["example.com"].Store()
	for _, p := range [][2]string{{"juliet@example.com", "romeo@example.com"}, {"romeo@example.com", "juliet@example.com"}} {
		if _, err := st.Update(ctx, p[0], p[1], func(it *roster.Item, _ bool) error {
			it.Hidden, it.Subscription = false, roster.Both
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	romeo := online(srv, "romeo@example.com/orchard")
	old := srv.Connect("juliet@example.com/balcony")
	old.Input(`<presence><show>away</show></presence>`)
	old.Take()
	romeo.Take()

	// The old copy goes without a word.
	srv.Router.Unbind(old)
	srv.Hosts["example.com"].SessionClosed(module.WithHandover(ctx), old)
	expect(t, "romeo after the hand-over", romeo.Take())

	// The new copy's presence is recorded, not broadcast, and no probes go out.
	moved := srv.Connect("juliet@example.com/balcony")
	el, err := rostertest.Parse(`<presence><show>away</show></presence>`)
	if err != nil {
		t.Fatal(err)
	}
	el.SetAttr("from", "juliet@example.com/balcony")
	srv.Core.FromClient(module.WithHandover(ctx), moved, el)
	expect(t, "romeo after the resumption", romeo.Take())
	expect(t, "the moved session", moved.Take())

	// When it ends, its contacts see it go: the presence module knew it was available.
	moved.Close()
	expect(t, "romeo at the end", romeo.Take(), `<presence type="unavailable" from="juliet@example.com/balcony" to="romeo@example.com"/>`)
}
