package main

import "runtime/debug"

// version is the module version pglock was built from, as the Go toolchain
// recorded it ("go install ...@v1.2.3", or a pseudo-version from the VCS
// stamp), or "(devel)" when it recorded none.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" {
		return "(devel)"
	}
	return bi.Main.Version
}
