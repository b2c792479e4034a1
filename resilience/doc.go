// Package resilience gathers what keeps calls succeeding when instances
// fail, and what keeps servers up under load. Each part is a package of
// gRPC interceptors with a small configuration of its own:
//
// Client side, outermost first:
//   - breaker: a circuit breaker per target and method (failure and
//     slow-call ratios over a rolling window, half-open probes, typed
//     fallbacks), on github.com/sony/gobreaker/v2's state machine;
//   - deadline: a default timeout for calls whose caller set none;
//   - retry: retries of idempotent methods on another instance, with
//     backoff and jitter inside the deadline and a budget of 20% of calls,
//     and hedging on github.com/failsafe-go/failsafe-go's hedge policy.
//
// In the balancer (every lodestar policy in package lb): outlier ejection
// of instances that fail in a row, and the steering of retries away from
// the instance that failed (lb.Avoid).
//
// Server side, outermost first:
//   - recovery: a handler's panic becomes INTERNAL with the stack logged;
//   - shed: adaptive shedding when the process is out of CPU (off unless
//     installed);
//   - flow: flow rules per method (QPS with warm-up and a bounded wait,
//     concurrency), rejections naming the rule.
//
// lodestar.Dial installs retry by default (deadlines, breaker and hedging
// with WithTimeout, WithBreaker and WithHedging), and lodestar.NewServer
// installs recovery and flow (shedding with WithShedding); the packages
// also work with plain grpc.NewClient and grpc.NewServer.
package resilience
