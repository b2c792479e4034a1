package faulttest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"

	"github.com/lodestar-rpc/lodestar/examples/proto/userpb"
)

// The two kinds of calls.
const (
	getUser    = userpb.UserService_GetUser_FullMethodName    // idempotent (NO_SIDE_EFFECTS in its proto): retried
	createUser = userpb.UserService_CreateUser_FullMethodName // not idempotent: never retried
)

// load makes calls back to back from a few goroutines until stopped, and
// counts them by kind, by outcome and by the instance that answered.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	gets, creates, getFails, createFails atomic.Int64

	mu      sync.Mutex
	served  map[string]int64 // successful calls per instance address
	waiters []servedWaiter
	failed  []*call // failed calls, in the order they failed
}

type servedWaiter struct {
	addr string
	n    int64
	ch   chan struct{} // closed once addr has served n calls
}

// startLoad runs getters goroutines calling GetUser and creators calling
// CreateUser on conn, each call bounded by a generous timeout so that a
// hang counts as a failure instead of stalling the test. Each call's
// context carries its *call, for a tracker installed on conn.
func startLoad(conn grpc.ClientConnInterface, getters, creators int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, served: map[string]int64{}}
	c := userpb.NewUserServiceClient(conn)
	worker := func(method string, do func(ctx context.Context, p *peer.Peer) error) {
		defer l.wg.Done()
		for ctx.Err() == nil {
			cl := &call{method: method}
			cctx, cancelCall := context.WithTimeout(context.WithValue(ctx, callKey{}, cl), 20*time.Second)
			var p peer.Peer
			cl.err = do(cctx, &p)
			cancelCall()
			if ctx.Err() != nil && cl.err != nil {
				return // stopped mid-call: not a failure of the system
			}
			l.record(cl, &p)
		}
	}
	for range getters {
		l.wg.Add(1)
		go worker(getUser, func(ctx context.Context, p *peer.Peer) error {
			_, err := c.GetUser(ctx, &userpb.UserRequest{UserId: "42"}, grpc.Peer(p))
			return err
		})
	}
	for i := range creators {
		l.wg.Add(1)
		go worker(createUser, func(ctx context.Context, p *peer.Peer) error {
			_, err := c.CreateUser(ctx, &userpb.CreateUserRequest{Name: fmt.Sprintf("user-%d", i)}, grpc.Peer(p))
			return err
		})
	}
	return l
}

func (l *load) record(cl *call, p *peer.Peer) {
	get := cl.method == getUser
	if get {
		l.gets.Add(1)
	} else {
		l.creates.Add(1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cl.err != nil {
		if get {
			l.getFails.Add(1)
		} else {
			l.createFails.Add(1)
		}
		l.failed = append(l.failed, cl)
		return
	}
	if p.Addr == nil {
		return
	}
	addr := p.Addr.String()
	l.served[addr]++
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if w.addr == addr && l.served[addr] >= w.n {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	l.waiters = kept
}

// stop ends the load and waits for its goroutines.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// servedBy returns how many calls addr has answered successfully.
func (l *load) servedBy(addr string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.served[addr]
}

// waitServed waits until addr has answered n calls successfully in all.
func (l *load) waitServed(ctx context.Context, addr string, n int64) error {
	l.mu.Lock()
	if l.served[addr] >= n {
		l.mu.Unlock()
		return nil
	}
	w := servedWaiter{addr: addr, n: n, ch: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s served %d calls, waiting for %d: %w", addr, l.servedBy(addr), n, ctx.Err())
	}
}

// failures returns the failed calls so far.
func (l *load) failures() []*call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*call(nil), l.failed...)
}

func (l *load) String() string {
	return fmt.Sprintf("%d GetUser (%d failed), %d CreateUser (%d failed)",
		l.gets.Load(), l.getFails.Load(), l.creates.Load(), l.createFails.Load())
}

type callKey struct{}

type attemptKey struct{}

// call is one call the load made, and its attempts on the wire as grpc
// reports them (a retried call has several).
type call struct {
	method   string
	err      error      // written by the calling goroutine before record
	attempts []*attempt // guarded by the tracker's mu
}

// attempt is one try of a call. sent and ended are the tracker's sequence
// numbers when its headers went to an instance and when it ended; 0 means
// not (yet).
type attempt struct {
	method      string
	addr        string
	sent, ended uint64
}

// tracker is a grpc stats handler that records, for the load's calls,
// which instance each attempt went to and when, in a sequence shared with
// the test's own marks (mark), so the test can tell which calls were on
// the wire to an instance when it was killed.
type tracker struct {
	mu      sync.Mutex
	seq     uint64
	creates []*attempt      // every CreateUser attempt
	onAddr  map[wireKey]int // attempts sent and not ended
	waiters []wireWaiter    // see waitOnWire
}

// wireKey names the attempts of one method to one instance.
type wireKey struct{ addr, method string }

type wireWaiter struct {
	cond func(on map[wireKey]int) bool
	ch   chan struct{} // closed once cond holds
}

var _ stats.Handler = (*tracker)(nil)

func newTracker() *tracker {
	return &tracker{onAddr: map[wireKey]int{}}
}

// mark returns the next number in the sequence: attempts sent before it
// have smaller numbers, attempts sent after it larger ones.
func (tr *tracker) mark() uint64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.seq++
	return tr.seq
}

func (tr *tracker) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	cl, ok := ctx.Value(callKey{}).(*call)
	if !ok {
		return ctx // not one of the load's calls (a health check)
	}
	a := &attempt{method: info.FullMethodName}
	tr.mu.Lock()
	cl.attempts = append(cl.attempts, a)
	if info.FullMethodName == createUser {
		tr.creates = append(tr.creates, a)
	}
	tr.mu.Unlock()
	return context.WithValue(ctx, attemptKey{}, a)
}

func (tr *tracker) HandleRPC(ctx context.Context, s stats.RPCStats) {
	a, ok := ctx.Value(attemptKey{}).(*attempt)
	if !ok {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	switch s := s.(type) {
	case *stats.OutHeader:
		if s.RemoteAddr != nil {
			tr.seq++
			a.addr, a.sent = s.RemoteAddr.String(), tr.seq
			tr.onWire(wireKey{a.addr, a.method}, 1)
		}
	case *stats.End:
		tr.seq++
		a.ended = tr.seq
		if a.sent != 0 {
			tr.onWire(wireKey{a.addr, a.method}, -1)
		}
	}
}

// onWire counts an attempt sent (+1) or ended (-1), under tr.mu.
func (tr *tracker) onWire(k wireKey, d int) {
	tr.onAddr[k] += d
	kept := tr.waiters[:0]
	for _, w := range tr.waiters {
		if w.cond(tr.onAddr) {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	tr.waiters = kept
}

// waitOnWire waits until cond holds for the numbers of attempts on the
// wire, by instance address and method; what describes it in an error.
func (tr *tracker) waitOnWire(ctx context.Context, what string, cond func(on map[wireKey]int) bool) error {
	w := wireWaiter{cond: cond, ch: make(chan struct{})}
	tr.mu.Lock()
	if cond(tr.onAddr) {
		tr.mu.Unlock()
		return nil
	}
	tr.waiters = append(tr.waiters, w)
	tr.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s on the wire: %w", what, ctx.Err())
	}
}

func (tr *tracker) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (tr *tracker) HandleConn(context.Context, stats.ConnStats) {}

// createsOnWire counts the CreateUser attempts sent to addr that were on
// the wire at from (sent before, not ended), and those sent to it from
// then to until.
func (tr *tracker) createsOnWire(addr string, from, until uint64) (atFrom, sentAfter int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, a := range tr.creates {
		switch {
		case a.addr != addr || a.sent == 0:
		case a.sent < from && (a.ended == 0 || a.ended > from):
			atFrom++
		case a.sent > from && a.sent < until:
			sentAfter++
		}
	}
	return atFrom, sentAfter
}

// lastAttempt returns the call's last attempt that reached an instance.
func (tr *tracker) lastAttempt(cl *call) (attempt, bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for i := len(cl.attempts) - 1; i >= 0; i-- {
		if a := cl.attempts[i]; a.sent != 0 {
			return *a, true
		}
	}
	return attempt{}, false
}

// errShort is an error's message cut to a bounded length for the log.
func errShort(err error) string {
	if err == nil {
		return "<nil>"
	}
	s := err.Error()
	if len(s) > 200 {
		s = fmt.Sprintf("%s... (%d bytes)", s[:200], len(s))
	}
	return s
}
