package lodestar_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lodestar-rpc/lodestar"
	"github.com/lodestar-rpc/lodestar/examples/proto/chatpb"
	"github.com/lodestar-rpc/lodestar/examples/proto/greeterpb"
	"github.com/lodestar-rpc/lodestar/examples/proto/userpb"
	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
	"github.com/lodestar-rpc/lodestar/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// userService answers with the instance's address and counts calls.
type userService struct {
	userpb.UnimplementedUserServiceServer
	addr    func() string
	calls   atomic.Int64
	creates atomic.Int64
	// hang, when set, keeps up to 3 calls of each kind in the handler
	// until the server dies, counting them in heldGets and heldCreates.
	hang                  atomic.Bool
	heldGets, heldCreates atomic.Int64
	// changed gets a signal (if it has room) whenever a counter above
	// changed, for waits on them.
	changed chan struct{}
}

func newUserService(addr func() string) *userService {
	return &userService{addr: addr, changed: make(chan struct{}, 1)}
}

// signal says a counter changed.
func (u *userService) signal() {
	select {
	case u.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until ok holds, checking it whenever a counter changes,
// for at most 30 s; what describes the wait in the failure.
func (u *userService) waitFor(t *testing.T, ok func() bool, what func() string) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for !ok() {
		select {
		case <-u.changed:
		case <-deadline.C:
			t.Fatalf("after 30 s: %s", what())
		}
	}
}

// hold keeps the call until ctx ends if hang is set and fewer than 3
// calls of its kind are held already (so the callers are never all stuck
// on one instance).
func (u *userService) hold(ctx context.Context, n *atomic.Int64) error {
	if !u.hang.Load() {
		return nil
	}
	if n.Add(1) > 3 {
		n.Add(-1)
		return nil
	}
	u.signal()
	<-ctx.Done()
	return ctx.Err()
}

func (u *userService) GetUser(ctx context.Context, r *userpb.UserRequest) (*userpb.UserResponse, error) {
	u.calls.Add(1)
	u.signal()
	if err := u.hold(ctx, &u.heldGets); err != nil {
		return nil, err
	}
	return &userpb.UserResponse{Success: true, Message: u.addr(), Data: &userpb.User{UserId: r.UserId}}, nil
}

func (u *userService) CreateUser(ctx context.Context, r *userpb.CreateUserRequest) (*userpb.UserResponse, error) {
	u.calls.Add(1)
	u.signal()
	if err := u.hold(ctx, &u.heldCreates); err != nil {
		return nil, err
	}
	u.creates.Add(1)
	return &userpb.UserResponse{Success: true, Message: u.addr(), Data: &userpb.User{Name: r.Name, Email: r.Email}}, nil
}

type greeter struct {
	greeterpb.UnimplementedGreeterServer
}

func (greeter) SayHello(_ context.Context, r *greeterpb.HelloRequest) (*greeterpb.HelloResponse, error) {
	if r.Name == "panic" {
		panic("greeter told to panic")
	}
	return &greeterpb.HelloResponse{Message: "Hello " + r.Name}, nil
}

type chat struct {
	chatpb.UnimplementedChatServiceServer
	addr func() string
}

func (c chat) SendMessage(st chatpb.ChatService_SendMessageServer) error {
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.Send(&chatpb.Message{Room: m.Room, From: "echo", Text: m.Text}); err != nil {
			return err
		}
	}
}

func (c chat) Subscribe(r *chatpb.SubscribeRequest, st chatpb.ChatService_SubscribeServer) error {
	for i := range r.Count {
		if err := st.Send(&chatpb.Message{Room: r.Room, Text: fmt.Sprint(i)}); err != nil {
			return err
		}
	}
	return nil
}

func (c chat) Upload(st chatpb.ChatService_UploadServer) error {
	n := int32(0)
	for {
		_, err := st.Recv()
		if err == io.EOF {
			return st.SendAndClose(&chatpb.UploadSummary{Messages: n, ServedBy: c.addr()})
		}
		if err != nil {
			return err
		}
		n++
	}
}

// instance is one running lodestar server.
type instance struct {
	srv  *lodestar.Server
	user *userService
	done chan error
	stop context.CancelFunc
}

func startInstance(t *testing.T, endpoints []string, opts ...lodestar.Option) *instance {
	t.Helper()
	opts = append([]lodestar.Option{lodestar.WithEtcdEndpoints(endpoints...), lodestar.WithTTL(2 * time.Second)}, opts...)
	srv, err := lodestar.NewServer("user", opts...)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{srv: srv, user: newUserService(srv.Addr), done: make(chan error, 1)}
	userpb.RegisterUserServiceServer(srv, in.user)
	greeterpb.RegisterGreeterServer(srv, greeter{})
	chatpb.RegisterChatServiceServer(srv, chat{addr: srv.Addr})
	ctx, cancel := context.WithCancel(context.Background())
	in.stop = cancel
	go func() { in.done <- srv.Serve(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-in.done:
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { cancel(); <-in.done })
	return in
}

// shutdown stops the instance gracefully (as on SIGTERM) and waits.
func (in *instance) shutdown(t *testing.T) {
	t.Helper()
	in.stop()
	if err := <-in.done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	in.done <- nil // for the cleanup
}

func dial(t *testing.T, endpoints []string, opts ...lodestar.Option) *lodestar.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := lodestar.Dial(ctx, "user", append([]lodestar.Option{lodestar.WithEtcdEndpoints(endpoints...), lodestar.WithWaitForReady()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// load calls GetUser and CreateUser back to back until stopped.
type load struct {
	gets, getFails, creates, createFails atomic.Int64
	lastErr, lastGetErr                  atomic.Value
	cancel                               context.CancelFunc
	wg                                   sync.WaitGroup
}

func startLoad(conn *lodestar.Conn, workers int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	c := userpb.NewUserServiceClient(conn)
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				cctx, ccancel := context.WithTimeout(ctx, 20*time.Second) // bounds a hang only
				var err error
				create := (i+w)%4 == 0
				if create {
					_, err = c.CreateUser(cctx, &userpb.CreateUserRequest{Name: "n", Email: "e"})
				} else {
					_, err = c.GetUser(cctx, &userpb.UserRequest{UserId: fmt.Sprint(i)})
				}
				ccancel()
				if ctx.Err() != nil {
					return
				}
				switch {
				case create && err != nil:
					l.createFails.Add(1)
				case create:
					l.creates.Add(1)
				case err != nil:
					l.getFails.Add(1)
					l.lastGetErr.Store(err.Error())
				default:
					l.gets.Add(1)
				}
				if err != nil {
					l.lastErr.Store(err.Error())
				}
			}
		}()
	}
	return l
}

func (l *load) stop() { l.cancel(); l.wg.Wait() }

func (l *load) String() string {
	return fmt.Sprintf("GetUser %d ok / %d failed, CreateUser %d ok / %d failed (last error: %v)",
		l.gets.Load(), l.getFails.Load(), l.creates.Load(), l.createFails.Load(), l.lastErr.Load())
}

// waitCalls waits until in has served n more calls.
func waitCalls(t *testing.T, in *instance, n int64) {
	t.Helper()
	start := in.user.calls.Load()
	in.user.waitFor(t, func() bool { return in.user.calls.Load() >= start+n },
		func() string {
			return fmt.Sprintf("%s served %d calls, want %d", in.srv.Addr(), in.user.calls.Load()-start, n)
		})
}

func TestServeRegistersAndShutdownDeregisters(t *testing.T) {
	c := etcdtest.New(t)
	in := startInstance(t, c.Endpoints())
	cli := c.Client(t)
	key := "/services/user/" + in.srv.Addr()
	resp, err := cli.Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("%s after Ready: %v, %v", key, resp, err)
	}
	conn := dial(t, c.Endpoints())
	r, err := userpb.NewUserServiceClient(conn).GetUser(context.Background(), &userpb.UserRequest{UserId: "7"})
	if err != nil || r.Message != in.srv.Addr() || r.Data.UserId != "7" {
		t.Fatalf("GetUser: %v, %v", r, err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	wch := cli.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1))
	in.shutdown(t)
	// etcd saw the instance drain first, then go.
	var seen []string
	for wr := range wch {
		for _, ev := range wr.Events {
			switch {
			case ev.Type == clientv3.EventTypeDelete:
				seen = append(seen, "delete")
			case containsDraining(ev.Kv.Value):
				seen = append(seen, "draining")
			default:
				seen = append(seen, "put")
			}
		}
		if len(seen) > 0 && seen[len(seen)-1] == "delete" {
			break
		}
	}
	if fmt.Sprint(seen) != "[draining delete]" {
		t.Errorf("etcd saw %v during Shutdown, want [draining delete]", seen)
	}
}

// TestStatusSetBeforeServeStands: an instance NOT_SERVING before Serve
// registers as draining, and SERVING later undrains it.
func TestStatusSetBeforeServeStands(t *testing.T) {
	c := etcdtest.New(t)
	srv, err := lodestar.NewServer("user", lodestar.WithEtcdEndpoints(c.Endpoints()...), lodestar.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.SetServingStatus(ctx, "", healthpb.HealthCheckResponse_NOT_SERVING); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	defer func() { stop(); <-done }()
	<-srv.Ready()
	cli := c.Client(t)
	get := func() string {
		resp, err := cli.Get(ctx, "/services/user/"+srv.Addr())
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("registration: %v, %v", resp, err)
		}
		return string(resp.Kvs[0].Value)
	}
	if v := get(); !containsDraining([]byte(v)) {
		t.Errorf("registered as %s, want draining", v)
	}
	if err := srv.SetServingStatus(ctx, "", healthpb.HealthCheckResponse_SERVING); err != nil {
		t.Fatal(err)
	}
	if v := get(); containsDraining([]byte(v)) {
		t.Errorf("still draining after SERVING: %s", v)
	}
}

func TestAllFourCallShapesThroughDial(t *testing.T) {
	c := etcdtest.New(t)
	startInstance(t, c.Endpoints())
	conn := dial(t, c.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	hello, err := greeterpb.NewGreeterClient(conn).SayHello(ctx, &greeterpb.HelloRequest{Name: "lodestar"})
	if err != nil || hello.Message != "Hello lodestar" {
		t.Fatalf("unary: %v, %v", hello, err)
	}
	cc := chatpb.NewChatServiceClient(conn)
	sub, err := cc.Subscribe(ctx, &chatpb.SubscribeRequest{Room: "r", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := sub.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("server stream: %v", err)
		}
		got = append(got, m.Text)
	}
	if fmt.Sprint(got) != "[0 1 2]" {
		t.Errorf("server stream: %v", got)
	}
	up, err := cc.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := up.Send(&chatpb.Message{Text: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := up.CloseAndRecv()
	if err != nil || sum.Messages != 5 {
		t.Fatalf("client stream: %v, %v", sum, err)
	}
	bidi, err := cc.SendMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"hi", "there"} {
		if err := bidi.Send(&chatpb.Message{Room: "r", Text: text}); err != nil {
			t.Fatal(err)
		}
		m, err := bidi.Recv()
		if err != nil || m.Text != text {
			t.Fatalf("bidi: %v, %v", m, err)
		}
	}
	bidi.CloseSend()
	if _, err := bidi.Recv(); err != io.EOF {
		t.Fatalf("bidi end: %v", err)
	}
}

// TestRollingRestartZeroFailedCalls restarts three instances one after
// another under continuous calls.
func TestRollingRestartZeroFailedCalls(t *testing.T) {
	c := etcdtest.New(t)
	ins := []*instance{startInstance(t, c.Endpoints()), startInstance(t, c.Endpoints()), startInstance(t, c.Endpoints())}
	conn := dial(t, c.Endpoints())
	l := startLoad(conn, 4)
	for i, old := range ins {
		waitCalls(t, old, 20)
		repl := startInstance(t, c.Endpoints())
		old.shutdown(t)
		ins[i] = repl
	}
	for _, in := range ins {
		waitCalls(t, in, 20)
	}
	l.stop()
	t.Logf("rolling restart of 3 instances: %s", l)
	if l.getFails.Load()+l.createFails.Load() != 0 {
		t.Errorf("calls failed: %s", l)
	}
}

// TestNotServingDrainsAndServingResumes: health drives the registration.
func TestNotServingDrainsAndServingResumes(t *testing.T) {
	c := etcdtest.New(t)
	a, b := startInstance(t, c.Endpoints()), startInstance(t, c.Endpoints())
	conn := dial(t, c.Endpoints())
	l := startLoad(conn, 2)
	defer l.stop()
	waitCalls(t, a, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.srv.SetServingStatus(ctx, "", healthpb.HealthCheckResponse_NOT_SERVING); err != nil {
		t.Fatal(err)
	}
	// The registration says draining.
	resp, err := c.Client(t).Get(ctx, "/services/user/"+a.srv.Addr())
	if err != nil || len(resp.Kvs) != 1 || !containsDraining(resp.Kvs[0].Value) {
		t.Fatalf("registration after NOT_SERVING: %v, %v", resp.Kvs, err)
	}
	// Calls stop reaching a: 200 calls in a row go to b.
	for streak, tries := 0, 0; streak < 200; tries++ {
		if tries > 20000 {
			t.Fatalf("a NOT_SERVING instance kept getting calls: %d of b's last calls in a row without one to a", streak)
		}
		before, bBefore := a.user.calls.Load(), b.user.calls.Load()
		waitCalls(t, b, 1)
		if a.user.calls.Load() == before && b.user.calls.Load() > bBefore {
			streak++
		} else {
			streak = 0
		}
	}
	if err := a.srv.SetServingStatus(ctx, "", healthpb.HealthCheckResponse_SERVING); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, a, 10)
	if n := l.getFails.Load() + l.createFails.Load(); n != 0 {
		t.Errorf("%d calls failed", n)
	}
}

func containsDraining(v []byte) bool { return strings.Contains(string(v), `"status":"draining"`) }

// TestAbruptKill: an instance dies with calls in its handlers. The
// idempotent ones (GetUser, NO_SIDE_EFFECTS in its proto) are retried on
// the other instances and succeed; the others (CreateUser) fail, once each,
// and are not retried. Without the retry policy the held GetUser calls
// fail too.
func TestAbruptKill(t *testing.T) {
	for _, retry := range []bool{true, false} {
		name := map[bool]string{true: "default-retry", false: "no-retry"}[retry]
		t.Run(name, func(t *testing.T) {
			c := etcdtest.New(t)
			ins := []*instance{startInstance(t, c.Endpoints()), startInstance(t, c.Endpoints()), startInstance(t, c.Endpoints())}
			var opts []lodestar.Option
			if !retry {
				opts = append(opts, lodestar.WithoutProtoIdempotency())
			}
			conn := dial(t, c.Endpoints(), opts...)
			l := startLoad(conn, 8)
			for _, in := range ins {
				waitCalls(t, in, 20)
			}
			// Calls reaching ins[0] now stay in its handlers; wait until
			// some of each kind are held there.
			victim := ins[0].user
			victim.hang.Store(true)
			victim.waitFor(t, func() bool { return victim.heldGets.Load() >= 2 && victim.heldCreates.Load() >= 1 },
				func() string {
					return fmt.Sprintf("held %d gets, %d creates", victim.heldGets.Load(), victim.heldCreates.Load())
				})
			ins[0].srv.Stop() // connections cut, no drain; its key expires with the lease
			waitCalls(t, ins[1], 200)
			waitCalls(t, ins[2], 200)
			l.stop()
			heldGets, heldCreates := victim.heldGets.Load(), victim.heldCreates.Load()
			t.Logf("%s: killed with %d GetUser and %d CreateUser calls in its handlers: %s", name, heldGets, heldCreates, l)
			// Calls on the wire to the victim but not yet in a handler fail
			// too, so these are lower bounds.
			if got := l.createFails.Load(); got < heldCreates {
				t.Errorf("%d CreateUser calls failed, fewer than the %d held on the killed instance: retried?", got, heldCreates)
			}
			if retry && l.getFails.Load() != 0 {
				t.Errorf("%d idempotent GetUser calls failed with retries on; last: %v", l.getFails.Load(), l.lastGetErr.Load())
			}
			if !retry && l.getFails.Load() < heldGets {
				t.Errorf("%d GetUser calls failed without retries, fewer than the %d held", l.getFails.Load(), heldGets)
			}
		})
	}
}

func TestDialAndServeRejectBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := lodestar.Dial(ctx, "user/v2"); err == nil {
		t.Error("Dial accepted a service name with '/'")
	}
	if _, err := lodestar.Dial(ctx, "user", lodestar.WithIdempotent("NoSlash")); err == nil {
		t.Error("Dial accepted a malformed idempotent method")
	}
	if _, err := lodestar.Dial(ctx, "user", lodestar.WithMaxAttempts(9)); err == nil {
		t.Error("Dial accepted 9 attempts")
	}
	if _, err := lodestar.NewServer(""); err == nil {
		t.Error("NewServer accepted an empty name")
	}
	if _, err := lodestar.NewServer("user", lodestar.WithEtcdEndpoints("ftp://x:1")); err == nil {
		t.Error("NewServer accepted a bad endpoint")
	}
	s, err := lodestar.NewServer("user", lodestar.WithEtcdEndpoints("http://127.0.0.1:1"), lodestar.WithListenAddress("127.0.0.1:notaport"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ctx); err == nil {
		t.Error("Serve on a bad listen address succeeded")
	}
}
