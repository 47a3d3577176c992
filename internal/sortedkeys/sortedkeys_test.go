package sortedkeys

import (
	"slices"
	"sync"
	"testing"
)

func TestOf(t *testing.T) {
	var (
		mu sync.RWMutex
		c  Cache
		m  = map[string]int{}
	)
	if got := Of(&c, &mu, &m); got == nil || len(got) != 0 {
		t.Fatalf("empty map: %q, want an empty, non-nil slice (cached)", got)
	}
	m["carol"], m["alice"], m["bob"] = 1, 2, 3
	if got := Of(&c, &mu, &m); len(got) != 0 {
		t.Fatalf("before Reset: %q, want the cached empty list", got)
	}
	c.Reset()
	first := Of(&c, &mu, &m)
	if want := []string{"alice", "bob", "carol"}; !slices.Equal(first, want) {
		t.Fatalf("got %q, want %q", first, want)
	}
	if again := Of(&c, &mu, &m); &again[0] != &first[0] {
		t.Error("a second call sorted again instead of using the cache")
	}
	delete(m, "bob")
	c.Reset()
	if got, want := Of(&c, &mu, &m), []string{"alice", "carol"}; !slices.Equal(got, want) {
		t.Fatalf("after a delete and Reset: %q, want %q", got, want)
	}
}
