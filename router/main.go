// Command ferry-router takes client HTTP traffic, packs it into live AWS
// Lambda invocations over their tunnels, and invokes new ones only when the
// live ones are full. Configuration comes from FERRY_ROUTER_* variables
// (see README) and the AWS SDK's own (AWS_REGION, AWS_ENDPOINT_URL_LAMBDA).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/servicediscovery"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/ferryrun/ferry/internal/envcheck"
	"github.com/ferryrun/ferry/internal/version"
	"github.com/ferryrun/ferry/router/advertise"
	"github.com/ferryrun/ferry/router/config"
	"github.com/ferryrun/ferry/router/metrics"
	"github.com/ferryrun/ferry/router/ring"
	"github.com/ferryrun/ferry/router/server"
)

func main() {
	if len(os.Args) > 1 {
		os.Exit(commandLine(os.Args[1:], os.Stdout, os.Stderr))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ferry-router:", err)
		os.Exit(1)
	}
}

const help = `ferry-router takes client HTTP traffic, packs it into live AWS Lambda
invocations over their tunnels, and invokes new ones only when the live ones
are full.

usage:
  ferry-router            serve, configured by the environment
  ferry-router --help     this help
  ferry-router --version  the build's version

It reads these variables (README's router section says what each does and
its default), and the AWS SDK's own (AWS_REGION, AWS_ENDPOINT_URL_LAMBDA):
`

// commandLine answers the arguments: the router is configured by its
// environment, so it takes none but --help and --version. It returns the
// exit code: 0, or 2 for arguments it does not take.
func commandLine(args []string, stdout, stderr io.Writer) int {
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, help)
		for _, n := range config.Names {
			fmt.Fprintln(stdout, "  "+n)
		}
		return 0
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, version.Line("ferry-router"))
		return 0
	}
	fmt.Fprintf(stderr, "ferry-router: unknown argument %q: it is configured by FERRY_ROUTER_* variables (ferry-router --help lists them)\n", args[0])
	return 2
}

func run() error {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return err
	}
	// Logs go to stderr; stdout carries only EMF metric lines.
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	log.Info("ferry-router starting", "version", version.String())
	for _, w := range envcheck.Unknown(os.Environ(), "FERRY_ROUTER_", config.Names) {
		log.Warn(w)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var ls server.Listeners
	listen := []struct {
		addr string
		dst  *net.Listener
	}{{cfg.Listen, &ls.Ingress}, {cfg.TunnelListen, &ls.Tunnel}, {cfg.AdminListen, &ls.Admin}}
	if cfg.Ring() {
		listen = append(listen, struct {
			addr string
			dst  *net.Listener
		}{cfg.PeerListen, &ls.Peer})
	}
	for _, l := range listen {
		if *l.dst, err = net.Listen("tcp", l.addr); err != nil {
			return err
		}
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("loading AWS configuration: %w", err)
	}
	tunnelPort := strconv.Itoa(ls.Tunnel.Addr().(*net.TCPAddr).Port)
	switch host, port, err := net.SplitHostPort(cfg.Advertise); {
	case cfg.Advertise == config.AdvertiseECS:
		if cfg.Advertise, err = advertise.ECS(ctx, os.Getenv("ECS_CONTAINER_METADATA_URI_V4"), tunnelPort); err != nil {
			return err
		}
	case cfg.Advertise == config.AdvertiseECSPublic:
		if cfg.Advertise, err = advertise.ECSPublic(ctx, os.Getenv("ECS_CONTAINER_METADATA_URI_V4"), tunnelPort, ec2.NewFromConfig(awsCfg)); err != nil {
			return err
		}
	case err == nil && port == "0": // the tunnel listener's actual port
		cfg.Advertise = net.JoinHostPort(host, tunnelPort)
	}
	var peers ring.Source
	if cfg.Ring() {
		if peers, err = ringSource(ctx, &cfg, awsCfg, ls.Peer); err != nil {
			return err
		}
	}
	// Invoke retries are the invoker's (backoff for up to its RetryFor, or
	// within the request's wait for a plain invocation), not the SDK's.
	api := lambda.NewFromConfig(awsCfg, func(o *lambda.Options) { o.Retryer = aws.NopRetryer{} })

	var sinks []metrics.Sink
	if cfg.MetricsEMF {
		sinks = append(sinks, metrics.EMF(os.Stdout))
	}
	if cfg.MetricsCloudWatch {
		sinks = append(sinks, metrics.CloudWatch(cloudwatch.NewFromConfig(awsCfg, metrics.RetryUnapplied)))
	}
	r, err := server.New(cfg, api, log, peers, sinks...)
	if err != nil {
		return err
	}
	if cfg.RoutesParameter != "" {
		params := ssm.NewFromConfig(awsCfg)
		// Start with the parameter's routes where it answers in time; the
		// watcher keeps trying, and says why, where it does not.
		first, cancel := context.WithTimeout(ctx, 10*time.Second)
		r.RefreshRoutes(first, params)
		cancel()
		go r.WatchRoutes(ctx, params)
	}
	return r.Run(ctx, ls)
}

// ringSource resolves this replica's peer address into cfg and returns
// where its peers are listed.
func ringSource(ctx context.Context, cfg *config.Config, awsCfg aws.Config, ln net.Listener) (ring.Source, error) {
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	var err error
	switch {
	case cfg.PeerAdvertise == config.AdvertiseECS,
		cfg.PeerAdvertise == "" && (cfg.Advertise == config.AdvertiseECS || cfg.Advertise == config.AdvertiseECSPublic):
		// The task's private address: peers share its network.
		if cfg.PeerAdvertise, err = advertise.ECS(ctx, os.Getenv("ECS_CONTAINER_METADATA_URI_V4"), port); err != nil {
			return nil, err
		}
	case cfg.PeerAdvertise == "":
		host, _, err := net.SplitHostPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("%s: cannot tell this replica's peer address from %s=%q; set it", config.EnvPeerAdvertise, config.EnvAdvertise, cfg.Advertise)
		}
		cfg.PeerAdvertise = net.JoinHostPort(host, port)
	}
	if cfg.CloudMap == nil {
		if !slices.Contains(cfg.Peers, cfg.PeerAdvertise) {
			// Named otherwise there, it would probe itself as a peer, and
			// its peers would rank a name it does not know as its own.
			return nil, fmt.Errorf("%s: this replica's peer address %s is not in the list %v; list it as the others reach it, or set %s",
				config.EnvPeers, cfg.PeerAdvertise, cfg.Peers, config.EnvPeerAdvertise)
		}
		return ring.Static(cfg.Peers), nil
	}
	api := servicediscovery.NewFromConfig(awsCfg)
	n, _ := strconv.Atoi(port)
	return ring.CloudMap{API: api, Namespace: cfg.CloudMap.Namespace, Service: cfg.CloudMap.Service, Port: n,
		LocalEndpoint: api.Options().BaseEndpoint != nil}, nil
}
