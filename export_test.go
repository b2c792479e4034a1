package lodestar

import "time"

// WithDefaultMaxConnectionIdle replaces DefaultMaxConnectionIdle in
// NewServer's defaults, for tests that cannot wait 5 minutes to see the
// default applied; WithServerOptions still overrides it.
func WithDefaultMaxConnectionIdle(d time.Duration) Option {
	return optionFunc(func(c *config) { c.maxIdle = d })
}
