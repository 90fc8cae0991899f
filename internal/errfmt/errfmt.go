// Package errfmt formats the errors of a package whose messages start with
// the package's name ("advisory: ", "txlock: "), so that a message that wraps
// errors of the same package names the package once:
// "advisory: lock 42: lock held by another session", not
// "advisory: lock 42: advisory: lock held by another session". Only the text
// changes: errors.Is and errors.As see the whole chain as fmt.Errorf built
// it.
package errfmt

import (
	"fmt"
	"strings"
)

// Errorf is fmt.Errorf, for a format that starts with prefix: the prefix is
// dropped wherever else it appears in the message (where the wrapped errors
// of the same package put it).
func Errorf(prefix, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, prefix)
	if !ok || !strings.Contains(rest, prefix) {
		return err
	}
	return &prefixed{msg: prefix + strings.ReplaceAll(rest, prefix, ""), err: err}
}

// prefixed is an error whose text names its package once.
type prefixed struct {
	msg string
	err error // what fmt.Errorf built: the chain
}

func (e *prefixed) Error() string { return e.msg }
func (e *prefixed) Unwrap() error { return e.err }
