//go:build unix

package e2e

// Browser tests: the web client of chatserver -http-addr in headless
// Chromium, driven with chromedp, chatting with other pages and with
// chatclient. They need /usr/bin/chromium (Debian package chromium, which
// .ci/run installs). Without it they are skipped, unless
// CHAT_BROWSER_TESTS is set (as CI sets it): then they fail.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/seedchat/chat/cli"
	"github.com/seedchat/chat/internal/natstest"
)

const chromiumPath = "/usr/bin/chromium"

// newBrowser starts headless Chromium for one test and returns its
// context; the browser is closed when the test ends.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CHAT_BROWSER_TESTS") == "" {
			t.Skipf("no %s (install the Debian package chromium; CHAT_BROWSER_TESTS=1 makes this a failure)", chromiumPath)
		}
		t.Fatalf("CHAT_BROWSER_TESTS is set but %s is missing: %v", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 700),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // start the browser now
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// webPage is one tab showing the chat page.
type webPage struct {
	t       *testing.T
	name    string
	ctx     context.Context
	dialogs atomic.Int32 // JavaScript dialogs opened (alert, …): none expected
}

// openPage opens a new tab of browser at url and waits until the page is
// connected.
func openPage(t *testing.T, browser context.Context, name, url string) *webPage {
	t.Helper()
	p := &webPage{t: t, name: name}
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithListener(func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			p.dialogs.Add(1)
		}
	}))
	t.Cleanup(cancel)
	p.ctx = ctx
	// Open the tab with ctx itself: the first action's context owns it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: opening a tab: %v", name, err)
	}
	p.do(chromedp.Navigate(url))
	p.waitText("#status", "Connected. Not logged in.")
	return p
}

func (p *webPage) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](p *webPage, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, expr, err)
	}
	return v
}

// waitText waits until the text of the element sel is want.
func (p *webPage) waitText(sel, want string) {
	p.t.Helper()
	p.waitJS(fmt.Sprintf("document.querySelector(%q).textContent === %s", sel, jsString(want)),
		func() string { return fmt.Sprintf("%s is %q, want %q", sel, p.text(sel), want) })
}

// waitJS waits until the expression is true, polled in the page (there
// is no event to wait for); why says what was wrong if it never is.
func (p *webPage) waitJS(expr string, why func() string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		p.t.Fatalf("%s: waiting for %s: %v: %s", p.name, expr, err, why())
	}
}

// setValue sets the value of the input sel.
func (p *webPage) setValue(sel, v string) {
	p.t.Helper()
	eval[bool](p, fmt.Sprintf("(el => { el.value = %s; return true; })(document.querySelector(%q))", jsString(v), sel))
}

func (p *webPage) text(sel string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf("(document.querySelector(%q) || {}).textContent || ''", sel))
}

// messages returns the lines of the open conversation.
func (p *webPage) messages() []string {
	p.t.Helper()
	return eval[[]string](p, `[...document.querySelectorAll("#messages li")].map(li => li.textContent)`)
}

// waitMessage waits until the open conversation shows the line want.
func (p *webPage) waitMessage(want string) {
	p.t.Helper()
	p.waitJS(fmt.Sprintf(`[...document.querySelectorAll("#messages li")].some(li => li.textContent === %s)`, jsString(want)),
		func() string { return fmt.Sprintf("messages %q lack %q", p.messages(), want) })
}

// login types name and Enter, as a keyboard user does, and waits for the
// outcome.
func (p *webPage) login(name, want string) {
	p.t.Helper()
	p.setValue("#login-name", "")
	p.do(chromedp.SendKeys("#login-name", name+"\r"))
	p.waitText("#account-result", want)
}

// open opens the conversation with name, typed into "Chat with".
func (p *webPage) open(name string) {
	p.t.Helper()
	p.do(chromedp.SendKeys("#open-name", name+"\r"))
	p.waitText("#peer", name)
}

// send sends text in the open conversation with the Enter key, and waits
// for its outcome.
func (p *webPage) send(text, want string) {
	p.t.Helper()
	p.setValue("#text", text)
	p.do(chromedp.SendKeys("#text", "\r")) // Enter sends
	p.waitText("#send-result", want)
}

// screenshot saves the page into the test's temporary directory, and also
// to $CHAT_SCREENSHOT if set (that is how docs/browser.png is made).
func (p *webPage) screenshot(file string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	eval[bool](p, "window.scrollTo(0, 0), document.activeElement.blur(), true")
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	path := filepath.Join(p.t.TempDir(), file)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("%s: screenshot %s", p.name, path)
	if out := os.Getenv("CHAT_SCREENSHOT"); out != "" && file == "chat.png" {
		os.WriteFile(out, png, 0o644)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// webServer is a chatserver serving TCP and the web client.
type webServer struct {
	*server
	url string // of the page
}

// startWebServer starts chatserver with -http-addr httpAddr (a free port
// if empty), tcpAddr and the flags extra, and waits until both listen.
func startWebServer(t *testing.T, tcpAddr, httpAddr string, extra ...string) *webServer {
	t.Helper()
	if httpAddr == "" {
		httpAddr = "127.0.0.1:0"
	}
	p := startProc(t, "chatserver", serverBin, false, append([]string{"-addr", tcpAddr, "-http-addr", httpAddr}, extra...)...)
	ws := &webServer{}
	deadline := time.After(timeout)
	for i := 0; ws.url == "" || ws.server == nil; i++ {
		line, ok := p.stderr.waitLine(i, deadline)
		if !ok {
			t.Fatalf("chatserver never logged where it listens; stderr:\n%s", clip(p.stderr.String()))
		}
		var e struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
			URL  string `json:"url"`
		}
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		switch e.Msg {
		case "web listening":
			ws.url = e.URL
		case "listening":
			host, port, _ := strings.Cut(e.Addr, ":")
			ws.server = &server{proc: p, addr: e.Addr, host: host, port: port}
		}
	}
	return ws
}

// TestBrowserChat has two pages and a chatclient (through a pipe) chat
// with each other, and checks that hostile text shows as text.
func TestBrowserChat(t *testing.T) {
	t.Parallel()
	srv := startWebServer(t, "127.0.0.1:0", "")
	browser := newBrowser(t)
	ann := openPage(t, browser, "ann", srv.url)
	ben := openPage(t, browser, "ben", srv.url)
	ann.login("ann", "Success")
	ben.login("ben", "Success")
	cli := loggedIn(t, srv.server, "cli")

	// The list, refreshed.
	ann.do(chromedp.Click("#refresh"))
	ann.waitText("#users", "annbencli")

	// Page to page.
	ann.open("ben")
	ann.send("hello ben", "Success")
	ann.waitMessage("ann: hello benSuccess")
	ben.waitText("#conversations", "ann (1 new)")
	ben.do(chromedp.Click("#conversations button"))
	ben.waitMessage("ann: hello ben")

	// Page to terminal and back.
	ann.open("cli")
	ann.send("hi terminal", "Success")
	cli.expectLine("ann: hi terminal")
	cli.do("sendto ann hi browser", "Success")
	ann.waitMessage("cli: hi browser")
	cli.do("sendto ben from the terminal", "Success")
	ben.waitText("#conversations", "anncli (1 new)")

	// Hostile and invisible text is shown as text, escaped as chatclient
	// escapes it, and runs nothing.
	const hostile = `<img src=x onerror=alert(1)>`
	ben.send(hostile, "Success")
	ann.waitText("#conversations", "ben (1 new)cli")
	ann.do(chromedp.Click(`#conversations li:nth-child(1) button`))
	ann.waitMessage("ben: " + hostile)
	cli.do("sendto ann zero\u200bwidth", "Success")
	// Clicked once the list has been redrawn for the message, or the click
	// may find the button it looked up gone.
	ann.waitText("#conversations", "bencli (1 new)")
	ann.do(chromedp.Click(`#conversations li:nth-child(2) button`))
	ann.waitMessage(`cli: zero\u200bwidth`)
	if n := eval[int](ann, `document.querySelectorAll("#messages img, #conversations img").length`); n != 0 {
		t.Errorf("ann: %d img elements made from a message", n)
	}
	ann.do(chromedp.Click(`#conversations li:nth-child(1) button`))
	ann.waitMessage("ben: " + hostile)
	ann.screenshot("chat.png")
	ben.screenshot("ben.png")
	for _, p := range []*webPage{ann, ben} {
		if n := p.dialogs.Load(); n != 0 {
			t.Errorf("%s: %d JavaScript dialogs opened", p.name, n)
		}
	}

	// Log out, and the name is free again.
	ann.do(chromedp.Click("#logout"))
	// #account-result still says the login's Success: wait for what the
	// page shows once the logout's Success has come.
	ann.waitText("#status", "Connected. Not logged in.")
	ann.waitText("#account-result", "Success")
	cli.do("list", "ben cli")
}

// TestBrowserRefusedNames checks the outcomes of refused logins: the ones
// the page catches say Bad username, the ones the server refuses Failure.
func TestBrowserRefusedNames(t *testing.T) {
	t.Parallel()
	srv := startWebServer(t, "127.0.0.1:0", "")
	browser := newBrowser(t)
	p := openPage(t, browser, "page", srv.url)
	loggedIn(t, srv.server, "taken")
	tests := []struct {
		name, want string
	}{
		{"two words", "Bad username"},
		{strings.Repeat("a", 21), "Bad username"},
		{"taken", "Failure"},
		{"ok", "Success"},
	}
	for _, tt := range tests {
		p.login(tt.name, tt.want)
	}
	p.screenshot("refused.png")
}

// TestBrowserCluster has a page on one node of a cluster chat with a
// chatclient on another.
func TestBrowserCluster(t *testing.T) {
	t.Parallel()
	url := natstest.Start(t).ClientURL()
	web := startWebServer(t, "127.0.0.1:0", "", "-nats", url, "-node-name", "w1", "-node-dead-after", deadAfter.String())
	other := startNode(t, url, "w2")
	term := loggedIn(t, other, "term")
	p := openPage(t, newBrowser(t), "page", web.url)
	p.login("term", "Failure") // logged in on the other node
	p.login("web", "Success")
	p.do(chromedp.Click("#refresh"))
	p.waitText("#users", "termweb")
	p.open("term")
	p.send("across the cluster", "Success")
	term.expectLine("web: across the cluster")
	term.do("sendto web and back", "Success")
	p.waitMessage("term: and back")
}

// TestBrowserPhone uses the page on a phone-sized screen: nothing is
// wider than the screen, and the conversation works.
func TestBrowserPhone(t *testing.T) {
	t.Parallel()
	srv := startWebServer(t, "127.0.0.1:0", "")
	p := openPage(t, newBrowser(t), "phone", srv.url)
	p.do(chromedp.EmulateViewport(375, 667))
	p.login("eve", "Success")
	p.open("eve")
	p.send("note to self", "Success")
	p.waitMessage("eve: note to self")
	if w := eval[int](p, "document.documentElement.scrollWidth - window.innerWidth"); w > 0 {
		t.Errorf("the page is %d px wider than a 375 px screen", w)
	}
	p.screenshot("phone.png")
}

// TestBrowserReconnect stops the server under a logged-in page: the page
// says so, and connects again when the server is back.
func TestBrowserReconnect(t *testing.T) {
	t.Parallel()
	ports := natstest.FreePorts(t, 2)
	tcpAddr, httpAddr := fmt.Sprint("127.0.0.1:", ports[0]), fmt.Sprint("127.0.0.1:", ports[1])
	srv := startWebServer(t, tcpAddr, httpAddr)
	browser := newBrowser(t)
	p := openPage(t, browser, "page", srv.url)
	p.login("dana", "Success")

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if status := srv.wait(); status != 0 {
		t.Fatalf("chatserver: exit status %d after SIGTERM", status)
	}
	p.waitJS(`document.querySelector("#status").textContent.startsWith("Disconnected: the server is shutting down.")`,
		func() string { return fmt.Sprintf("status %q", p.text("#status")) })
	if eval[bool](p, `document.querySelector("#reconnect").hidden`) {
		t.Error("no Connect again button while disconnected")
	}
	p.screenshot("disconnected.png")

	startWebServer(t, tcpAddr, httpAddr)
	p.waitText("#status", "Connected. Not logged in.")
	p.login("dana", "Success")
	p.screenshot("reconnected.png")
}

// chromiumInstalled is for the test below.
func chromiumInstalled() bool {
	_, err := exec.LookPath(chromiumPath)
	return err == nil
}

// TestBrowserTestsRun fails when CI asks for the browser tests and
// Chromium is missing, so that they never skip silently there.
func TestBrowserTestsRun(t *testing.T) {
	if os.Getenv("CHAT_BROWSER_TESTS") != "" && !chromiumInstalled() {
		t.Fatalf("CHAT_BROWSER_TESTS is set but %s is missing", chromiumPath)
	}
}

// TestBrowserEscape checks the page's escaping (escape.js) against the
// terminal client's rule, character class by character class.
func TestBrowserEscape(t *testing.T) {
	t.Parallel()
	srv := startWebServer(t, "127.0.0.1:0", "")
	p := openPage(t, newBrowser(t), "page", srv.url)
	tests := []struct {
		in, want string // cli.Escape agrees with the page
	}{
		{"plain text", "plain text"},
		{`back\slash é ☃ 😀 ي`, `back\slash é ☃ 😀 ي`},
		{"a\tb\nc\rd", `a\tb\nc\rd`},
		{"\x1b[31mred", `\x1b[31mred`},
		{"\x00\x7f", `\x00\x7f`},
		{"\u0085\u009b", `\u0085\u009b`},
		{"\u202eevil\u2066\u200f", `\u202eevil\u2066\u200f`},
		{"line\u2028para\u2029", `line\u2028para\u2029`},
		{"\xff\x61", `\xffa`},                                // invalid UTF-8
		{"\xc0\x80", `\xc0\x80`},                             // overlong
		{"\xed\xa0\x80", `\xed\xa0\x80`},                     // a surrogate
		{"zero\u200bwidth\u00ad", `zero\u200bwidth\u00ad`},   // Cf
		{"\ufeff\U000e0001", `\ufeff\U000e0001`},             // Cf
		{"\ue000\U0010fffd", `\ue000\U0010fffd`},             // Co
		{"\u0378", `\u0378`},                                 // Cn
		{"\ufdd0\uffff\U0001fffe", `\ufdd0\uffff\U0001fffe`}, // noncharacters
	}
	var ins []string
	for _, tt := range tests {
		ins = append(ins, tt.in)
	}
	js, _ := json.Marshal(func() [][]int {
		var bs [][]int
		for _, s := range ins {
			b := make([]int, len(s))
			for i := range len(s) {
				b[i] = int(s[i])
			}
			bs = append(bs, b)
		}
		return bs
	}())
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fmt.Sprintf(
		`import(new URL("escape.js", location.href).href).then(m => %s.map(b => m.escapeBytes(new Uint8Array(b))))`, js),
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		if got[i] != tt.want {
			t.Errorf("escapeBytes(%q) = %q, want %q", tt.in, got[i], tt.want)
		}
		if g := cli.Escape(tt.in); g != tt.want {
			t.Errorf("cli.Escape(%q) = %q, want %q as the page", tt.in, g, tt.want)
		}
	}
	// escapeText, for JavaScript strings, agrees on valid text.
	js, _ = json.Marshal(ins[:2])
	text, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fmt.Sprintf(
		`import(new URL("escape.js", location.href).href).then(m => %s.map(m.escapeText))`, js),
		chromedp.EvalAwaitPromise))
	if err != nil || len(text) != 2 || text[0] != tests[0].want || text[1] != tests[1].want {
		t.Errorf("escapeText: %q, %v", text, err)
	}
}
