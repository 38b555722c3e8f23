package admin

import "testing"

func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "127.0.0.1:9873": true, "127.8.9.10:1": true, "[::1]:9873": true, "[::1]": true,
		"localhost": true, "LOCALHOST:3000": true, "a.localhost:1": true, "localhost.:80": true,
		"configured.internal:9873": true, "0.0.0.0:3000": true, "[::]:3000": true,
		"evil.example": false, "evil.example:9873": false, "localhost.evil.example": false, "10.0.0.1:9873": false,
		"[::ffff:10.0.0.1]:1": false, "": false, "::1": false, "127.0.0.1.nip.io": false, "[::1": false,
	} {
		if got := LoopbackHost(host, []string{"Configured.Internal"}); got != want {
			t.Errorf("LoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}
