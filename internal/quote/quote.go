// Package quote renders strings that came from outside (etcd values, keys,
// user input) for errors and logs: quoted with every control character
// escaped, and cut to a bounded prefix so that a huge value cannot turn
// into a huge message.
package quote

import (
	"strconv"
	"unicode/utf8"
)

// MaxPrefix is the most bytes of a string that Bounded quotes.
const MaxPrefix = 64

// Bounded returns s quoted as by %q (control characters, invalid UTF-8
// and non-printable runes escaped). A string longer than MaxPrefix bytes
// is cut to at most MaxPrefix bytes, never inside a UTF-8 sequence, and
// followed by its full length: "abc…"… (10485760 bytes).
func Bounded(s string) string {
	if len(s) <= MaxPrefix {
		return strconv.Quote(s)
	}
	n := MaxPrefix
	// Back up to the start of a rune cut in half, at most utf8.UTFMax-1
	// bytes; invalid bytes are escaped one by one and may be cut anywhere.
	for i := n; i > n-utf8.UTFMax && i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			if r, size := utf8.DecodeRuneInString(s[i:]); (r != utf8.RuneError || size > 1) && i+size > n {
				n = i
			}
			break
		}
	}
	return strconv.Quote(s[:n]) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}
