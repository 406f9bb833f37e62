package ferrycdk

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapplicationautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscertificatemanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecrassets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	elb "github.com/aws/aws-cdk-go/awscdk/v2/awselasticloadbalancingv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsservicediscovery"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsssm"
	"github.com/aws/constructs-go/constructs/v10"

	"github.com/ferryrun/ferry/layers/layerzip"
	"github.com/ferryrun/ferry/router/config"
)

// TunnelEndpointProps configure NewTunnelEndpoint.
type TunnelEndpointProps struct {
	Vpc awsec2.IVpc // required
	// Public opens the tunnel port of the router tasks to the internet, on
	// each task's own public IP, so that functions outside the VPC can
	// dial back: no VPC, subnets or NAT on the function side. What guards
	// the private endpoint guards this one: pinned TLS 1.3, single-use
	// tokens bound to the function, bounded handshakes and rate-limited
	// rejection logs; what it gives up is that nobody outside the VPC can
	// even open a connection. The router tasks then run in the public
	// subnets with public IPs (their other ports stay closed to the
	// internet).
	Public bool
}

// TunnelEndpoint is where functions dial back: each router task's own
// private address on the tunnel port (the router advertises it from the
// ECS task metadata). A tunnel must return to the task that invoked it,
// whose pool holds the waiting requests, so no load balancer sits in
// between. The security group, attached to the router tasks, admits the
// tunnel port from ferry functions' security groups only (FerryFunction
// adds each) and nothing else.
type TunnelEndpoint struct {
	SecurityGroup awsec2.SecurityGroup
	Public        bool // see TunnelEndpointProps.Public
}

// NewTunnelEndpoint makes the tunnel security group.
func NewTunnelEndpoint(scope constructs.Construct, id string, p *TunnelEndpointProps) *TunnelEndpoint {
	// One description in both modes: a changed one would replace the group,
	// and with it the rules ferry attach added to it.
	sg := awsec2.NewSecurityGroup(scope, str(id+"Sg"), &awsec2.SecurityGroupProps{
		Vpc: p.Vpc, AllowAllOutbound: no(), Description: str("ferry tunnel endpoint on the router tasks: the tunnel port from ferry functions"),
	})
	if p.Public {
		sg.AddIngressRule(awsec2.Peer_AnyIpv4(), awsec2.Port_Tcp(num(TunnelPort)), str("tunnels from functions anywhere"), nil)
		suppress(sg, "AwsSolutions-EC23", "the public tunnel endpoint takes dial-backs from functions outside the VPC by design; "+
			"each connection must complete pinned TLS 1.3 and present a single-use token bound to its function within a bounded handshake")
	}
	return &TunnelEndpoint{SecurityGroup: sg, Public: p.Public}
}

// RouterServiceProps configure NewRouterService.
type RouterServiceProps struct {
	Vpc       awsec2.IVpc     // required
	Tunnel    *TunnelEndpoint // required
	Functions []*FerryFunction
	// RepoRoot is the build context for router/Dockerfile. If empty,
	// ferry's module source (SourceDir): no ferry checkout needed.
	RepoRoot string
	// Image is a built router image (a registry URI); if set, RepoRoot is
	// not used and cdk deploy builds no image.
	Image string
	// DesiredCount of router tasks; autoscaling keeps between it and 4x it.
	// If zero, 2.
	DesiredCount int
	// CertificateArn, if set, serves HTTPS on 443 and redirects 80 to it.
	CertificateArn string
	// MaxConcurrency per instance the router asks for. If zero, 64 (a ceiling: CPU admission decides).
	MaxConcurrency int
	// FailOver: another region can take this one's traffic (a global
	// entry point is in front): the tasks say they are unhealthy while
	// the region's Lambda refuses their invocations
	// (FERRY_ROUTER_UNREADY_AFTER, 30 s), so that traffic moves. ECS then
	// replaces them, which is why it is off for a lone region.
	FailOver bool
}

// RouterService is ferry-router on Fargate (ARM64) with its client ALB.
type RouterService struct {
	Cluster      awsecs.Cluster
	Service      awsecs.FargateService
	TaskRole     awsiam.Role
	LogGroup     awslogs.LogGroup
	Secret       awssecretsmanager.Secret
	LoadBalancer elb.ApplicationLoadBalancer
	TargetGroup  elb.ApplicationTargetGroup
	URL          string
	// RoutesParameter holds routes beyond the stack's own, as a routes
	// document, which the router reads every 2 s (ferry routes edits it).
	// CloudFormation writes its value when it creates it, and again only
	// if the resource's own properties change (they are constant here):
	// routes added there outlive deploys.
	RoutesParameter awsssm.StringParameter
	// Peers is the Cloud Map namespace where ECS registers each router
	// task (service PeerService): the replicas find each other there and
	// share functions (router/ring), forwarding on PeerPort.
	Peers awsservicediscovery.PrivateDnsNamespace

	tunnel *TunnelEndpoint
	routes []string // FERRY_ROUTER_ROUTES's entries: Attach adds to them until synth
}

// grantInvoke lets the router's tasks invoke fn, and only fn.
func (r *RouterService) grantInvoke(fn awslambda.Function) {
	fn.GrantInvoke(r.TaskRole)
	suppress(r.TaskRole, "AwsSolutions-IAM5", "invoke exactly this ferry function, any of its versions or aliases "+
		"(the :* is the qualifier)", "Resource::<"+*awscdk.Stack_Of(fn).GetLogicalId(fn.Node().DefaultChild().(awscdk.CfnElement))+".Arn>:*")
}

// routesProducer gives FERRY_ROUTER_ROUTES its value at synth, once every
// function is attached.
type routesProducer struct{ r *RouterService }

func (p *routesProducer) Produce() *string {
	return str(strings.Join(p.r.routes, ","))
}

// NewRouterService makes the cluster, the tunnel secret, the task and
// service, the ALB and the tunnel listener.
func NewRouterService(scope constructs.Construct, id string, p *RouterServiceProps) *RouterService {
	if p.Vpc == nil || p.Tunnel == nil {
		panic(fmt.Sprintf("RouterService %s: Vpc and Tunnel are required", id))
	}
	root, desired, conc := p.RepoRoot, p.DesiredCount, p.MaxConcurrency
	if root == "" && p.Image == "" {
		var err error
		if root, err = SourceDir(); err != nil {
			panic(fmt.Sprintf("RouterService %s: %v (or set Image to a built router image)", id, err))
		}
	}
	if desired <= 0 {
		desired = 2
	}
	if conc <= 0 {
		conc = 64
	}
	r := &RouterService{}
	r.Cluster = awsecs.NewCluster(scope, str(id+"Cluster"), &awsecs.ClusterProps{
		Vpc: p.Vpc, ContainerInsightsV2: awsecs.ContainerInsights_ENABLED,
	})
	r.Secret = awssecretsmanager.NewSecret(scope, str(id+"TunnelSecret"), &awssecretsmanager.SecretProps{
		Description: str("ferry: signs single-use tunnel tokens; read by the router only"),
		GenerateSecretString: &awssecretsmanager.SecretStringGenerator{
			PasswordLength: num(64), ExcludePunctuation: yes,
		},
	})
	r.LogGroup = awslogs.NewLogGroup(scope, str(id+"Logs"), &awslogs.LogGroupProps{
		Retention: awslogs.RetentionDays_ONE_MONTH, RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	r.TaskRole = awsiam.NewRole(scope, str(id+"TaskRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(str("ecs-tasks.amazonaws.com"), nil),
		Description: str("ferry-router: invoke exactly the ferry functions, publish Ferry metrics"),
	})
	r.tunnel = p.Tunnel
	for _, f := range p.Functions {
		if !p.Tunnel.Public && !*f.Function.IsBoundToVpc() {
			panic(fmt.Sprintf("RouterService %s: function %s runs outside the VPC, so it cannot dial the router's private tunnel endpoint: "+
				"give it the VPC, or make the tunnel endpoint public", id, *f.Function.Node().Id()))
		}
		r.grantInvoke(f.Function)
		r.routes = append(r.routes, f.Route())
	}
	r.RoutesParameter = awsssm.NewStringParameter(scope, str(id+"Routes"), &awsssm.StringParameterProps{
		ParameterName: str(config.RoutesParameterName(*awscdk.Stack_Of(scope).StackName())),
		StringValue:   str(`{"routes": []}`),
		// As ferry routes writes it: a tier the template named otherwise
		// could not be changed back once the document outgrew 4 KB.
		Tier:        awsssm.ParameterTier_INTELLIGENT_TIERING,
		Description: str("ferry-router: routes beyond the stack's own (ferry routes add|remove); read every 2 s"),
	})
	// Exactly the call the router makes (GrantRead adds three more).
	r.TaskRole.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions: &[]*string{str("ssm:GetParameter")}, Resources: &[]*string{r.RoutesParameter.ParameterArn()},
	}))
	r.TaskRole.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions:    &[]*string{str("cloudwatch:PutMetricData")},
		Resources:  &[]*string{str("*")},
		Conditions: &map[string]any{"StringEquals": map[string]any{"cloudwatch:namespace": "Ferry"}},
	}))
	suppress(r.TaskRole, "AwsSolutions-IAM5", "cloudwatch:PutMetricData has no resource-level permissions; "+
		"the statement is limited to the Ferry namespace by condition", "Resource::*")
	suppress(r.Secret, "AwsSolutions-SMG4", "the token-signing key is read at task start; rotate it by updating the secret "+
		"and redeploying the service: tokens live 30 s, so no coordination is needed")

	// The replicas find each other in Cloud Map: ECS registers each task
	// there, and deregisters it when it stops.
	r.Peers = awsservicediscovery.NewPrivateDnsNamespace(scope, str(id+"Peers"), &awsservicediscovery.PrivateDnsNamespaceProps{
		Name: str(peerNamespace(*awscdk.Stack_Of(scope).StackName())), Vpc: p.Vpc,
		Description: str("ferry-router tasks, which share functions among themselves"),
	})
	// DiscoverInstances takes no resource; the condition keeps it to this
	// stack's service.
	r.TaskRole.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions: &[]*string{str("servicediscovery:DiscoverInstances")}, Resources: &[]*string{str("*")},
		Conditions: &map[string]any{"StringEquals": map[string]any{
			"servicediscovery:NamespaceName": r.Peers.NamespaceName(), "servicediscovery:ServiceName": PeerService,
		}},
	}))
	suppress(r.TaskRole, "AwsSolutions-IAM5", "servicediscovery:DiscoverInstances has no resource-level permissions; "+
		"the statement is limited to the router tasks' own Cloud Map service by condition", "Resource::*")

	task := awsecs.NewFargateTaskDefinition(scope, str(id+"Task"), &awsecs.FargateTaskDefinitionProps{
		Cpu: num(1024), MemoryLimitMiB: num(2048), TaskRole: r.TaskRole,
		RuntimePlatform: &awsecs.RuntimePlatform{
			CpuArchitecture: awsecs.CpuArchitecture_ARM64(), OperatingSystemFamily: awsecs.OperatingSystemFamily_LINUX(),
		},
	})
	var image awsecs.ContainerImage
	if p.Image != "" {
		image = awsecs.ContainerImage_FromRegistry(str(p.Image), nil)
	} else {
		image = awsecs.ContainerImage_FromAsset(str(root), &awsecs.AssetImageProps{
			File: str("router/Dockerfile"), Platform: awsecrassets.Platform_LINUX_ARM64(),
			// .git stays out of the context: the version comes from here.
			BuildArgs: &map[string]*string{"VERSION": str(layerzip.Version(context.Background(), root))},
			Exclude:   &[]*string{str(".git"), str("dist"), str("cdk.out"), str(".cdk"), str("node_modules"), str("**/*.test")},
		})
	}
	advertise := config.AdvertiseECS
	if p.Tunnel.Public {
		advertise = config.AdvertiseECSPublic
		// The task finds its public IP on its network interface; EC2's
		// Describe calls take no resource-level permissions.
		r.TaskRole.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
			Actions: &[]*string{str("ec2:DescribeNetworkInterfaces")}, Resources: &[]*string{str("*")},
		}))
		suppress(r.TaskRole, "AwsSolutions-IAM5", "ec2:DescribeNetworkInterfaces, read-only, has no resource-level "+
			"permissions: the task reads its own interface's public IP (public tunnel)", "Resource::*")
	}
	container := task.AddContainer(str("router"), &awsecs.ContainerDefinitionOptions{
		Image:   image,
		Logging: awsecs.LogDrivers_AwsLogs(&awsecs.AwsLogDriverProps{StreamPrefix: str("router"), LogGroup: r.LogGroup}),
		Environment: &map[string]*string{
			"FERRY_ROUTER_LISTEN":        str(":" + strconv.Itoa(IngressPort)),
			"FERRY_ROUTER_TUNNEL_LISTEN": str(":" + strconv.Itoa(TunnelPort)),
			"FERRY_ROUTER_ADMIN_LISTEN":  str(":" + strconv.Itoa(AdminPort)),
			"FERRY_ROUTER_ADVERTISE":     str(advertise), // this task's own address: tunnels return to their launcher
			// The ALB sits in the VPC: its X-Forwarded-For and -Proto (https
			// behind the HTTPS listener) reach the app; no one else's do.
			"FERRY_ROUTER_TRUSTED_PROXIES":  p.Vpc.VpcCidrBlock(),
			"FERRY_ROUTER_ROUTES":           awscdk.Lazy_String(&routesProducer{r}, nil),
			"FERRY_ROUTER_ROUTES_PARAMETER": r.RoutesParameter.ParameterName(),
			"FERRY_ROUTER_MAX_CONCURRENCY":  str(strconv.Itoa(conc)),
			// Replicas share functions: each owns some, and forwards the
			// requests of the others' to them.
			"FERRY_ROUTER_PEERS":       str("cloudmap:" + *r.Peers.NamespaceName() + "/" + PeerService),
			"FERRY_ROUTER_PEER_LISTEN": str(":" + strconv.Itoa(PeerPort)),
			// WebSockets over HTTP/2 (RFC 8441), off in Go's server unless
			// set at start (also in the image, for an Image of one's own).
			"GODEBUG": str("http2xconnect=1"),
		},
		Secrets: &map[string]awsecs.Secret{
			"FERRY_ROUTER_TOKEN_SECRET": awsecs.Secret_FromSecretsManager(r.Secret, nil),
		},
		PortMappings: &[]*awsecs.PortMapping{
			{ContainerPort: num(IngressPort)}, {ContainerPort: num(TunnelPort)}, {ContainerPort: num(AdminPort)}, {ContainerPort: num(PeerPort)},
		},
		StopTimeout: awscdk.Duration_Seconds(num(30)),
	})
	if p.FailOver {
		container.AddEnvironment(str("FERRY_ROUTER_UNREADY_AFTER"), str("30s"))
	}

	suppress(task, "AwsSolutions-ECS2", "the environment holds only non-secret configuration (ports, routes, the tunnel "+
		"address); the token secret comes from Secrets Manager through the container's secrets")
	suppress(task, "AwsSolutions-IAM5", "the execution role's ecr:GetAuthorizationToken, added by CDK for the image "+
		"asset, has no resource-level permissions", "Resource::*")

	subnets, publicIP := awsec2.SubnetType_PRIVATE_WITH_EGRESS, no()
	if p.Tunnel.Public {
		// Each task is reached on its own public IP; its way out to the AWS
		// APIs is then the internet gateway, not the NAT.
		subnets, publicIP = awsec2.SubnetType_PUBLIC, yes
	}
	routerSg := awsec2.NewSecurityGroup(scope, str(id+"Sg"), &awsec2.SecurityGroupProps{
		Vpc: p.Vpc, AllowAllOutbound: yes,
		Description: str("ferry-router tasks: clients and health checks from the ALB; egress to the Lambda API"),
	})
	// Forwarded requests and probes between router tasks, and from no one
	// else.
	routerSg.AddIngressRule(routerSg, awsec2.Port_Tcp(num(PeerPort)), str("forwarded requests between router tasks"), nil)
	r.Service = awsecs.NewFargateService(scope, str(id+"Service"), &awsecs.FargateServiceProps{
		Cluster: r.Cluster, TaskDefinition: task, DesiredCount: num(float64(desired)),
		// The tunnel group admits functions' dial-backs; without it on the
		// tasks no function could reach its router.
		SecurityGroups:    &[]awsec2.ISecurityGroup{routerSg, p.Tunnel.SecurityGroup},
		VpcSubnets:        &awsec2.SubnetSelection{SubnetType: subnets},
		AssignPublicIp:    publicIP,
		CircuitBreaker:    &awsecs.DeploymentCircuitBreaker{Rollback: yes},
		MinHealthyPercent: num(100),
		CloudMapOptions: &awsecs.CloudMapOptions{
			CloudMapNamespace: r.Peers, Name: str(PeerService), DnsRecordType: awsservicediscovery.DnsRecordType_A,
			DnsTtl: awscdk.Duration_Seconds(num(10)),
		},
	})
	scaling := r.Service.AutoScaleTaskCount(&awsapplicationautoscaling.EnableScalingProps{
		MinCapacity: num(float64(desired)), MaxCapacity: num(float64(4 * desired)),
	})
	scaling.ScaleOnCpuUtilization(str("Cpu"), &awsecs.CpuUtilizationScalingProps{TargetUtilizationPercent: num(60)})

	// Clients: a public ALB to the ingress port, health-checked on /readyz.
	albSg := awsec2.NewSecurityGroup(scope, str(id+"AlbSg"), &awsec2.SecurityGroupProps{
		Vpc: p.Vpc, AllowAllOutbound: no(), Description: str("ferry client ALB: HTTP(S) from anywhere"),
	})
	suppress(albSg, "AwsSolutions-EC23", "the client load balancer is public by design: it takes HTTP(S) from the "+
		"internet on 80/443 only and can reach nothing but the router")
	r.LoadBalancer = elb.NewApplicationLoadBalancer(scope, str(id+"Alb"), &elb.ApplicationLoadBalancerProps{
		Vpc: p.Vpc, InternetFacing: yes, SecurityGroup: albSg, DropInvalidHeaderFields: yes,
	})
	logs := awss3.NewBucket(scope, str(id+"AccessLogs"), &awss3.BucketProps{
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(), Encryption: awss3.BucketEncryption_S3_MANAGED,
		EnforceSSL: yes, ObjectOwnership: awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		LifecycleRules: &[]*awss3.LifecycleRule{{Expiration: awscdk.Duration_Days(num(90))}},
	})
	suppress(logs, "AwsSolutions-S1", "this bucket receives the ALB's access logs; logging it into itself would loop")
	r.LoadBalancer.LogAccessLogs(logs, str("alb"))
	r.TargetGroup = elb.NewApplicationTargetGroup(scope, str(id+"Targets"), &elb.ApplicationTargetGroupProps{
		Vpc: p.Vpc, Port: num(IngressPort), Protocol: elb.ApplicationProtocol_HTTP, TargetType: elb.TargetType_IP,
		Targets: &[]elb.IApplicationLoadBalancerTarget{r.Service.LoadBalancerTarget(&awsecs.LoadBalancerTargetOptions{
			ContainerName: str("router"), ContainerPort: num(IngressPort),
		})},
		HealthCheck: &elb.HealthCheck{Path: str("/readyz"), Port: str(strconv.Itoa(AdminPort)), HealthyThresholdCount: num(2),
			Interval: awscdk.Duration_Seconds(num(10))},
		DeregistrationDelay: awscdk.Duration_Seconds(num(30)),
	})
	if p.CertificateArn != "" {
		cert := awscertificatemanager.Certificate_FromCertificateArn(scope, str(id+"Cert"), str(p.CertificateArn))
		r.LoadBalancer.AddListener(str("Https"), &elb.BaseApplicationListenerProps{
			Port: num(443), Protocol: elb.ApplicationProtocol_HTTPS, Certificates: &[]elb.IListenerCertificate{
				elb.ListenerCertificate_FromCertificateManager(cert)},
			SslPolicy: elb.SslPolicy_RECOMMENDED_TLS, DefaultTargetGroups: &[]elb.IApplicationTargetGroup{r.TargetGroup},
		})
		r.LoadBalancer.AddRedirect(&elb.ApplicationLoadBalancerRedirectConfig{})
		r.URL = "https://" + *r.LoadBalancer.LoadBalancerDnsName()
	} else {
		r.LoadBalancer.AddListener(str("Http"), &elb.BaseApplicationListenerProps{
			Port: num(80), Protocol: elb.ApplicationProtocol_HTTP,
			DefaultTargetGroups: &[]elb.IApplicationTargetGroup{r.TargetGroup},
		})
		r.URL = "http://" + *r.LoadBalancer.LoadBalancerDnsName()
	}
	routerSg.AddIngressRule(albSg, awsec2.Port_Tcp(num(IngressPort)), str("clients from the ALB"), nil)
	routerSg.AddIngressRule(albSg, awsec2.Port_Tcp(num(AdminPort)), str("ALB health checks"), nil)
	albSg.AddEgressRule(routerSg, awsec2.Port_Tcp(num(IngressPort)), str("to the router"), nil)
	albSg.AddEgressRule(routerSg, awsec2.Port_Tcp(num(AdminPort)), str("health checks"), nil)

	return r
}

// PeerService is the Cloud Map service the router tasks register in.
const PeerService = "router"

// peerNamespace is the Cloud Map namespace of a stack's router tasks: a
// private DNS name made of the stack's name, one label of at most 63
// characters.
func peerNamespace(stack string) string {
	label := strings.Trim(strings.ToLower(stack), "-")
	if len(label) > 50 {
		label = strings.TrimRight(label[:50], "-")
	}
	return label + ".ferry.internal"
}
