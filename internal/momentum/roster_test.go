package momentum_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"impetus/internal/modules/roster"
	"impetus/internal/modules/roster/rostertest"
	"impetus/internal/momentum"
	"impetus/internal/storage"
	"impetus/internal/storage/memory"
	"impetus/internal/storage/sqlite"
)

func TestImportRosters(t *testing.T) {
	for _, kind := range []string{"memory", "sqlite"} {
		t.Run(kind, func(t *testing.T) {
			var b storage.Backend = memory.New()
			if kind == "sqlite" {
				sb, err := sqlite.Open(context.Background(), t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { sb.Close() })
				b = sb
			}
			ctx := context.Background()
			n, err := momentum.ImportRosters(ctx, b, []string{"testdata/single.json", "testdata/riak.json"})
			if err != nil || n != 5 {
				t.Fatalf("imported %d, %v", n, err)
			}
			st := roster.NewStore(b)
			items, ver, err := st.All(ctx, "juliet@example.com")
			if err != nil || len(items) != 2 || ver == "0" {
				t.Fatalf("juliet: %+v %q %v", items, ver, err)
			}
			if it := items[1]; it.JID != "romeo@example.net" || it.Name != "Romeo" || it.Subscription != roster.Both || len(it.Groups) != 2 || it.Groups[1] != "Montague" {
				t.Errorf("romeo item %+v", it)
			}
			if it := items[0]; it.JID != "nurse@example.com" || !it.PendingIn || !it.Ask || it.Hidden {
				t.Errorf("nurse item %+v", it)
			}
			check := func(owner, contact, sub string, ask, in bool) {
				t.Helper()
				it, ok, err := st.Get(ctx, owner, contact)
				if err != nil || !ok || it.Subscription != sub || it.Ask != ask || it.PendingIn != in {
					t.Errorf("%s/%s: %+v %v %v", owner, contact, it, ok, err)
				}
			}
			check("romeo@example.net", "juliet@example.com", roster.Both, false, false)
			check("benvolio@example.net", "romeo@example.net", roster.To, false, false)
			check("mercutio@example.net", "romeo@example.net", roster.From, false, false)

			// The roster module serves what was imported.
			srv := rostertest.New(t, b, rostertest.Config{}, "example.com")
			s := srv.Connect("juliet@example.com/balcony")
			s.Input(`<iq type="get" id="g"><query xmlns="jabber:iq:roster"/></iq>`)
			got := s.Take()
			want := `<iq type="result" id="g" to="juliet@example.com/balcony" from="juliet@example.com"><query xmlns="jabber:iq:roster"><item jid="nurse@example.com" subscription="none" ask="subscribe"/><item jid="romeo@example.net" name="Romeo" subscription="both"><group>Friends</group><group>Montague</group></item></query></iq>`
			if len(got) != 1 || got[0] != want {
				t.Errorf("roster get:\n%v\nwant\n%s", got, want)
			}
		})
	}
}

func TestImportErrors(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"bad owner":        `{"not a jid@@": {}}`,
		"bad contact":      `{"a@example.com": {"@@": {}}}`,
		"bad subscription": `{"a@example.com": {"b@example.com": {"subscription": "sideways"}}}`,
		"not json":         `{"a@example.com": `,
		"riak without key": `[{"value": {}}]`,
		"scalar":           `42`,
	} {
		f := filepath.Join(dir, "f.json")
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b := memory.New()
		if n, err := momentum.ImportRosters(context.Background(), b, []string{f}); err == nil {
			t.Errorf("%s: imported %d", name, n)
		}
	}
	if _, err := momentum.ImportRosters(context.Background(), memory.New(), []string{filepath.Join(dir, "missing")}); err == nil {
		t.Error("missing file imported")
	}
}
