// Package buildinfo says which fleetd this is: its version, the commit it
// was built from and the Go version, for --version, the console and the
// fleetd_build_info metric.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit may be set at build time:
//
//	go build -ldflags "-X github.com/fleetd/fleetd/internal/buildinfo.Version=1.2.3 -X github.com/fleetd/fleetd/internal/buildinfo.Commit=abc123"
//
// Left empty, they are read from the module and VCS data that the Go
// toolchain embeds (debug.ReadBuildInfo).
var (
	Version string
	Commit  string
)

// Info is the identity of the running binary.
type Info struct {
	Version   string // "devel" for a build outside a tagged module
	Commit    string // "unknown" when the build carried no VCS data
	GoVersion string
}

// Get returns the identity of the running binary.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Commit == "" {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					info.Commit = s.Value
					if len(info.Commit) > 12 {
						info.Commit = info.Commit[:12]
					}
				}
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}
