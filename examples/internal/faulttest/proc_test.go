package faulttest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// binaries are the programs the test runs as processes.
type binaries struct {
	lodestar string // the lodestar command (cmd/lodestar)
	server   string // the example UserService server (examples/user/server)
}

// build compiles the binaries into a directory of the test's.
func build(ctx context.Context, t *testing.T) binaries {
	t.Helper()
	dir := t.TempDir()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/lodestar", "./examples/user/server")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return binaries{lodestar: filepath.Join(dir, "lodestar"), server: filepath.Join(dir, "server")}
}

// proc is one child process, its output kept line by line.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *lines
	started time.Time
	done    chan struct{} // closed once the process has exited and been waited for
	err     error         // Wait's result, once done is closed
}

// start runs bin with args until it exits, ctx ends or the test ends,
// whichever comes first; at cleanup it is killed, and its output logged if
// the test failed.
func start(ctx context.Context, t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &lines{}, done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.WaitDelay = 10 * time.Second // bounds the output copy after an exit
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.started = time.Now()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill() // an error only says it has exited already
		<-p.done
		if t.Failed() {
			t.Logf("output of %s (%v):\n%s", name, p.err, p.out)
		}
	})
	return p
}

// signal sends sig and waits until the process has exited.
func (p *proc) signal(ctx context.Context, sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: signal %v: %w", p.name, sig, err)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: still running after %v: %w", p.name, sig, ctx.Err())
	}
}

// waitLine waits for an output line containing substr among the lines
// from index from on (see lines.len), or for the process to exit.
func (p *proc) waitLine(ctx context.Context, substr string, from int) (string, error) {
	ch := p.out.wait(substr, from)
	select {
	case l := <-ch:
		return l, nil
	case <-p.done:
		select {
		case l := <-ch: // written just before the exit
			return l, nil
		default:
		}
		return "", fmt.Errorf("%s exited (%v) before printing %q", p.name, p.err, substr)
	case <-ctx.Done():
		return "", fmt.Errorf("%s: no line with %q: %w", p.name, substr, ctx.Err())
	}
}

// lines is an io.Writer that keeps what a process prints, line by line,
// and tells waiters about the lines they wait for.
type lines struct {
	mu      sync.Mutex
	partial []byte
	all     []string
	waiters []lineWaiter
}

type lineWaiter struct {
	substr string
	from   int
	ch     chan string // buffered: gets the first matching line
}

func (l *lines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if line, ok := l.match(w); ok {
			w.ch <- line
		} else {
			kept = append(kept, w)
		}
	}
	l.waiters = kept
	return len(b), nil
}

// match returns the first line of w's, under l.mu.
func (l *lines) match(w lineWaiter) (string, bool) {
	for _, line := range l.all[min(w.from, len(l.all)):] {
		if strings.Contains(line, w.substr) {
			return line, true
		}
	}
	return "", false
}

// wait returns a channel that gets the first line at index from or later
// that contains substr.
func (l *lines) wait(substr string, from int) <-chan string {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := lineWaiter{substr: substr, from: from, ch: make(chan string, 1)}
	if line, ok := l.match(w); ok {
		w.ch <- line
	} else {
		l.waiters = append(l.waiters, w)
	}
	return w.ch
}

// len returns the number of complete lines so far.
func (l *lines) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append(l.all[:len(l.all):len(l.all)], string(l.partial)), "\n")
}
