//go:build linux

package loader

import "golang.org/x/sys/unix"

// lacksPerfmon reports whether this thread is known to lack CAP_PERFMON in
// effect (false when that cannot be read).
func lacksPerfmon() bool {
	has, err := effectiveCap(unix.CAP_PERFMON)
	return err == nil && !has
}

// effectiveCap reports whether this thread has capability c in effect.
func effectiveCap(c int) (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, err
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0, nil
}
