package discovery

// Interning: instances of a fleet share their metadata strings and label
// sets, and the tables are pruned of what no instance uses any more.

import (
	"maps"
	"slices"
	"strings"

	"github.com/lodestar-rpc/lodestar/registry"
)

// internInstance makes the instance's metadata strings and label set the
// shared ones.
func (r *etcdResolver) internInstance(inst *registry.Instance) {
	md := &inst.Metadata
	md.Version, md.Region, md.Zone = r.intern(md.Version), r.intern(md.Region), r.intern(md.Zone)
	md.Status = registry.Status(r.intern(string(md.Status)))
	if len(md.Labels) > 0 {
		md.Labels = r.internLabels(md.Labels)
	}
}

// internLabels returns one shared map per distinct label set: instances of
// a fleet mostly carry the same few sets, and a map costs hundreds of bytes.
// The maps are never modified (Instance documents them as read-only).
func (r *etcdResolver) internLabels(labels map[string]string) map[string]string {
	id := labelSetID(labels)
	if m, ok := r.labelSets[id]; ok {
		return m
	}
	m := make(map[string]string, len(labels))
	for k, v := range labels {
		m[r.intern(k)] = r.intern(v)
	}
	r.labelSets[id] = m
	return m
}

// labelSetID is the content of a label set as one string.
func labelSetID(labels map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// maybePruneIntern prunes the intern tables once they have grown past
// twice their size after the last pruning, plus the larger of internSlack
// and the number of instances: a long-lived client follows fleets that
// churn without end, and the pruning, a walk over the instances, then
// costs O(1) per value interned.
func (r *etcdResolver) maybePruneIntern() {
	if len(r.strs)+len(r.labelSets) > 2*r.internBase+max(internSlack, len(r.entries)) {
		r.pruneIntern()
	}
}

// pruneIntern drops the interned strings and label sets no instance uses
// any more (versions of past deployments, labels of instances gone).
func (r *etcdResolver) pruneIntern() {
	strs := make(map[string]string, len(r.strs)/2)
	sets := make(map[string]map[string]string, len(r.labelSets)/2)
	keep := func(s string) {
		if s != "" {
			strs[s] = s
		}
	}
	for _, e := range r.entries {
		md := &e.attr.inst.Metadata
		keep(md.Version)
		keep(md.Region)
		keep(md.Zone)
		keep(string(md.Status))
		if len(md.Labels) > 0 {
			sets[labelSetID(md.Labels)] = md.Labels
			for k, v := range md.Labels {
				keep(k)
				keep(v)
			}
		}
	}
	r.strs, r.labelSets = strs, sets
	r.internBase = len(strs) + len(sets)
}

// internSlack is the least the intern tables may grow beyond twice their
// pruned size before they are pruned again.
const internSlack = 256

func (r *etcdResolver) intern(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := r.strs[s]; ok {
		return v
	}
	r.strs[s] = s
	return s
}
