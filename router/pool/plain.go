package pool

import "time"

// plainModel decides when a request that no live instance can take should
// travel as one plain invocation (an ordinary HTTP event in the invoke
// payload, the response in its result) instead of starting a tunnel
// invocation. A tunnel pays its set-up, drain and linger on top of the
// request (a few ms: 3-10% of a 100 ms request); it earns that back only
// when the instance takes more requests while it lives. When recent tunnel
// invocations took barely more than the one request they were started for
// (CPU-bound work, traffic too sparse to overlap), a plain invocation costs
// what plain Lambda costs, and is as fast. Every exploreEvery-th such
// request still starts a tunnel, so the model sees when sharing pays again.
//
// A plain invocation buffers the response, within Lambda's 6 MB, so the
// model also needs the function's responses to have been small and
// unstreamed for a while.
//
// Not safe for concurrent use: the pool calls it under its lock.
type plainModel struct {
	served  [shareSamples]int64 // ring: requests each recent tunnel invocation took
	n, next int
	// explored counts requests sent plain since the last tunnel launch.
	explored int
	// safe counts the responses since the last one that could not have
	// travelled in an invoke result; unsafeAt is when that one was.
	safe     int
	unsafeAt time.Time
}

const (
	shareSamples = 16
	// minShareSamples tunnel invocations must have ended before any
	// request goes plain.
	minShareSamples = 4
	// plainBelowShare: plain invocations while tunnel invocations take fewer
	// requests than this on average. A second request saves about what a
	// tunnel costs when one in four invocations gets one.
	plainBelowShare = 1.25
	// exploreEvery: one tunnel launch in this many plain invocations.
	exploreEvery = 16
	// minSafeResponses, and unsafeHold since the last unsafe response,
	// before requests go plain.
	minSafeResponses = 8
	unsafeHold       = 10 * time.Minute
)

// ended records a tunnel invocation that ended having taken requests
// (none, for one closed as surplus).
func (m *plainModel) ended(requests int64) {
	m.served[m.next] = requests
	m.next = (m.next + 1) % shareSamples
	m.n = min(m.n+1, shareSamples)
}

// response records a response that passed through a tunnel: unsafe if it
// could not have travelled in an invoke result (too large, streamed, with
// trailers).
func (m *plainModel) response(unsafe bool, now time.Time) {
	if unsafe {
		m.safe, m.unsafeAt = 0, now
		return
	}
	m.safe++
}

// share is the mean of the recorded tunnel invocations' requests, or 0
// with too few.
func (m *plainModel) share() float64 {
	if m.n < minShareSamples {
		return 0
	}
	var sum int64
	for _, s := range m.served[:m.n] {
		sum += s
	}
	return float64(sum) / float64(m.n)
}

// predicts reports whether a new tunnel invocation would likely take only
// the request it is started for, and the responses allow a plain one.
func (m *plainModel) predicts(now time.Time) bool {
	s := m.share()
	return s > 0 && s < plainBelowShare && m.safe >= minSafeResponses &&
		(m.unsafeAt.IsZero() || now.Sub(m.unsafeAt) >= unsafeHold)
}

// choose is called for a request that would start a tunnel invocation;
// it reports whether the request goes plain instead.
func (m *plainModel) choose(now time.Time) bool {
	if !m.predicts(now) {
		m.explored = 0
		return false
	}
	m.explored++
	if m.explored >= exploreEvery {
		m.explored = 0
		return false
	}
	return true
}
