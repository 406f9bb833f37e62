// Package version says which build of ferry is running.
package version

import (
	"runtime/debug"
	"strings"
)

// stamp is the version a release build sets with
// -ldflags "-X github.com/ferryrun/ferry/internal/version.stamp=v1.2.3";
// the layer build sets it to the source's commit. Empty otherwise.
var stamp string

// String is this build's version: the stamp when set, else the module's
// version (a build by `go install ...@v1.2.3`), else "devel" with the
// commit and whether the tree was modified, as far as the build recorded
// them.
func String() string {
	if stamp != "" {
		return stamp
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	return fromBuildInfo(info)
}

func fromBuildInfo(info *debug.BuildInfo) string {
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(len(s.Value), 12)]
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	var b strings.Builder
	b.WriteString("devel")
	if rev != "" {
		b.WriteString("-" + rev)
		if dirty {
			b.WriteString("-dirty")
		}
	}
	return b.String()
}

// Line is what a command prints for --version: its name, this build's
// version and the Go it was built with.
func Line(command string) string {
	goVersion := "unknown Go"
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
	}
	return command + " " + String() + " (" + goVersion + ")"
}
