package chat_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"

	"github.com/seedchat/chat"
)

// A server and two clients on loopback: alice sends bob a message.
func ExampleServer() {
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

// SendTo returns nil once the message is queued for the recipient, a
// validation error without asking the server, or ErrFailure if the server
// refuses.
func ExampleClient_SendTo() {
	srv := &chat.Server{}
	defer srv.Close()
	connect := func(opts ...chat.Option) *chat.Client {
		clientEnd, serverEnd := net.Pipe()
		go srv.ServeConn(serverEnd)
		return chat.NewClient(clientEnd, opts...)
	}
	ctx := context.Background()
	received := make(chan chat.Message, 1)
	bob := connect(chat.OnMessage(func(m chat.Message) { received <- m }))
	defer bob.Close()
	alice := connect()
	defer alice.Close()
	if err := bob.Login(ctx, "bob"); err != nil {
		log.Fatal(err)
	}
	if err := alice.Login(ctx, "alice"); err != nil {
		log.Fatal(err)
	}

	if err := alice.SendTo(ctx, "bob", "Hi, how are you?"); err == nil {
		m := <-received
		fmt.Printf("bob got %q from %s\n", m.Text, m.From)
	}
	err := alice.SendTo(ctx, "carol", "hello?")
	fmt.Println(errors.Is(err, chat.ErrFailure), err)
	err = alice.SendTo(ctx, "John Doe", "hello?")
	fmt.Println(errors.Is(err, chat.ErrBadUsername), err)
	// Output:
	// bob got "Hi, how are you?" from alice
	// true chat: failure
	// true chat: bad user name
}
