package advisory

import (
	"errors"
	"fmt"

	"github.com/pgadvisory/pgadvisory/internal/errfmt"
	"github.com/pgadvisory/pgadvisory/internal/pgerr"
)

// Errors returned by this package, to compare with errors.Is. The errors
// returned wrap them together with the key and the cause.
var (
	// ErrNotAcquired means a try found the key held by another session.
	ErrNotAcquired = errors.New("advisory: not acquired")

	// ErrLockTimeout means the server's lock_timeout (WithLockTimeout) ended
	// the wait. It is the same value as txlock.ErrLockTimeout.
	ErrLockTimeout = pgerr.ErrLockTimeout

	// ErrOutOfLockMemory means the server's lock table is full. It is the
	// same value as txlock.ErrOutOfLockMemory.
	ErrOutOfLockMemory = pgerr.ErrOutOfLockMemory

	// ErrLockLost means a held lock was lost: its session ended, its
	// connection failed or stopped answering, or a release found it no longer
	// held. Lease.Err wraps it together with the cause.
	ErrLockLost = errors.New("advisory: lock lost")

	// ErrReleased is returned by a second Release and by Lease.Err after
	// Release.
	ErrReleased = errors.New("advisory: lease already released")

	// ErrPooler means the backend changed under a pinned connection, or two
	// leases landed on one backend: a pooler in transaction mode is between
	// the client and the server, and session locks cannot work through it.
	// Use package txlock there.
	ErrPooler = errors.New("advisory: backend changed under a pinned connection (a pooler in transaction mode?); use transaction locks (txlock) through poolers")

	// ErrNilDB is returned by every method of a Locker made from a nil
	// *sql.DB (or of a nil *Locker).
	ErrNilDB = errors.New("advisory: nil *sql.DB")

	// ErrNoKeys is returned by LockAll without keys.
	ErrNoKeys = errors.New("advisory: no keys to lock")
)

// errorf is fmt.Errorf for the messages of this package, which name it once
// however many of its errors they wrap (errfmt.Errorf).
func errorf(format string, args ...any) error {
	return errfmt.Errorf("advisory: ", format, args...)
}

// backendChanged is the ErrPooler of a statement that another backend than
// the session's answered, as only a pooler in transaction mode does: the
// backend that answered may hold what the statement took.
type backendChanged struct {
	stmt     string // what was sent: "keepalive", "batch", "fenced try"
	answered int    // the backend that answered
	session  int    // the session's backend
}

func (e *backendChanged) Error() string {
	return fmt.Sprintf("%s answered by backend %d, session of backend %d: %v", e.stmt, e.answered, e.session, ErrPooler)
}

func (e *backendChanged) Unwrap() error { return ErrPooler }
