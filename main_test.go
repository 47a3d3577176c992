package chat

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// Server, Client and connection a test starts must be gone by the end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
