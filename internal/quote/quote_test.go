package quote

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestBounded(t *testing.T) {
	long := strings.Repeat("a", 10<<20)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `""`},
		{"short", "10.0.0.5:8080", `"10.0.0.5:8080"`},
		{"control characters escaped", "a\x1b[31mb\n", `"a\x1b[31mb\n"`},
		{"exactly the limit", strings.Repeat("b", MaxPrefix), strconv.Quote(strings.Repeat("b", MaxPrefix))},
		{"cut with its length", long, strconv.Quote(long[:MaxPrefix]) + "… (10485760 bytes)"},
		// "é" is two bytes; one starting at byte 63 would be cut in half.
		{"rune not split", strings.Repeat("x", MaxPrefix-1) + "éyy", strconv.Quote(strings.Repeat("x", MaxPrefix-1)) + "… (67 bytes)"},
		{"rune ending at the limit kept", strings.Repeat("x", MaxPrefix-2) + "éyy", strconv.Quote(strings.Repeat("x", MaxPrefix-2)+"é") + "… (66 bytes)"},
		{"invalid bytes cut anywhere", strings.Repeat("\xff", MaxPrefix+1), strconv.Quote(strings.Repeat("\xff", MaxPrefix)) + "… (65 bytes)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Bounded(tc.in); got != tc.want {
				t.Errorf("Bounded(%d bytes) = %s, want %s", len(tc.in), got, tc.want)
			}
		})
	}
}

// FuzzBounded checks, for any input, that the result is short, printable
// ASCII-safe (no raw control character), and quotes a prefix of the input.
func FuzzBounded(f *testing.F) {
	for _, s := range []string{"", "a", "\x00\x1b]0;x\x07", strings.Repeat("é", 40), strings.Repeat("\xe2\x82", 50), strings.Repeat("z", 1000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Bounded(s)
		if len(got) > 4*MaxPrefix+64 {
			t.Fatalf("Bounded gave %d bytes for %d", len(got), len(s))
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("Bounded left control character %U in %s", r, got)
			}
		}
		q := got
		if i := strings.LastIndex(got, "… ("); i >= 0 && len(s) > MaxPrefix {
			q = got[:i]
		}
		p, err := strconv.Unquote(q)
		if err != nil {
			t.Fatalf("Bounded(%q) = %s: quoted part does not unquote: %v", s, got, err)
		}
		if !strings.HasPrefix(s, p) || len(p) > MaxPrefix || (len(s) <= MaxPrefix && p != s) {
			t.Fatalf("Bounded(%q) = %s: not a bounded prefix", s, got)
		}
	})
}

func TestShown(t *testing.T) {
	for in, want := range map[string]string{
		"user-1":                "user-1",
		"10.0.0.5:8080":         "10.0.0.5:8080",
		"naïve":                 "naïve",
		"a\x1b[2Jb":             `"a\x1b[2Jb"`,
		"evil\u202etxt":         `"evil\u202etxt"`,
		"\xff":                  `"\xff"`,
		strings.Repeat("k", 65): strconv.Quote(strings.Repeat("k", 64)) + "… (65 bytes)",
	} {
		if got := Shown(in); got != want {
			t.Errorf("Shown(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestErr(t *testing.T) {
	short := errors.New("short")
	if got := Err(short); got != short {
		t.Errorf("Err(short) = %v, want it unchanged", got)
	}
	long := errors.New(strings.Repeat("x", 10<<20))
	got := Err(long)
	if len(got.Error()) > 1024 || !errors.Is(got, long) {
		t.Errorf("Err(10 MiB) = %d bytes, unwraps to the original: %v; want under 1 KiB and true", len(got.Error()), errors.Is(got, long))
	}
}
