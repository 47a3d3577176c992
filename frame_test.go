package chat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// withBody builds a whole frame, length field included, around body.
func withBody(body ...byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func TestAppendEncodesProtocolBytes(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"login", AppendLogin(nil, "bob"), []byte{0, 0, 0, 5, 0x01, 3, 'b', 'o', 'b'}},
		{"list", AppendList(nil), []byte{0, 0, 0, 1, 0x02}},
		{"sendto", AppendSendTo(nil, "bob", "hi"), []byte{0, 0, 0, 7, 0x03, 3, 'b', 'o', 'b', 'h', 'i'}},
		{"logout", AppendLogout(nil), []byte{0, 0, 0, 1, 0x04}},
		{"RESPONSE ok", AppendResponse(nil, ResultOK), []byte{0, 0, 0, 2, 0x81, 0}},
		{"RESPONSE failure", AppendResponse(nil, ResultFailure), []byte{0, 0, 0, 2, 0x81, 1}},
		{"RESPONSE malformed", AppendResponse(nil, ResultMalformed), []byte{0, 0, 0, 2, 0x81, 2}},
		{"LIST", AppendNames(nil, []string{"al", "b"}), []byte{0, 0, 0, 6, 0x82, 2, 'a', 'l', 1, 'b'}},
		{"LIST empty", AppendNames(nil, nil), []byte{0, 0, 0, 1, 0x82}},
		{"SENDTO", AppendMessage(nil, "al", []byte("yo")), []byte{0, 0, 0, 6, 0x83, 2, 'a', 'l', 'y', 'o'}},
		{"appends", AppendList([]byte{9}), []byte{9, 0, 0, 0, 1, 0x02}},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s: % x, want % x", tt.name, tt.got, tt.want)
		}
	}
	if got := NamesSize([]string{"al", "b"}); got != 6 {
		t.Errorf("NamesSize = %d, want 6", got)
	}
}

func TestDecodeFrameMalformed(t *testing.T) {
	bodies := map[string][]byte{
		"empty":                  {},
		"unknown type":           {0x7f},
		"unknown server type":    {0x84},
		"list with payload":      {0x02, 0},
		"logout with payload":    {0x04, 1, 2},
		"login without name":     {0x01},
		"login name cut short":   {0x01, 5, 'a', 'b'},
		"login trailing bytes":   {0x01, 1, 'a', 'b'},
		"sendto without name":    {0x03},
		"sendto name cut short":  {0x03, 9, 'b', 'o'},
		"SENDTO name cut short":  {0x83, 2, 'a'},
		"RESPONSE without code":  {0x81},
		"RESPONSE two bytes":     {0x81, 0, 0},
		"RESPONSE unknown code":  {0x81, 3},
		"LIST name cut short":    {0x82, 2, 'a', 'b', 3, 'c'},
		"LIST length past end":   {0x82, 1},
		"LIST one byte too many": {0x82, 1, 'a', 7},
	}
	for name, body := range bodies {
		f, err := DecodeFrame(body)
		if !errors.Is(err, ErrMalformedFrame) {
			t.Errorf("%s: DecodeFrame(% x) = %+v, %v; want ErrMalformedFrame", name, body, f, err)
		}
	}
}

func TestDecodeFrameValid(t *testing.T) {
	f, err := DecodeFrame([]byte{0x03, 3, 'b', 'o', 'b', 'h', 'i', ' '})
	if err != nil || f.Type != TypeSendTo || string(f.Name) != "bob" || string(f.Text) != "hi " {
		t.Errorf("sendto: %+v, %v", f, err)
	}
	// An empty text and an empty name decode; validation is the server's.
	f, err = DecodeFrame([]byte{0x03, 0})
	if err != nil || len(f.Name) != 0 || len(f.Text) != 0 {
		t.Errorf("empty sendto: %+v, %v", f, err)
	}
	f, err = DecodeFrame([]byte{0x82, 1, 'a', 0, 2, 'b', 'c'})
	if err != nil || f.Type != TypeNames {
		t.Fatalf("LIST: %+v, %v", f, err)
	}
	var names []string
	for rest := f.Names; len(rest) > 0; {
		var name []byte
		var ok bool
		name, rest, ok = NextName(rest)
		if !ok {
			t.Fatalf("NextName failed on %q", rest)
		}
		names = append(names, string(name))
	}
	if !slices.Equal(names, []string{"a", "", "bc"}) {
		t.Errorf("names = %q", names)
	}
}

func TestFrameReaderStream(t *testing.T) {
	var stream []byte
	stream = AppendLogin(stream, "alice")
	stream = AppendSendTo(stream, "bob", strings.Repeat("x", 5000)) // larger than the first buffer
	stream = AppendList(stream)
	// One byte at a time, and in one go.
	for _, r := range []io.Reader{iotest.OneByteReader(bytes.NewReader(stream)), bytes.NewReader(stream)} {
		fr := NewFrameReader(r, 0)
		f, err := fr.Next()
		if err != nil || f.Type != TypeLogin || string(f.Name) != "alice" {
			t.Fatalf("first: %+v, %v", f, err)
		}
		f, err = fr.Next()
		if err != nil || f.Type != TypeSendTo || len(f.Text) != 5000 {
			t.Fatalf("second: %v %d, %v", f.Type, len(f.Text), err)
		}
		f, err = fr.Next()
		if err != nil || f.Type != TypeList {
			t.Fatalf("third: %+v, %v", f, err)
		}
		if _, err := fr.Next(); err != io.EOF {
			t.Fatalf("at the end: %v, want io.EOF", err)
		}
	}
}

func TestFrameReaderErrors(t *testing.T) {
	// A malformed body: reported, and the stream stays in step.
	stream := append(withBody(0x7f, 1, 2), AppendLogout(nil)...)
	fr := NewFrameReader(bytes.NewReader(stream), 0)
	if _, err := fr.Next(); !errors.Is(err, ErrMalformedFrame) {
		t.Fatalf("unknown type: %v", err)
	}
	if f, err := fr.Next(); err != nil || f.Type != TypeLogout {
		t.Fatalf("after a malformed frame: %+v, %v", f, err)
	}

	// A zero length: an empty body is malformed, the stream still in step.
	fr = NewFrameReader(bytes.NewReader(append([]byte{0, 0, 0, 0}, AppendList(nil)...)), 0)
	if _, err := fr.Next(); !errors.Is(err, ErrMalformedFrame) {
		t.Fatalf("zero length: %v", err)
	}
	if f, err := fr.Next(); err != nil || f.Type != TypeList {
		t.Fatalf("after a zero length: %+v, %v", f, err)
	}

	// Too large: reported without reading the body, and every call after.
	r := &countingReader{r: bytes.NewReader(append([]byte{0, 0, 0x10, 0x01}, make([]byte, 10000)...))}
	fr = NewFrameReader(r, 4096)
	if _, err := fr.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	if _, err := fr.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("after oversize: %v", err)
	}
	if r.n > frameReaderMinBuf {
		t.Errorf("read %d bytes of a frame it refused", r.n)
	}

	// The limit itself is allowed.
	body := append([]byte{0x03, 1, 'b'}, make([]byte, 4096-3)...)
	fr = NewFrameReader(bytes.NewReader(withBody(body...)), 4096)
	if f, err := fr.Next(); err != nil || len(f.Text) != 4096-3 {
		t.Fatalf("frame at the limit: %v", err)
	}

	// Truncated: in the header or in the body.
	for _, cut := range []int{1, 3, 4, 6} {
		whole := AppendSendTo(nil, "bob", "hello")
		fr := NewFrameReader(bytes.NewReader(whole[:cut]), 0)
		if _, err := fr.Next(); err != io.ErrUnexpectedEOF {
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}

	// Read errors come through as they are.
	boom := errors.New("boom")
	fr = NewFrameReader(iotest.ErrReader(boom), 0)
	if _, err := fr.Next(); err != boom {
		t.Errorf("read error: %v", err)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestFrameReaderReleasesLargeBuffer checks that a buffer grown for a large
// frame is not kept once the stream goes quiet.
func TestFrameReaderReleasesLargeBuffer(t *testing.T) {
	var stream []byte
	stream = AppendSendTo(stream, "bob", strings.Repeat("x", 300_000))
	stream = AppendList(stream)
	stream = AppendList(stream)
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

// randomFrame returns a valid frame of a random kind and the Frame it
// should decode to.
func randomFrame(rng *rand.Rand) ([]byte, Frame) {
	name := func() string {
		b := make([]byte, rng.IntN(maxNameBytes+1))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return string(b)
	}
	text := func() string {
		n := rng.IntN(64)
		if rng.IntN(20) == 0 {
			n = rng.IntN(70_000)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return string(b)
	}
	switch rng.IntN(7) {
	case 0:
		n := name()
		return AppendLogin(nil, n), Frame{Type: TypeLogin, Name: []byte(n)}
	case 1:
		return AppendList(nil), Frame{Type: TypeList}
	case 2:
		n, x := name(), text()
		return AppendSendTo(nil, n, x), Frame{Type: TypeSendTo, Name: []byte(n), Text: []byte(x)}
	case 3:
		return AppendLogout(nil), Frame{Type: TypeLogout}
	case 4:
		r := Result(rng.IntN(3))
		return AppendResponse(nil, r), Frame{Type: TypeResponse, Result: r}
	case 5:
		names := make([]string, rng.IntN(30))
		for i := range names {
			names[i] = name()
		}
		b := AppendNames(nil, names)
		return b, Frame{Type: TypeNames, Names: b[HeaderSize+1:]}
	default:
		n, x := name(), text()
		return AppendMessage(nil, n, []byte(x)), Frame{Type: TypeMessage, Name: []byte(n), Text: []byte(x)}
	}
}

func sameFrame(a, b Frame) bool {
	return a.Type == b.Type && a.Result == b.Result &&
		bytes.Equal(a.Name, b.Name) && bytes.Equal(a.Text, b.Text) && bytes.Equal(a.Names, b.Names)
}

// TestRoundTripRandom encodes random valid frames of every kind into one
// stream and reads them back through a FrameReader, in random chunks.
func TestRoundTripRandom(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var stream []byte
	var want []Frame
	for range 2000 {
		b, f := randomFrame(rng)
		stream = append(stream, b...)
		want = append(want, f)
	}
	r := &chunkReader{b: stream, rng: rng}
	fr := NewFrameReader(r, 0)
	for i, w := range want {
		got, err := fr.Next()
		if err != nil {
			t.Fatalf("frame %d (%v): %v", i, w.Type, err)
		}
		if !sameFrame(got, w) {
			t.Fatalf("frame %d: got %v name %q, want %v name %q", i, got.Type, got.Name, w.Type, w.Name)
		}
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
}

// chunkReader returns its bytes in chunks of random sizes.
type chunkReader struct {
	b   []byte
	rng *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.b), 1+c.rng.IntN(4000))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// FuzzDecodeFrame feeds arbitrary bytes to a FrameReader with a small
// limit: it must not panic, must not hold more than the limit allows, and
// every frame it returns must encode back to exactly the bytes it came from.
func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range [][]byte{
		AppendLogin(nil, "alice"),
		AppendList(nil),
		AppendSendTo(nil, "bob", "Hi, how are you?"),
		AppendLogout(nil),
		AppendResponse(nil, ResultMalformed),
		AppendNames(nil, []string{"alice", "bob"}),
		AppendMessage(nil, "bob", []byte("Fine")),
		append(AppendList(nil), AppendLogout(nil)...),
		{0, 0, 0, 0},
		{0, 0, 0, 2, 0x81},
		{0xff, 0xff, 0xff, 0xff, 0x01},
		{0, 0, 0, 3, 0x7f, 1, 2},
		{0, 0, 0, 3, 0x82, 5, 'a'},
	} {
		f.Add(seed)
	}
	const limit = 1024
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		fr := NewFrameReader(r, limit)
		for {
			at := len(data) - r.Len() - fr.Buffered() // where the next frame starts
			got, err := fr.Next()
			if cap(fr.buf) > HeaderSize+limit && cap(fr.buf) > frameReaderMaxBuf {
				t.Fatalf("buffer grew to %d bytes with a limit of %d", cap(fr.buf), limit)
			}
			if err != nil {
				if errors.Is(err, ErrMalformedFrame) {
					continue
				}
				return // end of input, truncation or too large: the reader stops
			}
			var re []byte
			switch got.Type {
			case TypeLogin:
				re = AppendLogin(nil, string(got.Name))
			case TypeList:
				re = AppendList(nil)
			case TypeSendTo:
				re = AppendSendTo(nil, string(got.Name), string(got.Text))
			case TypeLogout:
				re = AppendLogout(nil)
			case TypeResponse:
				re = AppendResponse(nil, got.Result)
			case TypeNames:
				var names []string
				for rest := got.Names; len(rest) > 0; {
					name, r, ok := NextName(rest)
					if !ok {
						t.Fatalf("NextName failed on a checked LIST: % x", got.Names)
					}
					names, rest = append(names, string(name)), r
				}
				re = AppendNames(nil, names)
			case TypeMessage:
				re = AppendMessage(nil, string(got.Name), got.Text)
			default:
				t.Fatalf("decoded an unknown type %v", got.Type)
			}
			if at+len(re) > len(data) || !bytes.Equal(re, data[at:at+len(re)]) {
				t.Fatalf("frame %v at %d re-encodes to % x; the input: % x", got.Type, at, re, data)
			}
		}
	})
}

func TestEncodeDecodeSendToAllocatesNothing(t *testing.T) {
	text := []byte(strings.Repeat("x", 64))
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(1000, func() {
		buf = AppendMessage(buf[:0], "alice", text)
	}); n != 0 {
		t.Errorf("AppendMessage: %v allocations per frame", n)
	}
	frame := AppendSendTo(nil, "bob", string(text))
	r := &loopReader{frame: frame}
	fr := NewFrameReader(r, 0)
	fr.Next() // the first read allocates the buffer
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := fr.Next(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("FrameReader.Next: %v allocations per frame", n)
	}
}

// loopReader returns frame over and over, as many whole copies as fit.
type loopReader struct{ frame []byte }

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for len(p)-n >= len(l.frame) {
		n += copy(p[n:], l.frame)
	}
	if n == 0 {
		n = copy(p, l.frame) // a buffer smaller than a frame: a part of it
		l.frame = append(l.frame[n:], l.frame[:n]...)
	}
	return n, nil
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
	fr := NewFrameReader(&loopReader{frame: frame}, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, err := fr.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeNames(b *testing.B) {
	names := make([]string, 100)
	for i := range names {
		names[i] = strings.Repeat("n", 10) + string(rune('a'+i%26))
	}
	frame := AppendNames(nil, names)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		f, err := DecodeFrame(frame[HeaderSize:])
		if err != nil {
			b.Fatal(err)
		}
		for rest := f.Names; len(rest) > 0; {
			_, rest, _ = NextName(rest)
		}
	}
}
