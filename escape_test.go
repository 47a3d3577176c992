package chat

import "testing"

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
		{"zero\u200dwidth joiner stays", "zero\u200dwidth joiner stays"},
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
