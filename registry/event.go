package registry

import (
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventKind names what happened to a registrar.
type EventKind int

const (
	// EventRegistered: a lease was granted and every instance is in etcd
	// under it, for the first time.
	EventRegistered EventKind = iota + 1
	// EventLeaseLost: the lease ended (expired while etcd was unreachable,
	// revoked, or lost with etcd's data). The registrar is already
	// granting a new one; Err says why the old one ended.
	EventLeaseLost
	// EventReregistered: after a lost lease, a new one was granted and
	// every instance is back in etcd. Outage is the time from noticing the
	// loss to every instance being back.
	EventReregistered
	// EventRetrying: a grant, put or delete failed; the registrar tries
	// again after Backoff. Err says what failed. When etcd refused the
	// write of one instance alone (permission denied, say), Key names it:
	// the other instances are written meanwhile.
	EventRetrying
	// EventKeyLost: an instance key was deleted, taken over under another
	// lease, or given another value under the registrar's own lease, by
	// someone else while the lease was alive. The registrar puts it back,
	// except where another lease holds it.
	EventKeyLost
	// EventClosed: Close finished (Err is its result) or Orphan was
	// called.
	EventClosed
)

func (k EventKind) String() string {
	switch k {
	case EventRegistered:
		return "registered"
	case EventLeaseLost:
		return "lease-lost"
	case EventReregistered:
		return "re-registered"
	case EventRetrying:
		return "retrying"
	case EventKeyLost:
		return "key-lost"
	case EventClosed:
		return "closed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a state change of a Registrar, delivered to the handler given
// with WithEventHandler.
type Event struct {
	Kind      EventKind
	Time      time.Time
	Lease     clientv3.LeaseID // the lease concerned (the new one after a re-grant)
	Instances int              // instances held by the registrar
	Key       string           // the key concerned, for EventKeyLost and a refused write's EventRetrying
	Attempt   int              // consecutive failures, for EventRetrying
	Backoff   time.Duration    // wait before the next attempt, for EventRetrying
	Outage    time.Duration    // loss noticed → all back, for EventReregistered
	Err       error            // the cause, for lease-lost, retrying, key-lost and closed
}

func (e Event) String() string {
	s := fmt.Sprintf("%s lease=%x instances=%d", e.Kind, int64(e.Lease), e.Instances)
	if e.Key != "" {
		s += " key=" + e.Key
	}
	if e.Kind == EventRetrying {
		s += fmt.Sprintf(" attempt=%d backoff=%s", e.Attempt, e.Backoff)
	}
	if e.Outage > 0 {
		s += fmt.Sprintf(" outage=%s", e.Outage)
	}
	if e.Err != nil {
		s += " err=" + e.Err.Error()
	}
	return s
}
