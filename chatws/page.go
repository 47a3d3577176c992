package chatws

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed web
var webFiles embed.FS

// Page returns an http.Handler that serves the web client: index.html at
// the root of where it is mounted, with its scripts and style sheet. The
// page opens its WebSocket at "ws" relative to its own address: at /ws when
// the page is at /, at /chat/ws when it is at /chat/. Everything is
// embedded in the binary: no build step, nothing fetched from elsewhere.
//
// The responses carry a Content-Security-Policy that allows the page's own
// scripts, styles and WebSocket only, and forbids framing it.
func Page() http.Handler {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
