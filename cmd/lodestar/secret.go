package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxSecret bounds a password read from a file or stdin: more than this
// is not a password, and reading on would hold a wrong file in memory.
const maxSecret = 4096

// secret says where one password may come from. A password is never a
// flag's value (every user of the machine sees argv) nor a default shown
// in --help: it comes from a file, stdin, an environment variable read
// when it is needed, or a prompt on the terminal, in that order.
type secret struct {
	what      string // for messages: "the password of etcd user u"
	fileFlag  string // the flag naming a file holding it
	stdinFlag string // the flag reading it from stdin
	env       string // the environment variable holding it
	file      string // --<fileFlag>'s value
	stdin     bool   // --<stdinFlag>'s value
	confirm   bool   // a prompt asks twice (a new password)
}

// read returns the password from the first source given.
// ctx ends a prompt.
func (s *secret) read(ctx context.Context, in io.Reader, prompt io.Writer) (string, error) {
	switch {
	case s.file != "" && s.stdin:
		return "", fmt.Errorf("--%s and --%s both given: give one", s.fileFlag, s.stdinFlag)
	case s.file != "":
		f, err := os.Open(s.file)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", s.fileFlag, err)
		}
		defer f.Close()
		pw, err := readSecret(f)
		if err != nil {
			return "", fmt.Errorf("--%s %s: %w", s.fileFlag, s.file, err)
		}
		return pw, nil
	case s.stdin:
		pw, err := readSecret(in)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", s.stdinFlag, err)
		}
		return pw, nil
	}
	if pw := os.Getenv(s.env); pw != "" {
		return pw, nil
	}
	if f, ok := in.(*os.File); ok && isTerminal(f) {
		return s.prompt(ctx, f, prompt)
	}
	return "", fmt.Errorf("%s is needed: set %s, or give --%s FILE or --%s (a password on the command line is not accepted)",
		s.what, s.env, s.fileFlag, s.stdinFlag)
}

// prompt asks for the password on the terminal tty, without echo.
func (s *secret) prompt(ctx context.Context, tty *os.File, w io.Writer) (string, error) {
	ask := func(label string) (string, error) {
		pw, err := readNoEcho(ctx, tty, func() { fmt.Fprintf(w, "%s: ", label) })
		fmt.Fprintln(w)
		if err != nil {
			return "", fmt.Errorf("read %s from the terminal: %w", s.what, err)
		}
		if pw == "" {
			return "", fmt.Errorf("%s is empty", s.what)
		}
		return pw, nil
	}
	label := strings.ToUpper(s.what[:1]) + s.what[1:]
	pw, err := ask(label)
	if err != nil || !s.confirm {
		return pw, err
	}
	again, err := ask(label + " again")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", fmt.Errorf("the two entries of %s differ", s.what)
	}
	return pw, nil
}

// readSecret reads one password: the first line of r, which must be
// the only one (a final newline is allowed).
func readSecret(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSecret+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSecret {
		return "", fmt.Errorf("more than %d bytes: not a password", maxSecret)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if bytes.ContainsAny(b, "\r\n") {
		return "", errors.New("more than one line: want the password alone")
	}
	if len(b) == 0 {
		return "", errors.New("empty")
	}
	return string(b), nil
}

// readLine reads a line from r without its end.
func readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxSecret)).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
