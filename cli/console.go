package cli

import (
	"bufio"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/seedchat/chat"
)

// LineReader yields the lines a user types, without their line ends. It
// returns io.EOF when the input ends.
type LineReader interface {
	ReadLine() (string, error)
}

// MaxLineSize is the longest input line NewLineReader returns whole. It
// holds the longest valid sendto with room to spare.
const MaxLineSize = 1 << 20

// ErrLineTooLong is returned by a LineReader from NewLineReader, with the
// first MaxLineSize bytes of the line, for a line that is longer; the rest
// of the line is skipped.
var ErrLineTooLong = errors.New("cli: input line too long")

// NewLineReader returns a LineReader of the lines of r, for input from a
// pipe or a file. A trailing "\r" (CRLF line ends) is not part of a line;
// the last line needs no line end. If r is an io.Closer, so is the
// LineReader.
func NewLineReader(r io.Reader) LineReader {
	return &plainLineReader{r: bufio.NewReader(r), src: r}
}

type plainLineReader struct {
	r   *bufio.Reader
	src io.Reader
}

func (l *plainLineReader) ReadLine() (string, error) {
	var line []byte
	var tooLong bool
	for {
		chunk, err := l.r.ReadSlice('\n')
		if len(line)+len(chunk) <= MaxLineSize+2 { // room for "\r\n"
			line = append(line, chunk...)
		} else if !tooLong {
			tooLong = true
			line = append(line, chunk[:MaxLineSize-len(line)]...)
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(line) > 0:
			err = nil // the last line, without a line end
		case err != nil:
			return "", err
		}
		if tooLong {
			return string(line), ErrLineTooLong
		}
		s := strings.TrimSuffix(string(line), "\n")
		return strings.TrimSuffix(s, "\r"), nil
	}
}

// Close closes the underlying reader, if it is an io.Closer.
func (l *plainLineReader) Close() error {
	if c, ok := l.src.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Console is the loop of the command-line client: it reads a line, parses
// it, asks the Client and prints the outcome, in the words docs/USAGE.md
// gives, and prints the messages that arrive meanwhile. It is meant to be
// shared by front ends: examples/chatclient runs it with a readline prompt
// at a terminal and with plain line reading from a pipe.
//
// Text and names from the network are printed through Escape.
type Console struct {
	out io.Writer

	mu      sync.Mutex // serializes output and guards the fields below
	listed  []string   // names of the latest list
	senders []string   // names messages came from, most recent last
}

// maxSenders bounds the names remembered from incoming messages.
const maxSenders = 1000

// NewConsole returns a Console printing to out. Every line is written with
// one call to out.Write.
func NewConsole(out io.Writer) *Console {
	return &Console{out: out}
}

// PrintMessage prints an incoming message as "sender: text". It is a
// chat.MessageHandler: pass it to chat.Dial or chat.NewClient with
// chat.OnMessage.
func (con *Console) PrintMessage(m chat.Message) {
	con.mu.Lock()
	defer con.mu.Unlock()
	con.println(Escape(m.From) + ": " + Escape(m.Text))
	if i := slices.Index(con.senders, m.From); i >= 0 {
		con.senders = slices.Delete(con.senders, i, i+1)
	} else if len(con.senders) == maxSenders {
		con.senders = slices.Delete(con.senders, 0, 1)
	}
	con.senders = append(con.senders, m.From)
}

// Print prints one line.
func (con *Console) Print(line string) {
	con.mu.Lock()
	defer con.mu.Unlock()
	con.println(line)
}

func (con *Console) println(line string) {
	io.WriteString(con.out, line+"\n")
}

// Run reads lines from in and carries them out with c, one at a time: the
// outcome of each is printed before the next line is read. It returns nil
// after exit or at the end of the input, ctx.Err() when ctx ends, and
// c.Err() when the connection ends first. If Run returns while a read from
// in is under way (the connection ended, say), it closes in when in is an
// io.Closer, to end that read, and returns without waiting for the read to
// end: a read from a terminal cannot be interrupted. Run does not close c.
func (con *Console) Run(ctx context.Context, c *chat.Client, in LineReader) error {
	type result struct {
		line string
		err  error
	}
	next := make(chan struct{}) // asks the reading goroutine for a line
	lines := make(chan result)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-next:
			case <-quit:
				return
			}
			line, err := in.ReadLine()
			select {
			case lines <- result{line, err}:
			case <-quit:
				return
			}
			if err != nil && !errors.Is(err, ErrLineTooLong) {
				return
			}
		}
	}()
	reading := false // a ReadLine is under way
	defer func() {
		close(quit)
		if !reading {
			wg.Wait()
			return
		}
		// A read is under way. Closing in ends it if in can be interrupted;
		// a read from a terminal's standard input cannot be, so Run does
		// not wait: the goroutine ends when its read returns.
		if cl, ok := in.(io.Closer); ok {
			cl.Close()
		}
	}()

	for {
		next <- struct{}{}
		reading = true
		var r result
		select {
		case r = <-lines:
			reading = false
		case <-c.Done():
			return c.Err()
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil && !errors.Is(r.err, ErrLineTooLong) {
			if r.err == io.EOF {
				return nil // the end of the input acts as exit
			}
			return r.err
		}
		cmd, err := parseLine(r.line, r.err)
		if err != nil {
			w, _ := words(err) // ParseCommand's errors all have words
			con.Print(w)
			continue
		}
		if cmd.Kind == CommandExit {
			return nil
		}
		if err := con.Execute(ctx, c, cmd); err != nil {
			return err
		}
	}
}

// parseLine parses a line that may have been cut short at MaxLineSize.
// Only a sendto can be valid and that long; its text is then too long.
func parseLine(line string, readErr error) (Command, error) {
	cmd, err := ParseCommand(line)
	if readErr == nil || err != nil {
		return cmd, err
	}
	if cmd.Kind == CommandSendTo {
		return Command{}, chat.ErrBadMessage
	}
	return Command{}, ErrInvalidCommand
}

// Execute carries out one parsed command with c and prints the outcome:
// Success, Failure, Malformed packet, or the list of names. It returns an
// error only if the reply could not be had: the connection ended (c.Err())
// or ctx did. CommandNone and CommandExit do nothing.
func (con *Console) Execute(ctx context.Context, c *chat.Client, cmd Command) error {
	var err error
	switch cmd.Kind {
	case CommandLogin:
		err = c.Login(ctx, cmd.Name)
	case CommandSendTo:
		err = c.SendTo(ctx, cmd.Name, cmd.Text)
	case CommandLogout:
		err = c.Logout(ctx)
	case CommandList:
		var names []string
		names, err = c.List(ctx)
		if err == nil {
			con.printNames(names)
			return nil
		}
	default:
		return nil
	}
	w, ok := words(err)
	if !ok {
		return err
	}
	con.Print(w)
	return nil
}

func (con *Console) printNames(names []string) {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(Escape(n))
	}
	con.mu.Lock()
	defer con.mu.Unlock()
	con.listed = names
	con.println(b.String())
}

// commandWords are the words Complete offers first.
var commandWords = []string{"exit", "list", "login ", "logout", "sendto "}

// Complete offers completions of the word before pos in line: a command
// word at the start of the line, and after login or sendto a user name
// from the latest list or from the messages received. It returns the
// endings that complete the word and the length of the word; its signature
// is that of readline's AutoCompleter.Do.
func (con *Console) Complete(line []rune, pos int) (endings [][]rune, wordLen int) {
	before := string(line[:min(pos, len(line))])
	start := trimBlank(before)
	word, rest := cutWord(start)
	var candidates []string
	var prefix string
	switch {
	case rest == "":
		prefix, candidates = word, commandWords
	case word == "login" || word == "sendto":
		name, after := cutWord(trimBlank(rest))
		if after != "" {
			return nil, 0 // past the name: typing the text
		}
		prefix, candidates = name, con.knownNames()
	default:
		return nil, 0
	}
	for _, c := range candidates {
		if len(c) > len(prefix) && strings.HasPrefix(c, prefix) {
			ending := c[len(prefix):]
			if word == "sendto" && rest != "" {
				ending += " " // the text follows the name
			}
			endings = append(endings, []rune(ending))
		}
	}
	return endings, len([]rune(prefix))
}

// knownNames returns the names to complete, sorted and without duplicates.
func (con *Console) knownNames() []string {
	con.mu.Lock()
	names := append(slices.Clone(con.listed), con.senders...)
	con.mu.Unlock()
	slices.Sort(names)
	return slices.Compact(names)
}
