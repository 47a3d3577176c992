package chatprom

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBuildLabels checks the labels of chat_build_info for the build
// information a binary may carry, with and without version control data.
func TestBuildLabels(t *testing.T) {
	for _, tt := range []struct {
		name                         string
		bi                           *debug.BuildInfo
		version, revision, goversion string
	}{
		{"no build information", nil, "unknown", "unknown", runtime.Version()},
		{"built with -buildvcs=false", &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "github.com/seedchat/chat", Version: "(devel)"},
			Settings:  []debug.BuildSetting{{Key: "-buildvcs", Value: "false"}, {Key: "GOOS", Value: "linux"}},
		}, "(devel)", "unknown", "go1.26.8"},
		{"built from a git checkout", &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "github.com/seedchat/chat", Version: "v0.0.0-20261201224000-0123456789ab+dirty"},
			Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"},
				{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
				{Key: "vcs.modified", Value: "true"},
			},
		}, "v0.0.0-20261201224000-0123456789ab+dirty", "0123456789abcdef0123456789abcdef01234567", "go1.26.8"},
		{"installed with go install", &debug.BuildInfo{
			Main: debug.Module{Path: "github.com/seedchat/chat", Version: "v1.2.3"},
		}, "v1.2.3", "unknown", runtime.Version()},
		{"a main module without a version", &debug.BuildInfo{GoVersion: "go1.26.8"}, "unknown", "unknown", "go1.26.8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, r, g := buildLabels(tt.bi)
			if v != tt.version || r != tt.revision || g != tt.goversion {
				t.Errorf("buildLabels = %q, %q, %q; want %q, %q, %q", v, r, g, tt.version, tt.revision, tt.goversion)
			}
		})
	}
}

// TestBuildInfoCollector checks the series the collector exports, in the
// test binary, and that promlint finds nothing wrong with it.
func TestBuildInfoCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewBuildInfoCollector())
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	bi, _ := debug.ReadBuildInfo()
	version, revision, goversion := buildLabels(bi)
	want := `
# HELP chat_build_info Always 1; the labels say which build of the program is running.
# TYPE chat_build_info gauge
chat_build_info{goversion="` + goversion + `",revision="` + revision + `",version="` + version + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "chat_build_info"); err != nil {
		t.Error(err)
	}
	if goversion != runtime.Version() {
		t.Errorf("goversion %q, want %q", goversion, runtime.Version())
	}
}
