package discovery

import "github.com/lodestar-rpc/lodestar/internal/quote"

// maxErrText is the longest error text from another package (a decoder's,
// which may hold parts of its input) that an error of this package
// carries as it is; a longer one is quoted by a bounded prefix.
const maxErrText = 256

// boundedErr returns err, or, if its text is longer than maxErrText, an
// error that reads as a bounded quote of that text and unwraps to err.
func boundedErr(err error) error {
	if err == nil || len(err.Error()) <= maxErrText {
		return err
	}
	return &cutError{err: err}
}

type cutError struct{ err error }

func (e *cutError) Error() string { return quote.Bounded(e.err.Error()) }
func (e *cutError) Unwrap() error { return e.err }
