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
