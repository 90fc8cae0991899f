package itest

// Internals that the external tests of this package inspect.

// LocalPID returns the postmaster pid of a ModeLocal server, else 0.
func LocalPID(s *Server) int {
	if ls, ok := s.backend.(*localServer); ok {
		return ls.pid()
	}
	return 0
}

// LocalDir returns the temporary directory of a ModeLocal server, else "".
func LocalDir(s *Server) string {
	if ls, ok := s.backend.(*localServer); ok {
		return ls.dir
	}
	return ""
}

// WatchdogPID returns the pid of a server's watchdog, else 0.
func WatchdogPID(s *Server) int {
	if ls, ok := s.backend.(*localServer); ok && ls.watchdog != nil {
		return ls.watchdog.Process.Pid
	}
	if ds, ok := s.backend.(*dockerServer); ok && ds.watchdog != nil {
		return ds.watchdog.Process.Pid
	}
	return 0
}

// Unavailable is the skip-or-fail decision of Shared and NewServer.
var Unavailable = unavailable
