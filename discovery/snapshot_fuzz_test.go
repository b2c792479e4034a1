package discovery

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lodestar-rpc/lodestar/internal/hostport"
	"github.com/lodestar-rpc/lodestar/registry"
)

// snapshotSeed returns a snapshot file of n instances of "user" as
// saveSnapshot writes it.
func snapshotSeed(t testing.TB, n int) []byte {
	f := snapshotFile{Service: "user", Prefix: registry.DefaultPrefix, Revision: 42, Saved: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	for i := range n {
		v, err := registry.Encode(addr(i), registry.Metadata{Version: "v1", Zone: "z", Weight: 7, Status: registry.StatusServing, Labels: map[string]string{"k": "v"}})
		if err != nil {
			t.Fatal(err)
		}
		f.Instances = append(f.Instances, snapshotElement{Key: registry.Key(registry.DefaultPrefix, "user", addr(i)), Value: v})
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// FuzzSnapshot: reading a snapshot file never panics; every instance it
// keeps validates as one read from etcd would (a key of the service, an
// address of host:port, a known status, a weight in range), at most the
// limit of them; and no error, of the file or of an instance, is longer
// than 1 KiB, whatever the file holds.
func FuzzSnapshot(f *testing.F) {
	valid := snapshotSeed(f, 3)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])                 // truncated
	f.Add([]byte("\x00\xffnot json at all{{{")) // garbage
	f.Add([]byte(`{"service":"user","prefix":"/services","revision":1e999,"instances":[]}`))
	f.Add([]byte(`{"service":"user","prefix":"/services","revision":` + strings.Repeat("9", 4096) + `}`))
	f.Add([]byte(`{"service":"user","prefix":"/services","saved":"` + strings.Repeat("x", 4096) + `"}`))
	f.Add([]byte(`{"service":"` + strings.Repeat("\x1b[2J", 1000) + `","prefix":"/services"}`))
	f.Add(snapshotSeed(f, 40)) // more instances than the limit below
	f.Add([]byte(`{"service":"user","prefix":"/services","instances":[` +
		`{"key":"/services/user/a","value":{"Addr":"` + strings.Repeat("h", 4096) + `"}},` +
		`{"key":"/services/user/b","value":{"Addr":"127.0.0.1:1","Metadata":{"weight":` + strings.Repeat("1", 4096) + `}}},` +
		`{"key":"/services/other/c","value":{"Addr":"127.0.0.1:2"}},` +
		`{"key":"/services/user/d/e","value":{"Addr":"127.0.0.1:3"}},` +
		`{"key":"/services/user/f","value":"` + strings.Repeat("s", 4096) + `"},` +
		`{"key":"/services/user/g","value":{"Addr":"127.0.0.1:4"}},` +
		`{"key":"/services/user/g","value":{"Addr":"127.0.0.1:5"}}]}`))
	const maxInstances, maxValue = 25, 2048
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, err := readSnapshot(data, registry.DefaultPrefix, "user", maxInstances, maxValue)
		if err != nil {
			if len(err.Error()) > 1024 {
				t.Fatalf("error of %d bytes: %.200q", len(err.Error()), err.Error())
			}
			return
		}
		if len(snap.instances) > maxInstances {
			t.Fatalf("%d instances kept, limit %d", len(snap.instances), maxInstances)
		}
		for _, err := range snap.skipped {
			if len(err.Error()) > 1024 {
				t.Fatalf("skip reason of %d bytes: %.200q", len(err.Error()), err.Error())
			}
		}
		keys := make(map[string]bool)
		for _, in := range snap.instances {
			md := in.inst.Metadata
			switch {
			case keys[in.key]:
				t.Fatalf("key %q kept twice", in.key)
			case in.inst.Service != "user" || in.key != registry.Key(registry.DefaultPrefix, "user", in.inst.ID) || strings.Contains(in.inst.ID, "/") || in.inst.ID == "":
				t.Fatalf("instance %+v kept under key %q", in.inst, in.key)
			case hostport.Syntax(in.inst.Addr) != nil:
				t.Fatalf("instance %q kept with address %q: %v", in.key, in.inst.Addr, hostport.Syntax(in.inst.Addr))
			case md.Status != registry.StatusServing && md.Status != registry.StatusDraining:
				t.Fatalf("instance %q kept with status %q", in.key, md.Status)
			case md.Weight < 0 || md.Weight > registry.MaxWeight:
				t.Fatalf("instance %q kept with weight %d", in.key, md.Weight)
			}
			keys[in.key] = true
		}
	})
}

// TestSnapshotSeedsRead: the valid seed keeps all its instances; the
// seed of 40 keeps 25 and says why not the rest; the mixed one keeps only
// its one good instance and gives a reason for each other.
func TestSnapshotSeedsRead(t *testing.T) {
	snap, err := readSnapshot(snapshotSeed(t, 3), registry.DefaultPrefix, "user", 25, 2048)
	if err != nil || len(snap.instances) != 3 || len(snap.skipped) != 0 || snap.revision != 42 {
		t.Fatalf("valid snapshot: %d instances, skipped %v, revision %d, err %v", len(snap.instances), snap.skipped, snap.revision, err)
	}
	snap, err = readSnapshot(snapshotSeed(t, 40), registry.DefaultPrefix, "user", 25, 2048)
	if err != nil || len(snap.instances) != 25 || len(snap.skipped) != 1 || !strings.Contains(snap.skipped[0].Error(), "15 instances beyond the first 25") {
		t.Fatalf("snapshot of 40: %d instances, skipped %v, err %v", len(snap.instances), snap.skipped, err)
	}
	_, err = readSnapshot([]byte(`{"service":"`+strings.Repeat("\x1b", 5000)+`","prefix":"/services"}`), registry.DefaultPrefix, "user", 25, 2048)
	if err == nil || len(err.Error()) > 300 || strings.Contains(err.Error(), "\x1b") {
		t.Fatalf("snapshot of another service: %.300q", fmt.Sprint(err))
	}
}
