// Command lambda-emulator serves the Lambda Invoke API for the functions in
// a config file, running each sandbox as a real process. See package
// lambdaemu.
//
//	lambda-emulator -config functions.json -listen 127.0.0.1:9001
//	lambda-emulator --help | --version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ferryrun/ferry/internal/version"
	"github.com/ferryrun/ferry/localstack/lambdaemu"
)

// usageError is a command line the emulator does not take: exit 2.
type usageError struct{ error }

func main() {
	err := run(os.Args[1:])
	var usage usageError
	switch {
	case err == nil:
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "lambda-emulator:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "lambda-emulator:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("lambda-emulator", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are main's to print, help is ours
	fs.Usage = func() {}
	help := func() {
		fmt.Print("lambda-emulator serves the Lambda Invoke API for the functions in a config file,\n" +
			"running each sandbox as a real process under its memory's CPU and memory limits.\n\n" +
			"usage: lambda-emulator -config functions.json [-listen 127.0.0.1:9001] [-idle-ttl 10m]\n" +
			"       lambda-emulator --version\n\n")
		fs.SetOutput(os.Stdout)
		fs.PrintDefaults()
	}
	configPath := fs.String("config", "", "functions config file (JSON); required")
	listen := fs.String("listen", "127.0.0.1:9001", "address of the Invoke API")
	idle := fs.Duration("idle-ttl", 10*time.Minute, "how long a warm sandbox is kept idle")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) || (len(args) > 0 && args[0] == "help") {
		help()
		return nil
	} else if err != nil {
		return usageError{fmt.Errorf("%w (lambda-emulator --help)", err)}
	}
	switch {
	case *showVersion:
		fmt.Println(version.Line("lambda-emulator"))
		return nil
	case fs.NArg() > 0:
		return usageError{fmt.Errorf("unexpected argument %q (lambda-emulator --help)", fs.Arg(0))}
	case *configPath == "":
		return usageError{errors.New("-config is required (lambda-emulator --help)")}
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
