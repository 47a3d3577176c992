package chatprom

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// unknownLabel stands for build information the binary does not carry.
const unknownLabel = "unknown"

// NewBuildInfoCollector returns a collector of chat_build_info, a gauge
// that is always 1 with the labels version (the main module's version, as
// the go command stamps it), revision (the version control commit) and
// goversion (the Go toolchain that built the binary), read from
// runtime/debug.ReadBuildInfo. A label the binary carries no value for
// (a build with -buildvcs=false has no revision) is "unknown".
func NewBuildInfoCollector() prometheus.Collector {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	version, revision, goversion := buildLabels(bi)
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "chat_build_info",
		Help:        "Always 1; the labels say which build of the program is running.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goversion},
	}, func() float64 { return 1 })
}

// buildLabels returns the labels of chat_build_info for the build
// information bi, which may be nil.
func buildLabels(bi *debug.BuildInfo) (version, revision, goversion string) {
	version, revision, goversion = unknownLabel, unknownLabel, runtime.Version()
	if bi == nil {
		return version, revision, goversion
	}
	if v := bi.Main.Version; v != "" {
		version = v // "(devel)" for a build inside the module's own tree
	}
	if bi.GoVersion != "" {
		goversion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			revision = s.Value
		}
	}
	return version, revision, goversion
}
