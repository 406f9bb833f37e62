package ferrycdk_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"

	"github.com/ferryrun/ferry/infra/ferrycdk"
)

// The security groups of the synthesized template, read as the VPC would
// apply them: a packet from one resource to another on a port passes only
// if a security group the sender carries lets it out and one the receiver
// carries lets it in. What matters is who carries a group, not that a rule
// exists: a rule on a group no resource carries opens nothing.

// sgRule is one ingress or egress rule: to or from a security group
// (peer) or an address range.
type sgRule struct {
	peer     string // security group logical id, or ""
	cidr     netip.Prefix
	proto    string // "tcp", "udp", "icmp" or "-1" (all)
	from, to int
}

func (r sgRule) port(p int) bool {
	return r.proto == "-1" || (r.proto == "tcp" && r.from <= p && p <= r.to)
}

type sgGraph struct {
	vpc             netip.Prefix
	ingress, egress map[string][]sgRule // by security group logical id
	carriers        map[string][]string // resource logical id -> the groups it carries
	subnets         map[string][]string // resource logical id -> its subnets' logical ids
	natSubnets      map[string]bool     // subnets whose default route is a NAT gateway
	igwSubnets      map[string]bool     // subnets whose default route is the internet gateway
	publicIP        map[string]bool     // resources with public addresses of their own
	functions       []string            // Lambda functions, in the VPC or not
}

// ref returns the logical id in {"Ref": id} or {"Fn::GetAtt": [id, attr]}.
func ref(v any) string {
	m, _ := v.(map[string]any)
	if id, ok := m["Ref"].(string); ok {
		return id
	}
	if ga, ok := m["Fn::GetAtt"].([]any); ok && len(ga) > 0 {
		id, _ := ga[0].(string)
		return id
	}
	return ""
}

func refs(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		if id := ref(x); id != "" {
			out = append(out, id)
		}
	}
	return out
}

func ruleOf(t *testing.T, p map[string]any, peerKey string) sgRule {
	t.Helper()
	r := sgRule{peer: ref(p[peerKey]), proto: fmt.Sprint(p["IpProtocol"]), from: -1, to: -1}
	if f, ok := p["FromPort"].(float64); ok {
		r.from = int(f)
	}
	if f, ok := p["ToPort"].(float64); ok {
		r.to = int(f)
	}
	for _, k := range []string{"CidrIp", "CidrIpv6"} {
		if s, ok := p[k].(string); ok {
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				t.Fatalf("rule %v: %v", p, err)
			}
			r.cidr = pfx
		}
	}
	if r.peer == "" && !r.cidr.IsValid() {
		t.Fatalf("rule %v names neither a security group nor an address range this test reads", p)
	}
	return r
}

func props(r map[string]any) map[string]any {
	p, _ := r["Properties"].(map[string]any)
	return p
}

func graphOf(t *testing.T, tmpl assertions.Template) sgGraph {
	t.Helper()
	g := sgGraph{ingress: map[string][]sgRule{}, egress: map[string][]sgRule{}, carriers: map[string][]string{},
		subnets: map[string][]string{}, natSubnets: map[string]bool{}, igwSubnets: map[string]bool{}, publicIP: map[string]bool{}}
	for _, v := range resources(tmpl, "AWS::EC2::VPC") {
		g.vpc = netip.MustParsePrefix(props(v)["CidrBlock"].(string))
	}
	for id, sg := range resources(tmpl, "AWS::EC2::SecurityGroup") {
		p := props(sg)
		for _, r := range asMaps(p["SecurityGroupIngress"]) {
			g.ingress[id] = append(g.ingress[id], ruleOf(t, r, "SourceSecurityGroupId"))
		}
		for _, r := range asMaps(p["SecurityGroupEgress"]) {
			g.egress[id] = append(g.egress[id], ruleOf(t, r, "DestinationSecurityGroupId"))
		}
		g.carriers[id] = nil // known, carried by nobody yet
	}
	for _, r := range resources(tmpl, "AWS::EC2::SecurityGroupIngress") {
		p := props(r)
		g.ingress[ref(p["GroupId"])] = append(g.ingress[ref(p["GroupId"])], ruleOf(t, p, "SourceSecurityGroupId"))
	}
	for _, r := range resources(tmpl, "AWS::EC2::SecurityGroupEgress") {
		p := props(r)
		g.egress[ref(p["GroupId"])] = append(g.egress[ref(p["GroupId"])], ruleOf(t, p, "DestinationSecurityGroupId"))
	}
	for id, r := range resources(tmpl, "AWS::ECS::Service") {
		vpc, _ := props(r)["NetworkConfiguration"].(map[string]any)["AwsvpcConfiguration"].(map[string]any)
		g.carriers[id], g.subnets[id] = refs(vpc["SecurityGroups"]), refs(vpc["Subnets"])
		g.publicIP[id] = vpc["AssignPublicIp"] == "ENABLED"
	}
	for id, r := range resources(tmpl, "AWS::Lambda::Function") {
		g.functions = append(g.functions, id)
		if vc, ok := props(r)["VpcConfig"].(map[string]any); ok {
			g.carriers[id], g.subnets[id] = refs(vc["SecurityGroupIds"]), refs(vc["SubnetIds"])
		}
	}
	for id, r := range resources(tmpl, "AWS::ElasticLoadBalancingV2::LoadBalancer") {
		g.carriers[id], g.subnets[id] = refs(props(r)["SecurityGroups"]), refs(props(r)["Subnets"])
	}
	tables := map[string][]string{} // route table -> subnets
	for _, r := range resources(tmpl, "AWS::EC2::SubnetRouteTableAssociation") {
		p := props(r)
		tables[ref(p["RouteTableId"])] = append(tables[ref(p["RouteTableId"])], ref(p["SubnetId"]))
	}
	for _, r := range resources(tmpl, "AWS::EC2::Route") {
		p := props(r)
		if p["DestinationCidrBlock"] == "0.0.0.0/0" && p["NatGatewayId"] != nil {
			for _, s := range tables[ref(p["RouteTableId"])] {
				g.natSubnets[s] = true
			}
		}
		if p["DestinationCidrBlock"] == "0.0.0.0/0" && p["GatewayId"] != nil {
			for _, s := range tables[ref(p["RouteTableId"])] {
				g.igwSubnets[s] = true
			}
		}
	}
	return g
}

func asMaps(v any) []map[string]any {
	var out []map[string]any
	l, _ := v.([]any)
	for _, x := range l {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// covers reports whether a rule's range takes in every address of the VPC.
func (g sgGraph) covers(r sgRule) bool {
	return r.cidr.IsValid() && r.cidr.Addr().Is4() && r.cidr.Bits() <= g.vpc.Bits() && r.cidr.Contains(g.vpc.Addr())
}

// reaches reports whether resource src can open a TCP connection to
// resource dst on port.
func (g sgGraph) reaches(src, dst string, port int) bool {
	for _, s := range g.carriers[src] {
		for _, d := range g.carriers[dst] {
			out, in := false, false
			for _, r := range g.egress[s] {
				out = out || (r.port(port) && (r.peer == d || g.covers(r)))
			}
			for _, r := range g.ingress[d] {
				in = in || (r.port(port) && (r.peer == s || g.covers(r)))
			}
			if out && in {
				return true
			}
		}
	}
	return false
}

// fromInternet reports whether any address outside the VPC may connect to
// dst on port.
func (g sgGraph) fromInternet(dst string, port int) bool {
	for _, d := range g.carriers[dst] {
		for _, r := range g.ingress[d] {
			if r.port(port) && r.cidr.IsValid() && r.cidr.Bits() < 8 {
				return true
			}
		}
	}
	return false
}

// publiclyReachable reports whether a connection from the internet can
// arrive at dst on port: dst has public addresses, every subnet it sits
// in routes to the internet gateway, and its groups admit the internet.
func (g sgGraph) publiclyReachable(dst string, port int) bool {
	if !g.publicIP[dst] || len(g.subnets[dst]) == 0 {
		return false
	}
	for _, sn := range g.subnets[dst] {
		if !g.igwSubnets[sn] {
			return false
		}
	}
	return g.fromInternet(dst, port)
}

// toInternet reports whether src may connect out to the internet on port:
// a function outside the VPC always may; in the VPC, its groups must let
// it out and every subnet it sits in must route there through a NAT
// gateway, or through the internet gateway if it has a public address.
func (g sgGraph) toInternet(src string, port int) bool {
	if slices.Contains(g.functions, src) && g.carriers[src] == nil {
		return true // Lambda's own network
	}
	out := false
	for _, s := range g.carriers[src] {
		for _, r := range g.egress[s] {
			out = out || (r.port(port) && r.cidr.IsValid() && r.cidr.Bits() == 0)
		}
	}
	if !out || len(g.subnets[src]) == 0 {
		return false
	}
	for _, sn := range g.subnets[src] {
		if !g.natSubnets[sn] && !(g.igwSubnets[sn] && g.publicIP[src]) {
			return false
		}
	}
	return true
}

// dialsBack reports whether function fn can open a tunnel to the router:
// inside the VPC, through the security groups to the task's private
// address; outside it, over the internet to the task's public address.
func (g sgGraph) dialsBack(fn, router string) bool {
	if g.carriers[fn] != nil {
		return g.reaches(fn, router, ferrycdk.TunnelPort)
	}
	return g.toInternet(fn, ferrycdk.TunnelPort) && g.publiclyReachable(router, ferrycdk.TunnelPort)
}

func only(t *testing.T, tmpl assertions.Template, typ string) string {
	t.Helper()
	rs := resources(tmpl, typ)
	if len(rs) != 1 {
		t.Fatalf("%d resources of type %s, want 1", len(rs), typ)
	}
	for id := range rs {
		return id
	}
	return ""
}

// TestNetworkPaths proves each path a deployment depends on, and that the
// router's ports are reached by nothing else, with a private tunnel
// endpoint (functions in the VPC) and a public one (functions anywhere).
func TestNetworkPaths(t *testing.T) {
	for mode, synth := range modes(t) {
		t.Run(mode, func(t *testing.T) {
			_, tmpl := synth(t)
			networkPaths(t, tmpl, mode == "public tunnel")
		})
	}
}

func networkPaths(t *testing.T, tmpl assertions.Template, public bool) {
	g := graphOf(t, tmpl)
	router := only(t, tmpl, "AWS::ECS::Service")
	alb := only(t, tmpl, "AWS::ElasticLoadBalancingV2::LoadBalancer")
	if len(g.functions) == 0 {
		t.Fatal("no function")
	}
	for _, fn := range g.functions {
		inVpc := g.carriers[fn] != nil
		if inVpc == public {
			t.Errorf("function %s in the VPC: %v; want %v with a public tunnel %v", fn, inVpc, !public, public)
		}
		cases := []struct {
			name string
			got  bool
			want bool
		}{
			{"function dials back to the router task's tunnel port", g.dialsBack(fn, router), true},
			{"function reaches the router's admin port", g.reaches(fn, router, ferrycdk.AdminPort), false},
			{"function reaches the router's peer port", g.reaches(fn, router, ferrycdk.PeerPort), false},
			{"function reaches the AWS APIs (HTTPS)", g.toInternet(fn, 443), true},
			{"the internet reaches the function", g.fromInternet(fn, 443), false},
		}
		for _, c := range cases {
			if c.got != c.want {
				t.Errorf("%s (%s): %v, want %v", c.name, fn, c.got, c.want)
			}
		}
	}
	cases := []struct {
		name string
		got  bool
		want bool
	}{
		{"the internet reaches the ALB on 80", g.fromInternet(alb, 80), true},
		{"ALB forwards clients to the router's ingress port", g.reaches(alb, router, ferrycdk.IngressPort), true},
		{"ALB health-checks the router's admin port", g.reaches(alb, router, ferrycdk.AdminPort), true},
		{"ALB reaches the router's tunnel port", g.reaches(alb, router, ferrycdk.TunnelPort), false},
		{"router calls Lambda, CloudWatch and Secrets Manager (HTTPS)", g.toInternet(router, 443), true},
		{"the internet reaches the router's ingress port", g.fromInternet(router, ferrycdk.IngressPort), false},
		{"the internet reaches the router's tunnel port", g.publiclyReachable(router, ferrycdk.TunnelPort), public},
		{"the internet reaches the router's admin port", g.fromInternet(router, ferrycdk.AdminPort), false},
		{"router tasks reach each other's peer port (forwarded requests)", g.reaches(router, router, ferrycdk.PeerPort), true},
		{"ALB reaches the router's peer port", g.reaches(alb, router, ferrycdk.PeerPort), false},
		{"the internet reaches the router's peer port", g.fromInternet(router, ferrycdk.PeerPort), false},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	// Every security group with rules is carried by something: a group
	// nobody carries is a rule that opens nothing (how the tunnel group
	// once went unattached while a test saw its rule).
	carried := map[string]bool{}
	for res, sgs := range g.carriers {
		for _, sg := range sgs {
			if sg != res {
				carried[sg] = true
			}
		}
	}
	for sg := range g.ingress {
		if !carried[sg] {
			t.Errorf("security group %s has ingress rules but no resource carries it", sg)
		}
	}
}
