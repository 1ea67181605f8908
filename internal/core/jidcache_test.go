package core

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"impetus/internal/jidutil"
)

func TestJIDCacheMatchesParse(t *testing.T) {
	var c jidCache
	inputs := []string{
		"juliet@example.com", "Juliet@Example.COM/balcony", "example.com", "juliet@example.com/",
		"@example.com", "a@b@c", "juliet@ex ample.com", "\u00c5ngstr\u00f6m@example.com/r",
		"romeo@example.net/orchard", strings.Repeat("x", 300) + "@example.com",
	}
	for round := range 3 {
		for _, s := range inputs {
			want, wantErr := jidutil.Parse(s)
			got, err := c.parse(s, 100)
			if (err != nil) != (wantErr != nil) || (err == nil && (!got.Equal(want) || got.String() != want.String())) {
				t.Fatalf("round %d: parse(%q) = %v, %v; jidutil.Parse = %v, %v", round, s, got, err, want, wantErr)
			}
		}
	}
	valid := 0
	for _, s := range inputs {
		if _, err := jidutil.Parse(s); err == nil && len(s) <= maxCachedJIDLen {
			valid++
		}
	}
	var n int
	c.m.Range(func(_, _ any) bool { n++; return true })
	if n != valid || valid < 4 {
		t.Fatalf("cache holds %d entries, want the %d valid short addresses", n, valid)
	}
}

func TestJIDCacheBounded(t *testing.T) {
	var c jidCache
	for i := range 1000 {
		if _, err := c.parse("user"+strings.Repeat("a", i%50)+"@example.com/"+string(rune('a'+i%26)), 64); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	c.m.Range(func(_, _ any) bool { n++; return true })
	if n > 64 {
		t.Fatalf("cache holds %d entries, bound is 64", n)
	}
	// Disabled: nothing is stored.
	var d jidCache
	if _, err := d.parse("juliet@example.com", 0); err != nil {
		t.Fatal(err)
	}
	d.m.Range(func(_, _ any) bool { t.Fatal("disabled cache stored an entry"); return false })
}

func TestJIDCacheConcurrent(t *testing.T) {
	var c jidCache
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				s := "u" + string(rune('a'+(i+g)%26)) + "@example.com"
				j, err := c.parse(s, 8)
				if err != nil || j.String() != s {
					t.Error(errors.Join(err, errors.New(j.String()+" != "+s)))
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkParseTo(b *testing.B) {
	c := &Core{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.parseTo("juliet@example.com/balcony"); err != nil {
			b.Fatal(err)
		}
	}
}
