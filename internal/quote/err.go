package quote

// MaxErrText is the longest error text from another package (a decoder's,
// which may hold parts of its input) that Err leaves as it is.
const MaxErrText = 256

// Err returns err, or, when its text is longer than MaxErrText, an error
// that reads as a bounded quote of that text and unwraps to err.
func Err(err error) error {
	if err == nil || len(err.Error()) <= MaxErrText {
		return err
	}
	return &CutError{Err: err, Text: Bounded(err.Error())}
}

// CutError is an error whose text was shortened; it unwraps to the
// original.
type CutError struct {
	Err  error  // the original error
	Text string // what Error returns
}

func (e *CutError) Error() string { return e.Text }
func (e *CutError) Unwrap() error { return e.Err }
