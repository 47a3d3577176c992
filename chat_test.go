package chat

// The command rules of SPEC.md, table-driven. The server rules, with Server
// and Client joined by net.Pipe and over loopback TCP, are in server_test.go
// and client_test.go (each test runs over both); attacks in hostile_test.go
// and limits_test.go; nothing-lost in stress_test.go.

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	name20 := strings.Repeat("n", 20)
	name21 := strings.Repeat("n", 21)
	uni20 := strings.Repeat("é", 20) // 40 bytes, 20 characters
	text65535 := strings.Repeat("x", 65535)
	uniText := strings.Repeat("☃", 65535) // 3 bytes each
	tests := []struct {
		line string
		want Command
		err  error
	}{
		// The examples of SPEC.md.
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
	}
}

func TestErrorStrings(t *testing.T) {
	// The client prints these exactly (SPEC.md).
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
	for _, name := range []string{"a", "Zoë", strings.Repeat("名", 20), "a-b_c.d", "😀"} {
		if err := ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q) = %v", name, err)
		}
		if !validNameBytes([]byte(name)) {
			t.Errorf("validNameBytes(%q) = false", name)
		}
	}
	for _, name := range []string{"", " ", "a b", "a\tb", strings.Repeat("名", 21), "\x00", "a\u2028", "\xc3", "\ufffd", "a\u0085"} {
		if err := ValidateName(name); !errors.Is(err, ErrBadUsername) {
			t.Errorf("ValidateName(%q) = %v, want ErrBadUsername", name, err)
		}
		if validNameBytes([]byte(name)) {
			t.Errorf("validNameBytes(%q) = true", name)
		}
	}
	for _, text := range []string{"", "hi", strings.Repeat("€", MaxTextLen), "\x00\x1b"} {
		if err := ValidateText(text); err != nil {
			t.Errorf("ValidateText(%.20q) = %v", text, err)
		}
		if !validTextBytes([]byte(text)) {
			t.Errorf("validTextBytes(%.20q) = false", text)
		}
	}
	for _, text := range []string{strings.Repeat("€", MaxTextLen+1), strings.Repeat("x", MaxTextLen+1), "\xff"} {
		if err := ValidateText(text); !errors.Is(err, ErrBadMessage) {
			t.Errorf("ValidateText(%.20q) = %v, want ErrBadMessage", text, err)
		}
		if validTextBytes([]byte(text)) {
			t.Errorf("validTextBytes(%.20q) = true", text)
		}
	}
}

func BenchmarkParseCommand(b *testing.B) {
	line := "sendto bob " + strings.Repeat("x", 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCommand(line); err != nil {
			b.Fatal(err)
		}
	}
}
