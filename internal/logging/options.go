package logging

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// ParseLevel reads log.level: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
}

// ParseAccess reads log.access: "on" (every request, 1), "off" (none, -1)
// or "sample:N" (one request in N, N >= 1).
func ParseAccess(s string) (int, error) {
	switch s {
	case "on":
		return 1, nil
	case "off":
		return -1, nil
	}
	if n, ok := strings.CutPrefix(s, "sample:"); ok {
		v, err := strconv.Atoi(n)
		if err == nil && v >= 1 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%q: want on, off or sample:N (N >= 1)", s)
}
