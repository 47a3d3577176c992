// Package chat is a small client/server chat system: a Server that keeps TCP
// (or any net.Conn) connections from many clients and relays private
// messages between logged-in users, a Client to talk to it from Go, and the
// pieces of a command-line front end (ParseCommand, Console).
//
// Connected clients can list the logged-in users, log in with a name, send
// messages to other logged-in users and log out while staying connected.
// Every request gets exactly one reply, in the order the requests were sent.
// The wire format is documented byte by byte in PROTOCOL.md.
//
// A server and a client in one program (README.md and ExampleServer have
// complete programs):
//
//	l, err := net.Listen("tcp", "127.0.0.1:0") // listen first, then serve
//	if err != nil {
//		log.Fatal(err)
//	}
//	srv := &chat.Server{}
//	go srv.Serve(l)
//	defer srv.Shutdown(context.Background())
//
//	ctx := context.Background()
//	c, err := chat.Dial(ctx, l.Addr().String(), chat.OnMessage(func(m chat.Message) {
//		fmt.Printf("%s: %s\n", m.From, m.Text)
//	}))
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer c.Close()
//	if err := c.Login(ctx, "alice"); err != nil {
//		log.Fatal(err) // errors.Is(err, chat.ErrFailure) if the name is taken
//	}
//	names, err := c.List(ctx)
//	fmt.Println(names, err) // [alice] <nil>
//	err = c.SendTo(ctx, "alice", "hi")
//	fmt.Println(err) // <nil>; soon the handler prints "alice: hi"
//
// Dialling right after net.Listen has returned succeeds: the connection
// waits in the listener's backlog until Serve accepts it. Dialling after
// "go srv.ListenAndServe(addr)" instead races the listening.
//
// # Limits
//
// A user name is 1 to MaxNameLen (20) Unicode code points of valid UTF-8
// that is exactly its own form under the PRECIS UsernameCasePreserved
// profile (RFC 8265): letters and digits of any script and the printable
// ASCII symbols other than space, but no white space, controls, invisible
// format characters, emoji, compatibility forms or unassigned code points,
// and nothing that normalisation would change. Names are case sensitive,
// but a login is refused while a logged-in name looks the same (has the
// same Skeleton). A text is at most MaxTextLen (65535) code points of valid
// UTF-8. Both client and server apply the same rules (ValidateName,
// ValidateText).
package chat

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Limits, counted in Unicode code points.
const (
	MaxNameLen = 20    // the longest user name
	MaxTextLen = 65535 // the longest message text
)

// The three validation errors of the command-line client. Their texts are
// exactly what the client prints.
var (
	// ErrBadUsername reports a missing or invalid user name (or, for
	// sendto, a missing text).
	ErrBadUsername = errors.New("Bad username")

	// ErrInvalidCommand reports an unknown command word or parameters where
	// a command takes none.
	ErrInvalidCommand = errors.New("Invalid command")

	// ErrBadMessage reports a text that is too long or not valid UTF-8.
	ErrBadMessage = errors.New("Bad message")
)

// ValidateText reports whether text is a valid message text: valid UTF-8 of
// at most MaxTextLen code points. It returns nil or ErrBadMessage.
func ValidateText(text string) error {
	if len(text) > MaxTextLen && (len(text) > MaxTextLen*utf8.UTFMax || utf8.RuneCountInString(text) > MaxTextLen) {
		return ErrBadMessage
	}
	if !utf8.ValidString(text) {
		return ErrBadMessage
	}
	return nil
}

// validTextBytes is ValidateText for a text that aliases a frame buffer.
func validTextBytes(text []byte) bool {
	if len(text) > MaxTextLen && (len(text) > MaxTextLen*utf8.UTFMax || utf8.RuneCount(text) > MaxTextLen) {
		return false
	}
	return utf8.Valid(text)
}

// CommandKind names what a command line asks for.
type CommandKind int

// The kinds of command. CommandNone is a blank line, which does nothing.
const (
	CommandNone CommandKind = iota
	CommandLogin
	CommandList
	CommandSendTo
	CommandLogout
	CommandExit
)

// String returns the command word of k.
func (k CommandKind) String() string {
	switch k {
	case CommandLogin:
		return "login"
	case CommandList:
		return "list"
	case CommandSendTo:
		return "sendto"
	case CommandLogout:
		return "logout"
	case CommandExit:
		return "exit"
	}
	return "none"
}

// Command is one parsed command line.
type Command struct {
	Kind CommandKind
	Name string // the user name of login and sendto
	Text string // the text of sendto, exactly as typed
}

// ParseCommand parses one line typed by a user, following the rules of the
// command-line client:
//
//	login <username>
//	list
//	sendto <username> <text>
//	logout
//	exit
//
// The command word is exact and lower case. Leading spaces and tabs are
// ignored, runs of spaces or tabs separate the command word and the user
// name, and trailing spaces or tabs after a command without a text are not
// a parameter. The text of sendto starts after the one space or tab that
// follows the user name and runs to the end of the line, kept exactly. A
// trailing "\n" or "\r\n" is not part of the line. A blank line returns
// CommandNone.
//
// On error ParseCommand returns exactly one of ErrBadUsername,
// ErrInvalidCommand and ErrBadMessage: a user name is checked before the
// text, and a sendto without a text is ErrBadUsername.
func ParseCommand(line string) (Command, error) {
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	rest := trimBlank(line)
	if rest == "" {
		return Command{}, nil
	}
	word, rest := cutWord(rest)
	switch word {
	case "list":
		return bareCommand(CommandList, rest)
	case "logout":
		return bareCommand(CommandLogout, rest)
	case "exit":
		return bareCommand(CommandExit, rest)
	case "login":
		name, rest := cutWord(trimBlank(rest))
		if trimBlank(rest) != "" || ValidateName(name) != nil {
			return Command{}, ErrBadUsername
		}
		return Command{Kind: CommandLogin, Name: name}, nil
	case "sendto":
		name, rest := cutWord(trimBlank(rest))
		if ValidateName(name) != nil {
			return Command{}, ErrBadUsername
		}
		// rest is empty or starts with the one separator before the text.
		if len(rest) <= 1 {
			return Command{}, ErrBadUsername
		}
		text := rest[1:]
		if ValidateText(text) != nil {
			return Command{}, ErrBadMessage
		}
		return Command{Kind: CommandSendTo, Name: name, Text: text}, nil
	}
	return Command{}, ErrInvalidCommand
}

// bareCommand returns a command that takes no parameters, if rest has none.
func bareCommand(kind CommandKind, rest string) (Command, error) {
	if trimBlank(rest) != "" {
		return Command{}, ErrInvalidCommand
	}
	return Command{Kind: kind}, nil
}

// isBlank reports whether c separates words in a command line.
func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// trimBlank removes leading spaces and tabs.
func trimBlank(s string) string {
	i := 0
	for i < len(s) && isBlank(s[i]) {
		i++
	}
	return s[i:]
}

// cutWord splits s at its first space or tab.
func cutWord(s string) (word, rest string) {
	i := 0
	for i < len(s) && !isBlank(s[i]) {
		i++
	}
	return s[:i], s[i:]
}
