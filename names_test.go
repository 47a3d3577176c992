package chat

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/mtibben/confusables"
	"golang.org/x/text/secure/precis"
)

// refusedNames are names of every kind the rule refuses: the client says
// Bad username, the server Failure.
var refusedNames = []struct{ why, name string }{
	// Invisible characters.
	{"zero-width space", "alice\u200b"},
	{"zero-width space alone", "\u200b"},
	{"zero-width non-joiner", "ali\u200cce"},
	{"zero-width joiner", "ali\u200dce"},
	{"zero-width joiner after a virama", "क्\u200dष"}, // PRECIS allows it here; the rule does not
	{"zero-width non-joiner in Persian", "می\u200cخواهم"},
	{"soft hyphen", "al\u00adice"},
	{"word joiner", "ali\u2060ce"},
	{"byte-order mark", "\ufeffalice"},
	{"invisible times", "a\u2062b"},
	{"Mongolian vowel separator", "a\u180eb"},
	{"combining grapheme joiner", "a\u034fb"},
	{"Hangul filler", "a\u3164"},
	{"Hangul choseong filler", "\u115f"},
	{"tag character", "a\U000e0041"},
	{"braille blank", "a\u2800"},
	// Bidirectional controls.
	{"left-to-right mark", "alice\u200e"},
	{"right-to-left mark", "\u200falice"},
	{"Arabic letter mark", "a\u061cb"},
	{"left-to-right embedding", "\u202aalice"},
	{"right-to-left embedding", "\u202balice"},
	{"pop directional formatting", "alice\u202c"},
	{"left-to-right override", "\u202dalice"},
	{"right-to-left override", "\u202ealice"},
	{"left-to-right isolate", "\u2066alice"},
	{"right-to-left isolate", "\u2067alice"},
	{"first strong isolate", "\u2068alice"},
	{"pop directional isolate", "alice\u2069"},
	// The bidi rule of RFC 5893.
	{"Hebrew after a digit", "1שלום"},
	{"Latin and Hebrew mixed", "aשלום"},
	{"Arabic-Indic digits alone", "١٢٣"},
	// Fullwidth and halfwidth forms.
	{"fullwidth Latin", "ａｌｉｃｅ"},
	{"one fullwidth letter", "aliceＡ"},
	{"fullwidth digits", "１２３"},
	{"halfwidth katakana", "ｶﾀｶﾅ"},
	// Ligatures and other compatibility forms.
	{"fi ligature", "ﬁsh"},
	{"ff ligature", "oﬀ"},
	{"ij digraph", "ĳs"},
	{"dz digraph", "ǆ"},
	{"superscript two", "x²"},
	{"roman numeral", "Ⅸ"},
	{"circled letter", "ⓐlice"},
	{"mathematical bold", "𝐀lice"},
	{"vulgar fraction", "½"},
	// Emoji and other symbols outside ASCII.
	{"emoji", "😀"},
	{"emoji after a name", "alice😀"},
	{"emoji with a skin tone", "👍🏽"},
	{"emoji with a joiner", "👩\u200d💻"},
	{"flag", "🇫🇷"},
	{"dingbat", "❤"},
	{"snowman", "☃"},
	{"copyright sign", "©"},
	{"euro sign", "€uro"},
	{"trade mark sign", "alice™"},
	{"variation selector", "a\ufe0f"},
	{"replacement character", "\ufffd"},
	// Decomposed accents: NFC would change them.
	{"e and combining acute", "Jose\u0301"},
	{"o and combining diaeresis", "Zoe\u0308"},
	{"A and combining ring", "A\u030angstrom"},
	{"n and combining tilde", "Pen\u0303a"},
	// Unassigned, private-use and noncharacter code points.
	{"unassigned in Greek", "a\u0378"},
	{"unassigned in Hebrew", "\u05ffx"},
	{"unassigned in plane 2", "x\U0002fffd"},
	{"unassigned in plane 3", "x\U0003fffd"},
	{"private use", "a\ue000"},
	{"private use, plane 15", "a\U000f0000"},
	{"noncharacter", "a\ufdd0"},
	{"noncharacter U+FFFF", "a\uffff"},
	// White space and controls.
	{"empty", ""},
	{"a space", "a b"},
	{"a tab", "a\tb"},
	{"a no-break space", "a\u00a0b"},
	{"an em space", "a\u2003b"},
	{"an ideographic space", "a\u3000b"},
	{"an Ogham space", "a\u1680b"},
	{"a line separator", "a\u2028"},
	{"a paragraph separator", "a\u2029"},
	{"NUL", "a\x00"},
	{"escape sequence", "\x1b[31m"},
	{"DEL", "a\x7f"},
	{"C1 control", "a\u0085"},
	{"carriage return", "a\rb"},
	// Not UTF-8, or too long.
	{"invalid UTF-8", "\xff\xfe"},
	{"truncated UTF-8", "ab\xc3"},
	{"overlong encoding", "\xc0\xaf"},
	{"UTF-16 surrogate", "\xed\xa0\x80"},
	{"21 ASCII characters", strings.Repeat("n", MaxNameLen+1)},
	{"21 two-byte letters", strings.Repeat("é", MaxNameLen+1)},
	{"21 CJK ideographs", strings.Repeat("名", MaxNameLen+1)},
	{"21 four-byte letters", strings.Repeat("𠀀", MaxNameLen+1)},
}

// acceptedNames are valid names of several scripts.
var acceptedNames = []struct{ why, name string }{
	{"ASCII", "alice"},
	{"ASCII capitals", "Alice"},
	{"ASCII symbols", "O'Brien"},
	{"more ASCII symbols", "a-b_c.d+e@f"},
	{"only ASCII symbols", "~!#$%&*+/=?^`{|}"},
	{"a backslash", `\back`},
	{"like a NATS subject", "$KV.>*"},
	{"a digit", "1"},
	{"Latin with accents", "Zoë"},
	{"more Latin with accents", "Dvořák"},
	{"Latin with a cedilla", "François"},
	{"Latin with a ring", "Ångström"},
	{"Polish", "Łukasz"},
	{"German sharp s", "Straße"},
	{"Turkish dotted I", "İstanbul"},
	{"Greek", "Ωμέγα"},
	{"Greek with final sigma", "Σωκράτης"},
	{"Cyrillic", "Привет"},
	{"more Cyrillic", "Юлия"},
	{"CJK", "李小龙"},
	{"Japanese kana", "さくら"},
	{"Hangul", "김민준"},
	{"Devanagari with a virama", "क्षत्रिय"},
	{"Hebrew", "שלום"},
	{"Hebrew with a point", "\u05d0\u05b0"},
	{"Hebrew and a digit after", "שלום1"},
	{"Arabic", "مرحبا"},
	{"Arabic with an Arabic-Indic digit", "محمد١"},
	{"20 ASCII characters", strings.Repeat("n", MaxNameLen)},
	{"20 two-byte letters", strings.Repeat("é", MaxNameLen)},
	{"20 CJK ideographs", strings.Repeat("名", MaxNameLen)},
	{"20 four-byte letters, 80 bytes", strings.Repeat("𠀀", MaxNameLen)},
}

// lookalikes are pairs of valid, different names with one skeleton.
var lookalikes = [][2]string{
	{"paypal", "pаypal"}, // a Cyrillic а
	{"paypal", "paypa1"},
	{"paypal", "paypaI"},
	{"alice", "a1ice"},
	{"modern", "rnodern"},
	{"Oscar", "0scar"},
	{"scope", "ѕсоре"}, // all Cyrillic
	{"bob", "bοb"},     // a Greek ο
	{"ABC", "АВС"},     // Cyrillic capitals
	{"Hello", "Ηеllο"}, // Greek and Cyrillic
	{"eve", "еvе"},     // Cyrillic е
	{"coco", "сосо"},   // Cyrillic с and о
}

// distinctNames are pairs of names that do not look alike: case counts.
var distinctNames = [][2]string{
	{"Bob", "bob"},
	{"alice", "Alice"},
	{"paypal", "PayPal"},
	{"bob", "bobby"},
	{"Zoë", "Zoe"},
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, tt := range acceptedNames {
		if err := ValidateName(tt.name); err != nil {
			t.Errorf("%s: ValidateName(%+q) = %v", tt.why, tt.name, err)
		}
		if !validNameBytes([]byte(tt.name)) {
			t.Errorf("%s: validNameBytes(%+q) = false", tt.why, tt.name)
		}
	}
	for _, tt := range refusedNames {
		if err := ValidateName(tt.name); !errors.Is(err, ErrBadUsername) {
			t.Errorf("%s: ValidateName(%+q) = %v, want ErrBadUsername", tt.why, tt.name, err)
		}
		if validNameBytes([]byte(tt.name)) {
			t.Errorf("%s: validNameBytes(%+q) = true", tt.why, tt.name)
		}
	}
}

func TestSkeleton(t *testing.T) {
	t.Parallel()
	for _, pair := range lookalikes {
		for _, name := range pair {
			if err := ValidateName(name); err != nil {
				t.Errorf("lookalike %+q is not a valid name: %v", name, err)
			}
		}
		if a, b := Skeleton(pair[0]), Skeleton(pair[1]); a != b {
			t.Errorf("Skeleton(%+q) = %+q, Skeleton(%+q) = %+q: want them equal", pair[0], a, pair[1], b)
		}
	}
	for _, pair := range distinctNames {
		if a, b := Skeleton(pair[0]), Skeleton(pair[1]); a == b {
			t.Errorf("Skeleton(%+q) = Skeleton(%+q) = %+q: want them different", pair[0], pair[1], a)
		}
	}
}

// TestSkeletonOfPlainNames checks Skeleton's shortcut for printable
// ASCII against the library, for every name of one or two characters and
// a few longer ones; FuzzValidateName checks others.
func TestSkeletonOfPlainNames(t *testing.T) {
	names := []string{"alice", "paypal", "paypa1", "modern", `"quoted"`, "100%", "I|l1", "`m`"}
	for a := byte('!'); a < 0x7f; a++ {
		names = append(names, string(a))
		for b := byte('!'); b < 0x7f; b++ {
			names = append(names, string([]byte{a, b}))
		}
	}
	for _, name := range names {
		if got, want := Skeleton(name), confusables.Skeleton(name); got != want {
			t.Errorf("Skeleton(%q) = %+q, want %+q", name, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Skeleton("alice") }); n != 0 {
		t.Errorf("Skeleton(alice) allocated %v times, want 0: it is its own skeleton", n)
	}
	if n := testing.AllocsPerRun(100, func() { Skeleton("alice_1984") }); n != 1 {
		t.Errorf("Skeleton(alice_1984) allocated %v times, want 1", n)
	}
}

// TestClientRefusesNames: Client.Login and Client.SendTo refuse every bad
// name with ErrBadUsername and send nothing.
func TestClientRefusesNames(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c, srv := fakeServer(t)
	for _, tt := range refusedNames {
		if err := c.Login(ctx, tt.name); err != ErrBadUsername {
			t.Errorf("%s: Login(%+q) = %v, want ErrBadUsername", tt.why, tt.name, err)
		}
		if err := c.SendTo(ctx, tt.name, "hi"); err != ErrBadUsername {
			t.Errorf("%s: SendTo(%+q) = %v, want ErrBadUsername", tt.why, tt.name, err)
		}
	}
	// Nothing was sent: the first frame the server gets is the next request.
	for _, tt := range acceptedNames {
		done := make(chan error, 1)
		go func() { done <- c.Login(ctx, tt.name) }()
		if f := srv.next(); f.Type != TypeLogin || string(f.Name) != tt.name {
			t.Fatalf("%s: the server got %.40s, want login %+q", tt.why, describe(f), tt.name)
		}
		srv.send(AppendResponse(nil, ResultFailure))
		if err := <-done; !errors.Is(err, ErrFailure) {
			t.Fatalf("Login(%+q) = %v, want the server's Failure", tt.name, err)
		}
	}
}

// TestServerRefusesNames sends every name as a raw login frame, over
// net.Pipe and over TCP: the refused ones are answered Failure (bad_name)
// and the connection stays usable, the accepted ones Success.
func TestServerRefusesNames(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{})
		r := newRaw(t, ts.dial())
		for _, tt := range refusedNames {
			r.send(AppendLogin(nil, tt.name))
			if f := r.next(); f.Type != TypeResponse || f.Result != ResultFailure {
				t.Errorf("%s: login %+q answered %s, want Failure", tt.why, tt.name, describe(f))
			}
		}
		if got := ts.srv.Stats().Failures[FailBadName]; got != uint64(len(refusedNames)) {
			t.Errorf("bad_name failures = %d, want %d", got, len(refusedNames))
		}
		for _, tt := range acceptedNames {
			r.do(AppendLogin(nil, tt.name), ResultOK)
			if got := r.list(); !slices.Equal(got, []string{tt.name}) {
				t.Errorf("%s: list = %+q, want [%+q]", tt.why, got, tt.name)
			}
			r.do(AppendLogout(nil), ResultOK)
		}
	})
}

// TestServerLookalikes: a login is refused while a logged-in name looks
// the same, and allowed again once that name has logged out. Case counts.
func TestServerLookalikes(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := tr.start(t, &Server{})
		a, b := newRaw(t, ts.dial()), newRaw(t, ts.dial())
		refused := 0
		for _, pair := range lookalikes {
			a.do(AppendLogin(nil, pair[0]), ResultOK)
			b.do(AppendLogin(nil, pair[1]), ResultFailure)
			refused++
			a.do(AppendLogout(nil), ResultOK)
			b.do(AppendLogin(nil, pair[1]), ResultOK) // free now
			a.do(AppendLogin(nil, pair[0]), ResultFailure)
			refused++
			b.do(AppendLogout(nil), ResultOK)
		}
		for _, pair := range distinctNames {
			a.do(AppendLogin(nil, pair[0]), ResultOK)
			b.do(AppendLogin(nil, pair[1]), ResultOK)
			if got := a.list(); !slices.Equal(got, slices.Sorted(slices.Values(pair[:]))) {
				t.Errorf("list = %+q, want both of %+q", got, pair)
			}
			a.do(AppendLogout(nil), ResultOK)
			b.do(AppendLogout(nil), ResultOK)
		}
		st := ts.srv.Stats()
		if got := st.Failures[FailLookalike]; got != uint64(refused) {
			t.Errorf("lookalike failures = %d, want %d", got, refused)
		}
		if got := st.Failures[FailNameTaken]; got != 0 {
			t.Errorf("name_taken failures = %d, want 0", got)
		}
	})
}

// FuzzValidateName: the validator accepts exactly the names of 1 to 20
// code points, with no format character, that the PRECIS
// UsernameCasePreserved profile leaves as they are; in particular it never
// accepts a name the profile would change or refuse. validNameBytes
// agrees, and Skeleton's shortcut gives the library's skeleton.
func FuzzValidateName(f *testing.F) {
	for _, tt := range acceptedNames {
		f.Add(tt.name)
	}
	for _, tt := range refusedNames {
		f.Add(tt.name)
	}
	for _, pair := range lookalikes {
		f.Add(pair[1])
	}
	f.Fuzz(func(t *testing.T, name string) {
		valid := ValidateName(name) == nil
		if validNameBytes([]byte(name)) != valid {
			t.Fatalf("ValidateName(%+q) valid=%v, validNameBytes disagrees", name, valid)
		}
		if len(name) > MaxNameLen*utf8.UTFMax {
			if valid {
				t.Fatalf("ValidateName accepts %d bytes", len(name))
			}
			return // more than 20 code points: the oracles need not run
		}
		enforced, err := precis.UsernameCasePreserved.String(name)
		profile := err == nil && enforced == name
		if valid && !profile {
			t.Fatalf("ValidateName accepts %+q; the profile gives %+q, %v", name, enforced, err)
		}
		n := utf8.RuneCountInString(name)
		want := profile && n >= 1 && n <= MaxNameLen && !strings.ContainsFunc(name, func(r rune) bool { return unicode.Is(unicode.Cf, r) })
		if valid != want {
			t.Fatalf("ValidateName(%+q) valid=%v, want %v", name, valid, want)
		}
		if got, want := Skeleton(name), confusables.Skeleton(name); got != want {
			t.Fatalf("Skeleton(%+q) = %+q, want %+q as the library has it", name, got, want)
		}
	})
}

// BenchmarkValidateName measures the name rule alone: ASCII names take a
// shortcut, others go through PRECIS.
func BenchmarkValidateName(b *testing.B) {
	for _, bm := range []struct{ name, s string }{
		{"ascii", "alice_1984"},
		{"latin", "Zoë-Dvořák"},
		{"cjk", "李小龙"},
		{"arabic", "مرحبا"},
		{"refused", "alice\u200b"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			nb := []byte(bm.s)
			b.ReportAllocs()
			for b.Loop() {
				validNameBytes(nb)
			}
		})
	}
}

// BenchmarkSkeleton measures the skeleton a login computes.
func BenchmarkSkeleton(b *testing.B) {
	for _, bm := range []struct{ name, s string }{
		{"ascii", "alice_1984"},
		{"latin", "Zoë-Dvořák"},
		{"cjk", "李小龙"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Skeleton(bm.s)
			}
		})
	}
}

// BenchmarkLogin measures a login and a logout over net.Pipe, from the
// frames to the replies: the server's name check, skeleton and directory.
func BenchmarkLogin(b *testing.B) {
	for _, bm := range []struct{ name, s string }{
		{"ascii", "alice_1984"},
		{"latin", "Zoë-Dvořák"},
		{"cjk", "李小龙"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			srv := &Server{}
			defer srv.Close()
			c, s := net.Pipe()
			defer c.Close()
			served := make(chan error, 1)
			go func() { served <- srv.ServeConn(s) }()
			req := AppendLogout(AppendLogin(nil, bm.s))
			fr := NewFrameReader(c, 0)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				for range 2 {
					f, err := fr.Next()
					if err != nil || f.Type != TypeResponse || f.Result != ResultOK {
						b.Fatalf("reply %v, %v", f.Type, err)
					}
				}
			}
			c.Close()
			<-served
		})
	}
}
