package lambdaemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Function defines one function the emulator serves. Durations in a JSON
// config file are strings such as "3s".
type Function struct {
	Name     string            `json:"name"`
	CodeDir  string            `json:"code_dir"`         // becomes LAMBDA_TASK_ROOT (/var/task)
	Layers   []string          `json:"layers,omitempty"` // directories merged, in order, as /opt
	Runtime  string            `json:"runtime,omitempty"`
	Handler  string            `json:"handler,omitempty"`
	Timeout  Duration          `json:"timeout,omitempty"`   // if zero, 3s
	MemoryMB int               `json:"memory_mb,omitempty"` // if zero, 128
	Env      map[string]string `json:"env,omitempty"`       // the function's environment variables
	// Concurrency is the most invocations running at once; one more is
	// answered 429. If zero, 10.
	Concurrency int `json:"concurrency,omitempty"`
	// InitTimeout bounds the init phase. If zero, 10s, Lambda's limit.
	InitTimeout Duration `json:"init_timeout,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as "3s".
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"3s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

var functionNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Runtimes the emulator can start. Managed runtimes start only through
// AWS_LAMBDA_EXEC_WRAPPER; see the package comment.
var providedRuntimes = map[string]bool{"": true, "provided": true, "provided.al2": true, "provided.al2023": true}

func (f *Function) normalize() error {
	if !functionNameRE.MatchString(f.Name) {
		return fmt.Errorf("function name %q: want 1-64 letters, digits, - or _", f.Name)
	}
	if f.CodeDir == "" {
		return fmt.Errorf("function %s: code_dir is required", f.Name)
	}
	abs, err := filepath.Abs(f.CodeDir)
	if err != nil {
		return err
	}
	f.CodeDir = abs
	for i, l := range f.Layers {
		if f.Layers[i], err = filepath.Abs(l); err != nil {
			return err
		}
	}
	for _, d := range append([]string{f.CodeDir}, f.Layers...) {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return fmt.Errorf("function %s: %s is not a directory", f.Name, d)
		}
	}
	if f.Timeout.Duration == 0 {
		f.Timeout.Duration = 3 * time.Second
	}
	if f.Timeout.Duration < time.Second || f.Timeout.Duration > 15*time.Minute {
		return fmt.Errorf("function %s: timeout %v outside 1s..15m", f.Name, f.Timeout)
	}
	if f.MemoryMB == 0 {
		f.MemoryMB = 128
	}
	if f.MemoryMB < 128 || f.MemoryMB > 10240 {
		return fmt.Errorf("function %s: memory %d MB outside 128..10240", f.Name, f.MemoryMB)
	}
	if f.Concurrency == 0 {
		f.Concurrency = 10
	}
	if f.Concurrency < 1 || f.Concurrency > 1000 {
		return fmt.Errorf("function %s: concurrency %d outside 1..1000", f.Name, f.Concurrency)
	}
	if f.InitTimeout.Duration == 0 {
		f.InitTimeout.Duration = 10 * time.Second
	}
	if !providedRuntimes[f.Runtime] && f.Env["AWS_LAMBDA_EXEC_WRAPPER"] == "" {
		return fmt.Errorf("function %s: runtime %s runs here only with AWS_LAMBDA_EXEC_WRAPPER set", f.Name, f.Runtime)
	}
	if f.Handler == "" {
		f.Handler = "bootstrap"
	}
	return nil
}

// Config is the emulator's configuration file: {"functions":[...]}.
type Config struct {
	Functions []Function `json:"functions"`
	Region    string     `json:"region,omitempty"`  // if empty, us-east-1
	Account   string     `json:"account,omitempty"` // if empty, 000000000000
}

// LoadConfig reads a JSON config file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(c.Functions) == 0 {
		return Config{}, errors.New(path + ": no functions")
	}
	return c, nil
}
