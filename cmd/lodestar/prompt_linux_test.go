package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// pty is a pseudo-terminal: the command reads its terminal end (tty),
// the test types on the other (master) and reads what the terminal
// echoes.
type pty struct {
	master, tty *os.File
	mu          sync.Mutex
	echoed      strings.Builder
	done        chan struct{}
}

func openPTY(t *testing.T) *pty {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	var n uint32
	var ioErr error
	rc, err := master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr == nil {
			n, ioErr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
		}
	}); err != nil || ioErr != nil {
		t.Fatalf("pseudo-terminal: %v %v", err, ioErr)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &pty{master: master, tty: tty, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 1024)
		for {
			n, err := master.Read(buf)
			p.mu.Lock()
			p.echoed.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		tty.Close()
		master.Close()
		<-p.done
	})
	return p
}

func (p *pty) echo() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.echoed.String()
}

// TestPasswordPrompt: on a terminal, a password not given otherwise is
// asked for, without echo (a new user's twice), and reaches etcd.
func TestPasswordPrompt(t *testing.T) {
	c := etcdtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	eps := strings.Join(c.Endpoints(), ",")
	t.Setenv("LODESTAR_ROOT_PASSWORD", "root-pw")
	if err := run(ctx, []string{"auth", "enable", "--endpoints", eps, "--insecure-auth"}, nil, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	p := openPTY(t)
	// type answers each prompt as it appears on stderr.
	typeAt := func(prompts []string, answers []string) (stderr *syncBuffer, done func()) {
		stderr = newSyncBuffer()
		seen := make(chan struct{})
		go func() {
			defer close(seen)
			for i, pr := range prompts {
				deadline := time.NewTimer(time.Minute)
				for strings.Count(stderr.String(), pr) < 1+strings.Count(strings.Join(prompts[:i], "\x00"), pr) {
					select {
					case <-stderr.wrote:
					case <-deadline.C:
						return
					}
				}
				deadline.Stop()
				io.WriteString(p.master, answers[i]+"\n")
			}
		}()
		return stderr, func() { <-seen }
	}

	stderr, done := typeAt([]string{"The password of new user r: ", "The password of new user r again: "}, []string{"typed-pw", "typed-pw"})
	t.Setenv("LODESTAR_ETCD_PASSWORD", "root-pw")
	err := run(ctx, []string{"auth", "reader", "--user", "r", "--etcd-user", "root", "--endpoints", eps, "--insecure-auth"}, p.tty, io.Discard, stderr)
	done()
	if err != nil {
		t.Fatalf("auth reader with the password typed: %v\n%s", err, stderr)
	}
	t.Setenv("LODESTAR_ETCD_PASSWORD", "")

	stderr, done = typeAt([]string{"The password of etcd user r: "}, []string{"typed-pw"})
	out := newSyncBuffer()
	err = run(ctx, []string{"list", "--etcd-user", "r", "--endpoints", eps, "--insecure-auth"}, p.tty, out, stderr)
	done()
	if err != nil || !strings.Contains(out.String(), "nothing registered") {
		t.Fatalf("list as r with the password typed: %v\n%s%s", err, out, stderr)
	}
	if strings.Contains(p.echo(), "typed-pw") {
		t.Errorf("the terminal echoed the password: %q", p.echo())
	}
	// The terminal is restored: echo is on again.
	tio, err := unix.IoctlGetTermios(int(p.tty.Fd()), unix.TCGETS)
	if err != nil || tio.Lflag&unix.ECHO == 0 {
		t.Errorf("echo left off after the prompt: %v", err)
	}
}
