// Package permissions lists the AWS actions ferry's programs call, one
// list per program, so that the roles running them grant exactly those.
// Tests hold the lists to the code (every SDK operation the program's
// packages call) and the CDK stack's roles to the lists.
package permissions

// Router returns the actions ferry-router calls: Invoke for dial-back
// invocations (router/invoke), PutMetricData for the cloudwatch metrics
// sink (router/metrics) and GetParameter for the routes parameter
// (router/server). The tunnel secret reaches it through the ECS task
// definition, by the execution role, not by a call.
func Router() []string {
	return []string{"lambda:InvokeFunction", "cloudwatch:PutMetricData", "ssm:GetParameter"}
}

// CLI returns the actions the ferry CLI calls: `ferry metrics`
// (internal/review) and `ferry routes` (the routes parameter). `ferry
// local` runs against a local AWS only and is not counted.
func CLI() []string {
	return []string{"cloudwatch:GetMetricData", "cloudwatch:ListMetrics", "ssm:GetParameter", "ssm:PutParameter"}
}

// Action returns the IAM action that allows an SDK operation of a service
// (package name, as in aws-sdk-go-v2/service/<service>), and false for a
// service this package does not know.
func Action(service, operation string) (string, bool) {
	switch {
	case service == "lambda" && operation == "Invoke":
		return "lambda:InvokeFunction", true // the one operation named unlike its action
	case service == "lambda" || service == "cloudwatch" || service == "secretsmanager" || service == "ssm":
		return service + ":" + operation, true
	}
	return "", false
}
