//go:build linux

package loader

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// bootTime is CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns.
func bootTime() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("loader: clock_gettime(CLOCK_BOOTTIME): %w", err)
	}
	return time.Duration(ts.Nano()), nil
}
