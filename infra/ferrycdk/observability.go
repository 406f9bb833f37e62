package ferrycdk

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	cw "github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	elb "github.com/aws/aws-cdk-go/awscdk/v2/awselasticloadbalancingv2"
	"github.com/aws/constructs-go/constructs/v10"

	"github.com/ferryrun/ferry/router/pool"
)

// ObservabilityProps configure NewObservability.
type ObservabilityProps struct {
	Router    *RouterService // required
	Functions []*FerryFunction
	// Name of the dashboard. If empty, CloudFormation picks one.
	Name string
}

// Observability is the dashboard and alarms.
type Observability struct {
	Dashboard cw.Dashboard
	Alarms    []cw.Alarm
}

func ferryMetric(fn *FerryFunction, name, stat string) cw.Metric {
	return cw.NewMetric(&cw.MetricProps{
		Namespace: str("Ferry"), MetricName: str(name), Statistic: str(stat),
		DimensionsMap: &map[string]*string{"Function": fn.Function.FunctionName()},
		Period:        awscdk.Duration_Minutes(num(1)),
	})
}

// NewObservability makes the dashboard (per function: requests,
// invocations, compute saved %, p99 latency, nacks, cold starts, throttles,
// billed and CPU ms)
// and the alarms (router 5xx, invoke throttles, unhealthy router targets),
// using the metric names in DESIGN.md.
func NewObservability(scope constructs.Construct, id string, p *ObservabilityProps) *Observability {
	o := &Observability{}
	props := &cw.DashboardProps{DefaultInterval: awscdk.Duration_Hours(num(3))}
	if p.Name != "" {
		props.DashboardName = str(p.Name)
	}
	o.Dashboard = cw.NewDashboard(scope, str(id), props)
	for _, fn := range p.Functions {
		name := fn.Function.FunctionName()
		saved := cw.NewMathExpression(&cw.MathExpressionProps{
			Expression: str("IF(req > 0, 100 * (1 - inv / req), 0)"),
			UsingMetrics: &map[string]cw.IMetric{
				"inv": ferryMetric(fn, "InvocationMs", "Sum").With(&cw.MetricOptions{Period: awscdk.Duration_Minutes(num(5))}),
				"req": ferryMetric(fn, "RequestMs", "Sum").With(&cw.MetricOptions{Period: awscdk.Duration_Minutes(num(5))}),
			},
			Label: str("compute saved %"), Period: awscdk.Duration_Minutes(num(5)),
		})
		o.Dashboard.AddWidgets(
			cw.NewGraphWidget(&cw.GraphWidgetProps{Title: str("requests and invocations"), Width: num(8),
				Left: &[]cw.IMetric{ferryMetric(fn, "Requests", "Sum"), ferryMetric(fn, "Invocations", "Sum")}}),
			cw.NewGraphWidget(&cw.GraphWidgetProps{Title: str("compute saved %"), Width: num(8), Left: &[]cw.IMetric{saved},
				LeftYAxis: &cw.YAxisProps{Min: num(0), Max: num(100)}}),
			cw.NewGraphWidget(&cw.GraphWidgetProps{Title: str("latency p50 / p99 (ms)"), Width: num(8),
				Left: &[]cw.IMetric{ferryMetric(fn, "Latency", "p50"), ferryMetric(fn, "Latency", "p99")}}),
		)
		o.Dashboard.AddWidgets(
			cw.NewGraphWidget(&cw.GraphWidgetProps{Title: str("nacks, cold starts, throttles, launch failures"), Width: num(8),
				Left: &[]cw.IMetric{ferryMetric(fn, "Nacks", "Sum"), ferryMetric(fn, "ColdStarts", "Sum"), ferryMetric(fn, "Throttles", "Sum"),
					ferryMetric(fn, "LaunchFailures", "Sum")}}),
			// What was billed, what one request per invocation would have
			// billed, and how much of it was CPU.
			cw.NewGraphWidget(&cw.GraphWidgetProps{Title: str("billed ms: ferry, one request per invocation, CPU, idle"), Width: num(8),
				Left: &[]cw.IMetric{
					ferryMetric(fn, "InvocationMs", "Sum").With(&cw.MetricOptions{Label: str("billed ms")}),
					ferryMetric(fn, "RequestMs", "Sum").With(&cw.MetricOptions{Label: str("one request per invocation")}),
					ferryMetric(fn, "ActiveCpuMs", "Sum").With(&cw.MetricOptions{Label: str("CPU ms")}),
					ferryMetric(fn, "IdleMs", "Sum").With(&cw.MetricOptions{Label: str("idle ms (lingers, warm instances)")}),
				}}),
			cw.NewSingleValueWidget(&cw.SingleValueWidgetProps{Title: str("in flight per instance"), Width: num(8),
				Metrics: &[]cw.IMetric{ferryMetric(fn, "InFlightPerInstance", "Average")}}),
		)
		// The router tasks share the function: the requests a task passed
		// to the function's owner, and how many tasks are in the ring.
		o.Dashboard.AddWidgets(
			cw.NewGraphWidget(&cw.GraphWidgetProps{Title: str("router replicas: forwarded requests, ring size"), Width: num(8),
				Left:  &[]cw.IMetric{ferryMetric(fn, "ForwardedRequests", "Sum")},
				Right: &[]cw.IMetric{ferryMetric(fn, "RingSize", "Maximum")}}),
		)
		o.Alarms = append(o.Alarms, ferryMetric(fn, "LaunchFailures", "Sum").CreateAlarm(scope, str(id+"LaunchFailures"+*fn.Function.Node().Id()), &cw.CreateAlarmOptions{
			AlarmDescription: str("invocations of " + *name + " by ferry bring no instance (its init fails, say): requests fail at once " +
				"with the failure's class until one succeeds; the router log has the error"),
			Threshold: num(float64(pool.FailingThreshold)), EvaluationPeriods: num(1), TreatMissingData: cw.TreatMissingData_NOT_BREACHING,
			ComparisonOperator: cw.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
		}))
		o.Alarms = append(o.Alarms, ferryMetric(fn, "Throttles", "Sum").CreateAlarm(scope, str(id+"Throttles"+*fn.Function.Node().Id()), &cw.CreateAlarmOptions{
			AlarmDescription: str("Lambda throttled the invokes of " + *name + " by ferry: raise its concurrency or lower the router demand"),
			Threshold:        num(5), EvaluationPeriods: num(3), TreatMissingData: cw.TreatMissingData_NOT_BREACHING,
			ComparisonOperator: cw.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
		}))
	}
	alb := p.Router.LoadBalancer.Metrics()
	o.Alarms = append(o.Alarms,
		alb.HttpCodeTarget(elb.HttpCodeTarget_TARGET_5XX_COUNT, &cw.MetricOptions{Period: awscdk.Duration_Minutes(num(1)), Statistic: str("Sum")}).CreateAlarm(scope, str(id+"Router5xx"), &cw.CreateAlarmOptions{
			AlarmDescription: str("ferry-router answered 5xx: no capacity (503) or failed instances (502)"),
			Threshold:        num(10), EvaluationPeriods: num(3), TreatMissingData: cw.TreatMissingData_NOT_BREACHING,
		}),
		p.Router.TargetGroup.Metrics().UnhealthyHostCount(&cw.MetricOptions{Period: awscdk.Duration_Minutes(num(1)), Statistic: str("Maximum")}).CreateAlarm(scope, str(id+"UnhealthyRouters"), &cw.CreateAlarmOptions{
			AlarmDescription: str("a ferry-router task fails its /readyz health check"),
			Threshold:        num(1), EvaluationPeriods: num(2), TreatMissingData: cw.TreatMissingData_NOT_BREACHING,
			ComparisonOperator: cw.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
		}),
	)
	return o
}
