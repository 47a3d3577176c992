package chat

// Checks that keep the documentation true: the README's program runs as
// written and prints what the README says, every relative link in the
// Markdown files leads to a file of the repository, and the repository
// cites nothing outside itself.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
)

// fencedBlocks returns the fenced code blocks of a Markdown text in order,
// with the info string (the word after the opening fence) of each.
func fencedBlocks(md string) (infos, blocks []string) {
	var in bool
	var info string
	var b strings.Builder
	for _, line := range strings.SplitAfter(md, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case !in && strings.HasPrefix(trimmed, "```"):
			in, info = true, strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))
			b.Reset()
		case in && trimmed == "```":
			in = false
			infos, blocks = append(infos, info), append(blocks, b.String())
		case in:
			b.WriteString(line)
		}
	}
	return infos, blocks
}

// section returns the part of a Markdown text under the heading "## title",
// up to the next heading of that level.
func section(md, title string) (string, error) {
	head := "\n## " + title + "\n"
	i := strings.Index(md, head)
	if i < 0 {
		return "", fmt.Errorf("no section %q", title)
	}
	s := md[i+len(head):]
	if j := strings.Index(s, "\n## "); j >= 0 {
		s = s[:j]
	}
	return s, nil
}

// readmeProgram returns the Go program of the README's "Using the library"
// section and the output the README says it prints: the first go block of
// the section and the plain block after it.
func readmeProgram(readme string) (program, output string, err error) {
	sec, err := section(readme, "Using the library")
	if err != nil {
		return "", "", err
	}
	infos, blocks := fencedBlocks(sec)
	for i, info := range infos {
		if info == "go" {
			if i+1 == len(infos) || infos[i+1] != "" {
				return "", "", errors.New("the go block is not followed by a plain block of its output")
			}
			return blocks[i], blocks[i+1], nil
		}
	}
	return "", "", errors.New("no go block")
}

func TestReadmeProgramExtracted(t *testing.T) {
	tests := []struct {
		name, readme, program, output string
		wantErr                       bool
	}{
		{
			name:    "program and output",
			readme:  "# x\n\n## Using the library\n\ntext\n\n```go\npackage main\n```\n\nIt prints:\n\n```\nhi\n```\n\n## Next\n\n```\nother\n```\n",
			program: "package main\n",
			output:  "hi\n",
		},
		{
			name:    "no output block",
			readme:  "\n## Using the library\n\n```go\npackage main\n```\n\n## Next\n\n```\nother\n```\n",
			wantErr: true,
		},
		{
			name:    "no section",
			readme:  "\n## Using it\n\n```go\npackage main\n```\n\n```\nhi\n```\n",
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			program, output, err := readmeProgram(tt.readme)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error: %v", err, tt.wantErr)
			}
			if program != tt.program || output != tt.output {
				t.Errorf("got %q, %q; want %q, %q", program, output, tt.program, tt.output)
			}
		})
	}
}

// TestReadmeProgram builds the README's program in a module of its own that
// depends on this repository through a replace line, as the README tells
// users to, runs it and compares what it prints with the README. It works
// offline, from the module cache that "go mod download" fills.
func TestReadmeProgram(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	program, want, err := readmeProgram(string(readme))
	if err != nil {
		t.Fatal("README.md:", err)
	}
	repo, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	goMod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go [0-9.]+$`).Find(goMod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	goSum, err := os.ReadFile("go.sum")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	files := map[string]string{
		"go.mod": fmt.Sprintf("module example.com/hello\n\n%s\n\nrequire github.com/seedchat/chat v0.0.0\n\nreplace github.com/seedchat/chat => %s\n",
			goLine, repo),
		"go.sum":  string(goSum), // the dependencies' hashes: no network needed
		"main.go": program,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "run", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GOFLAGS=-mod=mod -buildvcs=false", // complete go.mod from the replaced module's
		"GOPROXY=off",                      // the module cache only
		"GOWORK=off",
		"GOTOOLCHAIN=local",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go run of the README's program: %v\n%s", err, stderr.Bytes())
	}
	if got := stdout.String(); got != want {
		t.Errorf("the README's program printed\n%s\nthe README says\n%s", got, want)
	}
}

// mdLink matches an inline Markdown link or image, [text](target "title"),
// and a reference definition, [label]: target.
var mdLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)|(?m)^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)

// markdownLinks returns the link targets of a Markdown text, outside code
// blocks and code spans.
func markdownLinks(md string) []string {
	var links []string
	inFence := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
			if m[1] != "" {
				links = append(links, m[1])
			} else {
				links = append(links, m[2])
			}
		}
	}
	return links
}

var codeSpan = regexp.MustCompile("`[^`]*`")

// headingAnchor returns the anchor GitHub gives a heading: lower case,
// punctuation dropped, spaces turned into hyphens.
func headingAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors returns the anchors of the headings of a Markdown text.
func anchors(md string) map[string]bool {
	a := make(map[string]bool)
	inFence := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimLeft(line, "#")
		if !strings.HasPrefix(text, " ") {
			continue
		}
		id := headingAnchor(codeSpanMarks.Replace(text))
		for n := 0; ; n++ { // GitHub numbers repeated headings
			cand := id
			if n > 0 {
				cand = fmt.Sprintf("%s-%d", id, n)
			}
			if !a[cand] {
				a[cand] = true
				break
			}
		}
	}
	return a
}

var codeSpanMarks = strings.NewReplacer("`", "")

// checkLinks reports the relative links of the Markdown file at path (a
// slash-separated path under root) that lead to nothing inside root: a
// missing file, a path out of root, or an anchor no heading has.
func checkLinks(root fs.FS, path string) ([]string, error) {
	md, err := fs.ReadFile(root, path)
	if err != nil {
		return nil, err
	}
	var broken []string
	for _, link := range markdownLinks(string(md)) {
		if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
			continue // not relative
		}
		target, anchor, _ := strings.Cut(link, "#")
		file := path
		if target != "" {
			if strings.HasPrefix(target, "/") {
				broken = append(broken, link+" (absolute path)")
				continue
			}
			file = filepath.ToSlash(filepath.Join(filepath.Dir(path), target))
			if file == ".." || strings.HasPrefix(file, "../") {
				broken = append(broken, link+" (outside the repository)")
				continue
			}
			if _, err := fs.Stat(root, file); err != nil {
				broken = append(broken, link+" (no such file)")
				continue
			}
		}
		if anchor != "" && strings.HasSuffix(file, ".md") {
			body, err := fs.ReadFile(root, file)
			if err != nil {
				return nil, err
			}
			if !anchors(string(body))[anchor] {
				broken = append(broken, link+" (no such heading)")
			}
		}
	}
	return broken, nil
}

// markdownFiles returns the Markdown files under root, skipping hidden
// directories such as .git.
func markdownFiles(root fs.FS) ([]string, error) {
	var files []string
	err := fs.WalkDir(root, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && strings.HasPrefix(d.Name(), ".") {
			return fs.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return nil
	})
	return files, err
}

func TestCheckLinks(t *testing.T) {
	dir := t.TempDir()
	root := os.DirFS(dir)
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("PROTOCOL.md", "# The protocol\n\n## Size limits\n\n## `-max-frame-size`, again\n")
	write("docs/USAGE.md", "# Usage\n")
	tests := []struct {
		name, md string
		broken   []string
	}{
		{"file", "see [the protocol](PROTOCOL.md).", nil},
		{"file in a folder", "[usage](docs/USAGE.md)", nil},
		{"anchor", "[limits](PROTOCOL.md#size-limits)", nil},
		{"anchor with code", "[flag](PROTOCOL.md#-max-frame-size-again)", nil},
		{"own anchor", "# A b\n[up](#a-b)", nil},
		{"web", "[NATS](https://nats.io) <https://x>", nil},
		{"in code", "```\n[x](nowhere.md)\n```\n`[y](nowhere.md)`", nil},
		{"reference", "[x]: PROTOCOL.md\n[y]: missing.md", []string{"missing.md (no such file)"}},
		{"missing", "[x](NOTES.md)", []string{"NOTES.md (no such file)"}},
		{"outside", "[x](../elsewhere/x.md)", []string{"../elsewhere/x.md (outside the repository)"}},
		{"absolute", "[x](/etc/passwd)", []string{"/etc/passwd (absolute path)"}},
		{"bad anchor", "[x](PROTOCOL.md#sizes)", []string{"PROTOCOL.md#sizes (no such heading)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			write("README.md", tt.md)
			broken, err := checkLinks(root, "README.md")
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(broken) != fmt.Sprint(tt.broken) {
				t.Errorf("broken %q, want %q", broken, tt.broken)
			}
		})
	}
}

// TestMarkdownLinks checks every relative link of every Markdown file of the
// repository: the repository must stand alone.
func TestMarkdownLinks(t *testing.T) {
	root := os.DirFS(".")
	files, err := markdownFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found only %q", files)
	}
	for _, f := range files {
		broken, err := checkLinks(root, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range broken {
			t.Errorf("%s: broken link %s", f, b)
		}
	}
}

// TestNoOutsideReferences checks that no file of the repository refers to
// documents kept outside it.
func TestNoOutsideReferences(t *testing.T) {
	// Split, so that this file does not match them (nor a grep for them).
	forbidden := []string{
		"SP" + "EC.md",         // the behaviour document kept outside
		"../" + "sha" + "red/", // the folder it is kept in
	}
	err := fs.WalkDir(os.DirFS("."), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" || d.Name() == "testdata" {
				return fs.SkipDir
			}
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			return nil // a worktree's pointer to its repository
		}
		for _, f := range forbidden {
			if bytes.Contains(b, []byte(f)) {
				t.Errorf("%s mentions %s", path, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
