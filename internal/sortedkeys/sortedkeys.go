// Package sortedkeys caches a map's keys in sorted order, for the
// directories' lists of names: computed once per change of the map, not
// once per list.
package sortedkeys

import (
	"maps"
	"slices"
	"sync"
)

// Cache holds the sorted keys of one map, guarded by that map's lock. The
// zero value is empty.
type Cache struct {
	keys []string // nil when stale
}

// Reset marks the cache stale. Call it, holding the map's write lock,
// whenever a key is added or removed.
func (c *Cache) Reset() { c.keys = nil }

// Of returns the keys of *m in byte order, from c unless a Reset came since
// they were sorted. mu guards *m (the map may be replaced) and c; Of takes
// it. The slice is shared: callers must not change it.
func Of[V any](c *Cache, mu *sync.RWMutex, m *map[string]V) []string {
	mu.RLock()
	keys := c.keys
	mu.RUnlock()
	if keys != nil {
		return keys
	}
	mu.Lock()
	defer mu.Unlock()
	if c.keys == nil {
		c.keys = slices.AppendSeq(make([]string, 0, len(*m)), maps.Keys(*m))
		slices.Sort(c.keys)
	}
	return c.keys
}
