package main

import (
	"fmt"
	"strings"
)

// kind is one sort of request a workload sends: its profile, and the
// sample app's route that performs it.
type kind struct {
	name   string
	phases []phase
}

func (k kind) path() string {
	var cpu, wait, then float64
	seenWait := false
	for _, p := range k.phases {
		switch {
		case p.cpu && !seenWait:
			cpu += p.ms
		case p.cpu:
			then += p.ms
		default:
			wait += p.ms
			seenWait = true
		}
	}
	q := fmt.Sprintf("/work?cpu_ms=%.0f&wait_ms=%.0f", cpu, wait)
	if then > 0 {
		q = fmt.Sprintf("/render?cpu_ms=%.0f&wait_ms=%.0f&then_cpu_ms=%.0f", cpu, wait, then)
	}
	return q
}

// cpuMs is the kind's CPU time.
func (k kind) cpuMs() float64 {
	c := 0.0
	for _, p := range k.phases {
		if p.cpu {
			c += p.ms
		}
	}
	return c
}

// workload is a mix of kinds at two rates.
type workload struct {
	name     string
	kinds    []kind
	weights  []float64 // of kinds; sums to 1
	moderate float64   // requests per second
}

func cpuWait(cpu, wait float64) []phase {
	ph := []phase{{true, cpu}}
	if wait > 0 {
		ph = append(ph, phase{false, wait})
	}
	return ph
}

var (
	ioKind  = kind{"I/O", cpuWait(5, 500)}
	cpuKind = kind{"CPU", cpuWait(100, 0)}
)

// savedWorkloads: a typical API handler, the seed, server-side rendering
// (CPU after the wait), pure CPU, pure waiting, and a function serving
// both of the last two. Moderate rates put about 0.8 of this machine's 2
// cores of CPU demand on the sandboxes (api and I/O-heavy: more requests
// for less CPU); see sparseRate for the other rate.
var savedWorkloads = []workload{
	{name: "api", kinds: []kind{{"api", cpuWait(10, 100)}}, weights: []float64{1}, moderate: 40},
	{name: "seed", kinds: []kind{{"seed", cpuWait(50, 50)}}, weights: []float64{1}, moderate: 16},
	{name: "render", kinds: []kind{{"render", []phase{{true, 10}, {false, 100}, {true, 40}}}}, weights: []float64{1}, moderate: 16},
	{name: "cpu-bound", kinds: []kind{cpuKind}, weights: []float64{1}, moderate: 8},
	{name: "io-heavy", kinds: []kind{ioKind}, weights: []float64{1}, moderate: 100},
	{name: "mix", kinds: []kind{ioKind, cpuKind}, weights: []float64{0.8, 0.2}, moderate: 33},
}

func (w workload) label() string {
	var parts []string
	for i, k := range w.kinds {
		var ph []string
		for _, p := range k.phases {
			ph = append(ph, fmt.Sprintf("%.0f", p.ms))
		}
		s := strings.Join(ph, "+")
		if len(w.kinds) > 1 {
			s = fmt.Sprintf("%.0f%% %s %s", 100*w.weights[i], k.name, s)
		}
		parts = append(parts, s)
	}
	return w.name + " (" + strings.Join(parts, ", ") + " ms)"
}

// meanCPU and meanDuration are per request, at one vCPU.
func (w workload) meanCPU() float64 {
	c := 0.0
	for i, k := range w.kinds {
		c += w.weights[i] * k.cpuMs()
	}
	return c
}

func (w workload) meanDuration() float64 {
	d := 0.0
	for i, k := range w.kinds {
		d += w.weights[i] * nominal(k.phases, 1)
	}
	return d
}

// sparseRate is where requests rarely overlap: about 0.2 cores of CPU
// demand, and never more than one request in flight on average.
func (w workload) sparseRate() float64 {
	return min(0.2*1000/w.meanCPU(), 1000/w.meanDuration())
}

// rate returns the workload's rate by name.
func (w workload) rate(name string) float64 {
	if name == "sparse" {
		return w.sparseRate()
	}
	return w.moderate
}

// workloadByName finds a saved workload.
func workloadByName(name string) (workload, bool) {
	for _, w := range savedWorkloads {
		if w.name == name {
			return w, true
		}
	}
	return workload{}, false
}
