package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	"github.com/ferryrun/ferry/router/config"
)

// ParameterAPI is the part of the SSM client the routes watcher uses.
type ParameterAPI interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, opts ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// routesState is what the watcher last read from the routes parameter.
type routesState struct {
	value   string // the document in force; "" for none
	problem string // the kind of the last problem logged, so that each is said once
	// options are the pool options each function's pool was made with:
	// a document that asks others for it is told to wait for a restart.
	options map[string]config.Route
	// minimums is each routed function's route in force, for its
	// min_instances (and their hours); a function whose routes went has
	// none.
	minimums map[string]config.Route
}

// WatchRoutes reads the routes parameter (config.RoutesParameter) now and
// every RoutesPoll until ctx ends, putting each new version in force beside
// the configured routes. A parameter that cannot be read, or holds routes
// that cannot be used, leaves the routes in force as they are and says why
// once, until the problem changes.
func (r *Router) WatchRoutes(ctx context.Context, api ParameterAPI) {
	for {
		rctx, cancel := context.WithTimeout(ctx, max(r.cfg.RoutesPoll, 5*time.Second))
		err := r.RefreshRoutes(rctx, api)
		cancel()
		r.log.Debug("routes parameter polled", "parameter", r.cfg.RoutesParameter, "err", err)
		// Each replica at its own moment: polls in lockstep would meet
		// SSM's account-wide rate all at once.
		jitter := time.Duration(rand.Int64N(int64(r.cfg.RoutesPoll)/5 + 1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.RoutesPoll*9/10 + jitter):
		}
	}
}

// RefreshRoutes reads the routes parameter once and, if its document
// changed, puts its routes in force. A parameter that no longer exists
// takes its routes with it. It returns what kept it from doing so.
func (r *Router) RefreshRoutes(ctx context.Context, api ParameterAPI) error {
	name := r.cfg.RoutesParameter
	out, err := api.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
	if err == nil && out.Parameter == nil {
		err = errors.New("GetParameter returned no parameter")
	}
	var missing *ssmtypes.ParameterNotFound
	value, kind, version := "", "", int64(0)
	switch {
	case errors.As(err, &missing):
		err, kind = fmt.Errorf("routes parameter %s does not exist: serving the configured routes only", name), "missing"
	case err != nil:
		err, kind = fmt.Errorf("reading routes parameter %s: %w", name, err), "read "+errorKind(err)
	default:
		value, version = aws.ToString(out.Parameter.Value), out.Parameter.Version
	}
	r.routesMu.Lock()
	defer r.routesMu.Unlock()
	if (err == nil || kind == "missing") && value != r.routes.value {
		var extra []config.Route
		var perr error
		if value != "" {
			extra, perr = config.ParseRoutesDocument([]byte(value))
		}
		if perr == nil {
			perr = r.setRoutesLocked(extra)
		}
		switch {
		case perr != nil:
			err, kind = fmt.Errorf("routes parameter %s version %d: %w; the routes in force stay", name, version, perr), "use "+perr.Error()
		case value != "":
			r.routes.value = value
			r.log.Info("routes updated", "parameter", name, "version", version, "routes", len(extra))
		default:
			r.routes.value = ""
		}
	}
	if err == nil || kind == "missing" {
		r.routesRead.Store(true) // and it stays: a later failed read changes no route
	}
	switch {
	case err != nil && kind != r.routes.problem:
		r.log.Warn(err.Error())
		r.routes.problem = kind
	case err == nil:
		r.routes.problem = ""
	}
	return err
}

// errorKind names what went wrong in a way that stays the same from one
// poll to the next (an AWS error's code, not its request id).
func errorKind(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return fmt.Sprintf("%T", errors.Unwrap(err))
}

// setRoutesLocked puts the configured routes and extra in force.
func (r *Router) setRoutesLocked(extra []config.Route) error {
	all, err := config.Combine(r.cfg.Routes, extra)
	if err != nil {
		return err
	}
	for _, rt := range all {
		if made, ok := r.routes.options[rt.Function]; ok && !sameOptions(made, rt) {
			r.log.Warn("a route asks other pool options than the function's pool was made with: they take effect when the router restarts",
				"function", rt.Function, "max_concurrency", rt.MaxConcurrency, "policy", rt.Policy, "plain", rt.Plain)
		}
	}
	routes, pools, err := r.table(all)
	if err != nil {
		return err
	}
	// Pools first: an instance a new route launches dials back at once.
	r.pools.Store(&pools)
	if err := r.ingress.SetRoutes(routes, pools); err != nil {
		return err
	}
	r.routes.minimums = minimums(all)
	r.applyMinimumsLocked()
	return nil
}

// minimums is each function's route in rs (Combine gave all of one
// function's routes the same options).
func minimums(rs []config.Route) map[string]config.Route {
	m := map[string]config.Route{}
	for _, rt := range rs {
		m[rt.Function] = rt
	}
	return m
}

// applyMinimumsLocked gives every pool its function's minimum of live
// instances (none for a function no route leads to any more), once the
// router serves: a warm instance launched before would dial back to
// nothing.
func (r *Router) applyMinimumsLocked() {
	if !r.serving.Load() {
		return
	}
	now := time.Now()
	for fn, p := range *r.pools.Load() {
		rt, ok := r.routes.minimums[fn]
		n := 0
		if ok {
			n = rt.MinimumAt(now)
		}
		if r.ring != nil && !r.ring.Owns(fn) {
			n = 0 // its first owner keeps them: one minimum for all replicas
		}
		p.SetMinInstances(n)
	}
}

// sameOptions: min_instances is not among the options a pool is made
// with; it changes live.
func sameOptions(a, b config.Route) bool {
	return a.MaxConcurrency == b.MaxConcurrency && a.Policy == b.Policy && a.Plain == b.Plain
}
