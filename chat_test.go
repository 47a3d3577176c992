package chat

// The command rules of docs/USAGE.md, table-driven. The server rules, with Server
// and Client joined by net.Pipe and over loopback TCP, are in server_test.go
// and client_test.go (each test runs over both); attacks in hostile_test.go
// and limits_test.go; nothing-lost in stress_test.go.

import (
	"errors"
	"strings"
	"testing"
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
		{"login John Doe", Command{}, ErrBadUsername},
		{"list bob", Command{}, ErrInvalidCommand},
		{"sendto JohnHello", Command{}, ErrBadUsername},
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
		{"login", Command{}, ErrBadUsername},
		{"login   ", Command{}, ErrBadUsername},
		{"login " + name20, Command{Kind: CommandLogin, Name: name20}, nil},
		{"login " + name21, Command{}, ErrBadUsername},
		{"login " + uni20, Command{Kind: CommandLogin, Name: uni20}, nil},
		{"login " + uni20 + "é", Command{}, ErrBadUsername},
		{"login BoB", Command{Kind: CommandLogin, Name: "BoB"}, nil},
		{"login bo\u00a0b", Command{}, ErrBadUsername}, // no-break space
		{"login bo\u3000b", Command{}, ErrBadUsername}, // ideographic space
		{"login bo\x01b", Command{}, ErrBadUsername},
		{"login bo\x7fb", Command{}, ErrBadUsername},
		{"login bo\xffb", Command{}, ErrBadUsername},

		// sendto: the text starts after the one blank after the name.
		{"sendto bob   hi  ", Command{Kind: CommandSendTo, Name: "bob", Text: "  hi  "}, nil},
		{"sendto bob\thi", Command{Kind: CommandSendTo, Name: "bob", Text: "hi"}, nil},
		{"sendto  \tbob hi", Command{Kind: CommandSendTo, Name: "bob", Text: "hi"}, nil},
		{"sendto bob \t", Command{Kind: CommandSendTo, Name: "bob", Text: "\t"}, nil},
		{"sendto bob", Command{}, ErrBadUsername},
		{"sendto bob ", Command{}, ErrBadUsername},
		{"sendto", Command{}, ErrBadUsername},
		{"sendto ", Command{}, ErrBadUsername},
		{"sendto " + name21 + " hi", Command{}, ErrBadUsername},
		{"sendto " + name20 + " hi", Command{Kind: CommandSendTo, Name: name20, Text: "hi"}, nil},
		{"sendto bob " + text65535, Command{Kind: CommandSendTo, Name: "bob", Text: text65535}, nil},
		{"sendto bob " + text65535 + "x", Command{}, ErrBadMessage},
		{"sendto bob " + uniText, Command{Kind: CommandSendTo, Name: "bob", Text: uniText}, nil},
		{"sendto bob " + uniText + "☃", Command{}, ErrBadMessage},
		{"sendto bob caf\xe9", Command{}, ErrBadMessage},
		// The name is checked before the text.
		{"sendto " + name21 + " " + text65535 + "x", Command{}, ErrBadUsername},

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
		{"login bob\t x", Command{}, ErrBadUsername},
		{"login bob\n\n", Command{}, ErrBadUsername}, // one line end only
		{"login bo\rb", Command{}, ErrBadUsername},
		{"login bo\u2028b", Command{}, ErrBadUsername},
		{"login \ufffd", Command{}, ErrBadUsername},
		{"login " + long20, Command{Kind: CommandLogin, Name: long20}, nil}, // 80 bytes
		{"login " + long20 + "𠀀", Command{}, ErrBadUsername},
		{"login " + emoji20, Command{}, ErrBadUsername},
		{"login alice\u200b", Command{}, ErrBadUsername},
		{"login Zoe\u0308", Command{}, ErrBadUsername},
		{"login Zoë", Command{Kind: CommandLogin, Name: "Zoë"}, nil},

		// More on sendto.
		{"sendto bob\t\thi", Command{Kind: CommandSendTo, Name: "bob", Text: "\thi"}, nil},
		{"sendto bob  ", Command{Kind: CommandSendTo, Name: "bob", Text: " "}, nil},
		{"sendto bob \r\n", Command{}, ErrBadUsername}, // the text is empty
		{"sendto bob\r\n", Command{}, ErrBadUsername},
		{"sendto bob hi\n", Command{Kind: CommandSendTo, Name: "bob", Text: "hi"}, nil},
		{"sendto bob a\rb", Command{Kind: CommandSendTo, Name: "bob", Text: "a\rb"}, nil},
		{"sendto bob \x1b[2J\u202e", Command{Kind: CommandSendTo, Name: "bob", Text: "\x1b[2J\u202e"}, nil},
		{"sendto Zoë ça va ?", Command{Kind: CommandSendTo, Name: "Zoë", Text: "ça va ?"}, nil},
		{"sendto bo\xffb hi", Command{}, ErrBadUsername},
		{"sendto " + name21 + " " + "caf\xe9", Command{}, ErrBadUsername},
		{"sendto " + long20 + " hi", Command{Kind: CommandSendTo, Name: long20, Text: "hi"}, nil},
		{"sendto " + emoji20 + " hi", Command{}, ErrBadUsername},
		{"sendto x\u200b I am alice", Command{}, ErrBadUsername},
		{"sendto bob " + emojiText, Command{Kind: CommandSendTo, Name: "bob", Text: emojiText}, nil},
		{"sendto bob " + emojiText + "😀", Command{}, ErrBadMessage},
		{"sendto bob " + text65535 + "\r\n", Command{Kind: CommandSendTo, Name: "bob", Text: text65535}, nil},
		{"sendto bob " + text65535 + "x\r\n", Command{}, ErrBadMessage},
		{"sendto bob " + text65535[1:] + "\xff", Command{}, ErrBadMessage},

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
		if err != nil && err.Error() != "Bad username" && err.Error() != "Invalid command" && err.Error() != "Bad message" {
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

func TestErrorStrings(t *testing.T) {
	t.Parallel()
	// The client prints these exactly (docs/USAGE.md).
	for err, want := range map[error]string{
		ErrBadUsername:    "Bad username",
		ErrInvalidCommand: "Invalid command",
		ErrBadMessage:     "Bad message",
	} {
		if err.Error() != want {
			t.Errorf("%q, want %q", err.Error(), want)
		}
	}
}

func TestValidateNameAndText(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		"a", "Zoë", "BoB", "a-b_c.d", "O'Brien", "\\back",
		strings.Repeat("n", MaxNameLen),
		strings.Repeat("名", MaxNameLen),
		strings.Repeat("𠀀", MaxNameLen), // 80 bytes
	} {
		if err := ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q) = %v", name, err)
		}
		if !validNameBytes([]byte(name)) {
			t.Errorf("validNameBytes(%q) = false", name)
		}
	}
	for _, name := range []string{
		"", " ", "a b", "a\tb", "a\nb", "a\rb", "bob\r\n", "a\u00a0b", "a\u3000", "a\u2028", "a\u0085",
		"\x00", "\x1b", "a\x7f", "a\u0080", "a\u009b",
		"\xc3", "\xff", "\xc0\xaf", "\xed\xa0\x80", "\ufffd",
		strings.Repeat("n", MaxNameLen+1),
		strings.Repeat("名", MaxNameLen+1),
		strings.Repeat("𠀀", MaxNameLen+1),
		strings.Repeat("𠀀", MaxNameLen) + "a",
		"😀", "alice\u200b", "Zoe\u0308", "ﬁ", "ａ",
	} {
		if err := ValidateName(name); !errors.Is(err, ErrBadUsername) {
			t.Errorf("ValidateName(%q) = %v, want ErrBadUsername", name, err)
		}
		if validNameBytes([]byte(name)) {
			t.Errorf("validNameBytes(%q) = true", name)
		}
	}
	for _, text := range []string{
		"", "hi", " spaces ", "\x00\x1b\r\n", "\u202e\ufffd",
		strings.Repeat("x", MaxTextLen),
		strings.Repeat("é", MaxTextLen),
		strings.Repeat("€", MaxTextLen),
		strings.Repeat("😀", MaxTextLen),
	} {
		if err := ValidateText(text); err != nil {
			t.Errorf("ValidateText(%.20q) = %v", text, err)
		}
		if !validTextBytes([]byte(text)) {
			t.Errorf("validTextBytes(%.20q) = false", text)
		}
	}
	for _, text := range []string{
		"\xff", "caf\xe9", "\xe2\x82", "\xc0\xaf", "\xed\xa0\x80",
		strings.Repeat("x", MaxTextLen+1),
		strings.Repeat("é", MaxTextLen+1),
		strings.Repeat("€", MaxTextLen+1),
		strings.Repeat("😀", MaxTextLen+1),
		strings.Repeat("x", MaxTextLen-1) + "\xff",
	} {
		if err := ValidateText(text); !errors.Is(err, ErrBadMessage) {
			t.Errorf("ValidateText(%.20q) = %v, want ErrBadMessage", text, err)
		}
		if validTextBytes([]byte(text)) {
			t.Errorf("validTextBytes(%.20q) = true", text)
		}
	}
}

func BenchmarkParseCommand(b *testing.B) {
	for _, bm := range []struct{ name, line string }{
		{"sendto", "sendto bob " + strings.Repeat("x", 64)},
		{"sendto-long", "sendto bob " + strings.Repeat("é", MaxTextLen)},
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
