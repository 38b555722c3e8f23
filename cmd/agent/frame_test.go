package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/vectors"
)

// run executes the CLI in-process and returns stdout, stderr and the exit status.
func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := execute(args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func TestFrameCheckAgreesWithEveryVector(t *testing.T) {
	all, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		list []vectors.Vector
		args []string
	}{
		{"frames", all.Frames, []string{"frame", "check"}},
		{"datagrams", all.Datagrams, []string{"frame", "check", "--datagram"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in strings.Builder
			in.WriteString("# vectors, one per line\n\n")
			for _, v := range tc.list {
				if v.Hex == "" {
					in.WriteString("0x\n") // the empty frame: a bare prefix
					continue
				}
				in.WriteString(v.Hex + "\n")
			}
			out, errs, code := run(t, in.String(), tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != len(tc.list) {
				t.Fatalf("%d verdicts for %d vectors", len(lines), len(tc.list))
			}
			for i, v := range tc.list {
				if lines[i] != v.Verdict {
					t.Errorf("%s: %s, want %s", v.Name, lines[i], v.Verdict)
				}
			}
		})
	}
}

func TestFrameCheckInputForms(t *testing.T) {
	out, _, code := run(t, "  # comment\n\n0x01 00000009 0000000000000002 0a\n0X0100000009000000000000000200\n", "frame", "check")
	if code != 0 || out != "ok\nchecksum\n" {
		t.Fatalf("exit %d, out %q", code, out)
	}
	out, errs, code := run(t, "010000000900000000000000020a\n\nnot hex\n", "frame", "check")
	if code != 2 || out != "ok\n" || !strings.Contains(errs, "line 3") {
		t.Fatalf("exit %d, out %q, err %q; want exit 2 naming line 3", code, out, errs)
	}
}

func TestFrameDecode(t *testing.T) {
	out, _, code := run(t, "", "frame", "decode", "010000000900000000000000020a")
	if code != 0 || !strings.Contains(out, "UPDATE (0x01)") || !strings.Contains(out, "terminalMode") || !strings.Contains(out, "raw") || !strings.Contains(out, "verdict   ok") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	out, _, code = run(t, "", "frame", "decode", "010000000900000000000000020b")
	if code != 1 || !strings.Contains(out, "checksum: want 0x0a, got 0x0b") {
		t.Fatalf("bad checksum: exit %d:\n%s", code, out)
	}
	if _, _, code = run(t, "", "frame", "decode", "xyz"); code != 2 {
		t.Fatalf("non-hex: exit %d, want 2", code)
	}
	out, _, code = run(t, "", "frame", "decode", "--json", "--datagram",
		"01a1b2c3d4000000070218500020000000090000000000000002000000000a0000000000000028000000000b0000000000000078007a")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var rep report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Verdict != "ok" || rep.Sender == nil || rep.Sender.RegistryHash != 0xa1b2c3d4 || len(rep.Frame.Entries) != 3 ||
		rep.Frame.Entries[1].Field.Name != "rows" || rep.Frame.Entries[1].Value != 40 {
		t.Fatalf("report %+v", rep)
	}
	out, _, code = run(t, "", "frame", "decode", "--json", "--datagram", "02a1b2c3d40000000702185000010000000900000000000000020a")
	if code != 1 || !strings.Contains(out, `"verdict": "version"`) || strings.Contains(out, `"sender"`) {
		t.Fatalf("v2 datagram: exit %d:\n%s", code, out)
	}
	if _, _, code = run(t, "", "frame", "decode", "--datagram", "--versions", "1,2", "02a1b2c3d40000000702185000010000000900000000000000020a"); code != 0 {
		t.Fatalf("v2 datagram with --versions 1,2: exit %d", code)
	}
}

// The encodings of docs/protocol.md §2.4.
func TestFrameEncodeMatchesProtocolVectors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"update", "version", "1"}, "0100000000000000000000000100"},
		{[]string{"update", "registryHash", "0xa1b2c3d4"}, "010000000100000000a1b2c3d404"},
		{[]string{"update", "featureFlags", "7"}, "0100000005000000000000000703"},
		{[]string{"update", "terminalMode", "2"}, "010000000900000000000000020a"},
		{[]string{"update", "rows", "24"}, "010000000a000000000000001813"},
		{[]string{"update", "11", "80"}, "010000000b00000000000000505a"},
		{[]string{"toggle", "2", "on"}, "0200000005000000000000000502"},
		{[]string{"toggle", "DEBUG", "off"}, "0200000005000000000000000403"},
		{[]string{"resize", "40x120"}, "0400000000000000000028007854"},
		{[]string{"heartbeat", "--at", "1700000000000"}, "05000000000000018bcfe56800cd"},
		{[]string{"ack", "update"}, "0600000001000000000000000007"},
		{[]string{"bulk", "terminalMode=2", "rows=40", "cols=120"}, "20000000090000000000000002000000000a0000000000000028000000000b0000000000000078007a"},
		{[]string{"--datagram", "--state", "0x01a1b2c3d40000000702185000", "update", "terminalMode", "2"}, "01a1b2c3d40000000702185000010000000900000000000000020a"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errs, code := run(t, "", append([]string{"frame", "encode"}, tc.args...)...)
			if code != 0 || strings.TrimSpace(out) != tc.want {
				t.Errorf("encode %v: exit %d, %q (%s), want %s", tc.args, code, out, errs, tc.want)
			}
		})
	}
}

func TestFrameEncodeRefusesInvalid(t *testing.T) {
	for _, args := range [][]string{
		{"update", "rows", "0"},
		{"update", "terminalMode", "4"},
		{"update", "featureFlags", "0x800"},
		{"update", "2", "1"},
		{"update", "bogus", "1"},
		{"update", "rows", "many"},
		{"toggle", "11", "on"},
		{"toggle", "2", "maybe"},
		{"resize", "0x80"},
		{"resize", "40by120"},
		{"bulk", "rows=40", "cols"},
		{"error", "9", "x"},
		{"ack", "heartbeat"},
	} {
		out, errs, code := run(t, "", append([]string{"frame", "encode"}, args...)...)
		if code == 0 || out != "" || errs == "" {
			t.Errorf("encode %v: exit %d, out %q, err %q; want an error and no output", args, code, out, errs)
		}
	}
}

// ERROR code 6 (storage) is a valid frame: encode and decode agree with the
// vector "error 6 'storage'".
func TestFrameStorageErrorCode(t *testing.T) {
	out, errs, code := run(t, "", "frame", "encode", "error", "6", "storage")
	if code != 0 || strings.TrimSpace(out) != "070000000673746f726167650078" {
		t.Fatalf("encode error 6: exit %d, out %q, err %q", code, out, errs)
	}
	out, _, code = run(t, "", "frame", "decode", "070000000673746f726167650078")
	if code != 0 || !strings.Contains(out, "storage") || !strings.Contains(out, "verdict   ok") {
		t.Fatalf("decode error 6: exit %d:\n%s", code, out)
	}
	if _, _, code = run(t, "", "frame", "decode", "0700000007000000000000000000"); code != 1 {
		t.Fatalf("error code 7: exit %d, want 1", code)
	}
}
