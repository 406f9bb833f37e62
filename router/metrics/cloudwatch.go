package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptrace"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/smithy-go"
)

// PutMetricDataAPI is the part of the CloudWatch client the sink uses.
type PutMetricDataAPI interface {
	PutMetricData(ctx context.Context, in *cloudwatch.PutMetricDataInput, opts ...func(*cloudwatch.Options)) (*cloudwatch.PutMetricDataOutput, error)
}

// CloudWatch's limits on one PutMetricData call and one datum.
const (
	maxDatumsPerCall  = 1000
	maxValuesPerDatum = 150
)

// RetryUnapplied is an option for the CloudWatch client the sink uses: it
// retries only calls CloudWatch cannot have applied, those throttled and
// those whose connection never opened. PutMetricData is not idempotent: a
// call that failed after it was sent (a reset, a 500) may have been
// stored, and sent again it counts an interval twice (an invocation's
// billed ms, so ferry would seem to cost double), which misleads more than
// an interval missing, which the recorder's warning names.
func RetryUnapplied(o *cloudwatch.Options) {
	o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
		so.Retryables = []retry.IsErrorRetryable{
			retry.NoRetryCanceledError{},
			retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
				if notApplied(err) {
					return aws.TrueTernary
				}
				return aws.FalseTernary
			}),
		}
	})
}

// notApplied reports whether a failed call cannot have been applied: it
// was throttled, or its connection never opened.
func notApplied(err error) bool {
	if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	_, throttled := retry.DefaultThrottleErrorCodes[ae.ErrorCode()]
	return throttled
}

// CloudWatch is a Sink calling PutMetricData, in as few calls as
// CloudWatch's limits allow. Use it where nothing extracts EMF from logs.
//
// What a call could not deliver and CloudWatch cannot have applied (a call
// never written: the endpoint down, unreachable until the flush's deadline,
// or the flush out of time; or throttled past the client's retries) is
// kept, each datum with its own interval's timestamp, and sent before the
// next interval's: metrics wait out an outage and then catch up. At most
// maxKept datums are kept, none older than maxAge (those dropped are
// reported).
// What may have been applied is never sent again (see RetryUnapplied).
func CloudWatch(api PutMetricDataAPI) Sink { return &cwSink{api: api} }

// maxKept bounds the datums kept for resending: with a few functions at
// 1-minute intervals, hours of an outage. maxAge is the oldest a datum may
// be (CloudWatch takes two weeks), with a day's margin.
const (
	maxKept = 20 * maxDatumsPerCall
	maxAge  = 13 * 24 * time.Hour
)

type cwSink struct {
	api  PutMetricDataAPI
	mu   sync.Mutex
	kept []types.MetricDatum
}

func (c *cwSink) Publish(ctx context.Context, snaps []Snapshot) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// CloudWatch takes no datum over two weeks old: a call holding one
	// fails whole.
	stale := time.Now().Add(-maxAge)
	datums := slices.DeleteFunc(c.kept, func(d types.MetricDatum) bool { return d.Timestamp.Before(stale) })
	old := len(c.kept) - len(datums)
	kept := 0
	c.kept = nil
	for _, s := range snaps {
		dims := []types.Dimension{{Name: aws.String("Function"), Value: aws.String(s.Function)}}
		for _, v := range s.Values {
			d := types.MetricDatum{
				MetricName: aws.String(v.Name), Unit: types.StandardUnit(v.Unit),
				Dimensions: dims, Timestamp: aws.Time(s.Time),
			}
			if v.Samples != nil {
				if len(v.Samples) == 0 {
					continue
				}
				d.Values = v.Samples[:min(len(v.Samples), maxValuesPerDatum)]
				if v.Weight > 1 {
					d.Counts = make([]float64, len(d.Values))
					for i := range d.Counts {
						d.Counts[i] = v.Weight
					}
				}
			} else {
				d.Value = aws.Float64(v.V)
			}
			datums = append(datums, d)
		}
	}
	var errs []error
	if old > 0 {
		errs = append(errs, fmt.Errorf("PutMetricData: %d datums kept past CloudWatch's two weeks dropped", old))
	}
	for len(datums) > 0 {
		if ctx.Err() != nil {
			// Out of time: what is left was never sent.
			c.kept = append(c.kept, datums...)
			kept += len(datums)
			break
		}
		n := min(len(datums), maxDatumsPerCall)
		// Applied or not is told by whether the call was written: one that
		// never was (a connection refused, or one that hung until the
		// flush's deadline) cannot have been.
		var wrote atomic.Bool
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Store(true) }}
		_, err := c.api.PutMetricData(httptrace.WithClientTrace(ctx, trace), &cloudwatch.PutMetricDataInput{Namespace: aws.String(Namespace), MetricData: datums[:n]})
		switch {
		case err != nil && (notApplied(err) || !wrote.Load()):
			c.kept = append(c.kept, datums[:n]...)
			kept += n
		case err != nil:
			errs = append(errs, fmt.Errorf("PutMetricData (%d datums, lost: it may have been applied): %w", n, err))
		}
		datums = datums[n:]
	}
	if kept > 0 {
		errs = append(errs, fmt.Errorf("PutMetricData: %d datums not delivered, kept to send with the next interval", kept))
	}
	if over := len(c.kept) - maxKept; over > 0 {
		c.kept = slices.Delete(c.kept, 0, over)
		errs = append(errs, fmt.Errorf("PutMetricData: %d datums kept longest dropped (at most %d are kept)", over, maxKept))
	}
	return errors.Join(errs...)
}
