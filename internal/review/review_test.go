package review_test

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"

	"github.com/ferryrun/ferry/internal/review"
	"github.com/ferryrun/ferry/internal/testbin"
	"github.com/ferryrun/ferry/router/metrics"
)

// The review reads back what the router's CloudWatch sink published, from
// the local AWS (moto).
func TestFetchReadsWhatTheRouterPublished(t *testing.T) {
	api := cloudwatch.New(cloudwatch.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(testbin.Moto(t)), DisableRequestCompression: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		}),
	})
	ctx := t.Context()
	w := review.Window{Start: time.Now().Add(-10 * time.Minute), End: time.Now().Add(time.Minute), Period: time.Minute}

	_, err := review.Fetch(ctx, api, "app", w)
	if !errors.Is(err, review.ErrNoFunction) || !strings.Contains(err.Error(), "none published yet") {
		t.Errorf("before any metrics: error = %v, want ErrNoFunction saying none are published", err)
	}

	rec := metrics.New(time.Hour, nil, metrics.CloudWatch(api))
	for i := range 40 {
		// 40 requests of 100 ms each, served by 2 invocations billing 1 s.
		rec.Request("app", 200, time.Duration(100+i)*time.Millisecond, 100*time.Millisecond, 0)
	}
	rec.Invocation("app", metrics.Invocation{BilledMs: 600, CPU: 150 * time.Millisecond, Idle: 90 * time.Millisecond, Background: 40 * time.Millisecond, Cold: true})
	rec.Invocation("app", metrics.Invocation{BilledMs: 400, CPU: 50 * time.Millisecond, Idle: 30 * time.Millisecond})
	rec.Nack("app")
	rec.Flush(ctx)

	rep, err := review.Fetch(ctx, api, "app", w)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 40 || rep.Invocations != 2 || rep.BilledMs != 1000 || rep.SingleMs != 4000 ||
		rep.Nacks != 1 || rep.ColdStarts != 1 {
		t.Errorf("report = %+v", rep)
	}
	if rep.SavedPercent != 75 {
		t.Errorf("saved = %v%%, want 75%% (1 - 1000/4000)", rep.SavedPercent)
	}
	if rep.CPUMs != 200 || rep.CPUPercent != 20 || rep.IdleMs != 120 || rep.BackgroundMs != 40 {
		t.Errorf("CPU %v ms, %v%% of billed, idle %v ms, background %v ms; want 200 ms, 20%%, 120 ms, 40 ms", rep.CPUMs, rep.CPUPercent, rep.IdleMs, rep.BackgroundMs)
	}
	// moto computes no percentiles: the interval figures stand in.
	if rep.LatencySource != "interval percentiles" || rep.P50Ms < 100 || rep.P50Ms > 140 || rep.P99Ms < rep.P50Ms {
		t.Errorf("latency p50 %v, p99 %v from %q", rep.P50Ms, rep.P99Ms, rep.LatencySource)
	}

	_, err = review.Fetch(ctx, api, "nope", w)
	if !errors.Is(err, review.ErrNoFunction) || !strings.Contains(err.Error(), "known: app") {
		t.Errorf("unknown function: error = %v, want ErrNoFunction listing app", err)
	}
	_, err = review.Fetch(ctx, api, "app", review.Window{Start: w.Start.Add(-time.Hour), End: w.Start.Add(-50 * time.Minute), Period: time.Minute})
	if !errors.Is(err, review.ErrEmptyWindow) {
		t.Errorf("empty window: error = %v, want ErrEmptyWindow", err)
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "compute saved") ||
		!strings.Contains(table.String(), "75.0%") ||
		!strings.Contains(table.String(), "200 (20.0% of billed)") || !strings.Contains(table.String(), "billed ms idle") {
		t.Errorf("table (%v):\n%s", err, table.String())
	}
	chart := filepath.Join(t.TempDir(), "m.png")
	if err := rep.WritePNG(chart); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(chart)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("chart: %v", err)
	}
}

func TestFetchRejectsABadWindow(t *testing.T) {
	now := time.Now()
	for _, w := range []review.Window{
		{Start: now, End: now.Add(time.Hour), Period: 30 * time.Second},
		{Start: now, End: now, Period: time.Minute},
	} {
		if _, err := review.Fetch(t.Context(), nil, "app", w); err == nil {
			t.Errorf("window %+v: no error", w)
		}
	}
}
