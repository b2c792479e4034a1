package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lodestar-rpc/lodestar/internal/hostport"
	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// DefaultPrefix is the key prefix instances are registered under when no
// other is given: the instance "a1" of service "user" lives at
// "/services/user/a1".
const DefaultPrefix = "/services"

// Weights. An instance registered with weight 0 gets DefaultWeight; an
// instance whose weight is later set to 0 with SetWeight stays registered
// but should receive no new calls.
const (
	DefaultWeight = 100
	MaxWeight     = 10000
)

// MaxValueBytes is the most bytes an instance's etcd value (its JSON:
// address and metadata, labels included) may take. Register and Update
// refuse a larger one. It is also the largest value discovery decodes by
// default (discovery.DefaultMaxValueBytes), so whatever a registrar
// writes, every client reads: a fleet of 10,000 instances at the limit
// stays under a client heap of 640 MiB, and one instance always fits in an
// etcd write (1.5 MiB by default, --max-request-bytes).
const MaxValueBytes = 64 << 10

// maxNameBytes is the most bytes of a service name or an instance id.
const maxNameBytes = 253

// Status says whether an instance takes new calls.
type Status string

const (
	// StatusServing instances take new calls. It is the default.
	StatusServing Status = "serving"
	// StatusDraining instances finish the calls they have and take no new
	// ones; they stay registered so clients can tell draining from gone.
	StatusDraining Status = "draining"
)

func (s Status) valid() bool { return s == StatusServing || s == StatusDraining }

// Metadata describes an instance to the clients that balance over it.
type Metadata struct {
	Version string            // build or release version, for canary routing
	Region  string            // e.g. "eu-west"
	Zone    string            // e.g. "eu-west-1a"
	Weight  int               // relative share of calls, 0..MaxWeight
	Status  Status            // serving (default) or draining
	Labels  map[string]string // free-form labels
}

// Instance is one server process of a service, as registered in etcd.
type Instance struct {
	// Service is the service name, as clients dial it: "user" is found by
	// "lodestar:///user". It must not contain '/' or spaces.
	Service string
	// ID tells instances of one service apart. Empty means one derived from
	// Addr, which is unique among instances that clients can reach.
	ID string
	// Addr is the host:port clients dial.
	Addr     string
	Metadata Metadata
}

// Key returns the etcd key of the instance under prefix.
func Key(prefix, service, id string) string {
	return strings.TrimRight(prefix, "/") + "/" + service + "/" + id
}

// ServicePrefix returns the etcd key prefix, ending in '/', under which the
// instances of service live.
func ServicePrefix(prefix, service string) string {
	return strings.TrimRight(prefix, "/") + "/" + service + "/"
}

// ParseKey splits an instance key under prefix into service and id.
func ParseKey(prefix, key string) (service, id string, err error) {
	p := strings.TrimRight(prefix, "/") + "/"
	rest, ok := strings.CutPrefix(key, p)
	if !ok {
		return "", "", fmt.Errorf("registry: key %s is not under prefix %s", quote.Bounded(key), quote.Bounded(p))
	}
	service, id, ok = strings.Cut(rest, "/")
	if !ok || service == "" || id == "" || strings.Contains(id, "/") {
		return "", "", fmt.Errorf("registry: key %s is not %s<service>/<id>", quote.Bounded(key), quote.Bounded(p))
	}
	return service, id, nil
}

// normalize fills defaults and validates, returning a copy safe to keep.
func (in Instance) normalize() (Instance, error) {
	if err := checkName("service name", in.Service); err != nil {
		return Instance{}, err
	}
	if err := hostport.Check(in.Addr); err != nil {
		return Instance{}, fmt.Errorf("registry: address %s of service %s: %w", quote.Bounded(in.Addr), quote.Bounded(in.Service), err)
	}
	if in.ID == "" {
		in.ID = DeriveID(in.Addr)
	}
	if err := checkName("instance id", in.ID); err != nil {
		return Instance{}, err
	}
	if in.Metadata.Weight == 0 {
		in.Metadata.Weight = DefaultWeight
	}
	if in.Metadata.Status == "" {
		in.Metadata.Status = StatusServing
	}
	if err := in.Metadata.validate(); err != nil {
		return Instance{}, fmt.Errorf("registry: instance %s of service %s: %w", quote.Bounded(in.ID), quote.Bounded(in.Service), err)
	}
	in.Metadata.Labels = maps.Clone(in.Metadata.Labels)
	return in, nil
}

func (m Metadata) validate() error {
	if m.Weight < 0 || m.Weight > MaxWeight {
		return fmt.Errorf("weight %d out of range 0..%d", m.Weight, MaxWeight)
	}
	if !m.Status.valid() {
		return fmt.Errorf("status %s is neither %q nor %q", quote.Bounded(string(m.Status)), StatusServing, StatusDraining)
	}
	for k := range m.Labels {
		if k == "" {
			return errors.New("label with an empty name")
		}
	}
	return nil
}

// DeriveID returns the instance id used when none is given: the address,
// which is unique among the instances clients can reach.
func DeriveID(addr string) string { return addr }

// ValidateService reports why name cannot be a service name, or nil. A
// name is 1 to 253 bytes of UTF-8 without '/', spaces, control characters
// (which could drive the terminal that prints it) or invisible formatting
// characters, and is neither "." nor "..".
func ValidateService(name string) error { return checkName("service name", name) }

// ValidateID reports why id cannot be an instance id, or nil. The rules
// are those of ValidateService.
func ValidateID(id string) error { return checkName("instance id", id) }

func checkName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("registry: %s is empty", what)
	case len(s) > maxNameBytes:
		return fmt.Errorf("registry: %s %s is longer than %d bytes", what, quote.Bounded(s), maxNameBytes)
	case s == "." || s == "..":
		return fmt.Errorf("registry: %s %q is a path element, not a name", what, s)
	case strings.Contains(s, "/"):
		return fmt.Errorf("registry: %s %s contains '/', which would change the key layout", what, quote.Bounded(s))
	case !utf8.ValidString(s):
		return fmt.Errorf("registry: %s %s is not valid UTF-8", what, quote.Bounded(s))
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("registry: %s %s contains a space, control or formatting character (%U)", what, quote.Bounded(s), r)
		}
	}
	return nil
}

// The value stored in etcd. Its top level is etcd's naming/endpoints
// Endpoint ({"Addr": ..., "Metadata": ...}), so etcd's own resolver and
// endpoints.Manager read it, and lodestar reads theirs.
type wireValue struct {
	Addr     string          `json:"Addr"`
	Metadata json.RawMessage `json:"Metadata,omitempty"`
}

type wireMeta struct {
	Version string            `json:"version,omitempty"`
	Region  string            `json:"region,omitempty"`
	Zone    string            `json:"zone,omitempty"`
	Weight  *int              `json:"weight,omitempty"`
	Status  Status            `json:"status,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// Encode returns the etcd value for addr and md.
func Encode(addr string, md Metadata) ([]byte, error) {
	w := md.Weight
	meta, err := json.Marshal(wireMeta{
		Version: md.Version, Region: md.Region, Zone: md.Zone,
		Weight: &w, Status: md.Status, Labels: md.Labels,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: encode metadata: %w", err)
	}
	return json.Marshal(wireValue{Addr: addr, Metadata: meta})
}

// Decode parses an etcd value written by a Registrar or by etcd's
// endpoints.Manager. Metadata that is absent, null or not a JSON object
// (etcd lets writers put anything there) gives the defaults: weight
// DefaultWeight, status serving. Known metadata fields of the wrong type,
// an empty address, or a value that is not JSON are errors.
func Decode(value []byte) (addr string, md Metadata, err error) {
	addr, meta, ok := quickDecode(value)
	if !ok {
		var w decodeValue
		if err := json.Unmarshal(value, &w); err != nil {
			var me *metadataError
			if errors.As(err, &me) {
				return "", Metadata{}, fmt.Errorf("registry: metadata of %s: %w", quote.Bounded(w.Addr), me.err)
			}
			return "", Metadata{}, fmt.Errorf("registry: value is not an endpoint JSON object: %w", err)
		}
		addr, meta = w.Addr, w.Metadata
	}
	if addr == "" {
		return "", Metadata{}, errors.New(`registry: value has no "Addr"`)
	}
	md = Metadata{Weight: DefaultWeight, Status: StatusServing}
	if !meta.present {
		return addr, md, nil
	}
	wm := &meta.wireMeta
	md.Version, md.Region, md.Zone, md.Labels = wm.Version, wm.Region, wm.Zone, wm.Labels
	if wm.Weight != nil {
		md.Weight = *wm.Weight
	}
	if wm.Status != "" {
		md.Status = wm.Status
	}
	if err := md.validate(); err != nil {
		return "", Metadata{}, fmt.Errorf("registry: metadata of %s: %w", quote.Bounded(addr), err)
	}
	return addr, md, nil
}

// decodeValue reads a value in one pass: Metadata that is not an object
// is ignored rather than copied and parsed again.
type decodeValue struct {
	Addr     string      `json:"Addr"`
	Metadata lenientMeta `json:"Metadata"`
}

type lenientMeta struct {
	wireMeta
	present bool
}

type metadataError struct{ err error }

func (e *metadataError) Error() string { return e.err.Error() }

func (m *lenientMeta) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '{' {
		return nil // null, a string, a number: another writer's metadata
	}
	m.present = true
	if err := json.Unmarshal(b, &m.wireMeta); err != nil {
		return &metadataError{err}
	}
	return nil
}
