package discovery

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/atomicfile"
	"github.com/lodestar-rpc/lodestar/internal/quote"
	"github.com/lodestar-rpc/lodestar/registry"
)

// snapshotFile is the on-disk form of a service's last good list.
type snapshotFile struct {
	Service   string            `json:"service"`
	Prefix    string            `json:"prefix"`
	Revision  int64             `json:"revision"`
	Saved     time.Time         `json:"saved"`
	Instances []snapshotElement `json:"instances"`
}

type snapshotElement struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

func (r *etcdResolver) snapshotPath() string {
	return filepath.Join(r.b.opts.snapshotDir, r.service+".json")
}

// saveSnapshot writes the list to the snapshot file atomically (write, then
// rename), logging a failure: a snapshot is a convenience, never a reason
// to stop serving.
func (r *etcdResolver) saveSnapshot() {
	r.snapDirty = false
	f := snapshotFile{Service: r.service, Prefix: r.b.opts.prefix, Revision: r.rev, Saved: time.Now().UTC()}
	for _, e := range r.sortedEntries() {
		if e.stale {
			continue
		}
		v, err := registry.Encode(e.attr.inst.Addr, e.attr.inst.Metadata)
		if err != nil {
			continue
		}
		f.Instances = append(f.Instances, snapshotElement{Key: e.key, Value: v})
	}
	if err := writeFileAtomic(r.snapshotPath(), f); err != nil {
		r.b.opts.logger.Warn("discovery: snapshot not saved", slog.String("service", r.service), slog.Any("err", err))
	}
}

func writeFileAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o644)
}

// loadSnapshot serves the list saved in the snapshot file, if there is one
// for this service, and reports whether it did.
func (r *etcdResolver) loadSnapshot() bool {
	if r.b.opts.snapshotDir == "" {
		return false
	}
	data, err := os.ReadFile(r.snapshotPath())
	if err != nil {
		if !os.IsNotExist(err) {
			r.b.opts.logger.Warn("discovery: snapshot unreadable", slog.String("service", r.service), slog.Any("err", err))
		}
		return false
	}
	snap, err := readSnapshot(data, r.b.opts.prefix, r.service, r.b.opts.maxInstances, r.b.opts.maxValueBytes)
	if err != nil {
		r.emit(Event{Kind: EventSkipped, Key: r.snapshotPath(), Err: err})
		return false
	}
	r.listing, r.listSkips = true, 0
	for _, err := range snap.skipped {
		r.skipped(r.snapshotPath(), err)
	}
	r.listing = false
	if n := r.listSkips - maxSkipEvents; n > 0 {
		r.emit(Event{Kind: EventSkipped, Key: r.snapshotPath(), Err: fmt.Errorf("discovery: %d more instances of the snapshot file skipped", n)})
	}
	for _, in := range snap.instances {
		r.internInstance(&in.inst)
		r.putInstance(in.key, in.inst, 0, true)
	}
	if len(r.entries) == 0 {
		return false
	}
	r.push()
	r.emit(Event{Kind: EventStale, Err: fmt.Errorf("discovery: etcd unreachable; serving %d instances from %s, saved %s at revision %d",
		len(r.entries), r.snapshotPath(), snap.saved.Format(time.RFC3339), snap.revision)})
	return true
}

// snapshot is a snapshot file as read: the instances that validate, and
// why the others did not.
type snapshot struct {
	revision  int64
	saved     time.Time
	instances []snapshotInstance
	skipped   []error
}

type snapshotInstance struct {
	key  string
	inst registry.Instance
}

// readSnapshot decodes a snapshot file of service under prefix. It keeps
// the instances that validate as a value from etcd would (at most
// maxInstances of them, each from a value of at most maxValue bytes) and
// says why it skipped the others. It fails if the file is not a snapshot
// of that service under that prefix. Its errors quote what the file holds
// by a bounded prefix only.
func readSnapshot(data []byte, prefix, service string, maxInstances, maxValue int) (snapshot, error) {
	var f snapshotFile
	if err := json.Unmarshal(data, &f); err != nil {
		return snapshot{}, fmt.Errorf("discovery: snapshot file: %w", quote.Err(err))
	}
	if f.Service != service || f.Prefix != prefix {
		return snapshot{}, fmt.Errorf("discovery: snapshot file is for %s under %s, not %s under %s",
			quote.Bounded(f.Service), quote.Bounded(f.Prefix), service, prefix)
	}
	snap := snapshot{revision: f.Revision, saved: f.Saved}
	servicePrefix := registry.ServicePrefix(prefix, service)
	seen := make(map[string]bool, min(len(f.Instances), maxInstances))
	for i, el := range f.Instances {
		if len(snap.instances) == maxInstances {
			snap.skipped = append(snap.skipped, fmt.Errorf("discovery: snapshot file: %d instances beyond the first %d (WithMaxInstances) left out",
				len(f.Instances)-i, maxInstances))
			break
		}
		inst, err := decodeInstance(servicePrefix, service, maxValue, el.Key, el.Value)
		if err == nil && seen[el.Key] {
			err = fmt.Errorf("discovery: snapshot file: key %s appears twice", quote.Bounded(el.Key))
		}
		if err != nil {
			snap.skipped = append(snap.skipped, err)
			continue
		}
		seen[el.Key] = true
		snap.instances = append(snap.instances, snapshotInstance{key: el.Key, inst: inst})
	}
	return snap, nil
}
