package lambdaemu

// Stats are a function's totals since the emulator started.
type Stats struct {
	Invocations      int64 `json:"invocations"`
	Errors           int64 `json:"errors"`      // invocations with a function error, timeouts included
	Throttles        int64 `json:"throttles"`   // invokes answered 429
	ColdStarts       int64 `json:"cold_starts"` // invocations that started a sandbox
	SandboxesStarted int64 `json:"sandboxes_started"`
	BilledMs         int64 `json:"billed_ms"`   // sum of Billed Duration
	DurationMs       int64 `json:"duration_ms"` // sum of Duration
	InitMs           int64 `json:"init_ms"`     // sum of Init Duration
	// ContendedUs sums the time invocations' sandboxes waited for a core
	// their vCPU share entitled them to, because other sandboxes (or
	// anything else on this machine) had the cores: time Lambda, which
	// gives each sandbox its own vCPU, does not have. Duration includes
	// it. 0 where sandboxes run without cgroups or the kernel keeps no
	// schedstats.
	ContendedUs int64 `json:"contended_us"`
	// CPUUs sums the CPU invocations' sandboxes used, from handoff to
	// answer, read from their cgroups: 0 where sandboxes run without them.
	CPUUs int64 `json:"cpu_us"`
	// Running counts invocations under way: given a sandbox, not yet in
	// the totals above. At 0, every invocation so far is in them.
	Running int64 `json:"running"`
}

// Stats returns name's totals, and false if there is no such function.
func (e *Emulator) Stats(name string) (Stats, bool) {
	fn, ok := e.function(name)
	if !ok {
		return Stats{}, false
	}
	fn.mu.Lock()
	defer fn.mu.Unlock()
	return fn.stats, true
}

func (fn *function) count(f func(*Stats)) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	f(&fn.stats)
}
