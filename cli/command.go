// Package cli is the command-line front end of chat: it parses what a user
// types (ParseCommand), carries it out with a chat.Client and prints the
// outcome in the client's exact words (Console), and shows names and texts
// that may hold invisible or control characters safely (Escape).
// docs/USAGE.md gives the commands and what the client prints.
package cli

import (
	"errors"
	"strings"

	"github.com/seedchat/chat"
)

// ErrInvalidCommand reports an unknown command word, or parameters where a
// command takes none.
var ErrInvalidCommand = errors.New("cli: invalid command")

// words returns what the command-line client prints for err, the outcome
// of a command line: Success for nil, and its word for each error it has
// one for; false for any other (the connection ended, say).
func words(err error) (string, bool) {
	switch {
	case err == nil:
		return "Success", true
	case errors.Is(err, chat.ErrFailure):
		return "Failure", true
	case errors.Is(err, chat.ErrMalformedPacket):
		return "Malformed packet", true
	case errors.Is(err, chat.ErrBadUsername):
		return "Bad username", true
	case errors.Is(err, ErrInvalidCommand):
		return "Invalid command", true
	case errors.Is(err, chat.ErrBadMessage):
		return "Bad message", true
	}
	return "", false
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
// On error ParseCommand returns exactly one of chat.ErrBadUsername,
// ErrInvalidCommand and chat.ErrBadMessage: a user name is checked before
// the text, and a sendto without a text is chat.ErrBadUsername.
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
		if trimBlank(rest) != "" || chat.ValidateName(name) != nil {
			return Command{}, chat.ErrBadUsername
		}
		return Command{Kind: CommandLogin, Name: name}, nil
	case "sendto":
		name, rest := cutWord(trimBlank(rest))
		if chat.ValidateName(name) != nil {
			return Command{}, chat.ErrBadUsername
		}
		// rest is empty or starts with the one separator before the text.
		if len(rest) <= 1 {
			return Command{}, chat.ErrBadUsername
		}
		text := rest[1:]
		if chat.ValidateText(text) != nil {
			return Command{}, chat.ErrBadMessage
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
