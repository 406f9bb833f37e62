package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/ferryrun/ferry/router/config"
)

// ParameterAPI is the part of the SSM client the routes watcher uses.
type ParameterAPI interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, opts ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// routesState is what the watcher last read from the routes parameter.
type routesState struct {
	version int64  // the parameter version in force; 0 before any
	problem string // the last problem logged, so that each is said once
}

// WatchRoutes reads the routes parameter (config.RoutesParameter) now and
// every RoutesPoll until ctx ends, putting each new version in force beside
// the configured routes. A parameter that cannot be read, or holds routes
// that cannot be used, leaves the routes in force as they are and says why
// once, until the problem changes.
func (r *Router) WatchRoutes(ctx context.Context, api ParameterAPI) {
	t := time.NewTicker(r.cfg.RoutesPoll)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, max(r.cfg.RoutesPoll, 5*time.Second))
		r.RefreshRoutes(rctx, api)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RefreshRoutes reads the routes parameter once and, if it has a new
// version, puts its routes in force. It returns what kept it from doing so.
func (r *Router) RefreshRoutes(ctx context.Context, api ParameterAPI) error {
	name := r.cfg.RoutesParameter
	out, err := api.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
	if err == nil && out.Parameter == nil {
		err = errors.New("GetParameter returned no parameter")
	}
	var missing *ssmtypes.ParameterNotFound
	switch {
	case errors.As(err, &missing):
		err = fmt.Errorf("routes parameter %s does not exist: serving the configured routes only", name)
	case err != nil:
		err = fmt.Errorf("reading routes parameter %s: %w", name, err)
	}
	r.routesMu.Lock()
	defer r.routesMu.Unlock()
	if err == nil && out.Parameter.Version != r.routes.version {
		var extra []config.Route
		if extra, err = config.ParseRoutesDocument([]byte(aws.ToString(out.Parameter.Value))); err == nil {
			err = r.setRoutesLocked(extra)
		}
		if err != nil {
			err = fmt.Errorf("routes parameter %s version %d: %w; the routes in force stay", name, out.Parameter.Version, err)
		} else {
			r.routes.version = out.Parameter.Version
			r.log.Info("routes updated", "parameter", name, "version", out.Parameter.Version, "routes", len(extra))
		}
	}
	switch {
	case err != nil && err.Error() != r.routes.problem:
		r.log.Warn(err.Error())
		r.routes.problem = err.Error()
	case err == nil && r.routes.problem != "":
		r.routes.problem = ""
	}
	return err
}

// setRoutesLocked puts the configured routes and extra in force.
func (r *Router) setRoutesLocked(extra []config.Route) error {
	all, err := config.Combine(r.cfg.Routes, extra)
	if err != nil {
		return err
	}
	routes, pools, err := r.table(all)
	if err != nil {
		return err
	}
	// Pools first: an instance a new route launches dials back at once.
	r.pools.Store(&pools)
	return r.ingress.SetRoutes(routes, pools)
}
