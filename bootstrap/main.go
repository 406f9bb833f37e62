// Command bootstrap is ferry's Lambda runtime (provided.al2023), shipped as
// a layer at /opt/bootstrap. It starts the user's web server (FERRY_APP_CMD,
// or $LAMBDA_TASK_ROOT/run.sh) and serves it invocations: dial-backs from
// ferry's router as many concurrent requests over one tunnel, ordinary HTTP
// events as one request each. Managed runtimes use it through
// AWS_LAMBDA_EXEC_WRAPPER=/opt/ferry-exec-wrapper.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ferryrun/ferry/bootstrap/app"
	"github.com/ferryrun/ferry/bootstrap/background"
	"github.com/ferryrun/ferry/bootstrap/config"
	"github.com/ferryrun/ferry/bootstrap/runtimeapi"
	"github.com/ferryrun/ferry/bootstrap/serve"
	"github.com/ferryrun/ferry/internal/version"
)

func main() {
	// Lambda runs the bootstrap with no arguments; a person may ask it
	// which build it is.
	if len(os.Args) > 1 {
		if a := os.Args[1]; a == "--version" || a == "-version" || a == "version" {
			fmt.Println(version.Line("ferry bootstrap"))
			return
		}
		fmt.Fprintf(os.Stderr, "bootstrap: unknown argument %q: this is ferry's Lambda runtime, run by Lambda with none; --version prints its version\n", os.Args[1])
		os.Exit(2)
	}
	ctx := context.Background()
	client := runtimeapi.New(os.Getenv("AWS_LAMBDA_RUNTIME_API"))
	boot := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		serve.InitFail(ctx, client, boot, "Ferry.InvalidConfig", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	serve.WarnUnknown(log)

	// The loopback API the app registers work after its answers with
	// (waitUntil), at FERRY_BACKGROUND_URL.
	bg := background.New()
	bgURL, err := serveBackground(bg)
	if err != nil {
		serve.InitFail(ctx, client, log, "Ferry.NoBackgroundAPI", err)
	}
	sup, err := app.New(app.Config{
		Cmd: cfg.AppCmd, Port: cfg.AppPort, ReadinessPath: cfg.ReadinessPath,
		ReadyTimeout: cfg.ReadyTimeout, MaxConns: cfg.MaxConcurrency, Logger: log,
		Env: []string{"FERRY_BACKGROUND_URL=" + bgURL},
		OnExit: func() {
			if n := bg.CancelAll(); n > 0 {
				log.Warn("background work the app had begun died with it", "pending", n)
			}
		},
	})
	if err != nil {
		serve.InitFail(ctx, client, log, "Ferry.NoApp", err)
	}
	if err := sup.Start(ctx); err != nil {
		serve.InitFail(ctx, client, log, "Ferry.AppStartFailed", err)
	}
	defer sup.Stop()

	err = serve.Run(ctx, serve.Options{Handler: sup, Config: cfg, Logger: log, PIDs: sup.PIDs, Background: bg})
	log.Error("runtime loop ended", "err", err)
	sup.Stop()
	os.Exit(1)
}

// serveBackground serves bg's API on a loopback port of its own and
// returns its URL, which holds a secret: another process in the sandbox
// (or a request the app makes for a client) cannot end the app's work or
// register its own.
func serveBackground(bg *background.Tracker) (string, error) {
	secret := make([]byte, 16)
	rand.Read(secret)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listening for the background API: %w", err)
	}
	srv := &http.Server{Handler: bg.Handler(hex.EncodeToString(secret)), ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 8 << 10}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String() + "/" + hex.EncodeToString(secret), nil
}
