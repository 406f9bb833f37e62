package serve

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestMisspeltSettingIsNamed: a FERRY_ variable the bootstrap does not read
// is warned about with the name meant (a misspelt linger once left the
// default in force in silence); known ones and other programs' pass.
func TestMisspeltSettingIsNamed(t *testing.T) {
	t.Setenv("FERRY_IDLE_LINGR", "1s")
	t.Setenv("FERRY_MAX_CONCURRENCY", "8")
	var buf bytes.Buffer
	WarnUnknown(slog.New(slog.NewTextHandler(&buf, nil)))
	out := buf.String()
	if !strings.Contains(out, "FERRY_IDLE_LINGR is not a setting") || !strings.Contains(out, "did you mean FERRY_IDLE_LINGER?") {
		t.Errorf("want a warning naming FERRY_IDLE_LINGER; got %q", out)
	}
	if strings.Contains(out, "FERRY_MAX_CONCURRENCY") || strings.Count(out, "FERRY_IDLE_LINGR is not") != 1 {
		t.Errorf("want one warning, none for a known name; got %q", out)
	}
}
