package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// maxCell is the longest text printed as it is in a table cell; longer
// ones are quoted and cut (see cell).
const maxCell = 128

// maxText is the longest message (an error about a value read from
// etcd) printed whole; longer ones are cut, with their length.
const maxText = 512

// cell renders a string read from etcd (a key, an address, metadata) for
// a terminal: as it is when it is short and every character prints as
// itself; otherwise quoted, escaped and cut by quote.Bounded, so that no
// escape sequence reaches the terminal, no tab or newline breaks the
// table, and a huge value is not printed whole.
func cell(s string) string {
	if len(s) > maxCell || strings.ContainsAny(s, ` "\`) {
		return quote.Bounded(s)
	}
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return quote.Bounded(s)
		}
	}
	return s
}

// text renders a message that may hold parts of a value read from etcd
// (a decoding error): printable characters as they are, every other one
// escaped as in Go source (\x1b, \u202e), cut at maxText bytes.
func text(s string) string {
	n := len(s)
	if n > maxText {
		s = s[:maxText]
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	if n > maxText {
		fmt.Fprintf(&b, "… (%d bytes)", n)
	}
	return b.String()
}
