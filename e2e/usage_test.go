//go:build unix

package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestUsage runs each program with -h: it prints, on standard error, a
// synopsis line, a one-line description and then the flags, and exits
// with status 0. chatclient's also gives the defaults of HOST and PORT and
// the commands with their rules and errors.
func TestUsage(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		bin, synopsis string
		has           []string
		hasNot        []string
	}{
		{serverBin, "usage: chatserver [flags]", []string{"-addr HOST:PORT", "-metrics-addr", "SIGTERM"}, nil},
		{clientBin, "usage: chatclient [flags] [HOST [PORT]]", []string{
			"HOST (default 127.0.0.1)", "PORT\n(default 9000)",
			"login NAME", "list ", "sendto NAME TEXT", "logout ", "exit ",
			"1 to 20 characters", "65535 characters",
			"Bad username", "Bad message", "Invalid command",
			"Success", "Failure", "Malformed packet",
			"-tls-cert FILE",
		}, nil},
		{benchBin, "usage: chatbench [flags]", []string{
			"-mode string", "-server-pid PID", "-drain-timeout", "-max-time", "-prefix PREFIX", "-list",
		}, []string{"-idle"}},
	} {
		name := tt.synopsis[len("usage: "):]
		name = name[:strings.IndexByte(name, ' ')]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(tt.bin, "-h")
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s -h: %v; stderr:\n%s", name, err, stderr.String())
			}
			if stdout.Len() > 0 {
				t.Errorf("%s -h wrote to standard output: %q", name, stdout.String())
			}
			out := stderr.String()
			lines := strings.Split(out, "\n")
			if len(lines) < 3 || lines[0] != tt.synopsis {
				t.Fatalf("%s -h: first line %q, want %q", name, lines[0], tt.synopsis)
			}
			if d := lines[1]; !strings.HasPrefix(d, name+" ") || !strings.HasSuffix(d, ".") {
				t.Errorf("%s -h: second line %q, want a one-line description", name, d)
			}
			for _, want := range tt.has {
				if !strings.Contains(out, want) {
					t.Errorf("%s -h lacks %q", name, want)
				}
			}
			for _, bad := range tt.hasNot {
				if strings.Contains(out, bad+" ") || strings.Contains(out, bad+"\n") {
					t.Errorf("%s -h still offers %s", name, bad)
				}
			}
		})
	}
}
