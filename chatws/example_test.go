package chatws_test

import (
	"context"
	"log"
	"net/http"

	"github.com/seedchat/chat"
	"github.com/seedchat/chat/chatws"
)

// A web application that serves the chat at /chat/: the web client at
// /chat/ and its WebSocket at /chat/ws, next to its own pages.
func Example() {
	srv := &chat.Server{}
	ws := &chatws.Handler{Server: srv}
	mux := http.NewServeMux()
	mux.Handle("/chat/ws", ws)
	mux.Handle("/chat/", http.StripPrefix("/chat/", chatws.Page()))
	hs := &http.Server{Addr: "127.0.0.1:8080", Handler: mux}

	go func() {
		if err := hs.ListenAndServe(); err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	// … until it is time to stop:
	srv.Shutdown(context.Background()) // replies owed are written; WebSockets get 1001
	ws.Wait()                          // the close frames are out
	hs.Shutdown(context.Background())
}

// Pages of other origins may open the WebSocket only if allowed.
func ExampleHandler_originPatterns() {
	srv := &chat.Server{}
	http.Handle("/ws", &chatws.Handler{
		Server:         srv,
		OriginPatterns: []string{"chat.example.com", "*.example.org"},
		MaxMessageSize: 64 << 10, // no sendto larger than 64 KiB
	})
}
