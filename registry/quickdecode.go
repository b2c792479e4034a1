package registry

// quickDecode reads a value in the exact form Encode writes (compact JSON,
// printable ASCII strings without escapes, known keys, an integer weight)
// in one pass without reflection. It is Decode's fast path: a service of
// thousands of instances is decoded at every list, and a change must be
// decoded between the watch event and the update, where encoding/json's
// first call after an idle spell costs tens of microseconds. Anything else
// (whitespace, escapes, non-ASCII, null, unknown or repeated field names,
// another writer's metadata) returns ok false, and Decode uses encoding/json, which
// stays the definition: both give the same result for every value this
// accepts (FuzzQuickDecode).
func quickDecode(v []byte) (addr string, w lenientMeta, ok bool) {
	s := scanner{b: v}
	if !s.byte('{') {
		return "", w, false
	}
	var seenAddr, seenMeta bool
	for first := true; ; first = false {
		if s.byte('}') {
			break
		}
		if !first && !s.byte(',') {
			return "", w, false
		}
		key, ok := s.raw()
		if !ok || !s.byte(':') {
			return "", w, false
		}
		switch {
		case string(key) == "Addr" && !seenAddr:
			seenAddr = true
			if addr, ok = s.str(); !ok {
				return "", w, false
			}
		case string(key) == "Metadata" && !seenMeta:
			seenMeta = true
			if !s.meta(&w.wireMeta) {
				return "", w, false
			}
			w.present = true
		default:
			return "", w, false
		}
	}
	if s.i != len(s.b) {
		return "", w, false
	}
	return addr, w, true
}

type scanner struct {
	b []byte
	i int
}

// byte consumes c if it is next.
func (s *scanner) byte(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// raw reads a string of printable ASCII without escapes and returns its
// bytes, a sub-slice of the input. Anything else, null included, is
// declined.
func (s *scanner) raw() ([]byte, bool) {
	if !s.byte('"') {
		return nil, false
	}
	start := s.i
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, false
		}
	}
	return nil, false
}

// str reads a string as raw does, as a string.
func (s *scanner) str() (string, bool) {
	b, ok := s.raw()
	return string(b), ok
}

// int reads an integer of at most 9 digits, optionally negative: the range
// where it cannot overflow. A fraction or an exponent that follows is left
// unread, which the caller declines as a malformed object.
func (s *scanner) int() (int, bool) {
	neg := s.byte('-')
	start, n := s.i, 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + int(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - start
	if digits == 0 || digits > 9 || digits > 1 && s.b[start] == '0' {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// meta reads the metadata object.
func (s *scanner) meta(m *wireMeta) bool {
	if !s.byte('{') {
		return false
	}
	var seen [6]bool
	for first := true; ; first = false {
		if s.byte('}') {
			return true
		}
		if !first && !s.byte(',') {
			return false
		}
		key, ok := s.raw()
		if !ok || !s.byte(':') {
			return false
		}
		f := -1
		switch string(key) {
		case "version":
			f = 0
			m.Version, ok = s.str()
		case "region":
			f = 1
			m.Region, ok = s.str()
		case "zone":
			f = 2
			m.Zone, ok = s.str()
		case "weight":
			f = 3
			var n int
			n, ok = s.int()
			m.Weight = &n
		case "status":
			f = 4
			var st string
			st, ok = s.str()
			m.Status = Status(st)
		case "labels":
			f = 5
			m.Labels, ok = s.labels()
		}
		if f < 0 || !ok || seen[f] {
			return false
		}
		seen[f] = true
	}
}

// labels reads an object of string values.
func (s *scanner) labels() (map[string]string, bool) {
	if !s.byte('{') {
		return nil, false
	}
	m := make(map[string]string)
	for first := true; ; first = false {
		if s.byte('}') {
			return m, true
		}
		if !first && !s.byte(',') {
			return nil, false
		}
		k, ok := s.str()
		if !ok || !s.byte(':') {
			return nil, false
		}
		v, ok := s.str()
		if !ok {
			return nil, false
		}
		m[k] = v // a repeated name: the last wins, as in encoding/json
	}
}
