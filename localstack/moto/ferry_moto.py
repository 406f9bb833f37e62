"""moto_server with the CloudFormation resource types ferry's stack needs and
moto's CloudFormation lacks.

moto implements the service APIs of these types (Secrets Manager, CloudWatch
alarms, security-group egress, Application Auto Scaling, Cloud Map) but not their
CloudFormation resources: it skips them and leaves any Ref to them
unresolved, which fails the stack. LocalStack fills the same gap with its
own resource providers. Each class below creates the real resource through
moto's own service backend, so the AWS API then shows it exactly as if
CloudFormation had made it.

Still skipped, on purpose:
- AWS::CDK::Metadata: no resource in AWS either.
- AWS::S3::BucketPolicy: the policies CDK writes deny requests without TLS
  (aws:SecureTransport), moto enforces that, and the local endpoint is plain
  HTTP on loopback: every asset upload would be refused.

Run: python3 ferry_moto.py -H 127.0.0.1 -p 4566 (moto_server's flags).
"""

import json
import sys

from moto.core.common_models import CloudFormationModel

# moto files every model under the service named by its module's second
# dotted part (moto.<service>.models); these file under "ferry".
_MAIN = __name__ == "__main__"
__name__ = "moto_ext.ferry"


def _props(cfn):
    return cfn.get("Properties") or {}


class Secret(CloudFormationModel):
    """AWS::SecretsManager::Secret, with GenerateSecretString."""

    def __init__(self, arn, name):
        self.arn, self.name = arn, name

    @staticmethod
    def cloudformation_type():
        return "AWS::SecretsManager::Secret"

    @staticmethod
    def cloudformation_name_type():
        return "Name"

    @classmethod
    def has_cfn_attr(cls, attr):
        return attr in ("Id",)

    def get_cfn_attribute(self, attr):
        return self.arn

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.secretsmanager.models import secretsmanager_backends

        backend = secretsmanager_backends[account_id][region_name]
        p = _props(cloudformation_json)
        value = p.get("SecretString")
        gen = p.get("GenerateSecretString")
        if value is None and gen is not None:
            value = backend.get_random_password(
                password_length=int(gen.get("PasswordLength", 32)),
                exclude_characters=gen.get("ExcludeCharacters", ""),
                exclude_numbers=bool(gen.get("ExcludeNumbers", False)),
                exclude_punctuation=bool(gen.get("ExcludePunctuation", False)),
                exclude_uppercase=bool(gen.get("ExcludeUppercase", False)),
                exclude_lowercase=bool(gen.get("ExcludeLowercase", False)),
                include_space=bool(gen.get("IncludeSpace", False)),
                require_each_included_type=bool(gen.get("RequireEachIncludedType", True)),
            )
            value = json.loads(value)["RandomPassword"]
            if gen.get("SecretStringTemplate") and gen.get("GenerateStringKey"):
                doc = json.loads(gen["SecretStringTemplate"])
                doc[gen["GenerateStringKey"]] = value
                value = json.dumps(doc)
        out = json.loads(backend.create_secret(
            name=p.get("Name") or resource_name, secret_string=value, secret_binary=None,
            description=p.get("Description"), tags=p.get("Tags"), kms_key_id=p.get("KmsKeyId"),
            client_request_token=None, replica_regions=[], force_overwrite=False,
        ))
        return cls(out["ARN"], out["Name"])

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        from moto.secretsmanager.models import secretsmanager_backends

        secretsmanager_backends[account_id][region_name].delete_secret(
            secret_id=resource_name, recovery_window_in_days=None, force_delete_without_recovery=True)

    @property
    def physical_resource_id(self):
        return self.arn  # Ref gives the ARN, as in AWS


class Alarm(CloudFormationModel):
    """AWS::CloudWatch::Alarm for a single metric (what ferry's stack uses)."""

    def __init__(self, name):
        self.name = name

    @staticmethod
    def cloudformation_type():
        return "AWS::CloudWatch::Alarm"

    @staticmethod
    def cloudformation_name_type():
        return "AlarmName"

    @classmethod
    def has_cfn_attr(cls, attr):
        return attr == "Arn"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.cloudwatch.models import cloudwatch_backends

        p = _props(cloudformation_json)
        if "Metrics" in p:
            raise NotImplementedError("ferry_moto: metric-math alarms are not provided")
        name = p.get("AlarmName") or resource_name
        cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=name, namespace=p["Namespace"], metric_name=p["MetricName"],
            comparison_operator=p["ComparisonOperator"], evaluation_periods=int(p["EvaluationPeriods"]),
            period=int(p["Period"]), threshold=float(p["Threshold"]), statistic=p.get("Statistic"),
            description=p.get("AlarmDescription"), dimensions=p.get("Dimensions", []),
            alarm_actions=p.get("AlarmActions", []), ok_actions=p.get("OKActions", []),
            insufficient_data_actions=p.get("InsufficientDataActions", []),
            datapoints_to_alarm=p.get("DatapointsToAlarm"), extended_statistic=p.get("ExtendedStatistic"),
            unit=p.get("Unit"), treat_missing_data=p.get("TreatMissingData"),
        )
        return cls(name)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        from moto.cloudwatch.models import cloudwatch_backends

        cloudwatch_backends[account_id][region_name].delete_alarms([resource_name])

    @property
    def physical_resource_id(self):
        return self.name


class SecurityGroupEgress(CloudFormationModel):
    """AWS::EC2::SecurityGroupEgress to a CIDR or a security group."""

    def __init__(self, rule_id):
        self.rule_id = rule_id

    @staticmethod
    def cloudformation_type():
        return "AWS::EC2::SecurityGroupEgress"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.ec2.models import ec2_backends

        p = _props(cloudformation_json)
        ranges = [{"CidrIp": p["CidrIp"]}] if p.get("CidrIp") else []
        groups = [{"GroupId": p["DestinationSecurityGroupId"]}] if p.get("DestinationSecurityGroupId") else []
        rules, _ = ec2_backends[account_id][region_name].authorize_security_group_egress(
            group_name_or_id=p["GroupId"], ip_protocol=str(p["IpProtocol"]),
            from_port=p.get("FromPort"), to_port=p.get("ToPort"), ip_ranges=ranges, source_groups=groups)
        return cls(rules[0].id if rules else resource_name)

    @property
    def physical_resource_id(self):
        return self.rule_id


class PrivateDnsNamespace(CloudFormationModel):
    """AWS::ServiceDiscovery::PrivateDnsNamespace: where ECS registers the
    router tasks, which find each other there."""

    def __init__(self, ns):
        self.ns = ns

    @staticmethod
    def cloudformation_type():
        return "AWS::ServiceDiscovery::PrivateDnsNamespace"

    @classmethod
    def has_cfn_attr(cls, attr):
        return attr in ("Id", "Arn", "HostedZoneId")

    def get_cfn_attribute(self, attr):
        if attr == "Arn":
            return self.ns.arn
        if attr == "HostedZoneId":
            return self.ns.dns_properties.get("HostedZoneId")
        return self.ns.id

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.servicediscovery.models import servicediscovery_backends

        backend = servicediscovery_backends[account_id][region_name]
        p = _props(cloudformation_json)
        backend.create_private_dns_namespace(
            name=p["Name"], creator_request_id=None, description=p.get("Description"), vpc=p["Vpc"],
            tags=p.get("Tags"), properties=p.get("Properties"))
        ns = next(n for n in backend.namespaces.values() if n.name == p["Name"] and n.vpc == p["Vpc"])
        return cls(ns)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        from moto.servicediscovery.models import servicediscovery_backends

        servicediscovery_backends[account_id][region_name].delete_namespace(namespace_id=resource_name)

    @property
    def physical_resource_id(self):
        return self.ns.id  # Ref gives the id, as in AWS


class DiscoveryService(CloudFormationModel):
    """AWS::ServiceDiscovery::Service: the router tasks' service."""

    def __init__(self, svc):
        self.svc = svc

    @staticmethod
    def cloudformation_type():
        return "AWS::ServiceDiscovery::Service"

    @classmethod
    def has_cfn_attr(cls, attr):
        return attr in ("Id", "Arn", "Name")

    def get_cfn_attribute(self, attr):
        return {"Arn": self.svc.arn, "Name": self.svc.name}.get(attr, self.svc.id)

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.servicediscovery.models import servicediscovery_backends

        p = _props(cloudformation_json)
        svc = servicediscovery_backends[account_id][region_name].create_service(
            name=p.get("Name") or resource_name, namespace_id=p.get("NamespaceId"), creator_request_id=None,
            description=p.get("Description"), dns_config=p.get("DnsConfig"),
            health_check_config=p.get("HealthCheckConfig"), health_check_custom_config=p.get("HealthCheckCustomConfig"),
            tags=p.get("Tags"), service_type=p.get("Type"))
        return cls(svc)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        from moto.servicediscovery.models import servicediscovery_backends

        servicediscovery_backends[account_id][region_name].delete_service(service_id=resource_name)

    @property
    def physical_resource_id(self):
        return self.svc.id


class ScalableTarget(CloudFormationModel):
    """AWS::ApplicationAutoScaling::ScalableTarget."""

    def __init__(self, namespace, resource_id, dimension):
        self.namespace, self.resource_id, self.dimension = namespace, resource_id, dimension

    @staticmethod
    def cloudformation_type():
        return "AWS::ApplicationAutoScaling::ScalableTarget"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.applicationautoscaling.models import applicationautoscaling_backends

        p = _props(cloudformation_json)
        applicationautoscaling_backends[account_id][region_name].register_scalable_target(
            namespace=p["ServiceNamespace"], r_id=p["ResourceId"], dimension=p["ScalableDimension"],
            min_capacity=int(p["MinCapacity"]), max_capacity=int(p["MaxCapacity"]),
            role_arn=p.get("RoleARN", ""), suspended_state=p.get("SuspendedState"))
        return cls(p["ServiceNamespace"], p["ResourceId"], p["ScalableDimension"])

    @property
    def physical_resource_id(self):
        # AWS's form: the resource id, the dimension and the namespace.
        return "|".join((self.resource_id, self.dimension, self.namespace))


class ScalingPolicy(CloudFormationModel):
    """AWS::ApplicationAutoScaling::ScalingPolicy, target tracking or step."""

    def __init__(self, arn):
        self.arn = arn

    @staticmethod
    def cloudformation_type():
        return "AWS::ApplicationAutoScaling::ScalingPolicy"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.applicationautoscaling.models import applicationautoscaling_backends

        p = _props(cloudformation_json)
        if p.get("ScalingTargetId"):
            resource_id, dimension, namespace = p["ScalingTargetId"].split("|")
        else:
            resource_id, dimension, namespace = p["ResourceId"], p["ScalableDimension"], p["ServiceNamespace"]
        body = p.get("StepScalingPolicyConfiguration", p.get("TargetTrackingScalingPolicyConfiguration"))
        policy = applicationautoscaling_backends[account_id][region_name].put_scaling_policy(
            policy_name=p.get("PolicyName") or resource_name, service_namespace=namespace,
            resource_id=resource_id, scalable_dimension=dimension, policy_body=body,
            policy_type=p.get("PolicyType"))
        return cls(policy.policy_arn)

    @property
    def physical_resource_id(self):
        return self.arn


def _target_group_attribute(self, attr):
    """Fn::GetAtt on AWS::ElasticLoadBalancingV2::TargetGroup, which moto's
    model lacks (an alarm on a target group's health needs its full name)."""
    if attr == "TargetGroupFullName":
        return self.arn.split(":")[-1]  # targetgroup/<name>/<id>
    if attr == "TargetGroupName":
        return self.name
    if attr == "TargetGroupArn":
        return self.arn
    if attr == "LoadBalancerArns":
        return list(self.load_balancer_arns)
    from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

    raise UnformattedGetAttTemplateException()


def _install():
    from moto.awslambda.models import LambdaFunction, LayerVersion
    from moto.elbv2.models import FakeTargetGroup

    # A Ref to AWS::Lambda::LayerVersion is its ARN in AWS; moto's model
    # has no physical id, so the Ref gave the model object itself.
    if "physical_resource_id" not in LayerVersion.__dict__:
        LayerVersion.physical_resource_id = property(lambda self: self.arn)

    if not hasattr(FakeTargetGroup, "get_cfn_attribute"):
        FakeTargetGroup.get_cfn_attribute = _target_group_attribute

    # moto's AWS::Lambda::Function drops Layers and Architectures; the
    # function then runs without ferry's layer and claims x86_64.
    create = LambdaFunction.create_from_cloudformation_json.__func__

    def create_with_layers(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        fn = create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        p = _props(cloudformation_json)
        if p.get("Layers"):
            fn.layers = fn._get_layers_data(p["Layers"])
        if p.get("Architectures"):
            fn.architectures = list(p["Architectures"])
        return fn

    LambdaFunction.create_from_cloudformation_json = classmethod(create_with_layers)

    # moto's AWS::ECS::Service drops LaunchType; a Fargate service then
    # describes itself as EC2.
    from moto.ecs.models import Service

    create_service = Service.create_from_cloudformation_json.__func__

    def create_with_launch_type(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        svc = create_service(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        if _props(cloudformation_json).get("LaunchType"):
            svc.launch_type = _props(cloudformation_json)["LaunchType"]
        return svc

    Service.create_from_cloudformation_json = classmethod(create_with_launch_type)

    # A stack made by executing a CREATE change set (how cdk deploy
    # deploys) shows no Outputs in moto: its output map was built before
    # the change set's template was applied.
    from moto.cloudformation.models import CloudFormationBackend

    execute = CloudFormationBackend.execute_change_set

    def execute_with_outputs(self, change_set_name, stack_name=None):
        execute(self, change_set_name, stack_name)
        for stack in self.stacks.values():
            if stack.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE") and not stack.outputs:
                stack._parse_template()
                stack.output_map = stack._create_output_map()

    CloudFormationBackend.execute_change_set = execute_with_outputs

    _install_network_deletes()
    _install_code_location()
    _install_function_vpc()


def _own_endpoint(argv):
    """Where this moto_server answers, from its -H/-p flags."""
    host, port = "127.0.0.1", "5000"
    for i, a in enumerate(argv[:-1]):
        if a in ("-H", "--host"):
            host = argv[i + 1]
        elif a in ("-p", "--port"):
            port = argv[i + 1]
    return f"http://{host}:{port}"


def _install_code_location():
    """GetFunction's Code.Location is, in AWS, a presigned URL from which
    the function's code zip downloads. moto's names an amazonaws.com host
    and a key in no bucket, so nothing can read a function's code back (the
    local data plane must, for a function created outside the stack). Here
    the zip is put in the local S3, in the bucket AWS keeps Lambda's code
    in (awslambda-<region>-tasks), and Location is its path-style URL on
    this server. The object reads without signing (public-read), as a
    presigned URL does for whoever holds it."""
    from moto.awslambda.models import LambdaFunction
    from moto.s3.models import get_canned_acl, s3_backends

    endpoint = _own_endpoint(sys.argv[1:])
    get_code = LambdaFunction.get_code

    def get_code_with_location(self):
        resp = get_code(self)
        code = resp.get("Code") or {}
        key = self.code.get("S3Key")
        if code.get("RepositoryType") != "S3" or not key or not getattr(self, "code_bytes", b""):
            return resp
        s3 = s3_backends[self.account_id][self.partition]
        bucket = f"awslambda-{self.region}-tasks"
        if bucket not in s3.buckets:
            s3.create_bucket(bucket, self.region)
        s3.put_object(bucket, key, self.code_bytes).acl = get_canned_acl("public-read")
        code["Location"] = f"{endpoint}/{bucket}/{key}"
        return resp

    LambdaFunction.get_code = get_code_with_location


def _install_function_vpc():
    """moto names every function's VPC vpc-123abc; AWS names the VPC its
    subnets are in, which is what tells whether a function can reach a
    router in a given VPC (ferry attach reads it)."""
    from moto.awslambda.models import LambdaFunction
    from moto.ec2.models import ec2_backends

    def vpc_config(self):
        if not self._vpc_config:
            return None
        config = dict(self._vpc_config)
        subnets = config.get("SubnetIds") or []
        config["VpcId"] = ""
        if subnets:
            try:
                config["VpcId"] = ec2_backends[self.account_id][self.region].get_subnet(subnets[0]).vpc_id
            except Exception:  # a subnet that does not exist has no VPC
                pass
        return config

    LambdaFunction.vpc_config = property(vpc_config)


def _install_network_deletes():
    """moto's CloudFormation deletes none of a VPC's route tables, NAT
    gateway, internet gateway attachment or Elastic IP with the stack, so
    the VPC's own delete fails on them and cdk destroy with it. Each gets
    the delete AWS would do; a delete that still has dependents raises, and
    moto retries it after the others, as CloudFormation orders deletes."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.elastic_ip_addresses import ElasticAddress
    from moto.ec2.models.internet_gateways import InternetGateway
    from moto.ec2.models.nat_gateways import NatGateway
    from moto.ec2.models.route_tables import RouteTable
    from moto.ec2.models.vpn_gateway import VPCGatewayAttachment

    def route_table(self, account_id, region_name):
        ec2 = ec2_backends[account_id][region_name]
        for assoc in list(self._associations):
            ec2.disassociate_route_table(assoc)
        ec2.delete_route_table(self.id)

    def nat_gateway(self, account_id, region_name):
        ec2 = ec2_backends[account_id][region_name]
        ec2.delete_nat_gateway(self.id)
        ec2.nat_gateways.pop(self.id, None)

    def attachment(self, account_id, region_name):
        ec2 = ec2_backends[account_id][region_name]
        if self.gateway_id in ec2.internet_gateways:
            ec2.detach_internet_gateway(self.gateway_id, self.vpc_id)

    def internet_gateway(self, account_id, region_name):
        ec2_backends[account_id][region_name].delete_internet_gateway(self.id)

    def address(self, account_id, region_name):
        ec2_backends[account_id][region_name].release_address(allocation_id=self.allocation_id)

    for cls, fn in ((RouteTable, route_table), (NatGateway, nat_gateway), (VPCGatewayAttachment, attachment),
                    (InternetGateway, internet_gateway), (ElasticAddress, address)):
        if "delete" not in cls.__dict__:
            cls.delete = fn


if _MAIN:
    _install()
    from moto.server import main

    main(sys.argv[1:])
