//go:build race

package chat

// raceEnabled: the race detector's instrumentation allocates, so tests
// counting allocations skip their counts under it.
const raceEnabled = true
