package discovery

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/atomicfile"
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
	var f snapshotFile
	if err := json.Unmarshal(data, &f); err != nil {
		r.emit(Event{Kind: EventSkipped, Key: r.snapshotPath(), Err: fmt.Errorf("discovery: snapshot file: %w", err)})
		return false
	}
	if f.Service != r.service || f.Prefix != r.b.opts.prefix {
		r.emit(Event{Kind: EventSkipped, Key: r.snapshotPath(), Err: fmt.Errorf("discovery: snapshot file is for %s under %s", f.Service, f.Prefix)})
		return false
	}
	for _, el := range f.Instances {
		r.put(el.Key, el.Value, 0, true)
	}
	if len(r.entries) == 0 {
		return false
	}
	r.push()
	r.emit(Event{Kind: EventStale, Err: fmt.Errorf("discovery: etcd unreachable; serving %d instances from %s, saved %s at revision %d",
		len(r.entries), r.snapshotPath(), f.Saved.Format(time.RFC3339), f.Revision)})
	return true
}
