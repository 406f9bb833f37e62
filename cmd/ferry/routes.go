package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"github.com/cenkalti/backoff/v4"

	"github.com/ferryrun/ferry/router/config"
	"github.com/ferryrun/ferry/router/pool"
)

// routes runs ferry routes list|add|remove: it edits the routes parameter
// the stack's routers read every 2 s, so a route added serves without a
// redeploy and outlives the next one.
func routes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "add" && args[0] != "remove") {
		return usagef("routes: want list, add or remove")
	}
	verb := args[0]
	fs := flagSet("ferry routes "+verb, stderr)
	stack := fs.String("stack", "", "the ferry stack whose routes to edit (default Ferry-<region>)")
	param := fs.String("parameter", "", "the routes parameter's name, instead of the stack's")
	state := fs.String("state", ".local", "where the environment names no AWS, use the local AWS this `directory` describes")
	var rt config.Route
	var policy string
	if verb != "list" {
		fs.StringVar(&rt.Function, "function", "", "the function's name (required)")
		fs.StringVar(&rt.Host, "host", "", "requests for this host only (default any host)")
		fs.StringVar(&rt.PathPrefix, "path", "", "requests under this path prefix only, e.g. /api (default any path)")
	}
	if verb == "add" {
		fs.IntVar(&rt.MaxConcurrency, "max-concurrency", 0, "most requests one instance takes (default the router's)")
		fs.StringVar(&policy, "policy", "", "pack or spread (default the router's)")
		fs.StringVar(&rt.Plain, "plain", "", "auto or off (default the router's)")
		fs.IntVar(&rt.MinInstances, "min-instances", 0, "live instances kept whatever the traffic, each billed all the time (default 0)")
		fs.StringVar(&rt.MinInstancesHours, "min-instances-hours", "", "keep the minimum only between these UTC hours, e.g. 8-20 (default all day)")
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	rt.Policy = pool.Policy(policy)
	if verb != "list" && rt.Function == "" {
		return usagef("routes %s: -function is required", verb)
	}
	cfg, err := awsConfig(ctx, *state, stderr)
	if err != nil {
		return err
	}
	name := *param
	if name == "" {
		if *stack == "" {
			*stack = "Ferry-" + cfg.Region
		}
		name = config.RoutesParameterName(*stack)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	api := ssm.NewFromConfig(cfg)
	if verb == "list" {
		current, version, err := readRoutes(ctx, api, name)
		if err != nil {
			return unanswered(err, cfg)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FUNCTION\tHOST\tPATH\tOPTIONS")
		for _, r := range current {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Function, orAny(r.Host), orAny(r.PathPrefix), options(r))
		}
		tw.Flush()
		fmt.Fprintf(stdout, "(%s version %d; the stack's own routes are in its router's FERRY_ROUTER_ROUTES)\n", name, version)
		return nil
	}
	change := addRoute(rt)
	if verb == "remove" {
		change = removeRoute(rt)
	}
	version, err := changeRoutes(ctx, api, name, change, stderr)
	if err != nil {
		return unanswered(err, cfg)
	}
	fmt.Fprintf(stdout, "route %s: %s%s -> %s (%s version %d); routers put it in force within seconds\n",
		map[string]string{"add": "added", "remove": "removed"}[verb], rt.Host, orAny(rt.PathPrefix), rt.Function, name, version)
	return nil
}

// addRoute adds rt to the routes, unless another route already takes its
// requests.
func addRoute(rt config.Route) func([]config.Route) ([]config.Route, error) {
	return func(current []config.Route) ([]config.Route, error) {
		for _, r := range current {
			if sameRequests(r, rt) {
				// One of them would never match: refuse, rather than
				// report a route in force that serves nothing.
				return nil, fmt.Errorf("already routes %s%s to %s", r.Host, orAny(r.PathPrefix), r.Function)
			}
		}
		return append(current, rt), nil
	}
}

// removeRoute removes rt from the routes; it must be there.
func removeRoute(rt config.Route) func([]config.Route) ([]config.Route, error) {
	return func(current []config.Route) ([]config.Route, error) {
		kept := current[:0:0]
		for _, r := range current {
			if !same(r, rt) {
				kept = append(kept, r)
			}
		}
		if len(kept) == len(current) {
			return nil, fmt.Errorf("has no route %s%s to %s (ferry routes list shows them): %w", rt.Host, orAny(rt.PathPrefix), rt.Function, errNoSuchRoute)
		}
		return kept, nil
	}
}

// changeRoutes reads the routes parameter name, changes its routes, and
// writes them back if the routers can use them, returning the version
// written. An error from change is the parameter's: it is named in it.
// SSM has no conditional write, so edits take the parameter's lock first:
// two at once would each read the same version, and the later write would
// undo the earlier.
func changeRoutes(ctx context.Context, api *ssm.Client, name string, change func([]config.Route) ([]config.Route, error), stderr io.Writer) (int64, error) {
	unlock, err := lockRoutes(ctx, api, name, stderr)
	if err != nil {
		return 0, err
	}
	defer unlock()
	current, version, err := readRoutes(ctx, api, name)
	if err != nil {
		return 0, err
	}
	routes, err := change(current)
	if err != nil {
		return 0, fmt.Errorf("%s %w", name, err)
	}
	if err := usable(routes); err != nil {
		return 0, err
	}
	doc, err := json.Marshal(config.RoutesDocument{Routes: routes})
	if err != nil {
		return 0, err
	}
	out, err := api.PutParameter(ctx, &ssm.PutParameterInput{
		Name: aws.String(name), Value: aws.String(string(doc)), Type: ssmtypes.ParameterTypeString,
		Overwrite: aws.Bool(true), Tier: ssmtypes.ParameterTierIntelligentTiering,
	})
	if err != nil {
		return 0, fmt.Errorf("writing %s: %w", name, err)
	}
	if out.Version != version+1 {
		// Written meanwhile by something that took no lock (aws ssm
		// put-parameter, say): one of the two edits is lost.
		fmt.Fprintf(stderr, "ferry: %s went from version %d to %d: another edit landed meanwhile; check ferry routes list\n", name, version, out.Version)
	}
	return out.Version, nil
}

// lockStale is how old a lock on the routes parameter may grow before
// another edit takes it: an edit holds it for a few calls, and one that
// died holding it must not block every later one.
const lockStale = 30 * time.Second

// lockRoutes takes the lock on the routes parameter name: the parameter
// name + ".lock", which only one can create (PutParameter without
// Overwrite). It waits up to 20 s for another edit's lock, and returns
// what releases it.
func lockRoutes(ctx context.Context, api *ssm.Client, name string, stderr io.Writer) (unlock func(), err error) {
	lock := name + ".lock"
	host, _ := os.Hostname()
	holder := fmt.Sprintf("ferry on %s, pid %d", host, os.Getpid())
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := api.PutParameter(ctx, &ssm.PutParameterInput{Name: &lock, Value: &holder, Type: ssmtypes.ParameterTypeString,
			Overwrite: aws.Bool(false), Description: aws.String("ferry routes: held while an edit of " + name + " is under way")})
		if err == nil {
			return func() { unlockRoutes(ctx, api, lock, stderr) }, nil
		}
		if !errors.As(err, new(*ssmtypes.ParameterAlreadyExists)) {
			return nil, fmt.Errorf("locking %s: %w", name, err)
		}
		held, err := api.GetParameter(ctx, &ssm.GetParameterInput{Name: &lock})
		if err == nil && time.Since(aws.ToTime(held.Parameter.LastModifiedDate)) > lockStale {
			// Its holder died: take it over (only one creates it anew).
			api.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: &lock})
			continue
		}
		if time.Now().After(deadline) {
			by := "another edit"
			if err == nil {
				by = aws.ToString(held.Parameter.Value)
			}
			return nil, fmt.Errorf("%s is being edited by %s: try again, or delete %s if nothing edits it", name, by, lock)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(50+rand.IntN(100)) * time.Millisecond): // another edit takes a few calls
		}
	}
}

// unlockRoutes deletes the lock parameter, retrying for up to 10 s: a lock
// left behind holds every later edit off until it is stale. A lock already
// gone (taken over as stale) is released.
func unlockRoutes(ctx context.Context, api *ssm.Client, lock string, stderr io.Writer) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	err := backoff.Retry(func() error {
		_, err := api.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: &lock})
		var apiErr smithy.APIError
		switch {
		case errors.As(err, new(*ssmtypes.ParameterNotFound)):
			return nil
		case errors.As(err, &apiErr) && apiErr.ErrorFault() == smithy.FaultClient:
			return backoff.Permanent(err) // denied, say: trying again will not help
		}
		return err
	}, backoff.WithContext(b, ctx))
	if err != nil {
		fmt.Fprintf(stderr, "ferry: could not release %s (%v): later edits wait until it is %s old, or delete it\n", lock, err, lockStale)
	}
}

// Errors a change of the routes can end in.
var (
	errNoRoutes    = errors.New("no routes parameter")
	errNoSuchRoute = errors.New("no such route")
)

// usable refuses routes the routers could not use: refused here, not in
// every router's log.
func usable(routes []config.Route) error {
	doc, err := json.Marshal(config.RoutesDocument{Routes: routes})
	if err != nil {
		return err
	}
	if rs, err := config.ParseRoutesDocument(doc); err != nil {
		return usageError{err}
	} else if _, err := config.Combine(rs); err != nil {
		return usageError{err}
	}
	return nil
}

// readRoutes reads the routes parameter: its routes and version.
func readRoutes(ctx context.Context, api *ssm.Client, name string) ([]config.Route, int64, error) {
	out, err := api.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
	var missing *ssmtypes.ParameterNotFound
	if errors.As(err, &missing) {
		return nil, 0, fmt.Errorf("%w %s: deploy the stack first, or name it with -stack or -parameter", errNoRoutes, name)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", name, err)
	}
	rs, err := config.ParseRoutesDocument([]byte(aws.ToString(out.Parameter.Value)))
	if err != nil {
		return nil, 0, fmt.Errorf("%s holds no routes document (%v): fix it with aws ssm put-parameter", name, err)
	}
	return rs, out.Parameter.Version, nil
}

// same reports whether two routes match the same requests to one function.
func same(a, b config.Route) bool {
	return a.Function == b.Function && sameRequests(a, b)
}

// sameRequests reports whether two routes match the same requests, as the
// router matches them: hosts without regard to case, prefixes without a
// trailing slash.
func sameRequests(a, b config.Route) bool {
	return strings.EqualFold(a.Host, b.Host) && strings.TrimSuffix(a.PathPrefix, "/") == strings.TrimSuffix(b.PathPrefix, "/")
}

func orAny(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

func options(r config.Route) string {
	var s string
	if r.MaxConcurrency > 0 {
		s += fmt.Sprintf("max_concurrency=%d ", r.MaxConcurrency)
	}
	if r.Policy != "" {
		s += "policy=" + string(r.Policy) + " "
	}
	if r.Plain != "" {
		s += "plain=" + r.Plain + " "
	}
	if r.MinInstances > 0 {
		s += fmt.Sprintf("min_instances=%d ", r.MinInstances)
	}
	if r.MinInstancesHours != "" {
		s += "min_instances_hours=" + r.MinInstancesHours
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "-"
	}
	return s
}
