package chat_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"github.com/seedchat/chat"
)

// A server and two clients on loopback: alice sends bob a message.
func Example() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &chat.Server{} // add Logger: zap.NewExample() to see what it does
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	ctx := context.Background()
	received := make(chan chat.Message, 1)
	bob, err := chat.Dial(ctx, l.Addr().String(), chat.OnMessage(func(m chat.Message) { received <- m }))
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()
	alice, err := chat.Dial(ctx, l.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close()

	fmt.Println(bob.Login(ctx, "bob"))
	fmt.Println(alice.Login(ctx, "alice"))
	fmt.Println(alice.Login(ctx, "bob")) // already logged in as alice
	names, _ := alice.List(ctx)
	fmt.Println(names)
	fmt.Println(alice.SendTo(ctx, "bob", "Hi, how are you?"))
	m := <-received
	fmt.Printf("%s: %s\n", m.From, m.Text)
	fmt.Println(alice.SendTo(ctx, "carol", "hello?"))
	// Output:
	// <nil>
	// <nil>
	// chat: failure
	// [alice bob]
	// <nil>
	// alice: Hi, how are you?
	// chat: failure
}

// A Server serves a single connection too, such as one end of a net.Pipe.
func ExampleServer_ServeConn() {
	srv := &chat.Server{}
	defer srv.Close()
	clientEnd, serverEnd := net.Pipe()
	go srv.ServeConn(serverEnd)

	c := chat.NewClient(clientEnd)
	defer c.Close()
	ctx := context.Background()
	fmt.Println(c.Login(ctx, "alice"))
	names, err := c.List(ctx)
	fmt.Println(names, err)
	// Output:
	// <nil>
	// [alice] <nil>
}

func ExampleParseCommand() {
	for _, line := range []string{
		"login John",
		"sendto John   Hello, how are you?",
		"login John Doe",
		"list bob",
		"sendto John",
	} {
		cmd, err := chat.ParseCommand(line)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%v %q %q\n", cmd.Kind, cmd.Name, cmd.Text)
	}
	// Output:
	// login "John" ""
	// sendto "John" "  Hello, how are you?"
	// Bad username
	// Invalid command
	// Bad username
}

func ExampleEscape() {
	fmt.Println(chat.Escape("hi\x1b[2J\tthere \u202eevil"))
	// Output:
	// hi\x1b[2J\tthere \u202eevil
}
