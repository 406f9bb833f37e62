// Package permissions lists the AWS actions ferry's programs call, one
// list per program, so that the roles running them grant exactly those.
// Tests hold the lists to the code (every SDK operation the program's
// packages call) and the CDK stack's roles to the lists.
package permissions

// Router returns the actions ferry-router calls: Invoke for dial-back
// invocations (router/invoke), PutMetricData for the cloudwatch metrics
// sink (router/metrics) and GetParameter for the routes parameter
// (router/server), and DiscoverInstances to find the other router tasks
// in Cloud Map (router/ring). The tunnel secret reaches it through the ECS
// task definition, by the execution role, not by a call.
func Router() []string {
	return []string{"lambda:InvokeFunction", "cloudwatch:PutMetricData", "ssm:GetParameter", "servicediscovery:DiscoverInstances"}
}

// RouterPublicTunnel returns what ferry-router also calls with a public
// tunnel endpoint (FERRY_ROUTER_ADVERTISE=ecs-public): its task's network
// interface, for the public IP it advertises.
func RouterPublicTunnel() []string {
	return []string{"ec2:DescribeNetworkInterfaces"}
}

// CLI returns the actions the ferry CLI calls: `ferry metrics`
// (internal/review) and `ferry routes` (the routes parameter, and its
// lock, a parameter beside it). `ferry
// local` runs against a local AWS only and is not counted.
func CLI() []string {
	return []string{"cloudwatch:GetMetricData", "cloudwatch:ListMetrics", "ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"}
}

// Attach returns the further actions `ferry attach` and `ferry detach`
// call: the stack's exports, the function's configuration and policy, its
// security group and the tunnel group's rule, the inline policy that lets
// Lambda place it in the VPC, and the record of what attach changed.
func Attach() []string {
	return []string{"cloudformation:DescribeStacks",
		"lambda:GetFunctionConfiguration", "lambda:UpdateFunctionConfiguration", "lambda:GetPolicy", "lambda:AddPermission", "lambda:RemovePermission",
		"ec2:CreateSecurityGroup", "ec2:CreateTags", "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup",
		"iam:PutRolePolicy", "iam:DeleteRolePolicy"}
}

// AttachImplied returns the actions Lambda requires of whoever runs
// `ferry attach` beyond the calls it makes: to add a layer to a function,
// read the layer version; to place a function in a VPC, describe its
// security groups, subnets and VPC. No SDK call names them, so the test
// that holds the lists to the code cannot see them.
func AttachImplied() []string {
	return []string{"lambda:GetLayerVersion", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs"}
}

// Actions returns the IAM actions that allow an SDK operation of a
// service (package name, as in aws-sdk-go-v2/service/<service>) as ferry
// calls it, and false for a service this package does not know.
func Actions(service, operation string) ([]string, bool) {
	switch {
	case service == "lambda" && operation == "Invoke":
		return []string{"lambda:InvokeFunction"}, true // the one operation named unlike its action
	case service == "ec2" && operation == "CreateSecurityGroup":
		// ferry attach tags the group as it creates it.
		return []string{"ec2:CreateSecurityGroup", "ec2:CreateTags"}, true
	case service == "lambda" || service == "cloudwatch" || service == "secretsmanager" || service == "ssm" ||
		service == "cloudformation" || service == "ec2" || service == "iam" || service == "servicediscovery":
		return []string{service + ":" + operation}, true
	}
	return nil, false
}
