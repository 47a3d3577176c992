package cli

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape makes text from the network safe to print at a terminal. These
// are replaced by escapes: control characters (C0, DEL and C1, so
// terminal escape sequences too); every format character (Unicode category
// Cf: zero-width spaces and joiners, soft hyphen, word joiner, byte-order
// mark, bidirectional marks, embeddings, overrides and isolates, and the
// like); the line and paragraph separators U+2028 and U+2029; private-use,
// unassigned and noncharacter code points; and bytes that are not valid
// UTF-8. The escapes are \t, \n and \r for those three, \xNN for other
// bytes below 0x80 and for invalid bytes, \uNNNN for other characters up to
// U+FFFF and \UNNNNNNNN beyond. Everything else, backslash included, is
// kept as it is. Escape allocates only when it escapes something.
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
		case r > 0xffff:
			b.WriteString(`\U`)
			writeHex(&b, uint64(r), 8)
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
	case r == utf8.RuneError:
		return size == 1 // invalid UTF-8; a real U+FFFD is shown
	case r < 0x20 || r == 0x7f: // C0 and DEL
		return true
	case r < 0x7f: // printable ASCII, the common case
		return false
	case r <= 0x9f: // C1
		return true
	case r == 0x2028 || r == 0x2029: // line and paragraph separators
		return true
	case isNoncharacter(r):
		return true
	}
	return unicode.In(r, unicode.Cf, unicode.Co) || !assigned(r)
}

// isNoncharacter reports whether r is one of the 66 code points Unicode
// reserves as noncharacters: U+FDD0 to U+FDEF, and the last two of every
// plane.
func isNoncharacter(r rune) bool {
	return r >= 0xfdd0 && r <= 0xfdef || r&0xfffe == 0xfffe
}

// assigned reports whether r is an assigned code point (of the Unicode
// version of package unicode), not of category Cn. Surrogates are not
// valid UTF-8 and never reach it.
func assigned(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.Cc, unicode.Cf, unicode.Co)
}
