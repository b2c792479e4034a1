package discovery

import (
	"fmt"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// EventKind names what happened to a resolver.
type EventKind int

const (
	// EventListed: the full list was read from etcd (at start, after a
	// compaction, or after an etcd reset).
	EventListed EventKind = iota + 1
	// EventUpdated: watched changes were applied and pushed to grpc.
	EventUpdated
	// EventListFailed: etcd could not be listed; the last known list stays
	// in force and the resolver retries.
	EventListFailed
	// EventWatchBroken: the watch ended (leader lost, etcd unreachable,
	// compaction); the resolver resumes it. The list stays in force.
	EventWatchBroken
	// EventReset: etcd answered without the data it had (a wiped or new
	// cluster). Known instances are kept for the reset grace period.
	EventReset
	// EventSkipped: a value under the service's prefix did not parse; the
	// instance is left out, the others are unaffected.
	EventSkipped
	// EventStale: etcd could not be reached at start; the list was loaded
	// from the snapshot file.
	EventStale
	// EventRefused: grpc's UpdateState returned an error (its balancer
	// refused the list). The resolver offers the list again after a
	// backoff, or at the next change.
	EventRefused
	// EventLimited: the service has more instances than WithMaxInstances
	// lets a resolver keep; Changes says how many were left out (by the
	// list, or by the batch of watched changes the event follows).
	EventLimited
)

func (k EventKind) String() string {
	switch k {
	case EventListed:
		return "listed"
	case EventUpdated:
		return "updated"
	case EventListFailed:
		return "list-failed"
	case EventWatchBroken:
		return "watch-broken"
	case EventReset:
		return "reset"
	case EventSkipped:
		return "skipped"
	case EventStale:
		return "stale"
	case EventRefused:
		return "refused"
	case EventLimited:
		return "limited"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a state change of a resolver, delivered to the handler given with
// WithEventHandler.
type Event struct {
	Kind      EventKind
	Time      time.Time
	Service   string
	Instances int    // instances known after the event, draining and filtered ones included; for EventRefused, those in the refused list
	Changes   int    // instances added, changed or removed, for EventUpdated; instances left out, for EventLimited
	Revision  int64  // etcd revision the list is at
	Key       string // the etcd key concerned, in full; String and the log quote a bounded prefix
	Err       error
}

func (e Event) String() string {
	s := fmt.Sprintf("%s service=%s instances=%d rev=%d", e.Kind, e.Service, e.Instances, e.Revision)
	if e.Changes > 0 {
		s += fmt.Sprintf(" changes=%d", e.Changes)
	}
	if e.Key != "" {
		s += " key=" + quote.Bounded(e.Key)
	}
	if e.Err != nil {
		s += " err=" + e.Err.Error()
	}
	return s
}
