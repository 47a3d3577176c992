package chat

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Escape makes text from the network safe to print at a terminal. Control
// characters (C0, DEL and C1, so terminal escape sequences too), the
// invisible characters that can disguise text (bidirectional marks,
// embeddings, overrides and isolates, and the line and paragraph separators
// U+2028 and U+2029) and bytes that are not valid UTF-8 are replaced by
// escapes: \t, \n and \r for those three, \xNN for other bytes below 0x80
// and for invalid bytes, and \uNNNN for the other characters. Everything
// else, backslash included, is kept as it is.
func Escape(s string) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if needsEscape(r, size) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s // the common case: nothing to escape, nothing allocated
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !needsEscape(r, size) {
			b.WriteString(s[i : i+size])
			i += size
			continue
		}
		switch {
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == utf8.RuneError || r < utf8.RuneSelf:
			// An invalid byte (size 1) or an ASCII control character.
			b.WriteString(`\x`)
			writeHex(&b, uint64(s[i]), 2)
		default:
			b.WriteString(`\u`)
			writeHex(&b, uint64(r), 4)
		}
		i += size
	}
	return b.String()
}

func writeHex(b *strings.Builder, v uint64, width int) {
	h := strconv.FormatUint(v, 16)
	for n := len(h); n < width; n++ {
		b.WriteByte('0')
	}
	b.WriteString(h)
}

// needsEscape reports whether the rune r, decoded from size bytes, must not
// reach a terminal raw.
func needsEscape(r rune, size int) bool {
	switch {
	case r == utf8.RuneError && size == 1: // invalid UTF-8
		return true
	case r < 0x20 || r == 0x7f: // C0 and DEL
		return true
	case r >= 0x80 && r <= 0x9f: // C1
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f: // bidirectional marks
		return true
	case r >= 0x202a && r <= 0x202e: // embeddings and overrides
		return true
	case r >= 0x2066 && r <= 0x2069: // isolates
		return true
	case r == 0x2028 || r == 0x2029: // line and paragraph separators
		return true
	}
	return false
}
