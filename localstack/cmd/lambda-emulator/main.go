// Command lambda-emulator serves the Lambda Invoke API for the functions in
// a config file, running each sandbox as a real process. See package
// lambdaemu.
//
//	lambda-emulator -config functions.json -listen 127.0.0.1:9001
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ferryrun/ferry/localstack/lambdaemu"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lambda-emulator:", err)
		os.Exit(1)
	}
}

func run() error {
	configPath := flag.String("config", "", "functions config file (JSON); required")
	listen := flag.String("listen", "127.0.0.1:9001", "address of the Invoke API")
	idle := flag.Duration("idle-ttl", 10*time.Minute, "how long a warm sandbox is kept idle")
	flag.Parse()
	if *configPath == "" {
		flag.Usage()
		return errors.New("-config is required")
	}
	cfg, err := lambdaemu.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	emu, err := lambdaemu.New(cfg, lambdaemu.Options{Logger: log, FunctionLog: os.Stderr, IdleTTL: *idle})
	if err != nil {
		return err
	}
	defer emu.Close()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	names := make([]string, len(cfg.Functions))
	for i, f := range cfg.Functions {
		names[i] = f.Name
	}
	log.Info("lambda emulator listening", "addr", ln.Addr().String(), "functions", names)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
