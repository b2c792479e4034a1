package etcdtest

// Stopping and restarting members: a crash, a restart with the data, and
// restarts without it (as a new member of the cluster, or as the same
// one-member cluster with its cluster id).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lodestar-rpc/lodestar/internal/embedetcd"
)

// Stop stops the member abruptly, as in a crash (a leader does not hand
// leadership over; requests in flight fail), keeping its data directory and
// URLs. Stopping a stopped member does nothing. Clients' connections are cut
// at once, open streams (watches) included.
func (m *Member) Stop(t testing.TB) {
	t.Helper()
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
}

// Restart stops the member if it runs, starts it again with the same URLs and
// its data and returns once it is ready. In a multi-member cluster that needs
// a quorum of members running, counting this one.
func (m *Member) Restart(t testing.TB) {
	t.Helper()
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := m.start(ctx); err != nil {
		t.Fatalf("etcdtest: restarting %s: %v", m.name, err)
	}
}

// RestartWiped stops the member if it runs, deletes its data and starts it
// with the same URLs, returning once it is ready. In a one-member cluster the
// result is a brand-new, empty cluster. In a larger cluster the member is
// removed from the cluster and added back (MemberRemove, MemberAdd, through
// the other running members, which must form a quorum with it), so that it
// rejoins empty, with a new member ID, and catches up from the leader.
func (m *Member) RestartWiped(t testing.TB) {
	t.Helper()
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	var cfg embedetcd.MemberConfig
	if m.c.Size() == 1 {
		m.c.mu.Lock()
		m.c.wipes++
		token := m.c.token + "-wipe" + strconv.Itoa(m.c.wipes)
		m.c.mu.Unlock()
		cfg = m.c.memberConfig(m, "", embedetcd.ClusterStateNew, token)
	} else {
		initial, err := m.replaceInCluster(ctx)
		if err != nil {
			t.Fatalf("etcdtest: re-adding %s: %v", m.name, err)
		}
		cfg = m.c.memberConfig(m, initial, embedetcd.ClusterStateExisting, m.c.token)
	}
	if err := os.RemoveAll(m.dir); err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	m.mu.Lock()
	m.cfg = cfg
	m.mu.Unlock()

	startCtx, cancelStart := context.WithTimeout(context.Background(), startTimeout)
	defer cancelStart()
	if err := m.start(startCtx); err != nil {
		t.Fatalf("etcdtest: restarting %s wiped: %v", m.name, err)
	}
}

// RestartEmpty stops the member of a one-member cluster if it runs, deletes
// its data and starts it again with its usual configuration (same name,
// URLs and cluster token), returning once it is ready: the cluster comes
// back empty with the same cluster id, as a server given a new disk and an
// unchanged configuration does. Its revisions start again from 1, so
// writes can take it past the revision a client last saw before the wipe.
func (m *Member) RestartEmpty(t testing.TB) {
	t.Helper()
	if m.c.Size() != 1 {
		t.Fatalf("etcdtest: RestartEmpty needs a one-member cluster, not %d members", m.c.Size())
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(m.dir); err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	m.mu.Lock()
	m.cfg = m.c.memberConfig(m, "", embedetcd.ClusterStateNew, m.c.token)
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := m.start(ctx); err != nil {
		t.Fatalf("etcdtest: restarting %s empty: %v", m.name, err)
	}
}

// replaceInCluster removes the (stopped) member from the cluster and adds it
// back with the same peer URL, through a client to the other running
// members. It returns the initial-cluster string to join with.
func (m *Member) replaceInCluster(ctx context.Context) (string, error) {
	var eps []string
	for _, o := range m.c.members {
		if o != m && o.Running() {
			eps = append(eps, o.Endpoint())
		}
	}
	if len(eps) == 0 {
		return "", errors.New("no other member is running")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: dialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return "", err
	}
	defer cli.Close()

	// Membership changes fail while there is no leader (e.g. right after the
	// leader was stopped) and are not retried by the client: retry here.
	var members []*etcdserverpb.Member
	err = retry(ctx, func(ctx context.Context) (bool, error) {
		list, err := cli.MemberList(ctx)
		if err != nil {
			return false, err
		}
		for _, mem := range list.Members {
			if slices.Contains(mem.PeerURLs, m.peerURL) {
				_, err := cli.MemberRemove(ctx, mem.ID)
				if err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
					return false, err
				}
			}
		}
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("MemberRemove: %w", err)
	}
	err = retry(ctx, func(ctx context.Context) (bool, error) {
		resp, err := cli.MemberAdd(ctx, []string{m.peerURL})
		if err == nil {
			members = resp.Members
			return true, nil
		}
		if !errors.Is(err, rpctypes.ErrPeerURLExist) {
			return false, err
		}
		// An earlier attempt succeeded but its response was lost.
		list, err := cli.MemberList(ctx)
		if err != nil {
			return false, err
		}
		members = list.Members
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("MemberAdd: %w", err)
	}

	var initial []string
	for _, mem := range members {
		name := mem.Name
		for _, o := range m.c.members {
			if slices.Contains(mem.PeerURLs, o.peerURL) {
				name = o.name
			}
		}
		if name == "" {
			name = fmt.Sprintf("%x", mem.ID)
		}
		for _, u := range mem.PeerURLs {
			initial = append(initial, name+"="+u)
		}
	}
	return strings.Join(initial, ","), nil
}
