//go:build unix

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seedchat/chat/internal/natstest"
)

// readmeCluster is the cluster walkthrough of the README: the nats-server
// command lines and the chatserver command lines, as argument lists after
// the program, with the shell variables of the section expanded.
type readmeCluster struct {
	nats, chat [][]string
}

// parseReadmeCluster reads the walkthrough from the README's section on
// clusters, after applying ports (old to new, as strings) to its text.
func parseReadmeCluster(readme string, ports *strings.Replacer) (readmeCluster, error) {
	const title = "\n## Several servers as one chat: a cluster over NATS\n"
	i := strings.Index(readme, title)
	if i < 0 {
		return readmeCluster{}, fmt.Errorf("no section %q", strings.TrimSpace(title))
	}
	sec := readme[i+len(title):]
	if j := strings.Index(sec, "\n## "); j >= 0 {
		sec = sec[:j]
	}
	sec = ports.Replace(sec)

	var rc readmeCluster
	vars := map[string]string{}
	inBlock := false
	var pending string // a line continued with a backslash
	for _, line := range strings.Split(sec, "\n") {
		if strings.HasPrefix(line, "```") {
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, pending = pending+line, ""
		line, _, _ = strings.Cut(line, "#") // a comment
		fields := strings.Fields(os.Expand(line, func(v string) string { return vars[v] }))
		fields = slices.DeleteFunc(fields, func(f string) bool { return f == "&" })
		switch {
		case len(fields) == 1 && strings.Contains(fields[0], "="):
			name, value, _ := strings.Cut(fields[0], "=")
			if !strings.HasPrefix(value, "$(") {
				vars[name] = value
			}
		case len(fields) > 0 && strings.HasPrefix(strings.TrimSpace(line), "$NATS "):
			rc.nats = append(rc.nats, fields)
		case len(fields) > 2 && fields[0] == "go" && fields[1] == "run" && fields[2] == "./examples/chatserver":
			rc.chat = append(rc.chat, fields[3:])
		}
	}
	if len(rc.nats) != 3 || len(rc.chat) != 3 {
		return rc, fmt.Errorf("%d nats-server and %d chatserver lines, want 3 and 3", len(rc.nats), len(rc.chat))
	}
	return rc, nil
}

func TestParseReadmeCluster(t *testing.T) {
	readme := "# x\n\n## Several servers as one chat: a cluster over NATS\n\n" +
		"```\nNATS=$(go env GOPATH)/bin/nats-server\nR=nats://127.0.0.1:6222\n" +
		"$NATS -js -p 4222 \\\n  --routes $R &\n$NATS -p 4223 &\n$NATS -p 4224\n```\n\n" +
		"```\ngo run ./examples/chatserver -addr 127.0.0.1:9001 -nats $R &   # one\n" +
		"go run ./examples/chatserver -a\ngo run ./examples/chatserver\ngo run ./examples/chatclient 1 2\n```\n" +
		"\n## Next\n\n```\n$NATS -p 1\n```\n"
	rc, err := parseReadmeCluster(readme, strings.NewReplacer("6222", "1000"))
	if err != nil {
		t.Fatal(err)
	}
	want := readmeCluster{
		nats: [][]string{{"-js", "-p", "4222", "--routes", "nats://127.0.0.1:1000"}, {"-p", "4223"}, {"-p", "4224"}},
		chat: [][]string{{"-addr", "127.0.0.1:9001", "-nats", "nats://127.0.0.1:1000"}, {"-a"}, {}},
	}
	if fmt.Sprint(rc) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", rc, want)
	}
}

// TestReadmeClusterWalkthrough follows the README's cluster walkthrough
// with its own command lines (ports and store directories moved to free
// ones): three NATS servers in a cluster, three chatservers given all
// three with -nats-replicas, and then the chat in the README's order,
// including the Failure of a message to a user not logged in, and the chat
// going on after one NATS server is stopped.
func TestReadmeClusterWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	t.Parallel()
	nats, nodes := startReadmeCluster(t)

	// The README's order: bob on the second server, then alice on the first.
	bob := loggedIn(t, nodes[1], "bob")
	alice := loggedIn(t, nodes[0], "alice")
	alice.do("sendto carol are you there?", "Failure") // carol is not logged in
	alice.do("sendto bob Hi, how are you?", "Success")
	bob.expectLine("alice: Hi, how are you?")
	bob.do("list", "alice bob")
	bob.do("sendto alice Fine, thanks!", "Success")
	alice.expectLine("bob: Fine, thanks!")
	carol := loggedIn(t, nodes[2], "carol")
	carol.do("list", "alice bob carol")

	// Stop one NATS server: the chat goes on, through the other two.
	if err := nats[1].cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	nats[1].wait()
	// A chat server that used it answers Failure for the moment it takes
	// to move to another.
	sendUntilSuccess(t, alice, "sendto bob still there?")
	bob.expectLine("alice: still there?")
	sendUntilSuccess(t, bob, "sendto alice yes")
	alice.expectLine("bob: yes")
	sendUntilSuccess(t, carol, "sendto alice hello")
	alice.expectLine("carol: hello")
	bob.do("list", "alice bob carol")

	for _, u := range []*proc{alice, bob, carol} {
		u.do("exit")
		u.expectEnd(0)
	}
}

// startReadmeCluster starts the README's cluster: its three nats-server
// command lines (nats-server built from the module cache) and its three
// chatserver command lines, on free ports and in the test's directories.
func startReadmeCluster(t *testing.T) ([]*proc, []*server) {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	natsBin := filepath.Join(dir, "nats-server")
	// The version go.mod requires, as the README's go install does.
	if out, err := exec.Command(goTool(), "build", "-o", natsBin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("building nats-server: %v\n%s", err, out)
	}

	// Another process may take a port between FreePorts and the servers'
	// listening on it; then the cluster starts again on other ports.
	var nats []*proc
	var rc readmeCluster
	for try := 1; ; try++ {
		nats, rc, err = startReadmeNATS(t, string(readme), natsBin, filepath.Join(dir, fmt.Sprint(try)))
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || try == 3 {
			t.Fatal(err)
		}
		t.Logf("%v; starting again on other ports", err)
		for _, n := range nats {
			n.cmd.Process.Kill()
			n.wait()
		}
	}

	var nodes []*server
	for i, args := range rc.chat {
		args = slices.Clone(args)
		if j := slices.Index(args, "-addr"); j >= 0 && j+1 < len(args) {
			args[j+1] = "127.0.0.1:0"
		}
		p := startProc(t, fmt.Sprintf("chatserver %d", i+1), serverBin, false, args...)
		nodes = append(nodes, waitListening(t, p, 6*timeout)) // JetStream's elections, on a loaded machine
	}

	return nats, nodes
}

// errPortTaken says that a nats-server could not listen on its port.
var errPortTaken = errors.New("a port was taken")

// startReadmeNATS starts the README's three nats-server command lines on
// free ports, with their stores in dir, and waits until they have a
// JetStream leader. It returns the README's command lines on those ports.
func startReadmeNATS(t *testing.T, readme, natsBin, dir string) ([]*proc, readmeCluster, error) {
	t.Helper()
	// Ports picked right before the servers start, not before the build:
	// that takes seconds, in which another test's server could take them.
	ports := natstest.FreePorts(t, 6)
	var oldNew []string
	for i := range 3 {
		oldNew = append(oldNew,
			fmt.Sprint(4222+i), fmt.Sprint(ports[2*i]), // client ports
			fmt.Sprint(6222+i), fmt.Sprint(ports[2*i+1]), // cluster ports
			fmt.Sprintf("/tmp/chat-nats-%d", i+1), filepath.Join(dir, fmt.Sprintf("nats-%d", i+1)))
	}
	rc, err := parseReadmeCluster(readme, strings.NewReplacer(oldNew...))
	if err != nil {
		t.Fatal("README.md:", err)
	}

	var nats []*proc
	for i, args := range rc.nats {
		nats = append(nats, startProc(t, fmt.Sprintf("nats-server %d", i+1), natsBin, false, args...))
	}
	// The chat servers need JetStream, which needs a leader of the cluster.
	for _, n := range nats {
		deadline := time.After(6 * timeout) // an election, on a loaded machine
		for i := 0; ; i++ {
			line, ok := n.stderr.waitLine(i, deadline)
			if !ok {
				err := fmt.Errorf("%s: no JetStream leader; stderr:\n%s", n.name, clip(n.stderr.String()))
				if strings.Contains(n.stderr.String(), "address already in use") {
					err = fmt.Errorf("%w: %w", errPortTaken, err)
				}
				return nats, rc, err
			}
			if strings.Contains(line, "metadata leader") {
				break
			}
		}
	}
	return nats, rc, nil
}
