// Package config loads the bootstrap's configuration from the environment,
// in one place, validating every value at start.
package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Environment variables the bootstrap reads. README's configuration table
// lists exactly these; TestREADMEListsEveryVariable keeps the two in step.
const (
	EnvAppCmd         = "FERRY_APP_CMD"
	EnvAppPort        = "FERRY_APP_PORT"
	EnvReadinessPath  = "FERRY_READINESS_PATH"
	EnvReadyTimeout   = "FERRY_READY_TIMEOUT"
	EnvMaxConcurrency = "FERRY_MAX_CONCURRENCY"
	EnvIdleLinger     = "FERRY_IDLE_LINGER"
	EnvDrainMargin    = "FERRY_DRAIN_MARGIN"
	EnvCPUAdmission   = "FERRY_CPU_ADMISSION"
	EnvCPUBudget      = "FERRY_CPU_BUDGET"
	EnvDialTimeout    = "FERRY_DIAL_TIMEOUT"
	EnvLogLevel       = "FERRY_LOG_LEVEL"
	EnvLoadStream     = "FERRY_LOAD_STREAM"
	EnvInvokeMode     = "FERRY_INVOKE_MODE"
)

// Names lists every variable above, for documentation checks.
var Names = []string{EnvAppCmd, EnvAppPort, EnvReadinessPath, EnvReadyTimeout, EnvMaxConcurrency,
	EnvIdleLinger, EnvDrainMargin, EnvCPUAdmission, EnvCPUBudget, EnvDialTimeout, EnvLogLevel, EnvLoadStream, EnvInvokeMode}

// Config is the bootstrap's configuration.
type Config struct {
	// AppCmd starts the user's web server (run with sh -c). If FERRY_APP_CMD
	// is unset: $LAMBDA_TASK_ROOT/run.sh if it exists, else the handler
	// ($_HANDLER) if it is an executable file in the task root.
	AppCmd        string
	AppPort       int           // the app's port, given to it as PORT; default 8080
	ReadinessPath string        // polled every 10ms until it answers below 500; default "/"
	ReadyTimeout  time.Duration // bound on the app's start; default 9s (Lambda's init is 10s)
	// MaxConcurrency caps the streams one invocation serves at once: a
	// ceiling, not a target, since CPU admission decides how many run. The
	// router may ask for fewer. Default 64.
	MaxConcurrency int
	// IdleLinger ends a dial-back invocation after this long with no
	// request in flight. Default 2ms: a gap costs no more than plain
	// Lambda's own end of invocation. When the variable is unset the
	// router's linger (in the dial-back payload) applies instead.
	IdleLinger time.Duration
	// IdleLingerSet says FERRY_IDLE_LINGER was set: the function's choice
	// then wins over the router's.
	IdleLingerSet bool
	// DrainMargin starts the drain when less than this is left before the
	// deadline. Zero means clamp(timeout/10, 1s, 15s), timeout being the
	// invocation's time at its start.
	DrainMargin time.Duration
	// CPUAdmission nacks a stream that, run beside those in flight, would
	// slow one of them (or itself) by more than CPUBudget of its time, as
	// learnt from the CPU each kind of request uses. Default on.
	CPUAdmission bool
	// CPUBudget is that share, 0 < budget <= 1. Default 0.05.
	CPUBudget float64
	// LoadStream offers the router a stream of the instance's load as it
	// changes, so it places requests between answers. Default off (the
	// router learns the load from answers): on, it shares more at small
	// sizes and costs tail latency elsewhere (see README).
	LoadStream bool
	// StreamResponses answers direct invocations with the Runtime API's
	// streaming response (FERRY_INVOKE_MODE=response_stream), for a
	// Function URL with InvokeMode RESPONSE_STREAM or
	// InvokeWithResponseStream. Default off (buffered).
	StreamResponses bool
	DialTimeout     time.Duration // bound on dial + TLS + hello; default 3s
	LogLevel        slog.Level    // default info
}

// Load reads the configuration through getenv (os.Getenv in production).
// An error names the variable and the value it could not use.
func Load(getenv func(string) string) (Config, error) {
	c := Config{
		AppPort: 8080, ReadinessPath: "/", ReadyTimeout: 9 * time.Second, MaxConcurrency: 64,
		IdleLinger: 2 * time.Millisecond, CPUAdmission: true, CPUBudget: 0.05,
		DialTimeout: 3 * time.Second,
	}
	p := parser{getenv: getenv}
	c.AppCmd = strings.TrimSpace(getenv(EnvAppCmd))
	p.int(EnvAppPort, &c.AppPort, 1, 65535)
	if v := getenv(EnvReadinessPath); v != "" {
		if !strings.HasPrefix(v, "/") {
			p.fail(EnvReadinessPath, v, "must start with /")
		}
		c.ReadinessPath = v
	}
	p.duration(EnvReadyTimeout, &c.ReadyTimeout, 10*time.Millisecond, 15*time.Minute)
	p.int(EnvMaxConcurrency, &c.MaxConcurrency, 1, 1600)
	p.duration(EnvIdleLinger, &c.IdleLinger, 0, time.Hour)
	c.IdleLingerSet = getenv(EnvIdleLinger) != ""
	p.duration(EnvDrainMargin, &c.DrainMargin, 0, 15*time.Minute)
	p.onOff(EnvCPUAdmission, &c.CPUAdmission)
	p.float(EnvCPUBudget, &c.CPUBudget, 0.001, 1)
	p.onOff(EnvLoadStream, &c.LoadStream)
	switch v := getenv(EnvInvokeMode); v {
	case "", "buffered":
	case "response_stream":
		c.StreamResponses = true
	default:
		p.fail(EnvInvokeMode, v, "want buffered or response_stream")
	}
	p.duration(EnvDialTimeout, &c.DialTimeout, 100*time.Millisecond, time.Minute)
	if v := getenv(EnvLogLevel); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			p.fail(EnvLogLevel, v, "want debug, info, warn or error")
		}
	}
	if p.err != nil {
		return Config{}, p.err
	}
	if c.AppCmd == "" {
		c.AppCmd = defaultAppCmd(getenv("LAMBDA_TASK_ROOT"), getenv("_HANDLER"))
	}
	return c, nil
}

func defaultAppCmd(taskRoot, handler string) string {
	if taskRoot == "" {
		return ""
	}
	if st, err := os.Stat(filepath.Join(taskRoot, "run.sh")); err == nil && st.Mode().IsRegular() {
		return shellQuote(filepath.Join(taskRoot, "run.sh"))
	}
	if handler != "" && handler != "bootstrap" && !strings.Contains(handler, "..") {
		h := filepath.Join(taskRoot, handler)
		if st, err := os.Stat(h); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return shellQuote(h)
		}
	}
	return ""
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// DrainMarginFor returns the drain margin for an invocation whose whole
// time is timeout.
func (c Config) DrainMarginFor(timeout time.Duration) time.Duration {
	if c.DrainMargin > 0 {
		return c.DrainMargin
	}
	return min(max(timeout/10, time.Second), 15*time.Second)
}

// parser records the first bad variable.
type parser struct {
	getenv func(string) string
	err    error
}

func (p *parser) fail(name, value, why string) {
	if p.err == nil {
		p.err = fmt.Errorf("%s=%q: %s", name, value, why)
	}
}

// onOff sets dst from on or off; unset keeps its default.
func (p *parser) onOff(name string, dst *bool) {
	switch v := p.getenv(name); v {
	case "":
	case "on", "off":
		*dst = v == "on"
	default:
		p.fail(name, v, "want on or off")
	}
}

func (p *parser) int(name string, dst *int, lo, hi int) {
	v := p.getenv(name)
	if v == "" {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(name, v, fmt.Sprintf("want an integer in %d..%d", lo, hi))
		return
	}
	*dst = n
}

func (p *parser) float(name string, dst *float64, lo, hi float64) {
	v := p.getenv(name)
	if v == "" {
		return
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < lo || f > hi {
		p.fail(name, v, fmt.Sprintf("want a number in %g..%g", lo, hi))
		return
	}
	*dst = f
}

func (p *parser) duration(name string, dst *time.Duration, lo, hi time.Duration) {
	v := p.getenv(name)
	if v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		p.fail(name, v, fmt.Sprintf("want a duration such as 200ms in %v..%v", lo, hi))
		return
	}
	*dst = d
}
