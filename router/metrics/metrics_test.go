package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/ferryrun/ferry/internal/testbin"
)

func TestFlushWritesOneEMFLinePerFunction(t *testing.T) {
	var out bytes.Buffer
	r := New(time.Hour, nil, EMF(&out))
	for range 150 {
		r.Request("app", 200, 120*time.Millisecond, 100*time.Millisecond, 5*time.Millisecond)
	}
	r.Request("app", 503, time.Millisecond, 0, time.Millisecond)
	r.Invocation("app", Invocation{BilledMs: 5000, CPU: 1250 * time.Millisecond, Idle: 700 * time.Millisecond, Background: 300 * time.Millisecond, Cold: true})
	r.Nack("app")
	r.Request("other", 200, time.Millisecond, time.Millisecond, 0)
	r.Flush(t.Context())

	lines := bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want one per function:\n%s", len(lines), out.String())
	}
	var m struct {
		Function               string
		Requests, Errors5xx    int64
		RequestMs              float64
		InvocationMs           float64
		ActiveCpuMs, IdleMs    float64
		BackgroundMs           float64
		ComputeSavedPercent    float64
		Latency                []float64
		LatencyP50, LatencyP99 float64
		AWS                    struct {
			CloudWatchMetrics []struct {
				Namespace string
				Metrics   []struct{ Name string }
			}
		} `json:"_aws"`
	}
	if err := json.Unmarshal(lines[0], &m); err != nil {
		t.Fatal(err)
	}
	if m.Function != "app" || m.Requests != 151 || m.Errors5xx != 1 || m.RequestMs != 15000 || m.InvocationMs != 5000 || m.ActiveCpuMs != 1250 || m.IdleMs != 700 || m.BackgroundMs != 300 {
		t.Errorf("aggregates = %+v", m)
	}
	if got, want := m.ComputeSavedPercent, 100*(1-5000.0/15000); got != want {
		t.Errorf("ComputeSavedPercent = %v, want %v", got, want)
	}
	if len(m.Latency) != maxSamples {
		t.Errorf("latency samples = %d, want EMF's cap of %d", len(m.Latency), maxSamples)
	}
	if m.LatencyP50 != 120 || m.LatencyP99 != 120 {
		t.Errorf("LatencyP50, P99 = %v, %v; want 120, 120", m.LatencyP50, m.LatencyP99)
	}
	if len(m.AWS.CloudWatchMetrics) != 1 || m.AWS.CloudWatchMetrics[0].Namespace != Namespace ||
		len(m.AWS.CloudWatchMetrics[0].Metrics) < 10 {
		t.Errorf("EMF directive = %+v", m.AWS)
	}
	out.Reset()
	r.Flush(t.Context())
	if out.Len() != 0 {
		t.Errorf("second flush wrote %q, want nothing after reset", out.String())
	}
}

func TestCloudWatchSinkPublishesEveryFunction(t *testing.T) {
	api := motoCloudWatch(t)
	r := New(time.Hour, nil, CloudWatch(api))
	const fns = 80 // x 15 metrics: two calls
	for i := range fns {
		fn := fmt.Sprintf("fn-%02d", i)
		for range 3 {
			r.Request(fn, 200, 20*time.Millisecond, 10*time.Millisecond, 0)
		}
		r.Invocation(fn, Invocation{BilledMs: 12, CPU: 3 * time.Millisecond})
	}
	r.Flush(t.Context())

	for _, fn := range []string{"fn-00", "fn-79"} {
		got := readBack(t, api, query("req", fn, "Requests"), query("inv", fn, "InvocationMs"), query("lat", fn, "Latency"))
		if got["req"] != 3 || got["inv"] != 12 || got["lat"] != 60 {
			t.Errorf("%s read back %v, want req 3, inv 12, lat 60 (3 x 20ms)", fn, got)
		}
	}
}

// TestLatencySamplesWeighedByTraffic: a busy interval's samples stand for
// all its requests, so statistics over several intervals weigh each by its
// traffic. A minute of 1,000 requests at 10 ms and one of 5 at 1 s average
// 14.9 ms; unweighted (100 samples against 5) they once read 57 ms, and a
// p99 over the two read 1 s.
func TestLatencySamplesWeighedByTraffic(t *testing.T) {
	api := motoCloudWatch(t)
	r := New(time.Hour, nil, CloudWatch(api))
	for range 1000 {
		r.Request("busy-quiet", 200, 10*time.Millisecond, 10*time.Millisecond, 0)
	}
	r.Flush(t.Context())
	for range 5 {
		r.Request("busy-quiet", 200, time.Second, time.Second, 0)
	}
	r.Flush(t.Context())

	got := readBack(t, api, queryStat("sum", "busy-quiet", "Latency", "Sum"), queryStat("n", "busy-quiet", "Latency", "SampleCount"))
	if got["n"] != 1005 || got["sum"] != 15000 {
		t.Errorf("Latency read back as %v samples summing to %v ms (mean %.1f), want 1005 and 15000 (mean 14.9)",
			got["n"], got["sum"], got["sum"]/got["n"])
	}
}

// TestPutMetricDataRetriedOnlyWhenNotApplied: a call CloudWatch may have
// stored is never sent twice (a 500 after the call was read once made an
// interval count double); one throttled, or one that found nobody
// listening, is. The CloudWatch here is a fake: moto cannot be made to fail
// a call after reading it, or to throttle.
func TestPutMetricDataRetriedOnlyWhenNotApplied(t *testing.T) {
	const throttled = `<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>`
	const ok = `<PutMetricDataResponse><ResponseMetadata><RequestId>2</RequestId></ResponseMetadata></PutMetricDataResponse>`
	for _, tc := range []struct {
		name    string
		answers []int // status of each call in turn; 200 after the list
		calls   int32
		fails   bool
	}{
		{"500 after reading the call: not sent again", []int{500}, 1, true},
		{"throttled: sent again", []int{400}, 2, false},
		{"answered: sent once", nil, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := int(calls.Add(1))
				w.Header().Set("Content-Type", "text/xml")
				if n <= len(tc.answers) {
					w.WriteHeader(tc.answers[n-1])
					if tc.answers[n-1] == 400 {
						fmt.Fprint(w, throttled)
					}
					return
				}
				fmt.Fprint(w, ok)
			}))
			defer srv.Close()
			err := CloudWatch(fakeCloudWatch(srv.URL)).Publish(t.Context(), []Snapshot{{Function: "app", Time: time.Now(), Values: []Value{{Name: "Invocations", Unit: "Count", V: 1}}}})
			if got := calls.Load(); got != tc.calls || (err != nil) != tc.fails {
				t.Errorf("%d calls, err %v; want %d calls, failed %v", got, err, tc.calls, tc.fails)
			}
		})
	}
	t.Run("nobody listening: sent again", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // refuses from now on
		var attempts int
		api := cloudwatch.New(cloudwatch.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://" + addr),
			Credentials: aws.AnonymousCredentials{}}, RetryUnapplied, func(o *cloudwatch.Options) {
			o.Retryer = countingRetryer{o.Retryer, &attempts}
		})
		if _, err := api.PutMetricData(t.Context(), &cloudwatch.PutMetricDataInput{Namespace: aws.String(Namespace),
			MetricData: []types.MetricDatum{{MetricName: aws.String("Invocations"), Value: aws.Float64(1)}}}); err == nil {
			t.Fatal("a call to a closed port succeeded")
		}
		if attempts < 2 {
			t.Errorf("a refused connection was tried %d times; want it tried again", attempts)
		}
	})
}

// countingRetryer counts the attempts the client asks about.
type countingRetryer struct {
	aws.Retryer
	n *int
}

func (c countingRetryer) IsErrorRetryable(err error) bool {
	*c.n++
	return c.Retryer.IsErrorRetryable(err)
}

func fakeCloudWatch(url string) *cloudwatch.Client {
	return cloudwatch.New(cloudwatch.Options{Region: "us-east-1", BaseEndpoint: aws.String(url),
		Credentials: aws.AnonymousCredentials{}, DisableRequestCompression: true}, RetryUnapplied)
}

// motoCloudWatch is a CloudWatch client for the local AWS (moto).
func motoCloudWatch(t *testing.T) *cloudwatch.Client {
	return cloudwatch.New(cloudwatch.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(testbin.Moto(t)),
		// moto tells services apart by the signature's scope, and reads no
		// gzip bodies.
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		}),
		DisableRequestCompression: true,
	})
}

// readBack sums what each query reads over the last five minutes.
func readBack(t *testing.T, api *cloudwatch.Client, queries ...types.MetricDataQuery) map[string]float64 {
	t.Helper()
	now := time.Now()
	out, err := api.GetMetricData(t.Context(), &cloudwatch.GetMetricDataInput{
		StartTime: aws.Time(now.Add(-5 * time.Minute)), EndTime: aws.Time(now.Add(time.Minute)), MetricDataQueries: queries,
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, res := range out.MetricDataResults {
		for _, v := range res.Values {
			got[*res.Id] += v
		}
	}
	return got
}

func query(id, fn, name string) types.MetricDataQuery { return queryStat(id, fn, name, "Sum") }

func queryStat(id, fn, name, stat string) types.MetricDataQuery {
	return types.MetricDataQuery{Id: aws.String(id), MetricStat: &types.MetricStat{
		Metric: &types.Metric{Namespace: aws.String(Namespace), MetricName: aws.String(name),
			Dimensions: []types.Dimension{{Name: aws.String("Function"), Value: aws.String(fn)}}},
		Period: aws.Int32(60), Stat: aws.String(stat),
	}}
}

// hangingSink stands in for a CloudWatch call that never answers, a fault
// moto cannot be made to produce on demand: it blocks until ctx ends.
type hangingSink struct{ calls chan int }

func (h hangingSink) Publish(ctx context.Context, snaps []Snapshot) error {
	select {
	case h.calls <- len(snaps):
	default: // quiet flushes call too; the test reads what it needs
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestRunOutlastsAHangingSink(t *testing.T) {
	sink := hangingSink{calls: make(chan int, 10)}
	r := New(50*time.Millisecond, nil, sink)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go r.Run(ctx)
	for i := range 3 {
		r.Request("app", 200, time.Millisecond, time.Millisecond, 0)
		select {
		case <-sink.calls:
		case <-time.After(2 * time.Second):
			t.Fatalf("flush %d never reached the sink: a hung call stopped the flushes", i+1)
		}
	}
}

// TestCloudWatchSinkCatchesUp: while nothing answers at CloudWatch's
// address, the sink keeps what it could not deliver; once something does,
// the kept intervals go with the next, each with its own timestamp, once.
func TestCloudWatchSinkCatchesUp(t *testing.T) {
	addr := refusingAddr(t)
	sink := CloudWatch(fakeCloudWatch("http://" + addr))
	down := time.Now().Add(-2 * time.Minute)
	snap := func(at time.Time, n float64) []Snapshot {
		return []Snapshot{{Function: "app", Time: at, Values: []Value{{Name: "Requests", Unit: "Count", V: n}}}}
	}
	for i := range 2 {
		err := sink.Publish(t.Context(), snap(down.Add(time.Duration(i)*time.Minute), 1))
		if err == nil || !strings.Contains(err.Error(), "kept to send with the next interval") {
			t.Fatalf("publishing with nothing listening: %v; want the datums kept", err)
		}
	}
	// A flush out of time sends nothing and loses nothing.
	late, cancel := context.WithCancel(t.Context())
	cancel()
	if err := sink.Publish(late, nil); err == nil || !strings.Contains(err.Error(), "2 datums not delivered, kept") {
		t.Fatalf("publishing out of time: %v; want the two kept datums kept", err)
	}
	// CloudWatch is back, on the same address.
	received := putMetricDataAt(t, addr)
	if err := sink.Publish(t.Context(), snap(time.Now(), 5)); err != nil {
		t.Fatalf("publishing once CloudWatch answers: %v", err)
	}
	if err := sink.Publish(t.Context(), snap(time.Now(), 7)); err != nil {
		t.Fatal(err)
	}
	bodies := received()
	all := strings.Join(bodies, "\n")
	// Three intervals in the first call (two kept, one new), one in the next.
	if len(bodies) != 2 || strings.Count(bodies[0], "MetricName=Requests") != 3 || strings.Count(bodies[1], "MetricName=Requests") != 1 {
		t.Errorf("calls after the outage:\n%s\nwant the two kept intervals sent with the first, and not again", all)
	}
	for _, at := range []time.Time{down, down.Add(time.Minute)} {
		if !strings.Contains(bodies[0], url.QueryEscape(at.UTC().Format("2006-01-02T15:04:05"))) {
			t.Errorf("the kept interval of %v went without its own timestamp:\n%s", at, bodies[0])
		}
	}
}

// TestKeptMetricsLeaveWithoutNewTraffic: what an outage kept is sent at the
// next flush once CloudWatch answers, even when nothing has happened since;
// it once waited for the next request, and a quiet function's last
// intervals never arrived.
func TestKeptMetricsLeaveWithoutNewTraffic(t *testing.T) {
	addr := refusingAddr(t)
	var logs bytes.Buffer
	r := New(time.Hour, slog.New(slog.NewTextHandler(&logs, nil)), CloudWatch(fakeCloudWatch("http://"+addr)))
	r.Request("app", 200, time.Millisecond, time.Millisecond, 0)
	r.Flush(t.Context())
	if !strings.Contains(logs.String(), "kept to send with the next interval") {
		t.Fatalf("flushing with nothing listening logged %q; want the datums kept", logs.String())
	}
	received := putMetricDataAt(t, addr)
	r.Flush(t.Context())
	if bodies := received(); len(bodies) != 1 || !strings.Contains(bodies[0], "MetricName=Requests") {
		t.Errorf("a quiet flush after the outage sent %q; want the kept interval", bodies)
	}
	r.Flush(t.Context())
	if bodies := received(); len(bodies) != 1 {
		t.Errorf("%d calls in all after a second quiet flush; want it to make none, with nothing to send", len(bodies))
	}
}

// refusingAddr is a loopback address nothing listens on, as CloudWatch's
// is during an outage.
func refusingAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refuses from now on
	return addr
}

// putMetricDataAt answers PutMetricData on addr, standing in for
// CloudWatch coming back on the address it left (moto takes seconds to
// start), and returns the bodies it has received.
func putMetricDataAt(t *testing.T, addr string) func() []string {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<PutMetricDataResponse><ResponseMetadata><RequestId>2</RequestId></ResponseMetadata></PutMetricDataResponse>`)
	}))
	var err error
	if srv.Listener, err = net.Listen("tcp", addr); err != nil {
		t.Skipf("the address was taken meanwhile: %v", err)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(bodies)
	}
}
