package chat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
)

// FrameType is the type code carried in the first byte of a frame's body.
// PROTOCOL.md lists the codes and the payload of each.
type FrameType uint8

// The seven frame types. Codes below 0x80 travel from client to server,
// codes from 0x80 up from server to client.
const (
	TypeLogin    FrameType = 0x01 // client: log in with a name
	TypeList     FrameType = 0x02 // client: ask for the logged-in names
	TypeSendTo   FrameType = 0x03 // client: send a text to a user
	TypeLogout   FrameType = 0x04 // client: log out, keep the connection
	TypeResponse FrameType = 0x81 // server: the result of a request
	TypeNames    FrameType = 0x82 // server: the reply to a successful list (LIST)
	TypeMessage  FrameType = 0x83 // server: a message relayed from a user (SENDTO)
)

// String returns the frame type's name as PROTOCOL.md spells it.
func (t FrameType) String() string {
	switch t {
	case TypeLogin:
		return "login"
	case TypeList:
		return "list"
	case TypeSendTo:
		return "sendto"
	case TypeLogout:
		return "logout"
	case TypeResponse:
		return "RESPONSE"
	case TypeNames:
		return "LIST"
	case TypeMessage:
		return "SENDTO"
	}
	return fmt.Sprintf("FrameType(%#02x)", uint8(t))
}

// Result is the result code of a RESPONSE frame.
type Result uint8

// The result codes of a RESPONSE.
const (
	ResultOK        Result = 0 // the request succeeded
	ResultFailure   Result = 1 // the request was understood and refused
	ResultMalformed Result = 2 // the server could not parse the frame
)

// String returns the result's name in PROTOCOL.md. (The command-line
// client prints its own words: package cli.)
func (r Result) String() string {
	switch r {
	case ResultOK:
		return "ok"
	case ResultFailure:
		return "failure"
	case ResultMalformed:
		return "malformed packet"
	}
	return fmt.Sprintf("Result(%d)", uint8(r))
}

// Frame sizes.
const (
	// HeaderSize is the size of the length field that starts every frame.
	HeaderSize = 4

	// DefaultMaxFrameSize is the largest frame body (type code and payload,
	// without the length field) accepted when no other limit is configured.
	// It holds a SENDTO with the longest text in the longest UTF-8 encoding
	// (4 × 65535 bytes) with room to spare, and a LIST of more than 12,000
	// names of the greatest length.
	DefaultMaxFrameSize = 1 << 20

	// maxNameBytes is the longest name the wire can carry: its length is one byte.
	maxNameBytes = 255

	// responseSize is the size of an encoded RESPONSE: the length, the
	// type code and the result.
	responseSize = HeaderSize + 2
)

// messageSize is the size of the SENDTO frame AppendMessage encodes.
func messageSize(from string, text []byte) int { return HeaderSize + 2 + len(from) + len(text) }

// Errors returned by the frame decoder.
var (
	// ErrMalformedFrame reports a frame whose length was acceptable but whose
	// body could not be parsed. The stream is still in step: the next frame
	// can be read.
	ErrMalformedFrame = errors.New("chat: malformed frame")

	// ErrFrameTooLarge reports a length field beyond the limit. The stream can
	// no longer be trusted and should be closed.
	ErrFrameTooLarge = errors.New("chat: frame too large")
)

// Frame is one decoded frame. Its byte slices alias the buffer the frame was
// decoded from and are valid only until that buffer is reused (for a
// FrameReader, until the next call to Next).
type Frame struct {
	Type FrameType

	// Result is set for TypeResponse.
	Result Result

	// Name is the user name of TypeLogin, the recipient of TypeSendTo and the
	// sender of TypeMessage.
	Name []byte

	// Text is the text of TypeSendTo and TypeMessage.
	Text []byte

	// Names is the raw payload of TypeNames, already checked to be well
	// formed; range over Names(f.Names) for the names.
	Names []byte
}

// DecodeFrame decodes the body of one frame: the type code and the payload,
// without the length field. It never retains or modifies body. A body that
// does not follow PROTOCOL.md returns an error wrapping ErrMalformedFrame.
func DecodeFrame(body []byte) (Frame, error) {
	if len(body) == 0 {
		return Frame{}, fmt.Errorf("%w: empty body", ErrMalformedFrame)
	}
	f := Frame{Type: FrameType(body[0])}
	p := body[1:]
	var err error
	switch f.Type {
	case TypeList, TypeLogout:
		if len(p) != 0 {
			return Frame{}, fmt.Errorf("%w: %v with %d bytes of payload", ErrMalformedFrame, f.Type, len(p))
		}
	case TypeLogin:
		var rest []byte
		f.Name, rest, err = cutName(p)
		if err == nil && len(rest) != 0 {
			err = fmt.Errorf("%w: %d bytes after the name of login", ErrMalformedFrame, len(rest))
		}
	case TypeSendTo, TypeMessage:
		f.Name, f.Text, err = cutName(p)
	case TypeResponse:
		if len(p) != 1 {
			return Frame{}, fmt.Errorf("%w: RESPONSE payload of %d bytes", ErrMalformedFrame, len(p))
		}
		f.Result = Result(p[0])
		if f.Result > ResultMalformed {
			return Frame{}, fmt.Errorf("%w: unknown result code %d", ErrMalformedFrame, p[0])
		}
	case TypeNames:
		// Checked here, with the errors, so that Names need report none.
		for rest := p; len(rest) > 0 && err == nil; {
			_, rest, err = cutName(rest)
		}
		f.Names = p
	default:
		return Frame{}, fmt.Errorf("%w: unknown type code %#02x", ErrMalformedFrame, body[0])
	}
	if err != nil {
		return Frame{}, err
	}
	return f, nil
}

// cutName splits a length-prefixed name off the front of p, as nextName
// does, with an error for the decoder.
func cutName(p []byte) (name, rest []byte, err error) {
	name, rest, ok := nextName(p)
	if !ok {
		return nil, nil, nameError(p)
	}
	return name, rest, nil
}

// nameError is cutName's error for p, which nextName refused.
func nameError(p []byte) error {
	if len(p) == 0 {
		return fmt.Errorf("%w: missing name length", ErrMalformedFrame)
	}
	return fmt.Errorf("%w: name of %d bytes in %d", ErrMalformedFrame, int(p[0]), len(p)-1)
}

// Names returns an iterator over the names of the Names payload of a LIST
// frame that DecodeFrame accepted, in order. The names alias payload. Of a
// payload DecodeFrame did not check, the iterator yields the names before
// the first one cut short, and stops there, as nextName does.
func Names(payload []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for p := payload; len(p) > 0; {
			name, rest, ok := nextName(p)
			if !ok || !yield(name) {
				return
			}
			p = rest
		}
	}
}

// nextName splits the first name off the Names payload of a LIST frame that
// DecodeFrame accepted, returning it and the rest. ok is false when names is
// empty (or, unchecked, starts with a name cut short). Names walks them all.
func nextName(names []byte) (name, rest []byte, ok bool) {
	if len(names) == 0 {
		return nil, nil, false
	}
	n := int(names[0])
	if len(names)-1 < n {
		return nil, nil, false
	}
	return names[1 : 1+n], names[1+n:], true
}

// The Append functions encode one whole frame, length field included, onto
// dst and return the extended slice. They allocate only to grow dst. Names
// longer than 255 bytes cannot be encoded: callers validate them first
// (ValidateName), and the functions panic on them rather than send a frame
// that the peer would misread.

// AppendLogin appends a login frame.
func AppendLogin(dst []byte, name string) []byte {
	dst, start := beginFrame(dst, TypeLogin)
	dst = appendName(dst, name)
	return endFrame(dst, start)
}

// AppendList appends a list frame.
func AppendList(dst []byte) []byte {
	dst, start := beginFrame(dst, TypeList)
	return endFrame(dst, start)
}

// AppendLogout appends a logout frame.
func AppendLogout(dst []byte) []byte {
	dst, start := beginFrame(dst, TypeLogout)
	return endFrame(dst, start)
}

// AppendSendTo appends a sendto frame carrying text for the user to.
func AppendSendTo(dst []byte, to, text string) []byte {
	dst, start := beginFrame(dst, TypeSendTo)
	dst = appendName(dst, to)
	dst = append(dst, text...)
	return endFrame(dst, start)
}

// AppendResponse appends a RESPONSE frame with result r.
func AppendResponse(dst []byte, r Result) []byte {
	dst, start := beginFrame(dst, TypeResponse)
	dst = append(dst, byte(r))
	return endFrame(dst, start)
}

// AppendNames appends a LIST frame carrying names in the order given.
func AppendNames(dst []byte, names []string) []byte {
	dst, start := beginFrame(dst, TypeNames)
	for _, n := range names {
		dst = appendName(dst, n)
	}
	return endFrame(dst, start)
}

// AppendMessage appends a SENDTO frame relaying text from the user from.
func AppendMessage(dst []byte, from string, text []byte) []byte {
	dst, start := beginFrame(dst, TypeMessage)
	dst = appendName(dst, from)
	dst = append(dst, text...)
	return endFrame(dst, start)
}

// namesSize returns the body size of the LIST frame that AppendNames would
// encode for names.
func namesSize(names []string) int {
	n := 1
	for _, s := range names {
		n += 1 + len(s)
	}
	return n
}

func beginFrame(dst []byte, t FrameType) ([]byte, int) {
	start := len(dst)
	return append(dst, 0, 0, 0, 0, byte(t)), start
}

func endFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-HeaderSize))
	return dst
}

func appendName(dst []byte, name string) []byte {
	if len(name) > maxNameBytes {
		panic("chat: name of " + fmt.Sprint(len(name)) + " bytes cannot be encoded")
	}
	dst = append(dst, byte(len(name)))
	return append(dst, name...)
}

// FrameReader reads frames from a stream into one reusable buffer. The
// buffer starts small, so that an idle connection holds little memory; it
// grows while reads fill it (a busy stream is read in large chunks, many
// frames per read), and shrinks again while reads return little. A frame
// larger than the buffer gets a buffer of its own size (never beyond the
// limit), which is let go once the frame has been consumed.
type FrameReader struct {
	r     io.Reader
	max   int
	buf   []byte
	start int // first unconsumed byte in buf
	end   int // end of the bytes read into buf
	want  int // the size the buffer gets when it is next replaced
	quiet int // reads in a row that returned little
}

// The bounds of a FrameReader's buffer while frames fit in it: small when
// the stream is quiet, larger while reads keep filling it.
const (
	frameReaderMinBuf = 512
	frameReaderMaxBuf = 16 << 10

	// frameReaderQuietReads small reads in a row halve the buffer.
	frameReaderQuietReads = 16
)

// NewFrameReader returns a reader of frames from r whose bodies are at most
// max bytes (DefaultMaxFrameSize if max <= 0).
func NewFrameReader(r io.Reader, max int) *FrameReader {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	return &FrameReader{r: r, max: max, want: frameReaderMinBuf}
}

// Next reads the next frame. The frame's slices are valid until the next call.
//
// A frame whose body cannot be parsed returns an error wrapping
// ErrMalformedFrame, and the reader stays in step with the stream. A length
// field beyond the limit returns an error wrapping ErrFrameTooLarge; so does
// every later call. Errors from the underlying reader are returned as they
// are, except that io.EOF in the middle of a frame becomes
// io.ErrUnexpectedEOF.
func (fr *FrameReader) Next() (Frame, error) {
	if err := fr.fill(HeaderSize); err != nil {
		return Frame{}, err
	}
	// Compared before the conversion to int, which a length of 2 GiB or
	// more would turn negative on 32-bit platforms.
	length := binary.BigEndian.Uint32(fr.buf[fr.start:])
	if uint64(length) > uint64(fr.max) {
		return Frame{}, fr.tooLarge(length)
	}
	size := int(length)
	if err := fr.fill(HeaderSize + size); err != nil {
		return Frame{}, err
	}
	body := fr.buf[fr.start+HeaderSize : fr.start+HeaderSize+size]
	fr.start += HeaderSize + size
	return DecodeFrame(body)
}

// tooLarge poisons the reader, whose stream is out of step from here on.
// It is kept out of line so that Next, on the stack of every connection
// waiting for a frame, stays small.
//
//go:noinline
func (fr *FrameReader) tooLarge(size uint32) error {
	limit := fr.max
	fr.max = -1
	return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, size, limit)
}

// buffered reports how many bytes have been read from the stream but not yet
// returned as frames.
func (fr *FrameReader) buffered() int { return fr.end - fr.start }

// hasFrame reports whether a whole frame is buffered: whether Next will
// return without reading.
func (fr *FrameReader) hasFrame() bool {
	n := fr.end - fr.start
	return n >= HeaderSize && uint64(n-HeaderSize) >= uint64(binary.BigEndian.Uint32(fr.buf[fr.start:]))
}

// fill makes at least n unconsumed bytes available in fr.buf[fr.start:fr.end].
func (fr *FrameReader) fill(n int) error {
	if fr.max < 0 {
		return fmt.Errorf("%w: stream abandoned", ErrFrameTooLarge)
	}
	if fr.end-fr.start >= n {
		return nil
	}
	if fr.start > 0 || len(fr.buf) < n {
		// About to read: move the partial frame to the front, into a buffer
		// of the wanted size (larger if the frame needs it), so that each
		// read has the most room. A buffer that holds nothing and is larger
		// than wanted (it held a large frame, or reads have slowed) is let go
		// rather than kept while the connection idles.
		size := fr.want
		for size < n {
			size *= 2
		}
		size = min(size, HeaderSize+fr.max)
		buf := fr.buf
		if size > len(buf) || size < len(buf) && fr.start == fr.end {
			buf = make([]byte, size)
		}
		fr.end = copy(buf, fr.buf[fr.start:fr.end])
		fr.start = 0
		fr.buf = buf
	}
	for fr.end-fr.start < n {
		room := len(fr.buf) - fr.end
		m, err := fr.r.Read(fr.buf[fr.end:])
		fr.end += m
		switch {
		case m == room:
			fr.want = min(2*fr.want, frameReaderMaxBuf) // busy: read more at once
			fr.quiet = 0
		case m < room/8:
			// Quiet: hold less, but only once reads have stayed small for a
			// while, or a busy stream would trade buffers back and forth.
			if fr.quiet++; fr.quiet >= frameReaderQuietReads {
				fr.want = max(fr.want/2, frameReaderMinBuf)
				fr.quiet = 0
			}
		default:
			fr.quiet = 0
		}
		if err != nil {
			if fr.end-fr.start >= n {
				return nil
			}
			if err == io.EOF && fr.end > fr.start {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}
