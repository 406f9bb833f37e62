package metrics

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestFlushWritesOneEMFLinePerFunction(t *testing.T) {
	var out bytes.Buffer
	r := New(&out, time.Hour)
	for range 150 {
		r.Request("app", 200, 120*time.Millisecond, 100*time.Millisecond, 5*time.Millisecond)
	}
	r.Request("app", 503, time.Millisecond, 0, time.Millisecond)
	r.Invocation("app", 5000, true)
	r.Nack("app")
	r.Request("other", 200, time.Millisecond, time.Millisecond, 0)
	r.Flush()

	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want one per function:\n%s", len(lines), out.String())
	}
	var m struct {
		Function            string
		Requests, Errors5xx int64
		RequestMs           float64
		InvocationMs        float64
		ComputeSavedPercent float64
		Latency             []float64
		AWS                 struct {
			CloudWatchMetrics []struct {
				Namespace string
				Metrics   []struct{ Name string }
			}
		} `json:"_aws"`
	}
	if err := json.Unmarshal(lines[0], &m); err != nil {
		t.Fatal(err)
	}
	if m.Function != "app" || m.Requests != 151 || m.Errors5xx != 1 || m.RequestMs != 15000 || m.InvocationMs != 5000 {
		t.Errorf("aggregates = %+v", m)
	}
	if got, want := m.ComputeSavedPercent, 100*(1-5000.0/15000); got != want {
		t.Errorf("ComputeSavedPercent = %v, want %v", got, want)
	}
	if len(m.Latency) != maxSamples {
		t.Errorf("latency samples = %d, want EMF's cap of %d", len(m.Latency), maxSamples)
	}
	if len(m.AWS.CloudWatchMetrics) != 1 || m.AWS.CloudWatchMetrics[0].Namespace != Namespace {
		t.Errorf("EMF directive = %+v", m.AWS)
	}
	out.Reset()
	r.Flush()
	if out.Len() != 0 {
		t.Errorf("second flush wrote %q, want nothing after reset", out.String())
	}
}
