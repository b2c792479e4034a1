package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lodestar-rpc/lodestar/internal/etcdtest"
)

// TestHelpShowsNoSecret: with every password variable set, the help of
// every command shows none of them.
func TestHelpShowsNoSecret(t *testing.T) {
	secrets := map[string]string{
		"LODESTAR_ETCD_PASSWORD": "etcd-s3cret-9f1",
		"LODESTAR_ROOT_PASSWORD": "root-s3cret-7c2",
		"LODESTAR_USER_PASSWORD": "user-s3cret-3b8",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(newRootCmd(nil, nil, nil), nil)
	if len(paths) < 9 {
		t.Fatalf("only %d commands found: %v", len(paths), paths)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range paths {
		out := newSyncBuffer()
		if err := run(ctx, append(p, "--help"), nil, out, out); err != nil {
			t.Fatalf("lodestar %s --help: %v", strings.Join(p, " "), err)
		}
		if !strings.Contains(out.String(), "Usage:") {
			t.Fatalf("lodestar %s --help printed no usage:\n%s", strings.Join(p, " "), out)
		}
		for k, v := range secrets {
			if strings.Contains(out.String(), v) {
				t.Errorf("lodestar %s --help shows %s:\n%s", strings.Join(p, " "), k, out)
			}
		}
	}
}

// TestPasswordsOverHTTP: on an etcd served over plain http, a password
// is refused unless --insecure-auth is given; with it, passwords from a
// file and from stdin reach etcd (a wrong one is refused by etcd, so the
// one read is the one etcd checked); a password given as a flag's value
// is refused without being repeated.
func TestPasswordsOverHTTP(t *testing.T) {
	c := etcdtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	eps := []string{"--endpoints", strings.Join(c.Endpoints(), ",")}
	cmd := func(stdin string, args ...string) (string, error) {
		out := newSyncBuffer()
		err := run(ctx, append(args, eps...), strings.NewReader(stdin), out, out)
		return out.String(), err
	}
	dir := t.TempDir()
	pwFile := func(name, pw string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootFile := pwFile("root", "root-pw-1")

	// Without --insecure-auth nothing is sent, and auth stays off.
	_, err := cmd("root-pw-1\n", "auth", "enable", "--root-password-stdin")
	if err == nil || !strings.Contains(err.Error(), "refusing to send the password of etcd's root user to etcd over plain "+c.Endpoints()[0]) {
		t.Fatalf("auth enable over http: %v", err)
	}
	plain, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 30 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Put(ctx, "/services/user/a", `{"Addr":"127.0.0.1:7001","Metadata":{"version":"v-http"}}`); err != nil {
		t.Fatalf("auth was turned on by a refused command: %v", err)
	}

	if _, err := cmd("root-pw-1\n", "auth", "enable", "--root-password-stdin", "--insecure-auth"); err != nil {
		t.Fatalf("auth enable with --insecure-auth, password from stdin: %v", err)
	}
	if _, err := cmd("reader-pw-2\n", "auth", "reader", "--user", "r", "--password-stdin",
		"--etcd-user", "root", "--etcd-password-file", rootFile, "--insecure-auth"); err != nil {
		t.Fatalf("auth reader, its password from stdin, root's from a file: %v", err)
	}

	// The reader's password, from stdin and from a file.
	out, err := cmd("reader-pw-2\n", "list", "--etcd-user", "r", "--etcd-password-stdin", "--insecure-auth")
	if err != nil || !strings.Contains(out, "v-http") {
		t.Fatalf("list with the password from stdin: %v\n%s", err, out)
	}
	out, err = cmd("", "list", "--etcd-user", "r", "--etcd-password-file", pwFile("r", "reader-pw-2"), "--insecure-auth")
	if err != nil || !strings.Contains(out, "v-http") {
		t.Fatalf("list with the password from a file: %v\n%s", err, out)
	}
	if _, err := cmd("nope\n", "list", "--etcd-user", "r", "--etcd-password-stdin", "--insecure-auth"); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("a wrong password from stdin: %v", err)
	}
	// Without the flag the password is not read, nor sent.
	_, err = cmd("reader-pw-2\n", "list", "--etcd-user", "r", "--etcd-password-stdin")
	if err == nil || !strings.Contains(err.Error(), `refusing to send the password of etcd user "r" over plain `+c.Endpoints()[0]) ||
		!strings.Contains(err.Error(), "--insecure-auth") {
		t.Fatalf("list over http without --insecure-auth: %v", err)
	}

	// Passwords as flags' values are refused, and not repeated.
	for _, args := range [][]string{
		{"list", "--etcd-user", "r", "--etcd-password", "argv-pw-3", "--insecure-auth"},
		{"auth", "enable", "--root-password", "argv-pw-3", "--insecure-auth"},
		{"auth", "reader", "--user", "x", "--password", "argv-pw-3", "--insecure-auth"},
	} {
		_, err := cmd("", args...)
		if err == nil || !strings.Contains(err.Error(), "is not accepted: a password on the command line is visible") ||
			!strings.Contains(err.Error(), "-file FILE") || strings.Contains(err.Error(), "argv-pw-3") {
			t.Errorf("lodestar %s: %v", strings.Join(args, " "), err)
		}
	}
	// Two passwords cannot both come from stdin.
	if _, err := cmd("a\n", "auth", "reader", "--user", "x", "--password-stdin", "--etcd-user", "root", "--etcd-password-stdin", "--insecure-auth"); err == nil ||
		!strings.Contains(err.Error(), "both read stdin") {
		t.Errorf("two passwords from stdin: %v", err)
	}
}
