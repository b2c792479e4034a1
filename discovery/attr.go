package discovery

import (
	"maps"

	"google.golang.org/grpc/resolver"

	"github.com/lodestar-rpc/lodestar/registry"
)

// instanceKey is the attribute key under which an endpoint carries the
// instance it was resolved from.
type instanceKey struct{}

// instanceAttr is the attribute value. It is immutable once attached, so
// endpoints share it freely; Equal lets grpc tell an unchanged endpoint from
// a changed one.
type instanceAttr struct {
	inst registry.Instance
}

func (a *instanceAttr) Equal(o any) bool {
	b, ok := o.(*instanceAttr)
	if !ok {
		return false
	}
	if a == b {
		return true
	}
	x, y := &a.inst, &b.inst
	return x.Service == y.Service && x.ID == y.ID && x.Addr == y.Addr &&
		x.Metadata.Version == y.Metadata.Version && x.Metadata.Region == y.Metadata.Region &&
		x.Metadata.Zone == y.Metadata.Zone && x.Metadata.Weight == y.Metadata.Weight &&
		x.Metadata.Status == y.Metadata.Status && maps.Equal(x.Metadata.Labels, y.Metadata.Labels)
}

// Instance returns the instance an endpoint was resolved from: its service,
// id, address and metadata (version, region, zone, weight, status, labels).
// Balancers read it to weigh, group or filter endpoints. The Labels map is
// shared and must not be modified.
func Instance(ep resolver.Endpoint) (registry.Instance, bool) {
	a, ok := ep.Attributes.Value(instanceKey{}).(*instanceAttr)
	if !ok {
		return registry.Instance{}, false
	}
	return a.inst, true
}

// AddressInstance returns the instance an address of
// resolver.State.Addresses was resolved from, as WithAddresses fills them
// for balancers that read addresses rather than endpoints.
func AddressInstance(a resolver.Address) (registry.Instance, bool) {
	//lint:ignore SA1019 balancers built on balancer/base read only Addresses and their BalancerAttributes
	v, ok := a.BalancerAttributes.Value(instanceKey{}).(*instanceAttr)
	if !ok {
		return registry.Instance{}, false
	}
	return v.inst, true
}

// SetInstance returns ep carrying inst, as this package's resolver sets it.
// It is for resolvers and tests that build endpoints by hand.
func SetInstance(ep resolver.Endpoint, inst registry.Instance) resolver.Endpoint {
	inst.Metadata.Labels = maps.Clone(inst.Metadata.Labels)
	ep.Attributes = ep.Attributes.WithValue(instanceKey{}, &instanceAttr{inst: inst})
	return ep
}

// Weight returns the endpoint's weight, or registry.DefaultWeight when it
// carries no instance.
func Weight(ep resolver.Endpoint) int {
	if in, ok := Instance(ep); ok {
		return in.Metadata.Weight
	}
	return registry.DefaultWeight
}

// Zone returns the endpoint's zone, or "" when unknown.
func Zone(ep resolver.Endpoint) string {
	in, _ := Instance(ep)
	return in.Metadata.Zone
}

// Region returns the endpoint's region, or "" when unknown.
func Region(ep resolver.Endpoint) string {
	in, _ := Instance(ep)
	return in.Metadata.Region
}

// Version returns the endpoint's version, or "" when unknown.
func Version(ep resolver.Endpoint) string {
	in, _ := Instance(ep)
	return in.Metadata.Version
}
