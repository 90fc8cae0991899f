package middleware

import "errors"

// Reasons a request was answered by the middleware instead of reaching the
// handler. The error given to a Responder and to Hooks.Rejected wraps one of
// them (and the cause); compare with errors.Is.
var (
	// ErrBadKey means the KeyFunc returned an error: 400.
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

// ErrSkipped is returned (wrapped with the key) by a Singleton job that did
// not run because another session holds its lock.
var ErrSkipped = errors.New("middleware: skipped, the lock is held elsewhere")
