//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

import (
	"context"
	"errors"
	"os"
)

// isTerminal reports false: no prompt on this system; passwords come
// from a file, stdin or the environment.
func isTerminal(*os.File) bool { return false }

func readNoEcho(context.Context, *os.File, func()) (string, error) {
	return "", errors.New("no password prompt on this system")
}
