// Package roundrobin is round robin over the ready instances, in
// lodestar's balancer frame: like grpc's round_robin, plus what every
// lodestar policy does — weight 0 ("no new calls") honoured, failing
// instances ejected (lb.OutlierEjection), and retries steered away from
// the instance that failed (lb.Avoid). lodestar.Dial uses it by default.
//
//	{"loadBalancingConfig":[{"lodestar_round_robin":{"outlierEjection":{"consecutiveFailures":5}}}]}
package roundrobin

import "github.com/lodestar-rpc/lodestar/lb/internal/pick"

// Name is the policy's name in service configs.
const Name = "lodestar_round_robin"

func init() { pick.Register(Name, pick.RoundRobinParser(Name)) }

// Config is the policy's configuration. It has no fields of its own; the
// outlierEjection field every lodestar policy takes is lb.OutlierEjection.
type Config struct{}
