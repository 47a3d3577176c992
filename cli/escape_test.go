package cli

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
)

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"Hi how are you?", "Hi how are you?"},
		{`back\slash`, `back\slash`},
		{"héllo wörld ☃ 😀", "héllo wörld ☃ 😀"},
		{"tab\there", `tab\there`},
		{"line\nbreak\r", `line\nbreak\r`},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"\x1b]0;title\x07", `\x1b]0;title\x07`},
		{"nul\x00del\x7f", `nul\x00del\x7f`},
		{"c1\u0085\u009b", `c1\u0085\u009b`},
		{"rtl\u202eoverride\u202c", `rtl\u202eoverride\u202c`},
		{"isolate\u2066x\u2069", `isolate\u2066x\u2069`},
		{"marks\u200e\u200f\u061c", `marks\u200e\u200f\u061c`},
		{"sep\u2028\u2029", `sep\u2028\u2029`},
		{"bad\xffutf8\xc3", `bad\xffutf8\xc3`},
		{"\ufffd is a real character", "\ufffd is a real character"},

		// Format characters (Cf), each of them escaped.
		{"zero\u200bwidth space", `zero\u200bwidth space`},
		{"zero\u200cwidth non-joiner", `zero\u200cwidth non-joiner`},
		{"zero\u200dwidth joiner", `zero\u200dwidth joiner`},
		{"soft\u00adhyphen", `soft\u00adhyphen`},
		{"word\u2060joiner", `word\u2060joiner`},
		{"\ufeffbyte-order mark", `\ufeffbyte-order mark`},
		{"invisible\u2062times\u2064plus", `invisible\u2062times\u2064plus`},
		{"arabic\u0600number sign", `arabic\u0600number sign`},
		{"mongolian\u180evowel separator", `mongolian\u180evowel separator`},
		{"tag\U000e0041\U000e007f", `tag\U000e0041\U000e007f`},
		{"shorthand\U0001bca0", `shorthand\U0001bca0`},
		{"emoji 👩\u200d💻 sequence", `emoji 👩\u200d💻 sequence`},
		// Private use (Co).
		{"private\ue000\uf8ff", `private\ue000\uf8ff`},
		{"plane 15\U000f0000 and 16\U0010fffd", `plane 15\U000f0000 and 16\U0010fffd`},
		// Unassigned (Cn).
		{"unassigned\u0378\u05ff", `unassigned\u0378\u05ff`},
		{"plane 3\U0003fffd, plane 14\U000e0000", `plane 3\U0003fffd, plane 14\U000e0000`},
		// Noncharacters.
		{"non\ufdd0\ufdef\ufffe\uffff", `non\ufdd0\ufdef\ufffe\uffff`},
		{"plane 1\U0001fffe, 16\U0010ffff", `plane 1\U0001fffe, 16\U0010ffff`},

		// Visible characters of every kind are kept.
		{"Ωμέγα Привет 李小龙 שלום مرحبا क्षत्रिय", "Ωμέγα Привет 李小龙 שלום مرحبا क्षत्रिय"},
		{"combining e\u0301 and variation ☃\ufe0f", "combining e\u0301 and variation ☃\ufe0f"},
		{"no-break\u00a0space, ideographic\u3000space", "no-break\u00a0space, ideographic\u3000space"},
		{"𝐁𝐨𝐥𝐝 ﬁ Ａ ½ 𠀀", "𝐁𝐨𝐥𝐝 ﬁ Ａ ½ 𠀀"},
	}
	for _, tt := range tests {
		if got := Escape(tt.in); got != tt.want {
			t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEscapeAllocatesNothingForPlainText(t *testing.T) {
	s := "a perfectly ordinary message, with ünïcödé"
	if n := testing.AllocsPerRun(100, func() { _ = Escape(s) }); n != 0 {
		t.Errorf("Escape of plain text allocated %v times", n)
	}
}

// TestEscapeEveryCategory checks Escape against the Unicode tables for
// every code point of the planes in use (and samples of the others): a code point is escaped exactly when it is a control
// (Cc), a format character (Cf), private use (Co), unassigned (Cn), a
// noncharacter or U+2028/U+2029.
func TestEscapeEveryCategory(t *testing.T) {
	t.Parallel()
	counts := map[string]int{}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue // surrogates are not valid UTF-8
		}
		if r >= 0x40000 && r < 0xe0000 || r >= 0xe1000 {
			// The planes of nothing but unassigned and private-use code
			// points: their first and last few of every 4096.
			if low := r & 0xfff; low > 2 && low < 0xffc {
				continue
			}
		}
		var why string
		switch {
		case unicode.Is(unicode.Cc, r):
			why = "Cc"
		case unicode.Is(unicode.Cf, r):
			why = "Cf"
		case unicode.Is(unicode.Co, r):
			why = "Co"
		case r >= 0xfdd0 && r <= 0xfdef || r&0xfffe == 0xfffe:
			why = "noncharacter"
		case r == 0x2028 || r == 0x2029:
			why = "Zl/Zp"
		case !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z):
			why = "Cn"
		}
		s := "a" + string(r) + "b"
		got := Escape(s)
		if why == "" {
			if got != s {
				t.Errorf("Escape(%+q) = %q, want it unchanged", s, got)
			}
			continue
		}
		counts[why]++
		want := fmt.Sprintf(`a\u%04x b`, r)
		switch {
		case r == '\t':
			want = `a\tb`
		case r == '\n':
			want = `a\nb`
		case r == '\r':
			want = `a\rb`
		case r < 0x80:
			want = fmt.Sprintf(`a\x%02xb`, r)
		case r > 0xffff:
			want = fmt.Sprintf(`a\U%08xb`, r)
		}
		want = strings.Replace(want, " ", "", 1)
		if got != want {
			t.Errorf("Escape(%+q) (%s) = %q, want %q", s, why, got, want)
		}
	}
	// Each category was met: the loop tested something.
	for _, why := range []string{"Cc", "Cf", "Co", "noncharacter", "Zl/Zp", "Cn"} {
		if counts[why] == 0 {
			t.Errorf("no code point of %s", why)
		}
	}
	t.Logf("escaped: %v", counts)
}
