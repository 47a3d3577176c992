// Package chat is a small client/server chat system: a Server that keeps TCP
// (or any net.Conn) connections from many clients and relays private
// messages between logged-in users, and a Client to talk to it from Go.
// Package cli is the command-line front end, and package cluster joins
// servers into one chat.
//
// Connected clients can list the logged-in users, log in with a name, send
// messages to other logged-in users and log out while staying connected.
// Every request gets exactly one reply, in the order the requests were sent.
// The wire format is documented byte by byte in PROTOCOL.md.
//
// A server and a client in one program (README.md and ExampleServer have
// complete programs):
//
//	l, err := net.Listen("tcp", "127.0.0.1:0") // listen first, then serve
//	if err != nil {
//		log.Fatal(err)
//	}
//	srv := &chat.Server{}
//	go srv.Serve(l)
//	defer srv.Shutdown(context.Background())
//
//	ctx := context.Background()
//	c, err := chat.Dial(ctx, l.Addr().String(), chat.OnMessage(func(m chat.Message) {
//		fmt.Printf("%s: %s\n", m.From, m.Text)
//	}))
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer c.Close()
//	if err := c.Login(ctx, "alice"); err != nil {
//		log.Fatal(err) // errors.Is(err, chat.ErrFailure) if the name is taken
//	}
//	names, err := c.List(ctx)
//	fmt.Println(names, err) // [alice] <nil>
//	err = c.SendTo(ctx, "alice", "hi")
//	fmt.Println(err) // <nil>; soon the handler prints "alice: hi"
//
// Dialling right after net.Listen has returned succeeds: the connection
// waits in the listener's backlog until Serve accepts it. Dialling after
// "go srv.ListenAndServe(addr)" instead races the listening.
//
// # Limits
//
// A user name is 1 to MaxNameLen (20) Unicode code points of valid UTF-8
// that is exactly its own form under the PRECIS UsernameCasePreserved
// profile (RFC 8265): letters and digits of any script and the printable
// ASCII symbols other than space, but no white space, controls, invisible
// format characters, emoji, compatibility forms or unassigned code points,
// and nothing that normalisation would change. Names are case sensitive,
// but a login is refused while a logged-in name looks the same (has the
// same Skeleton). A text is at most MaxTextLen (65535) code points of valid
// UTF-8. Both client and server apply the same rules (ValidateName,
// ValidateText).
package chat

import (
	"errors"
	"unicode/utf8"
)

// Limits, counted in Unicode code points.
const (
	MaxNameLen = 20    // the longest user name
	MaxTextLen = 65535 // the longest message text
)

// The errors of the name and text rules. The command-line client prints
// them as "Bad username" and "Bad message" (package cli).
var (
	// ErrBadUsername reports a missing or invalid user name.
	ErrBadUsername = errors.New("chat: bad user name")

	// ErrBadMessage reports a text that is too long or not valid UTF-8.
	ErrBadMessage = errors.New("chat: bad message text")
)

// ValidateText reports whether text is a valid message text: valid UTF-8 of
// at most MaxTextLen code points. It returns nil or ErrBadMessage.
func ValidateText(text string) error {
	if len(text) > MaxTextLen && (len(text) > MaxTextLen*utf8.UTFMax || utf8.RuneCountInString(text) > MaxTextLen) {
		return ErrBadMessage
	}
	if !utf8.ValidString(text) {
		return ErrBadMessage
	}
	return nil
}

// validTextBytes is ValidateText for a text that aliases a frame buffer.
func validTextBytes(text []byte) bool {
	if len(text) > MaxTextLen && (len(text) > MaxTextLen*utf8.UTFMax || utf8.RuneCount(text) > MaxTextLen) {
		return false
	}
	return utf8.Valid(text)
}
