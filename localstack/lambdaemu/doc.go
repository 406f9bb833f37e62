// Package lambdaemu is a local AWS Lambda: the public Invoke API and, for
// each sandbox, the Runtime API, with every sandbox a real process running
// the function's real bootstrap.
//
// It is faithful where ferry depends on Lambda's behaviour: one invocation
// at a time per sandbox; each sandbox's whole process tree held by the
// kernel to the vCPU share and memory its size buys (memory_mb/1769 vCPU,
// memory_mb of memory, through cgroups; past the memory the sandbox dies
// with Runtime.OutOfMemory); a warm sandbox reused and frozen (cgroup
// freezer, else SIGSTOP) between invocations; the function timeout
// enforced by killing the sandbox; a
// concurrency limit answered with 429 TooManyRequestsException; errors and
// headers shaped so aws-sdk-go-v2 maps them to its typed errors; REPORT lines
// with billed duration; and per-function totals (Stats) for tests and
// benchmarks to read.
//
// Sandboxes share the host's network, where Lambda gives each its own
// namespace. So that concurrent sandboxes' apps do not collide on one port,
// each sandbox gets FERRY_APP_PORT set to a free port unless the function
// sets it: the emulator's one ferry-specific behaviour.
//
// Limits need cgroups that this process may write (Linux, root): v1 with
// the cpu, cpuacct, memory and freezer controllers, or v2. Elsewhere the
// emulator runs sandboxes unlimited and says so once at start.
//
// What it does not do: isolate sandboxes (they are ordinary processes of the
// same user, on the host's network) or run managed runtimes' own
// bootstraps (a managed-runtime function runs only through
// AWS_LAMBDA_EXEC_WRAPPER, as ferry's layer uses it).
package lambdaemu
