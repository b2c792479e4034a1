package pick

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/lodestar-rpc/lodestar/internal/quote"
)

// decodeErr returns err, a JSON decoder's error, or, when its text is
// longer than quote.MaxErrText, an error of the same meaning whose parts taken
// from the input are quoted by a bounded prefix. It unwraps to err.
func decodeErr(err error) error {
	if err == nil || len(err.Error()) <= quote.MaxErrText {
		return err
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if te.Struct != "" {
			field = te.Struct + "." + te.Field
		}
		return &quote.CutError{Err: err, Text: fmt.Sprintf("json: cannot unmarshal %s into field %s of type %s",
			quote.Bounded(te.Value), quote.Bounded(field), quote.Bounded(te.Type.String()))}
	}
	if q, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if key, uerr := strconv.Unquote(q); uerr == nil {
			return &quote.CutError{Err: err, Text: "json: unknown field " + quote.Bounded(key)}
		}
	}
	return &quote.CutError{Err: err, Text: quote.Bounded(err.Error())}
}

// MaxDepth is how deeply a policy's JSON config may nest objects and
// arrays. Each policy nested in a "pick" field takes two levels, so it
// allows a dozen nested policies, far more than any useful config, while
// a deeper config (which would be parsed again at each level) is refused
// at once.
const MaxDepth = 32

// depth returns how deeply js nests objects and arrays, counting no
// further than limit+1. Brackets inside strings do not count.
func depth(js []byte, limit int) int {
	d, most := 0, 0
	inString, escaped := false, false
	for _, c := range js {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			d++
			if d > most {
				most = d
				if most > limit {
					return most
				}
			}
		case c == '}' || c == ']':
			d--
		}
	}
	return most
}
