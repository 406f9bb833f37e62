package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"

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
// What a call could not deliver and CloudWatch cannot have applied (the
// endpoint down or unreachable, or throttled past the client's retries)
// is kept, each datum with its own interval's timestamp, and sent before
// the next interval's: metrics wait out an outage and then catch up. At
// most maxKept datums are kept (the oldest go first, and are reported).
// What may have been applied is never sent again (see RetryUnapplied).
func CloudWatch(api PutMetricDataAPI) Sink { return &cwSink{api: api} }

// maxKept bounds the datums kept for resending: with a few functions at
// 1-minute intervals, hours of an outage.
const maxKept = 20 * maxDatumsPerCall

type cwSink struct {
	api  PutMetricDataAPI
	mu   sync.Mutex
	kept []types.MetricDatum
}

func (c *cwSink) Publish(ctx context.Context, snaps []Snapshot) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	datums, kept := c.kept, 0
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
	for len(datums) > 0 {
		n := min(len(datums), maxDatumsPerCall)
		_, err := c.api.PutMetricData(ctx, &cloudwatch.PutMetricDataInput{Namespace: aws.String(Namespace), MetricData: datums[:n]})
		switch {
		case err != nil && notApplied(err):
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
