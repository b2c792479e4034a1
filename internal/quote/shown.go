package quote

import (
	"strconv"
	"unicode/utf8"
)

// Shown returns s as it is when it is at most MaxPrefix bytes of valid,
// printable UTF-8 (no control or invisible formatting character), and
// Bounded(s) otherwise: short, plain names read as written, anything else
// cannot reach a terminal or a log unescaped.
func Shown(s string) string {
	if len(s) > MaxPrefix || !printable(s) {
		return Bounded(s)
	}
	return s
}

func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}
