package cli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/seedchat/chat"
)

func TestParseCommand(t *testing.T) {
	t.Parallel()
	name20 := strings.Repeat("n", 20)
	name21 := strings.Repeat("n", 21)
	uni20 := strings.Repeat("é", 20) // 40 bytes, 20 characters
	text65535 := strings.Repeat("x", 65535)
	uniText := strings.Repeat("☃", 65535) // 3 bytes each
	long20 := strings.Repeat("𠀀", 20)     // a CJK ideograph of 4 bytes each
	emoji20 := strings.Repeat("😀", 20)    // emoji are no name
	emojiText := strings.Repeat("😀", 65535)
	tests := []struct {
		line string
		want Command
		err  error
	}{
		// The examples of docs/USAGE.md.
		{"login John", Command{Kind: CommandLogin, Name: "John"}, nil},
		{"list", Command{Kind: CommandList}, nil},
		{"sendto John Hello, how are you?", Command{Kind: CommandSendTo, Name: "John", Text: "Hello, how are you?"}, nil},
		{"logout", Command{Kind: CommandLogout}, nil},
		{"exit", Command{Kind: CommandExit}, nil},
		{"login John Doe", Command{}, chat.ErrBadUsername},
		{"list bob", Command{}, ErrInvalidCommand},
		{"sendto JohnHello", Command{}, chat.ErrBadUsername},
		{"logout Joe", Command{}, ErrInvalidCommand},
		{"exit client", Command{}, ErrInvalidCommand},

		// Blank lines do nothing.
		{"", Command{}, nil},
		{"   \t ", Command{}, nil},
		{"\r\n", Command{}, nil},

		// The command word: exact, lower case; leading blanks ignored.
		{"  \tlogin bob", Command{Kind: CommandLogin, Name: "bob"}, nil},
		{"Login bob", Command{}, ErrInvalidCommand},
		{"LIST", Command{}, ErrInvalidCommand},
		{"lists", Command{}, ErrInvalidCommand},
		{"logi bob", Command{}, ErrInvalidCommand},
		{"hello", Command{}, ErrInvalidCommand},
		{"sendtobob hi", Command{}, ErrInvalidCommand},

		// Trailing blanks after a command without text are not a parameter.
		{"list  \t", Command{Kind: CommandList}, nil},
		{"logout ", Command{Kind: CommandLogout}, nil},
		{"exit\t", Command{Kind: CommandExit}, nil},
		{"login bob  ", Command{Kind: CommandLogin, Name: "bob"}, nil},
		{"login\t\tbob", Command{Kind: CommandLogin, Name: "bob"}, nil},

		// Names: present, no white space, at most 20 characters, case kept.
		{"login", Command{}, chat.ErrBadUsername},
		{"login   ", Command{}, chat.ErrBadUsername},
		{"login " + name20, Command{Kind: CommandLogin, Name: name20}, nil},
		{"login " + name21, Command{}, chat.ErrBadUsername},
		{"login " + uni20, Command{Kind: CommandLogin, Name: uni20}, nil},
		{"login " + uni20 + "é", Command{}, chat.ErrBadUsername},
		{"login BoB", Command{Kind: CommandLogin, Name: "BoB"}, nil},
		{"login bo\u00a0b", Command{}, chat.ErrBadUsername}, // no-break space
		{"login bo\u3000b", Command{}, chat.ErrBadUsername}, // ideographic space
		{"login bo\x01b", Command{}, chat.ErrBadUsername},
		{"login bo\x7fb", Command{}, chat.ErrBadUsername},
		{"login bo\xffb", Command{}, chat.ErrBadUsername},

		// sendto: the text starts after the one blank after the name.
		{"sendto bob   hi  ", Command{Kind: CommandSendTo, Name: "bob", Text: "  hi  "}, nil},
		{"sendto bob\thi", Command{Kind: CommandSendTo, Name: "bob", Text: "hi"}, nil},
		{"sendto  \tbob hi", Command{Kind: CommandSendTo, Name: "bob", Text: "hi"}, nil},
		{"sendto bob \t", Command{Kind: CommandSendTo, Name: "bob", Text: "\t"}, nil},
		{"sendto bob", Command{}, chat.ErrBadUsername},
		{"sendto bob ", Command{}, chat.ErrBadUsername},
		{"sendto", Command{}, chat.ErrBadUsername},
		{"sendto ", Command{}, chat.ErrBadUsername},
		{"sendto " + name21 + " hi", Command{}, chat.ErrBadUsername},
		{"sendto " + name20 + " hi", Command{Kind: CommandSendTo, Name: name20, Text: "hi"}, nil},
		{"sendto bob " + text65535, Command{Kind: CommandSendTo, Name: "bob", Text: text65535}, nil},
		{"sendto bob " + text65535 + "x", Command{}, chat.ErrBadMessage},
		{"sendto bob " + uniText, Command{Kind: CommandSendTo, Name: "bob", Text: uniText}, nil},
		{"sendto bob " + uniText + "☃", Command{}, chat.ErrBadMessage},
		{"sendto bob caf\xe9", Command{}, chat.ErrBadMessage},
		// The name is checked before the text.
		{"sendto " + name21 + " " + text65535 + "x", Command{}, chat.ErrBadUsername},

		// More on the command word and its separators.
		{"Sendto bob hi", Command{}, ErrInvalidCommand},
		{"EXIT", Command{}, ErrInvalidCommand},
		{"logout\x00", Command{}, ErrInvalidCommand},
		{"l\xffist", Command{}, ErrInvalidCommand},
		{"\u00a0list", Command{}, ErrInvalidCommand}, // only spaces and tabs separate
		{"\vlist", Command{}, ErrInvalidCommand},
		{"list\u00a0", Command{}, ErrInvalidCommand},
		{"list\r\n", Command{Kind: CommandList}, nil},
		{"exit\n", Command{Kind: CommandExit}, nil},
		{"logout \t\r\n", Command{Kind: CommandLogout}, nil},
		{"login\tbob\t", Command{Kind: CommandLogin, Name: "bob"}, nil},
		{"login bob\t x", Command{}, chat.ErrBadUsername},
		{"login bob\n\n", Command{}, chat.ErrBadUsername}, // one line end only
		{"login bo\rb", Command{}, chat.ErrBadUsername},
		{"login bo\u2028b", Command{}, chat.ErrBadUsername},
		{"login \ufffd", Command{}, chat.ErrBadUsername},
		{"login " + long20, Command{Kind: CommandLogin, Name: long20}, nil}, // 80 bytes
		{"login " + long20 + "𠀀", Command{}, chat.ErrBadUsername},
		{"login " + emoji20, Command{}, chat.ErrBadUsername},
		{"login alice\u200b", Command{}, chat.ErrBadUsername},
		{"login Zoe\u0308", Command{}, chat.ErrBadUsername},
		{"login Zoë", Command{Kind: CommandLogin, Name: "Zoë"}, nil},

		// More on sendto.
		{"sendto bob\t\thi", Command{Kind: CommandSendTo, Name: "bob", Text: "\thi"}, nil},
		{"sendto bob  ", Command{Kind: CommandSendTo, Name: "bob", Text: " "}, nil},
		{"sendto bob \r\n", Command{}, chat.ErrBadUsername}, // the text is empty
		{"sendto bob\r\n", Command{}, chat.ErrBadUsername},
		{"sendto bob hi\n", Command{Kind: CommandSendTo, Name: "bob", Text: "hi"}, nil},
		{"sendto bob a\rb", Command{Kind: CommandSendTo, Name: "bob", Text: "a\rb"}, nil},
		{"sendto bob \x1b[2J\u202e", Command{Kind: CommandSendTo, Name: "bob", Text: "\x1b[2J\u202e"}, nil},
		{"sendto Zoë ça va ?", Command{Kind: CommandSendTo, Name: "Zoë", Text: "ça va ?"}, nil},
		{"sendto bo\xffb hi", Command{}, chat.ErrBadUsername},
		{"sendto " + name21 + " " + "caf\xe9", Command{}, chat.ErrBadUsername},
		{"sendto " + long20 + " hi", Command{Kind: CommandSendTo, Name: long20, Text: "hi"}, nil},
		{"sendto " + emoji20 + " hi", Command{}, chat.ErrBadUsername},
		{"sendto x\u200b I am alice", Command{}, chat.ErrBadUsername},
		{"sendto bob " + emojiText, Command{Kind: CommandSendTo, Name: "bob", Text: emojiText}, nil},
		{"sendto bob " + emojiText + "😀", Command{}, chat.ErrBadMessage},
		{"sendto bob " + text65535 + "\r\n", Command{Kind: CommandSendTo, Name: "bob", Text: text65535}, nil},
		{"sendto bob " + text65535 + "x\r\n", Command{}, chat.ErrBadMessage},
		{"sendto bob " + text65535[1:] + "\xff", Command{}, chat.ErrBadMessage},

		// Line ends are not part of the line.
		{"login bob\n", Command{Kind: CommandLogin, Name: "bob"}, nil},
		{"login bob\r\n", Command{Kind: CommandLogin, Name: "bob"}, nil},
		{"sendto bob hi \r\n", Command{Kind: CommandSendTo, Name: "bob", Text: "hi "}, nil},
		{"list\r", Command{Kind: CommandList}, nil},
	}
	for _, tt := range tests {
		got, err := ParseCommand(tt.line)
		if err != tt.err || got != tt.want {
			t.Errorf("ParseCommand(%.40q) = %+.60v, %v; want %+.60v, %v", tt.line, got, err, tt.want, tt.err)
		}
		// An error is always one of the three the client prints.
		if w, _ := words(err); err != nil && w != "Bad username" && w != "Invalid command" && w != "Bad message" {
			t.Errorf("ParseCommand(%.40q): error %q is not one the client prints", tt.line, err)
		}
	}
}

func TestCommandKindString(t *testing.T) {
	t.Parallel()
	for kind, want := range map[CommandKind]string{
		CommandNone: "none", CommandLogin: "login", CommandList: "list",
		CommandSendTo: "sendto", CommandLogout: "logout", CommandExit: "exit",
		CommandKind(99): "none",
	} {
		if got := kind.String(); got != want {
			t.Errorf("CommandKind(%d).String() = %q, want %q", int(kind), got, want)
		}
	}
	// Each command word parses to the kind it names.
	for _, kind := range []CommandKind{CommandList, CommandLogout, CommandExit} {
		if cmd, err := ParseCommand(kind.String()); err != nil || cmd.Kind != kind {
			t.Errorf("ParseCommand(%q) = %v, %v", kind.String(), cmd, err)
		}
	}
}

func TestWords(t *testing.T) {
	t.Parallel()
	// The client prints these exactly (docs/USAGE.md), whatever wraps them.
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, "Success"},
		{chat.ErrFailure, "Failure"},
		{fmt.Errorf("login: %w", chat.ErrFailure), "Failure"},
		{chat.ErrMalformedPacket, "Malformed packet"},
		{chat.ErrBadUsername, "Bad username"},
		{ErrInvalidCommand, "Invalid command"},
		{chat.ErrBadMessage, "Bad message"},
	} {
		if got, ok := words(tt.err); !ok || got != tt.want {
			t.Errorf("words(%v) = %q, %v; want %q", tt.err, got, ok, tt.want)
		}
	}
	if got, ok := words(chat.ErrClosed); ok {
		t.Errorf("words(ErrClosed) = %q, want none: the connection ended", got)
	}
	// As errors, they read as Go's do.
	for _, err := range []error{chat.ErrBadUsername, chat.ErrBadMessage, ErrInvalidCommand} {
		if msg := err.Error(); !strings.HasPrefix(msg, "chat: ") && !strings.HasPrefix(msg, "cli: ") {
			t.Errorf("error %q does not start with its package", msg)
		}
	}
}

// TestParseCommandNames: a name the rule refuses is Bad username at login
// and sendto alike, and one it accepts is taken as typed. (The rule itself
// is tested with chat.ValidateName in package chat.)
func TestParseCommandNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"alice\u200b", "\u200b", "bob\u202e", "ａlice", "ﬁ", "Zoe\u0308", "😀", "a\u00adb", strings.Repeat("n", chat.MaxNameLen+1)} {
		for _, line := range []string{"login " + name, "sendto " + name + " hi"} {
			if cmd, err := ParseCommand(line); err != chat.ErrBadUsername {
				t.Errorf("ParseCommand(%+q) = %+v, %v; want Bad username", line, cmd, err)
			}
		}
	}
	for _, name := range []string{"alice", "O'Brien", "Zoë", "名前", "Ελένη", "שלום", strings.Repeat("n", chat.MaxNameLen)} {
		if cmd, err := ParseCommand("login " + name); err != nil || cmd != (Command{Kind: CommandLogin, Name: name}) {
			t.Errorf("ParseCommand(login %+q) = %+v, %v", name, cmd, err)
		}
		if cmd, err := ParseCommand("sendto " + name + " hi"); err != nil || cmd != (Command{Kind: CommandSendTo, Name: name, Text: "hi"}) {
			t.Errorf("ParseCommand(sendto %+q hi) = %+v, %v", name, cmd, err)
		}
	}
}

func BenchmarkParseCommand(b *testing.B) {
	for _, bm := range []struct{ name, line string }{
		{"sendto", "sendto bob " + strings.Repeat("x", 64)},
		{"sendto-long", "sendto bob " + strings.Repeat("é", chat.MaxTextLen)},
		{"login", "login alice\r\n"},
		{"list", "list"},
		{"invalid", "login John Doe"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bm.line)))
			for b.Loop() {
				ParseCommand(bm.line)
			}
		})
	}
}
