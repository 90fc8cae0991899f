package middleware

import (
	"errors"
	"strconv"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// Reasons a request was answered by the middleware instead of reaching the
// handler. The error given to a Responder and to Hooks.Rejected wraps one of
// them (and the cause); compare with errors.Is.
var (
	// ErrBadKey means the KeyFunc returned an error: 400. The errors of
	// PathID, PathInt64 and PathValue wrap it already.
	ErrBadKey = errors.New("middleware: bad lock key")

	// ErrBusy means the key is held elsewhere and the middleware does not
	// wait (FailFast): 409.
	ErrBusy = errors.New("middleware: resource is locked")

	// ErrWaitTimeout means the bound of WaitUpTo ran out before the lock was
	// granted (or the Locker's own lock_timeout did): 503.
	ErrWaitTimeout = errors.New("middleware: timed out waiting for the lock")

	// ErrTooManyWaiters means the key was busy and MaxWaiters requests of
	// this middleware were already waiting for it: 503.
	ErrTooManyWaiters = errors.New("middleware: too many requests waiting for the lock")

	// ErrUnavailable means the lock could not be taken for another reason
	// (the database is down, the request was cancelled, the transaction could
	// not begin): 503.
	ErrUnavailable = errors.New("middleware: lock service unavailable")

	// ErrCommitFailed means TxLock could not commit the transaction of a
	// handler that succeeded: 500, written instead of the handler's status.
	ErrCommitFailed = errors.New("middleware: commit failed")
)

// ErrSkipped is matched (errors.Is) by the error of a Singleton or
// SingletonNamed job that did not run because another session holds its
// lock. That error names the job and also matches advisory.ErrNotAcquired.
var ErrSkipped = errors.New("middleware: job skipped: another session holds its lock")

// badKey returns err, the error of a KeyFunc, as an error matching
// ErrBadKey: as it is if it already matches (the key functions of this
// package), else wrapped, so the message names this package once.
func badKey(err error) error {
	if errors.Is(err, ErrBadKey) {
		return err
	}
	return &wrapped{msg: ErrBadKey.Error() + ": " + err.Error(), errs: []error{ErrBadKey, err}}
}

// badPathValue is the error of a path value that a key function refuses;
// want says what it takes.
func badPathValue(name, value, want string) error {
	msg := ErrBadKey.Error() + ": path value " + strconv.Quote(name)
	if value == "" {
		msg += " is empty or missing"
	} else {
		msg += " is " + strconv.Quote(clip(value)) + ", not " + want
	}
	return &wrapped{msg: msg, errs: []error{ErrBadKey}}
}

// skipped is the error of a Singleton job that did not run; name is what
// the user named the job (keyspace.Hash(name) is its key), or "".
func skipped(name string, key keyspace.Key, cause error) error {
	job := "job on lock " + key.String()
	if name != "" {
		job = "job " + strconv.Quote(clip(name))
	}
	return &wrapped{msg: "middleware: " + job + " skipped: another session holds its lock", errs: []error{ErrSkipped, cause}}
}

// wrapped is an error with a message of its own that matches the errors it
// wraps (errors.Is, errors.As), so that a message built from several errors
// of this package names the package once.
type wrapped struct {
	msg  string
	errs []error
}

func (e *wrapped) Error() string   { return e.msg }
func (e *wrapped) Unwrap() []error { return e.errs }

// clip shortens what a client or a caller sent to a length that suits a log
// line.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
