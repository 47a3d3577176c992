package chatws

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPage(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/", Page())
	mux.Handle("/chat/", http.StripPrefix("/chat/", Page()))
	hs := httptest.NewServer(mux)
	defer hs.Close()
	tests := []struct {
		path, contentType, contains string
	}{
		{"/", "text/html", `<script type="module" src="app.js">`},
		{"/chat/", "text/html", `<label for="login-name">`},
		{"/app.js", "text/javascript", `from "./protocol.js"`},
		{"/chat/protocol.js", "text/javascript", "export class Connection"},
		{"/escape.js", "text/javascript", "export function escapeText"},
		{"/style.css", "text/css", "@media"},
	}
	for _, tt := range tests {
		resp, err := http.Get(hs.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.contentType) {
			t.Errorf("%s: %s, %q; want 200, %s", tt.path, resp.Status, resp.Header.Get("Content-Type"), tt.contentType)
		}
		if !strings.Contains(string(body), tt.contains) {
			t.Errorf("%s lacks %q", tt.path, tt.contains)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", tt.path, csp)
		}
	}
}

// TestPageSetsNoHTML guards the rule that text from the network is set with
// textContent only: the page's scripts use none of the ways of turning a
// string into HTML, and fetch nothing from elsewhere.
func TestPageSetsNoHTML(t *testing.T) {
	forbidden := []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "http://", "https://", "//cdn"}
	err := fs.WalkDir(webFiles, "web", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := webFiles.ReadFile(path)
		if err != nil {
			return err
		}
		for _, f := range forbidden {
			if strings.Contains(string(b), f) {
				t.Errorf("%s uses %q", path, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
