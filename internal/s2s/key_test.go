package s2s

import "testing"

func TestKeyXEP0185Example(t *testing.T) {
	// The example of XEP-0185 §3: the receiving server xmpp.example.com, the originating
	// server example.org.
	got := Key([]byte("s3cr3tf0rd14lb4ck"), "xmpp.example.com", "example.org", "D60000229F")
	if want := "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"; got != want {
		t.Fatalf("key = %s, want %s", got, want)
	}
	// The same secret and id with other domains, as other implementations test it.
	got = Key([]byte("s3cr3tf0rd14lb4ck"), "example.net", "example.com", "D60000229F")
	if want := "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc"; got != want {
		t.Fatalf("key = %s, want %s", got, want)
	}
}

func TestKeyBindsEveryInput(t *testing.T) {
	base := Key([]byte("s"), "a.test", "b.test", "id")
	for _, k := range []string{
		Key([]byte("t"), "a.test", "b.test", "id"),
		Key([]byte("s"), "b.test", "a.test", "id"),
		Key([]byte("s"), "a.test", "b.test", "id2"),
		Key([]byte("s"), "a.tes", "tb.test", "id"),
	} {
		if k == base {
			t.Fatal("a different input gave the same key")
		}
	}
	if !keyEqual(base, Key([]byte("s"), "a.test", "b.test", "id")) || keyEqual(base, base[:10]) {
		t.Fatal("keyEqual")
	}
}
