// Package review reads a function's ferry metrics back from CloudWatch
// (GetMetricData) and reports what ferry saved: the figures `ferry metrics`
// prints as a table, JSON or a chart.
package review

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
)

// Namespace is where the router publishes (router/metrics.Namespace).
const Namespace = "Ferry"

// API is the part of the CloudWatch client a review uses.
type API interface {
	GetMetricData(ctx context.Context, in *cloudwatch.GetMetricDataInput, opts ...func(*cloudwatch.Options)) (*cloudwatch.GetMetricDataOutput, error)
	ListMetrics(ctx context.Context, in *cloudwatch.ListMetricsInput, opts ...func(*cloudwatch.Options)) (*cloudwatch.ListMetricsOutput, error)
}

// Window is the time span reviewed, in Period steps (a multiple of 60s).
type Window struct {
	Start, End time.Time
	Period     time.Duration
}

// Report is one function's figures over a window.
type Report struct {
	Function string    `json:"function"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`

	Requests    int64 `json:"requests"`
	Errors5xx   int64 `json:"errors_5xx"`
	Invocations int64 `json:"invocations"`
	Nacks       int64 `json:"nacks"`
	ColdStarts  int64 `json:"cold_starts"`
	Throttles   int64 `json:"throttles"`
	// BilledMs is what Lambda billed for the invocations; SingleMs what
	// one request per invocation would have billed (each request's own
	// duration, rounded up to the millisecond).
	BilledMs     float64 `json:"billed_ms"`
	SingleMs     float64 `json:"single_ms"`
	SavedPercent float64 `json:"saved_percent"`
	// CPUMs is the CPU the invocations' sandboxes used, as ferry's
	// bootstrap measured it (ActiveCpuMs); CPUPercent its share of
	// BilledMs: how much of the billed time was computing rather than
	// waiting.
	CPUMs      float64 `json:"cpu_ms"`
	CPUPercent float64 `json:"cpu_percent_of_billed"`
	// IdleMs is the billed time with no request in the invocation: the
	// instances' lingers, and what warm instances (min_instances) cost
	// while nothing comes (IdleMs).
	IdleMs float64 `json:"idle_ms"`
	// BackgroundMs is the time apps' work after their answers (waitUntil)
	// kept invocations going.
	BackgroundMs float64 `json:"background_ms"`
	// Latency percentiles as clients saw them, in ms, and where they came
	// from: "percentiles" (CloudWatch's p50/p99 of every sample) or
	// "interval percentiles" (the request-weighted mean of each interval's
	// p50, and the highest interval p99), for stores that compute no
	// percentiles.
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	LatencySource string  `json:"latency_source"`

	Series []Point `json:"series"`
}

// Point is one period of the window.
type Point struct {
	Time         time.Time `json:"time"`
	Requests     int64     `json:"requests"`
	SavedPercent float64   `json:"saved_percent"` // NaN-free: 0 when nothing was billed
}

// ErrNoFunction and ErrEmptyWindow let callers tell a wrong name from a
// quiet window.
var (
	ErrNoFunction  = errors.New("no ferry metrics for this function")
	ErrEmptyWindow = errors.New("no requests in this window")
)

// Fetch reads fn's metrics over w.
func Fetch(ctx context.Context, api API, fn string, w Window) (Report, error) {
	r := Report{Function: fn, Start: w.Start, End: w.End}
	if w.Period < time.Minute || w.Period%time.Minute != 0 {
		return r, fmt.Errorf("period %v: want a multiple of 1m", w.Period)
	}
	if !w.End.After(w.Start) {
		return r, fmt.Errorf("window %s..%s is empty", w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339))
	}
	known, err := functions(ctx, api)
	if err != nil {
		return r, err
	}
	if !slices.Contains(known, fn) {
		hint := "none published yet"
		if len(known) > 0 {
			hint = "known: " + strings.Join(known, ", ")
		}
		return r, fmt.Errorf("%w: %q in namespace %s (%s)", ErrNoFunction, fn, Namespace, hint)
	}

	sums := []string{"Requests", "Errors5xx", "Invocations", "Nacks", "ColdStarts", "Throttles", "InvocationMs", "RequestMs", "ActiveCpuMs", "IdleMs", "BackgroundMs"}
	var qs []types.MetricDataQuery
	for _, m := range sums {
		qs = append(qs, query(qid(m), fn, m, "Sum", w.Period))
	}
	// Per-interval percentiles, for the fallback.
	qs = append(qs, query(qid("LatencyP50"), fn, "LatencyP50", "Average", w.Period),
		query(qid("LatencyP99"), fn, "LatencyP99", "Maximum", w.Period))
	series, err := fetch(ctx, api, w, qs)
	if err != nil {
		return r, err
	}
	total := func(name string) float64 {
		var t float64
		for _, v := range series[qid(name)] {
			t += v
		}
		return t
	}
	r.Requests = int64(total("Requests"))
	if r.Requests == 0 {
		return r, fmt.Errorf("%w: %q had no requests between %s and %s", ErrEmptyWindow, fn,
			w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339))
	}
	r.Errors5xx, r.Invocations = int64(total("Errors5xx")), int64(total("Invocations"))
	r.Nacks, r.ColdStarts, r.Throttles = int64(total("Nacks")), int64(total("ColdStarts")), int64(total("Throttles"))
	r.BilledMs, r.SingleMs = total("InvocationMs"), total("RequestMs")
	r.SavedPercent = saved(r.BilledMs, r.SingleMs)
	r.CPUMs, r.IdleMs, r.BackgroundMs = total("ActiveCpuMs"), total("IdleMs"), total("BackgroundMs")
	if r.BilledMs > 0 {
		r.CPUPercent = 100 * r.CPUMs / r.BilledMs
	}

	// Percentiles over every sample, where the store computes them.
	whole := Window{Start: w.Start, End: w.End, Period: roundUpMinute(w.End.Sub(w.Start))}
	pct, err := fetch(ctx, api, whole, []types.MetricDataQuery{
		query("p50", fn, "Latency", "p50", whole.Period), query("p99", fn, "Latency", "p99", whole.Period),
	})
	p50, ok50 := only(pct["p50"])
	p99, ok99 := only(pct["p99"])
	if err == nil && ok50 && ok99 {
		r.P50Ms, r.P99Ms, r.LatencySource = p50, p99, "percentiles"
	} else {
		var weighted, n float64
		for t, v := range series[qid("LatencyP50")] {
			req := series[qid("Requests")][t]
			weighted += v * req
			n += req
		}
		if n > 0 {
			r.P50Ms = weighted / n
		}
		for _, v := range series[qid("LatencyP99")] {
			r.P99Ms = math.Max(r.P99Ms, v)
		}
		r.LatencySource = "interval percentiles"
	}

	times := make([]time.Time, 0, len(series[qid("Requests")]))
	for t := range series[qid("Requests")] {
		times = append(times, t)
	}
	slices.SortFunc(times, time.Time.Compare)
	for _, t := range times {
		r.Series = append(r.Series, Point{Time: t, Requests: int64(series[qid("Requests")][t]),
			SavedPercent: saved(series[qid("InvocationMs")][t], series[qid("RequestMs")][t])})
	}
	return r, nil
}

// only is the value of a one-point series.
func only(series map[time.Time]float64) (float64, bool) {
	if len(series) != 1 {
		return 0, false
	}
	for _, v := range series {
		return v, true
	}
	return 0, false
}

func saved(billed, single float64) float64 {
	if single <= 0 {
		return 0
	}
	return 100 * (1 - billed/single)
}

func roundUpMinute(d time.Duration) time.Duration {
	return max(time.Minute, (d+time.Minute-1)/time.Minute*time.Minute)
}

// qid is a metric's query id: GetMetricData wants ids to start lowercase.
func qid(metric string) string { return strings.ToLower(metric[:1]) + metric[1:] }

func query(id, fn, metric, stat string, period time.Duration) types.MetricDataQuery {
	return types.MetricDataQuery{Id: aws.String(id), MetricStat: &types.MetricStat{
		Metric: &types.Metric{Namespace: aws.String(Namespace), MetricName: aws.String(metric),
			Dimensions: []types.Dimension{{Name: aws.String("Function"), Value: aws.String(fn)}}},
		Period: aws.Int32(int32(period / time.Second)), Stat: aws.String(stat),
	}}
}

// fetch runs the queries over w and returns each query's values by id
// and timestamp.
func fetch(ctx context.Context, api API, w Window, qs []types.MetricDataQuery) (map[string]map[time.Time]float64, error) {
	out := map[string]map[time.Time]float64{}
	in := &cloudwatch.GetMetricDataInput{StartTime: aws.Time(w.Start), EndTime: aws.Time(w.End), MetricDataQueries: qs}
	for page := 0; ; page++ {
		res, err := api.GetMetricData(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("GetMetricData: %w", err)
		}
		for _, m := range res.MetricDataResults {
			id := aws.ToString(m.Id)
			if out[id] == nil {
				out[id] = map[time.Time]float64{}
			}
			for i, v := range m.Values {
				if i < len(m.Timestamps) {
					out[id][m.Timestamps[i]] += v
				}
			}
		}
		if res.NextToken == nil || page > 100 {
			return out, nil
		}
		in.NextToken = res.NextToken
	}
}

// functions lists the functions with ferry metrics.
func functions(ctx context.Context, api API) ([]string, error) {
	seen := map[string]bool{}
	in := &cloudwatch.ListMetricsInput{Namespace: aws.String(Namespace), MetricName: aws.String("Requests")}
	for page := 0; ; page++ {
		res, err := api.ListMetrics(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("ListMetrics: %w", err)
		}
		for _, m := range res.Metrics {
			for _, d := range m.Dimensions {
				if aws.ToString(d.Name) == "Function" {
					seen[aws.ToString(d.Value)] = true
				}
			}
		}
		if res.NextToken == nil || page > 100 {
			break
		}
		in.NextToken = res.NextToken
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}
