package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
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
			retry.RetryableErrorCode{Codes: retry.DefaultThrottleErrorCodes},
			retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
				if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
					return aws.TrueTernary
				}
				return aws.FalseTernary
			}),
		}
	})
}

// CloudWatch is a Sink calling PutMetricData, in as few calls as
// CloudWatch's limits allow. Use it where nothing extracts EMF from logs.
func CloudWatch(api PutMetricDataAPI) Sink { return cwSink{api} }

type cwSink struct{ api PutMetricDataAPI }

func (c cwSink) Publish(ctx context.Context, snaps []Snapshot) error {
	var datums []types.MetricDatum
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
		if err != nil {
			errs = append(errs, fmt.Errorf("PutMetricData (%d datums): %w", n, err))
		}
		datums = datums[n:]
	}
	return errors.Join(errs...)
}
