package testbin

import (
	"debug/buildinfo"
	"testing"
)

// TestFerryProgramsRaceWhenTheTestsDo: under the race detector, the
// binaries the tests run of ferry's own programs carry it too (their
// concurrency is checked where the tests drive it), and the sample apps,
// whose CPU the tests measure, do not.
func TestFerryProgramsRaceWhenTheTestsDo(t *testing.T) {
	bins, err := Build(t.TempDir(), "./bootstrap", "./examples/goapp")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{Race, false} {
		info, err := buildinfo.ReadFile(bins[i])
		if err != nil {
			t.Fatal(err)
		}
		var raced bool
		for _, s := range info.Settings {
			if s.Key == "-race" && s.Value == "true" {
				raced = true
			}
		}
		if raced != want {
			t.Errorf("%s built with -race %v, want %v (the tests run with it: %v)", bins[i], raced, want, Race)
		}
	}
	if got := RaceLog("/tmp/x"); (len(got) == 1) != Race {
		t.Errorf("RaceLog = %q with the race detector %v", got, Race)
	}
}
