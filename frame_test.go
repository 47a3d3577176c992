package chat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

var frameSeed = flag.Uint64("frame.seed", 20251125, "seed of the random frames of TestFrameRoundTripRandom")

// withBody builds a whole frame, length field included, around body.
func withBody(body ...byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// header returns a length field alone.
func header(length uint32) []byte { return binary.BigEndian.AppendUint32(nil, length) }

// concat joins frames into one stream.
func concat(frames ...[]byte) []byte { return slices.Concat(frames...) }

// listNames walks the Names of a LIST that DecodeFrame accepted.
func listNames(t testing.TB, names []byte) []string {
	t.Helper()
	out := []string{}
	n := 0
	for name := range Names(names) {
		out, n = append(out, string(name)), n+1+len(name)
	}
	if n != len(names) {
		t.Fatalf("Names stopped after %d of the %d bytes of % x, a checked LIST", n, len(names), names)
	}
	return out
}

// reencode encodes a decoded frame again with the Append functions.
func reencode(t testing.TB, f Frame) []byte {
	t.Helper()
	switch f.Type {
	case TypeLogin:
		return AppendLogin(nil, string(f.Name))
	case TypeList:
		return AppendList(nil)
	case TypeSendTo:
		return AppendSendTo(nil, string(f.Name), string(f.Text))
	case TypeLogout:
		return AppendLogout(nil)
	case TypeResponse:
		return AppendResponse(nil, f.Result)
	case TypeNames:
		return AppendNames(nil, listNames(t, f.Names))
	case TypeMessage:
		return AppendMessage(nil, string(f.Name), f.Text)
	}
	t.Fatalf("decoded a frame of unknown type %v", f.Type)
	return nil
}

// sameFrame compares two frames field by field, a nil slice equal to an
// empty one.
func sameFrame(a, b Frame) bool {
	return a.Type == b.Type && a.Result == b.Result &&
		bytes.Equal(a.Name, b.Name) && bytes.Equal(a.Text, b.Text) && bytes.Equal(a.Names, b.Names)
}

func TestAppendEncodesProtocolBytes(t *testing.T) {
	long := strings.Repeat("n", maxNameBytes)
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"login", AppendLogin(nil, "bob"), []byte{0, 0, 0, 5, 0x01, 3, 'b', 'o', 'b'}},
		{"login UTF-8", AppendLogin(nil, "Zoë"), []byte{0, 0, 0, 6, 0x01, 4, 'Z', 'o', 0xc3, 0xab}},
		{"login 255 bytes", AppendLogin(nil, long), concat([]byte{0, 0, 1, 1, 0x01, 255}, []byte(long))},
		{"list", AppendList(nil), []byte{0, 0, 0, 1, 0x02}},
		{"sendto", AppendSendTo(nil, "bob", "hi"), []byte{0, 0, 0, 7, 0x03, 3, 'b', 'o', 'b', 'h', 'i'}},
		{"sendto empty text", AppendSendTo(nil, "bob", ""), []byte{0, 0, 0, 5, 0x03, 3, 'b', 'o', 'b'}},
		{"logout", AppendLogout(nil), []byte{0, 0, 0, 1, 0x04}},
		{"RESPONSE ok", AppendResponse(nil, ResultOK), []byte{0, 0, 0, 2, 0x81, 0}},
		{"RESPONSE failure", AppendResponse(nil, ResultFailure), []byte{0, 0, 0, 2, 0x81, 1}},
		{"RESPONSE malformed", AppendResponse(nil, ResultMalformed), []byte{0, 0, 0, 2, 0x81, 2}},
		{"LIST", AppendNames(nil, []string{"al", "b"}), []byte{0, 0, 0, 6, 0x82, 2, 'a', 'l', 1, 'b'}},
		{"LIST empty", AppendNames(nil, nil), []byte{0, 0, 0, 1, 0x82}},
		{"SENDTO", AppendMessage(nil, "al", []byte("yo")), []byte{0, 0, 0, 6, 0x83, 2, 'a', 'l', 'y', 'o'}},
		{"appends to dst", AppendList([]byte{9}), []byte{9, 0, 0, 0, 1, 0x02}},
		{"appends twice", AppendLogout(AppendList(nil)), []byte{0, 0, 0, 1, 0x02, 0, 0, 0, 1, 0x04}},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s: % x, want % x", tt.name, tt.got, tt.want)
		}
	}
	for _, names := range [][]string{nil, {""}, {"al", "b"}, {long, "Zoë", "x"}} {
		if got, want := namesSize(names), len(AppendNames(nil, names))-HeaderSize; got != want {
			t.Errorf("namesSize(%q) = %d, AppendNames encodes %d", names, got, want)
		}
	}
}

// TestAppendRefusesLongName checks that a name the length byte cannot hold
// panics rather than going out as a frame the peer would misread.
func TestAppendRefusesLongName(t *testing.T) {
	long := strings.Repeat("n", maxNameBytes+1)
	for name, f := range map[string]func(){
		"login":  func() { AppendLogin(nil, long) },
		"sendto": func() { AppendSendTo(nil, long, "hi") },
		"LIST":   func() { AppendNames(nil, []string{"a", long}) },
		"SENDTO": func() { AppendMessage(nil, long, []byte("hi")) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: a name of %d bytes was encoded", name, len(long))
				}
			}()
			f()
		}()
	}
}

func TestDecodeFrame(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want Frame // when valid
		err  error // ErrMalformedFrame, or nil
	}{
		// Valid bodies of every kind. Names and texts are not validated
		// here (empty, control characters, invalid UTF-8): that is the
		// server's business.
		{"login", []byte{0x01, 3, 'b', 'o', 'b'}, Frame{Type: TypeLogin, Name: []byte("bob")}, nil},
		{"login empty name", []byte{0x01, 0}, Frame{Type: TypeLogin}, nil},
		{"list", []byte{0x02}, Frame{Type: TypeList}, nil},
		{"sendto", []byte{0x03, 3, 'b', 'o', 'b', 'h', 'i', ' '}, Frame{Type: TypeSendTo, Name: []byte("bob"), Text: []byte("hi ")}, nil},
		{"sendto empty text", []byte{0x03, 1, 'b'}, Frame{Type: TypeSendTo, Name: []byte("b")}, nil},
		{"sendto empty name and text", []byte{0x03, 0}, Frame{Type: TypeSendTo}, nil},
		{"sendto any bytes", []byte{0x03, 1, 0xff, 0, 0x1b, 0xc3}, Frame{Type: TypeSendTo, Name: []byte{0xff}, Text: []byte{0, 0x1b, 0xc3}}, nil},
		{"logout", []byte{0x04}, Frame{Type: TypeLogout}, nil},
		{"RESPONSE ok", []byte{0x81, 0}, Frame{Type: TypeResponse, Result: ResultOK}, nil},
		{"RESPONSE failure", []byte{0x81, 1}, Frame{Type: TypeResponse, Result: ResultFailure}, nil},
		{"RESPONSE malformed", []byte{0x81, 2}, Frame{Type: TypeResponse, Result: ResultMalformed}, nil},
		{"LIST empty", []byte{0x82}, Frame{Type: TypeNames}, nil},
		{"LIST", []byte{0x82, 1, 'a', 0, 2, 'b', 'c'}, Frame{Type: TypeNames, Names: []byte{1, 'a', 0, 2, 'b', 'c'}}, nil},
		{"SENDTO", []byte{0x83, 2, 'a', 'l', 'y', 'o'}, Frame{Type: TypeMessage, Name: []byte("al"), Text: []byte("yo")}, nil},

		// Malformed.
		{"empty body", []byte{}, Frame{}, ErrMalformedFrame},
		{"type 0x00", []byte{0x00}, Frame{}, ErrMalformedFrame},
		{"type 0x05", []byte{0x05}, Frame{}, ErrMalformedFrame},
		{"type 0x7f", []byte{0x7f, 1, 2}, Frame{}, ErrMalformedFrame},
		{"type 0x80", []byte{0x80}, Frame{}, ErrMalformedFrame},
		{"type 0x84", []byte{0x84}, Frame{}, ErrMalformedFrame},
		{"type 0xff", []byte{0xff, 0}, Frame{}, ErrMalformedFrame},
		{"login without name", []byte{0x01}, Frame{}, ErrMalformedFrame},
		{"login name cut short", []byte{0x01, 5, 'a', 'b'}, Frame{}, ErrMalformedFrame},
		{"login name 255 of 0", []byte{0x01, 255}, Frame{}, ErrMalformedFrame},
		{"login trailing bytes", []byte{0x01, 1, 'a', 'b'}, Frame{}, ErrMalformedFrame},
		{"list with payload", []byte{0x02, 0}, Frame{}, ErrMalformedFrame},
		{"sendto without name", []byte{0x03}, Frame{}, ErrMalformedFrame},
		{"sendto name cut short", []byte{0x03, 9, 'b', 'o'}, Frame{}, ErrMalformedFrame},
		{"logout with payload", []byte{0x04, 1, 2}, Frame{}, ErrMalformedFrame},
		{"RESPONSE without code", []byte{0x81}, Frame{}, ErrMalformedFrame},
		{"RESPONSE two bytes", []byte{0x81, 0, 0}, Frame{}, ErrMalformedFrame},
		{"RESPONSE code 3", []byte{0x81, 3}, Frame{}, ErrMalformedFrame},
		{"RESPONSE code 0xff", []byte{0x81, 0xff}, Frame{}, ErrMalformedFrame},
		{"LIST length past end", []byte{0x82, 1}, Frame{}, ErrMalformedFrame},
		{"LIST last name cut short", []byte{0x82, 2, 'a', 'b', 3, 'c'}, Frame{}, ErrMalformedFrame},
		{"LIST one byte too many", []byte{0x82, 1, 'a', 7}, Frame{}, ErrMalformedFrame},
		{"SENDTO without name", []byte{0x83}, Frame{}, ErrMalformedFrame},
		{"SENDTO name cut short", []byte{0x83, 2, 'a'}, Frame{}, ErrMalformedFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := slices.Clone(tt.body)
			f, err := DecodeFrame(body)
			if !bytes.Equal(body, tt.body) {
				t.Errorf("DecodeFrame modified its input: % x, was % x", body, tt.body)
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !sameFrame(f, Frame{}) {
					t.Fatalf("DecodeFrame(% x) = %+v, %v; want %v", tt.body, f, err, tt.err)
				}
				return
			}
			if err != nil || !sameFrame(f, tt.want) {
				t.Fatalf("DecodeFrame(% x) = %+v, %v; want %+v", tt.body, f, err, tt.want)
			}
		})
	}
}

func TestNextName(t *testing.T) {
	tests := []struct {
		names []byte
		name  string
		rest  []byte
		ok    bool
	}{
		{nil, "", nil, false},
		{[]byte{}, "", nil, false},
		{[]byte{0}, "", []byte{}, true},
		{[]byte{1, 'a'}, "a", []byte{}, true},
		{[]byte{1, 'a', 2, 'b', 'c'}, "a", []byte{2, 'b', 'c'}, true},
		{[]byte{0, 1, 'a'}, "", []byte{1, 'a'}, true},
		{[]byte{3, 'a', 'b'}, "", nil, false},
		{[]byte{255}, "", nil, false},
	}
	for _, tt := range tests {
		name, rest, ok := nextName(tt.names)
		if ok != tt.ok || string(name) != tt.name || !bytes.Equal(rest, tt.rest) {
			t.Errorf("nextName(% x) = %q, % x, %v; want %q, % x, %v", tt.names, name, rest, ok, tt.name, tt.rest, tt.ok)
		}
	}
	got := listNames(t, AppendNames(nil, []string{"alice", "", "Zoë", "bob"})[HeaderSize+1:])
	if want := []string{"alice", "", "Zoë", "bob"}; !slices.Equal(got, want) {
		t.Errorf("walked %q, want %q", got, want)
	}
}

// TestNames: the iterator yields the names of a well-formed payload, those
// before the first name cut short of a malformed one, and stops when the
// loop does.
func TestNames(t *testing.T) {
	long := strings.Repeat("n", maxNameBytes)
	tests := []struct {
		payload []byte
		names   []string
	}{
		{nil, nil},
		{[]byte{}, nil},
		{[]byte{0}, []string{""}},
		{[]byte{1, 'a'}, []string{"a"}},
		{[]byte{1, 'a', 2, 'b', 'c'}, []string{"a", "bc"}},
		{[]byte{0, 1, 'a', 0}, []string{"", "a", ""}},
		{append([]byte{maxNameBytes}, long...), []string{long}},
		// Malformed: a name cut short, first or later, and a length byte
		// with nothing after it.
		{[]byte{3, 'a', 'b'}, nil},
		{[]byte{1, 'a', 3, 'b', 'c'}, []string{"a"}},
		{[]byte{1, 'a', 255}, []string{"a"}},
		{[]byte{1, 'a', 0, 1}, []string{"a", ""}},
	}
	for _, tt := range tests {
		var got []string
		for name := range Names(tt.payload) {
			got = append(got, string(name))
		}
		if !slices.Equal(got, tt.names) {
			t.Errorf("Names(% x) yields %q, want %q", tt.payload, got, tt.names)
		}
	}

	// Each cut of a LIST's payload, mid-name or between names: the names
	// wholly before the cut, and DecodeFrame accepts the cut exactly when
	// they end there.
	names := []string{"alice", "", "Zoë", "bob", long}
	payload := AppendNames(nil, names)[HeaderSize+1:]
	ends := []int{0}
	for _, n := range names {
		ends = append(ends, ends[len(ends)-1]+1+len(n))
	}
	for k := range len(payload) + 1 {
		var got []string
		for name := range Names(payload[:k]) {
			got = append(got, string(name))
		}
		whole := 0
		for whole+1 < len(ends) && ends[whole+1] <= k {
			whole++
		}
		if want := names[:whole]; !slices.Equal(got, want) {
			t.Errorf("Names of the payload cut at %d yields %q, want %q", k, got, want)
		}
		_, err := DecodeFrame(append([]byte{byte(TypeNames)}, payload[:k]...))
		if ok := ends[whole] == k; (err == nil) != ok {
			t.Errorf("DecodeFrame of the LIST cut at %d: %v; well formed: %v", k, err, ok)
		}
	}

	// The loop stops when its body breaks (the iterator would panic if it
	// went on), and the names alias the payload.
	p := []byte{1, 'a', 1, 'b', 1, 'c'}
	var first []byte
	for name := range Names(p) {
		first = name
		break
	}
	p[1] = 'z'
	if string(first) != "z" {
		t.Errorf("the first name is %q after the payload changed to % x; want it to alias the payload", first, p)
	}
}

// TestDecodeFrameNameErrors pins the decoder's errors for names cut short.
func TestDecodeFrameNameErrors(t *testing.T) {
	for _, tt := range []struct {
		body []byte
		err  string
	}{
		{[]byte{byte(TypeLogin)}, "chat: malformed frame: missing name length"},
		{[]byte{byte(TypeSendTo), 5, 'a'}, "chat: malformed frame: name of 5 bytes in 1"},
		{[]byte{byte(TypeMessage), 255}, "chat: malformed frame: name of 255 bytes in 0"},
		{[]byte{byte(TypeNames), 1, 'a', 3, 'b'}, "chat: malformed frame: name of 3 bytes in 1"},
	} {
		if _, err := DecodeFrame(tt.body); err == nil || err.Error() != tt.err || !errors.Is(err, ErrMalformedFrame) {
			t.Errorf("DecodeFrame(% x): %v; want %q", tt.body, err, tt.err)
		}
	}
}

// step is one call of FrameReader.Next: the frame it returns, or the error
// (matched with errors.Is).
type step struct {
	frame Frame
	err   error
}

func TestFrameReader(t *testing.T) {
	ok := func(f Frame) step { return step{frame: f} }
	fail := func(err error) step { return step{err: err} }
	list, logout := Frame{Type: TypeList}, Frame{Type: TypeLogout}
	malformed, tooLarge := fail(ErrMalformedFrame), fail(ErrFrameTooLarge)
	sendto := AppendSendTo(nil, "bob", "hello")
	atLimit := append([]byte{0x03, 1, 'b'}, bytes.Repeat([]byte{'x'}, 61)...) // a body of 64 bytes
	bigText := strings.Repeat("x", 5000)                                      // larger than the first buffer

	tests := []struct {
		name   string
		max    int // of NewFrameReader
		stream []byte
		want   []step
	}{
		{"empty stream", 0, nil, []step{fail(io.EOF)}},
		{"every kind", 0, concat(
			AppendLogin(nil, "alice"), AppendList(nil), AppendSendTo(nil, "bob", "hi"), AppendLogout(nil),
			AppendResponse(nil, ResultFailure), AppendNames(nil, []string{"a", "bc"}), AppendMessage(nil, "al", []byte("yo")),
		), []step{
			ok(Frame{Type: TypeLogin, Name: []byte("alice")}), ok(list),
			ok(Frame{Type: TypeSendTo, Name: []byte("bob"), Text: []byte("hi")}), ok(logout),
			ok(Frame{Type: TypeResponse, Result: ResultFailure}), ok(Frame{Type: TypeNames, Names: []byte{1, 'a', 2, 'b', 'c'}}),
			ok(Frame{Type: TypeMessage, Name: []byte("al"), Text: []byte("yo")}), fail(io.EOF),
		}},
		{"large frame then small", 0, concat(AppendSendTo(nil, "bob", bigText), AppendList(nil)), []step{
			ok(Frame{Type: TypeSendTo, Name: []byte("bob"), Text: []byte(bigText)}), ok(list), fail(io.EOF),
		}},

		// Truncated streams.
		{"short header 1", 0, sendto[:1], []step{fail(io.ErrUnexpectedEOF)}},
		{"short header 3", 0, sendto[:3], []step{fail(io.ErrUnexpectedEOF)}},
		{"header without body", 0, sendto[:HeaderSize], []step{fail(io.ErrUnexpectedEOF)}},
		{"body cut short", 0, sendto[:len(sendto)-1], []step{fail(io.ErrUnexpectedEOF)}},
		{"frame then short header", 0, concat(AppendList(nil), []byte{0, 0}), []step{ok(list), fail(io.ErrUnexpectedEOF)}},
		{"frame then cut body", 0, concat(AppendList(nil), sendto[:6]), []step{ok(list), fail(io.ErrUnexpectedEOF)}},

		// Malformed bodies: reported, and the stream stays in step.
		{"length 0", 0, concat(header(0), AppendList(nil)), []step{malformed, ok(list), fail(io.EOF)}},
		{"unknown type", 0, concat(withBody(0x7f, 1, 2), AppendLogout(nil)), []step{malformed, ok(logout), fail(io.EOF)}},
		{"bad payload of each type", 0, concat(
			withBody(0x01), withBody(0x02, 0), withBody(0x03), withBody(0x04, 9),
			withBody(0x81), withBody(0x82, 3, 'a'), withBody(0x83, 1), AppendList(nil),
		), []step{malformed, malformed, malformed, malformed, malformed, malformed, malformed, ok(list), fail(io.EOF)}},

		// The limit.
		{"at the limit", 64, concat(withBody(atLimit...), AppendList(nil)), []step{
			ok(Frame{Type: TypeSendTo, Name: []byte("b"), Text: atLimit[3:]}), ok(list), fail(io.EOF),
		}},
		{"one past the limit poisons the reader", 64, concat(withBody(append(atLimit, 'x')...), AppendList(nil)), []step{
			tooLarge, tooLarge, tooLarge,
		}},
		{"length 0xffffffff", 0, concat(header(0xffffffff), AppendList(nil)), []step{tooLarge, tooLarge}},
		{"length 2 GiB", 0, concat(header(1<<31), AppendList(nil)), []step{tooLarge, tooLarge}},
		// A length beyond the limit is refused before the body is waited
		// for; a length at the limit waits for its body.
		{"default limit + 1", 0, header(DefaultMaxFrameSize + 1), []step{tooLarge}},
		{"default limit", 0, header(DefaultMaxFrameSize), []step{fail(io.ErrUnexpectedEOF)}},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":      func(r io.Reader) io.Reader { return r },
		"bytewise":   iotest.OneByteReader,
		"halves":     iotest.HalfReader,
		"EOF w/data": iotest.DataErrReader,
	}
	for _, tt := range tests {
		for rname, wrap := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				fr := NewFrameReader(wrap(bytes.NewReader(tt.stream)), tt.max)
				limit := tt.max
				if limit <= 0 {
					limit = DefaultMaxFrameSize
				}
				for i, w := range tt.want {
					f, err := fr.Next()
					if c := cap(fr.buf); c > HeaderSize+limit {
						t.Fatalf("call %d: a buffer of %d bytes with a limit of %d", i, c, limit)
					}
					if w.err != nil {
						if !errors.Is(err, w.err) {
							t.Fatalf("call %d: %+v, %v; want %v", i, f, err, w.err)
						}
						continue
					}
					if err != nil || !sameFrame(f, w.frame) {
						t.Fatalf("call %d: %v name %q text %d bytes, %v; want %v name %q text %d bytes",
							i, f.Type, f.Name, len(f.Text), err, w.frame.Type, w.frame.Name, len(w.frame.Text))
					}
				}
			})
		}
	}
}

type countingReader struct {
	r     io.Reader
	n     int // bytes read
	calls int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	c.calls++
	return n, err
}

// TestFrameReaderTooLargeStopsReading checks that an oversize length is
// refused without reading its body, and that the reader reads nothing more.
func TestFrameReaderTooLargeStopsReading(t *testing.T) {
	r := &countingReader{r: bytes.NewReader(concat(header(4097), make([]byte, 10000)))}
	fr := NewFrameReader(r, 4096)
	if _, err := fr.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	if r.n > frameReaderMinBuf {
		t.Errorf("read %d bytes of a frame it refused", r.n)
	}
	calls := r.calls
	for range 3 {
		if _, err := fr.Next(); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("after oversize: %v", err)
		}
	}
	if r.calls != calls {
		t.Errorf("a poisoned reader read %d more times", r.calls-calls)
	}
}

// TestFrameReaderReadErrors checks that errors of the underlying reader
// other than io.EOF come through as they are, within a frame too.
func TestFrameReaderReadErrors(t *testing.T) {
	boom := errors.New("boom")
	for name, r := range map[string]io.Reader{
		"at once":         iotest.ErrReader(boom),
		"in the header":   io.MultiReader(bytes.NewReader([]byte{0, 0}), iotest.ErrReader(boom)),
		"in the body":     io.MultiReader(bytes.NewReader(AppendSendTo(nil, "bob", "hi")[:7]), iotest.ErrReader(boom)),
		"after one frame": io.MultiReader(bytes.NewReader(AppendList(nil)), iotest.ErrReader(boom)),
	} {
		fr := NewFrameReader(r, 0)
		f, err := fr.Next()
		if name == "after one frame" {
			if err != nil || f.Type != TypeList {
				t.Fatalf("%s: %+v, %v", name, f, err)
			}
			f, err = fr.Next()
		}
		if err != boom {
			t.Errorf("%s: %+v, %v; want %v", name, f, err, boom)
		}
	}
}

// TestFrameReaderReleasesLargeBuffer checks that a buffer grown for a large
// frame is not kept once the stream goes quiet.
func TestFrameReaderReleasesLargeBuffer(t *testing.T) {
	stream := concat(AppendSendTo(nil, "bob", strings.Repeat("x", 300_000)), AppendList(nil), AppendList(nil))
	fr := NewFrameReader(iotest.HalfReader(bytes.NewReader(stream)), 0)
	if f, err := fr.Next(); err != nil || len(f.Text) != 300_000 {
		t.Fatalf("large: %v", err)
	}
	if cap(fr.buf) < 300_000 {
		t.Fatalf("buffer of %d bytes held a 300 KB frame?", cap(fr.buf))
	}
	for range 2 {
		if _, err := fr.Next(); err != nil {
			t.Fatal(err)
		}
	}
	// Waiting for the next frame (here: finding the end) lets it go.
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
	if cap(fr.buf) > frameReaderMaxBuf {
		t.Errorf("after small frames the buffer still holds %d bytes", cap(fr.buf))
	}
}

// wantFrame is what a random frame should decode to.
type wantFrame struct {
	typ    FrameType
	result Result
	name   string
	text   string
	names  []string
}

// check compares got with w field by field.
func (w wantFrame) check(t *testing.T, i int, got Frame) {
	t.Helper()
	if got.Type != w.typ {
		t.Fatalf("frame %d: type %v, want %v", i, got.Type, w.typ)
	}
	if got.Result != w.result {
		t.Errorf("frame %d (%v): result %v, want %v", i, w.typ, got.Result, w.result)
	}
	if string(got.Name) != w.name {
		t.Errorf("frame %d (%v): name %q, want %q", i, w.typ, got.Name, w.name)
	}
	if string(got.Text) != w.text {
		t.Errorf("frame %d (%v): text of %d bytes, want %d bytes %.40q...", i, w.typ, len(got.Text), len(w.text), w.text)
	}
	if w.typ != TypeNames {
		if got.Names != nil {
			t.Errorf("frame %d (%v): names % x", i, w.typ, got.Names)
		}
	} else if names := listNames(t, got.Names); !slices.Equal(names, w.names) {
		t.Errorf("frame %d (LIST): names %q, want %q", i, names, w.names)
	}
}

// randomFrame returns a valid frame of the kind k (0 to 6) with random
// contents, and what it should decode to.
func randomFrame(rng *rand.Rand, k int) ([]byte, wantFrame) {
	name := func() string {
		if rng.IntN(2) == 0 { // a valid user name, often not ASCII
			runes := []rune("abcXYZ019_-.éßжπ日本語😀")
			b := make([]rune, 1+rng.IntN(MaxNameLen))
			for i := range b {
				b[i] = runes[rng.IntN(len(runes))]
			}
			return string(b)
		}
		b := make([]byte, rng.IntN(maxNameBytes+1)) // any bytes the wire can carry
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return string(b)
	}
	text := func() string {
		n := rng.IntN(80)
		switch rng.IntN(40) {
		case 0:
			n = MaxTextLen * 4 // the longest valid text, in bytes
		case 1, 2:
			n = rng.IntN(70_000)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return string(b)
	}
	switch k {
	case 0:
		n := name()
		return AppendLogin(nil, n), wantFrame{typ: TypeLogin, name: n}
	case 1:
		return AppendList(nil), wantFrame{typ: TypeList}
	case 2:
		n, x := name(), text()
		return AppendSendTo(nil, n, x), wantFrame{typ: TypeSendTo, name: n, text: x}
	case 3:
		return AppendLogout(nil), wantFrame{typ: TypeLogout}
	case 4:
		r := Result(rng.IntN(3))
		return AppendResponse(nil, r), wantFrame{typ: TypeResponse, result: r}
	case 5:
		names := make([]string, rng.IntN(40))
		for i := range names {
			names[i] = name()
		}
		return AppendNames(nil, names), wantFrame{typ: TypeNames, names: names}
	default:
		n, x := name(), text()
		return AppendMessage(nil, n, []byte(x)), wantFrame{typ: TypeMessage, name: n, text: x}
	}
}

// TestFrameRoundTripRandom encodes random valid frames of every kind into
// one stream and reads them back through a FrameReader, in chunks of random
// sizes. Run with -frame.seed=N to repeat a failure.
func TestFrameRoundTripRandom(t *testing.T) {
	seed := *frameSeed
	t.Logf("seed %d (-frame.seed)", seed)
	rng := rand.New(rand.NewPCG(seed, 0x636861745f66726d))
	var stream []byte
	var want []wantFrame
	kinds := make(map[FrameType]int)
	for range 3000 {
		b, w := randomFrame(rng, rng.IntN(7))
		if f, err := DecodeFrame(b[HeaderSize:]); err != nil {
			t.Fatalf("DecodeFrame of a %v: %v", w.typ, err)
		} else {
			w.check(t, len(want), f)
		}
		stream = append(stream, b...)
		want = append(want, w)
		kinds[w.typ]++
	}
	if len(kinds) != 7 {
		t.Fatalf("only %d kinds of frame: %v", len(kinds), kinds)
	}
	fr := NewFrameReader(&chunkReader{b: stream, rng: rng}, 0)
	for i, w := range want {
		got, err := fr.Next()
		if err != nil {
			t.Fatalf("frame %d (%v): %v", i, w.typ, err)
		}
		w.check(t, i, got)
		if t.Failed() {
			t.FailNow()
		}
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
	t.Logf("%d frames, %d bytes: %v", len(want), len(stream), kinds)
}

// chunkReader returns its bytes in chunks of random sizes, small or large.
type chunkReader struct {
	b   []byte
	rng *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	most := 16
	if c.rng.IntN(2) == 0 {
		most = 64 << 10
	}
	n := min(len(p), len(c.b), 1+c.rng.IntN(most))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// fuzzMaxFrame is the limit of the FrameReader in FuzzDecodeFrame: above
// frameReaderMinBuf, so that large frames take buffers of their own.
const fuzzMaxFrame = 1024

// FuzzDecodeFrame feeds arbitrary bytes to DecodeFrame, as one body, and to
// a FrameReader with a small limit, as a stream. Neither may panic; every
// frame either returns encodes back to exactly the bytes it came from; the
// reader stays in step after a malformed frame, holds no buffer larger than
// the limit allows, and returns the same frames and errors however the
// stream is split into reads.
func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range [][]byte{
		AppendLogin(nil, "alice"),
		AppendList(nil),
		AppendSendTo(nil, "bob", "Hi, how are you?"),
		AppendLogout(nil),
		AppendResponse(nil, ResultMalformed),
		AppendNames(nil, []string{"alice", "bob"}),
		AppendMessage(nil, "bob", []byte("Fine")),
		concat(AppendList(nil), AppendLogout(nil)),
		header(0),
		withBody(0x81),
		concat(header(0xffffffff), []byte{0x01}),
		concat(header(1<<31), AppendList(nil)),
		withBody(0x7f, 1, 2),
		withBody(0x82, 5, 'a'),
		AppendSendTo(nil, "bob", strings.Repeat("x", fuzzMaxFrame-5)),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// One body.
		body := slices.Clone(data)
		frame, err := DecodeFrame(body)
		if !bytes.Equal(body, data) {
			t.Fatalf("DecodeFrame modified its input")
		}
		if err == nil {
			if re := reencode(t, frame); !bytes.Equal(re[HeaderSize:], data) {
				t.Fatalf("%v re-encodes to % x; the body: % x", frame.Type, re[HeaderSize:], data)
			}
		} else if !errors.Is(err, ErrMalformedFrame) {
			t.Fatalf("DecodeFrame: %v, not ErrMalformedFrame", err)
		}

		// A stream, read in one go and in small pieces.
		whole := readFrameStream(t, data, false)
		split := readFrameStream(t, data, true)
		if !slices.Equal(whole, split) {
			t.Fatalf("read whole: %q\nread in pieces: %q", whole, split)
		}
	})
}

// readFrameStream reads data through a FrameReader with the limit
// fuzzMaxFrame until it stops, checking each result against data. It
// returns what each call of Next returned.
func readFrameStream(t *testing.T, data []byte, split bool) []string {
	src := bytes.NewReader(data)
	var r io.Reader = src
	if split {
		r = &cycleReader{r: src}
	}
	fr := NewFrameReader(r, fuzzMaxFrame)
	var got []string
	for {
		at := len(data) - src.Len() - fr.buffered() // where this frame starts
		length := -1                                // its length field, if complete
		if len(data)-at >= HeaderSize {
			length = int(min(binary.BigEndian.Uint32(data[at:]), 1<<30))
		}
		f, err := fr.Next()
		next := len(data) - src.Len() - fr.buffered()
		if c := cap(fr.buf); c > HeaderSize+fuzzMaxFrame {
			t.Fatalf("a buffer of %d bytes with a limit of %d", c, fuzzMaxFrame)
		}
		switch {
		case err == nil:
			if re := reencode(t, f); !bytes.Equal(re, data[at:next]) {
				t.Fatalf("%v at %d re-encodes to % x; it came from % x", f.Type, at, re, data[at:next])
			}
			got = append(got, string(data[at:next]))
		case errors.Is(err, ErrMalformedFrame):
			if length < 0 || next-at != HeaderSize+length {
				t.Fatalf("malformed frame at %d of length %d: %d bytes consumed", at, length, next-at)
			}
			if _, err := DecodeFrame(data[at+HeaderSize : next]); err == nil {
				t.Fatalf("FrameReader refused a body that DecodeFrame accepts: % x", data[at+HeaderSize:next])
			}
			got = append(got, "malformed")
		case errors.Is(err, ErrFrameTooLarge):
			if length <= fuzzMaxFrame {
				t.Fatalf("too large at %d, with a length of %d: %v", at, length, err)
			}
			if _, err := fr.Next(); !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("after too large: %v", err)
			}
			return append(got, "too large")
		case err == io.ErrUnexpectedEOF:
			if at == len(data) || length >= 0 && at+HeaderSize+length <= len(data) {
				t.Fatalf("unexpected EOF at %d of %d, with a length of %d", at, len(data), length)
			}
			return append(got, "truncated")
		case err == io.EOF:
			if at != len(data) {
				t.Fatalf("EOF at %d of %d", at, len(data))
			}
			return got
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
}

// cycleReader returns what r has in pieces of 1, 2, ..., 7 bytes in turn.
type cycleReader struct {
	r io.Reader
	n int
}

func (c *cycleReader) Read(p []byte) (int, error) {
	c.n = c.n%7 + 1
	return c.r.Read(p[:min(len(p), c.n)])
}

// loopReader repeats stream without end, filling every read.
type loopReader struct {
	stream []byte
	off    int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m := copy(p[n:], l.stream[l.off:])
		n += m
		l.off = (l.off + m) % len(l.stream)
	}
	return n, nil
}

// benchNames returns the names of a LIST of n users.
func benchNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("user%07d", i)
	}
	return names
}

// TestFrameHotPathsAllocateNothing checks that encoding into a reused
// buffer and decoding from a FrameReader in steady state allocate nothing.
func TestFrameHotPathsAllocateNothing(t *testing.T) {
	text := strings.Repeat("x", 64)
	btext := []byte(text)
	names := benchNames(100)
	buf := make([]byte, 0, 4096)
	for name, enc := range map[string]func(){
		"AppendSendTo":   func() { buf = AppendSendTo(buf[:0], "bob", text) },
		"AppendMessage":  func() { buf = AppendMessage(buf[:0], "alice", btext) },
		"AppendNames":    func() { buf = AppendNames(buf[:0], names) },
		"AppendResponse": func() { buf = AppendResponse(buf[:0], ResultOK) },
	} {
		if n := testing.AllocsPerRun(1000, enc); n != 0 {
			t.Errorf("%s: %v allocations per frame", name, n)
		}
	}

	for name, frame := range map[string][]byte{
		"sendto": AppendSendTo(nil, "bob", text),
		"SENDTO": AppendMessage(nil, "alice", btext),
		"LIST":   AppendNames(nil, names),
	} {
		fr := NewFrameReader(&loopReader{stream: frame}, 0)
		next := func() {
			f, err := fr.Next()
			if err != nil {
				t.Fatal(err)
			}
			for range Names(f.Names) {
			}
		}
		for range 10_000 { // until the buffer has reached its size
			next()
		}
		if n := testing.AllocsPerRun(10_000, next); n != 0 {
			t.Errorf("FrameReader.Next of a %s: %v allocations per frame", name, n)
		}
	}
}

func BenchmarkAppendSendTo(b *testing.B) {
	text := strings.Repeat("x", 64)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendSendTo(nil, "bob", text))))
	for b.Loop() {
		buf = AppendSendTo(buf[:0], "bob", text)
	}
}

func BenchmarkAppendMessage(b *testing.B) {
	text := []byte(strings.Repeat("x", 64))
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendMessage(nil, "alice", text))))
	for b.Loop() {
		buf = AppendMessage(buf[:0], "alice", text)
	}
}

func BenchmarkDecodeSendTo(b *testing.B) {
	frame := AppendSendTo(nil, "bob", strings.Repeat("x", 64))
	fr := NewFrameReader(&loopReader{stream: frame}, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, err := fr.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendNames(b *testing.B) {
	names := benchNames(100)
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(HeaderSize + namesSize(names)))
	for b.Loop() {
		buf = AppendNames(buf[:0], names)
	}
}

func BenchmarkDecodeNames(b *testing.B) {
	frame := AppendNames(nil, benchNames(100))
	fr := NewFrameReader(&loopReader{stream: frame}, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		f, err := fr.Next()
		if err != nil {
			b.Fatal(err)
		}
		for range Names(f.Names) {
		}
	}
}

// TestFrameSizes: the sizes the outbox counts are those of the frames
// encoded.
func TestFrameSizes(t *testing.T) {
	if got := len(AppendResponse(nil, ResultFailure)); got != responseSize {
		t.Errorf("a RESPONSE is %d bytes, responseSize %d", got, responseSize)
	}
	for _, text := range []string{"", "hi", strings.Repeat("é", 300)} {
		if got, want := len(AppendMessage(nil, "alice", []byte(text))), messageSize("alice", []byte(text)); got != want {
			t.Errorf("a SENDTO of %d bytes of text is %d bytes, messageSize %d", len(text), got, want)
		}
	}
}
