//go:build race

package chat

// raceEnabled: the race detector's instrumentation allocates, so tests
// counting allocations skip their counts under it; .ci/run runs them
// without it too.
const raceEnabled = true
