package codec

import (
	"bufio"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestDefaultStateIsSeed(t *testing.T) {
	s := DefaultState()
	if got, want := s.Dump(), "0x01a1b2c3d40000000702185000"; got != want {
		t.Fatalf("default dump %s, want %s", got, want)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	b := s.Bytes()
	if got := s.Append(nil); string(got) != string(b[:]) {
		t.Fatalf("Append %x != Bytes %x", got, b)
	}
}

func TestStateRulesNameTheField(t *testing.T) {
	for _, tc := range []struct {
		rule  string
		mod   func(*State)
		field string
	}{
		{"version 1..255", func(s *State) { s.Version = 0 }, "version"},
		{"featureFlags bits 11..31 zero", func(s *State) { s.FeatureFlags = 1 << 11 }, "featureFlags"},
		{"terminalMode 0..3", func(s *State) { s.TerminalMode = 4 }, "terminalMode"},
		{"rows 1..255", func(s *State) { s.Rows = 0 }, "rows"},
		{"cols 1..255", func(s *State) { s.Cols = 0 }, "cols"},
		{"reserved 0", func(s *State) { s.Reserved = 1 }, "reserved"},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			s := DefaultState()
			tc.mod(&s)
			err := s.Validate()
			var ce *Error
			if !errors.As(err, &ce) || ce.Reason != ReasonState || ce.Field != tc.field {
				t.Fatalf("Validate() = %v, want state error naming %s", err, tc.field)
			}
			if s.Valid() {
				t.Fatal("Valid() = true for an invalid state")
			}
		})
	}
}

func TestDecodeStateLength(t *testing.T) {
	for _, n := range []int{0, 12, 14} {
		_, err := DecodeState(make([]byte, n))
		if !errors.Is(err, ErrLength) {
			t.Errorf("DecodeState(%d bytes) = %v, want length", n, err)
		}
	}
}

func TestParseDump(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr string // "" ok, "syntax", or a reason word
	}{
		{"0x01a1b2c3d40000000702185000", ""},
		{"0X01A1B2C3D40000000702185000", ""},
		{"01a1b2c3d40000000702185000", "syntax"},
		{"0x01a1b2c3d400000007021850", "syntax"},
		{"0x01a1b2c3d4000000070218500000", "syntax"},
		{"0x01a1b2c3d4000000070218500g", "syntax"},
		{"0x01a1b2c3d40000000702005000", "state"},
		{"", "syntax"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			s, err := ParseDump(tc.in)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("ParseDump(%q): %v", tc.in, err)
			case tc.wantErr == "" && s != DefaultState():
				t.Errorf("ParseDump(%q) = %v", tc.in, s)
			case tc.wantErr == "syntax":
				var se *SyntaxError
				if !errors.As(err, &se) {
					t.Errorf("ParseDump(%q) = %v, want *SyntaxError", tc.in, err)
				}
			case tc.wantErr == "state" && !errors.Is(err, ErrState):
				t.Errorf("ParseDump(%q) = %v, want state error", tc.in, err)
			}
		})
	}
}

func TestWith(t *testing.T) {
	s := DefaultState()
	n, err := s.With(FieldRows, 40)
	if err != nil || n.Rows != 40 {
		t.Fatalf("With(rows, 40) = %v, %v", n, err)
	}
	if n, err := s.With(FieldRows, 0); !errors.Is(err, ErrValue) || n != s {
		t.Fatalf("With(rows, 0) = %v, %v; want value error and the state unchanged", n, err)
	}
	if _, err := s.With(2, 0); !errors.Is(err, ErrField) {
		t.Fatalf("With(2, 0) = %v, want field error", err)
	}
}

func TestFieldTable(t *testing.T) {
	offset := 0
	for _, f := range Fields() {
		if int(f.ID) != offset {
			t.Errorf("%s: id %d, want its byte offset %d", f.Name, f.ID, offset)
		}
		offset += f.Width
		byName, ok := FieldByName(strings.ToUpper(f.Name))
		if !ok || byName != f {
			t.Errorf("FieldByName(%s) = %v, %v", f.Name, byName, ok)
		}
		byID, ok := FieldByID(f.ID)
		if !ok || byID != f {
			t.Errorf("FieldByID(%d) = %v, %v", f.ID, byID, ok)
		}
	}
	if offset != StateSize {
		t.Fatalf("fields cover %d bytes, want %d", offset, StateSize)
	}
}

func TestNames(t *testing.T) {
	if got := strings.Join(FlagNames(7), ","); got != "PREMIUM_TYPES,PRIVATE_REGISTRY,DEBUG" {
		t.Errorf("FlagNames(7) = %s", got)
	}
	if got := strings.Join(FlagNames(1<<10|1<<12), ","); got != "FAST_CACHE,BIT_12" {
		t.Errorf("FlagNames = %s", got)
	}
	if b, ok := FlagBit("debug"); !ok || b != 2 {
		t.Errorf("FlagBit(debug) = %d, %v", b, ok)
	}
	if b, ok := FlagBit("10"); !ok || b != 10 {
		t.Errorf("FlagBit(10) = %d, %v", b, ok)
	}
	if _, ok := FlagBit("11"); ok {
		t.Error("FlagBit(11) accepted an undefined bit")
	}
	if TerminalModeName(2) != "raw" || TerminalModeName(4) != "" {
		t.Error("terminal mode names")
	}
}

func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		hex  string
		want string
	}{
		{"010000000900000000000000020b", "codec: frame: checksum: want 0x0a, got 0x0b"},
		{"010000000a00000000000000000b", "codec: frame: value: rows: 0 is outside 1..255"},
		{"0100000002000000000000000102", "codec: frame: field: unknown field id 2"},
		{"20000000090000000000000002000000000a00000000000000000021", "codec: bulk: value: entry 2: rows: 0 is outside 1..255"},
		{"0300000000000000000000000003", "codec: frame: type: unknown frame type 0x03"},
		{"", "codec: frame: length: want 14 bytes, got 0"},
	} {
		t.Run(tc.hex, func(t *testing.T) {
			b, err := ParseHex(tc.hex)
			if err != nil {
				t.Fatal(err)
			}
			_, err = DecodeFrame(b)
			if err == nil || err.Error() != tc.want {
				t.Errorf("DecodeFrame(%s) = %v, want %q", tc.hex, err, tc.want)
			}
		})
	}
}

func TestErrorsIs(t *testing.T) {
	_, err := DecodeFrame([]byte{1, 2, 3})
	if !errors.Is(err, ErrLength) || errors.Is(err, ErrChecksum) {
		t.Fatalf("errors.Is on %v", err)
	}
	if r, ok := ReasonOf(errors.New("other")); ok {
		t.Fatalf("ReasonOf(foreign error) = %v, true", r)
	}
	for r := ReasonOK; r < NumReasons; r++ {
		back, ok := ParseReason(r.String())
		if !ok || back != r {
			t.Errorf("ParseReason(%s) = %v, %v", r, back, ok)
		}
	}
}

func TestConstructorsPassChecks(t *testing.T) {
	bulk, err := Bulk(Entry{FieldTerminalMode, 2}, Entry{FieldRows, 40}, Entry{FieldCols, 120})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Frame{
		Update(FieldRows, 24), Toggle(2, true), Toggle(10, false), Resize(40, 120),
		Heartbeat(1700000000000), Ack(TypeUpdate), ErrorFrame(ErrCodeBadChecksum, "checksum"),
		ErrorFrame(ErrCodeInvalid, "bad\x00\n"), bulk,
	} {
		if err := f.Check(); err != nil {
			t.Errorf("%v frame: %v", f.Type, err)
		}
	}
	if got := ErrorFrame(ErrCodeNotAllowed, "forbidden-too-long"); got.ErrorMessage() != "forbidde" {
		t.Errorf("ErrorMessage = %q", got.ErrorMessage())
	}
	if got := bulk.Bytes(); CheckFrame(got) != ReasonOK || len(got) != BulkSize(3) {
		t.Errorf("bulk bytes %x", got)
	}
	if _, err := Bulk(); !errors.Is(err, ErrLength) {
		t.Errorf("Bulk() = %v, want length", err)
	}
	if _, err := Bulk(make([]Entry, 17)...); !errors.Is(err, ErrLength) {
		t.Errorf("Bulk(17) = %v, want length", err)
	}
}

func TestApply(t *testing.T) {
	s := DefaultState()
	bulk, _ := Bulk(Entry{FieldTerminalMode, 3}, Entry{FieldRows, 40}, Entry{FieldCols, 120})
	for _, tc := range []struct {
		name string
		f    Frame
		want func(State) State
	}{
		{"update", Update(FieldRegistryHash, 0xdeadbeef), func(s State) State { s.RegistryHash = 0xdeadbeef; return s }},
		{"toggle on", Toggle(10, true), func(s State) State { s.FeatureFlags |= 1 << 10; return s }},
		{"toggle off", Toggle(0, false), func(s State) State { s.FeatureFlags &^= 1; return s }},
		{"resize", Resize(40, 120), func(s State) State { s.Rows, s.Cols = 40, 120; return s }},
		{"bulk", bulk, func(s State) State { s.TerminalMode, s.Rows, s.Cols = 3, 40, 120; return s }},
		{"heartbeat changes nothing", Heartbeat(1), func(s State) State { return s }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Apply(&tc.f)
			if err != nil || got != tc.want(s) {
				t.Errorf("%s: Apply = %v, %v; want %v", tc.name, got, err, tc.want(s))
			}
		})
	}
	// One bad entry: nothing of the frame is applied.
	bad, _ := Bulk(Entry{FieldRows, 40}, Entry{FieldCols, 0})
	if got, err := s.Apply(&bad); !errors.Is(err, ErrValue) || got != s {
		t.Errorf("Apply(bad bulk) = %v, %v; want value error, state unchanged", got, err)
	}
}

func TestDiff(t *testing.T) {
	from := DefaultState()
	to := from
	to.Rows, to.Cols = 40, 120
	f, ok := Diff(from, to)
	if !ok || f.N != 2 {
		t.Fatalf("Diff = %+v, %v", f, ok)
	}
	got, err := from.Apply(&f)
	if err != nil || got != to {
		t.Fatalf("Apply(Diff) = %v, %v; want %v", got, err, to)
	}
	if _, ok := Diff(from, from); ok {
		t.Fatal("Diff of equal states is not empty")
	}
}

func TestVersionSet(t *testing.T) {
	vs := NewVersionSet(1, 64, 255)
	for v := 0; v < 256; v++ {
		want := v == 1 || v == 64 || v == 255
		if vs.Has(uint8(v)) != want {
			t.Errorf("Has(%d) = %v", v, !want)
		}
	}
	if vs.String() != "{1,64,255}" {
		t.Errorf("String = %s", vs)
	}
	// A datagram from a version the receiver accepts.
	s := DefaultState()
	s.Version = 2
	f := Update(FieldRows, 30)
	d := AppendDatagram(nil, s, &f)
	if r := CheckDatagram(d, &DefaultVersions); r != ReasonVersion {
		t.Errorf("v2 datagram against {1}: %v", r)
	}
	v12 := NewVersionSet(1, 2)
	if r := CheckDatagram(d, &v12); r != ReasonOK {
		t.Errorf("v2 datagram against {1,2}: %v", r)
	}
}

func TestParseHex(t *testing.T) {
	for in, want := range map[string]string{
		"0x0102":         "\x01\x02",
		" 01 02\t03 ":    "\x01\x02\x03",
		"20 · 0000 · 0f": "\x20\x00\x00\x0f",
		"":               "",
	} {
		t.Run(in, func(t *testing.T) {
			got, err := ParseHex(in)
			if err != nil || string(got) != want {
				t.Errorf("ParseHex(%q) = %x, %v", in, got, err)
			}
		})
	}
	for _, in := range []string{"0x1", "zz", "0x0102g0"} {
		if _, err := ParseHex(in); err == nil {
			t.Errorf("ParseHex(%q) accepted", in)
		}
	}
}

func TestHeaderBlock(t *testing.T) {
	s := DefaultState()
	b := NewHeaderBlock(s)
	h := http.Header{}
	injectHeaders(b, h)
	want := map[string]string{
		"X-Bun-Config-Version": "1",
		"X-Bun-Registry-Hash":  "0xa1b2c3d4",
		"X-Bun-Feature-Flags":  "0x00000007",
		"X-Bun-Terminal-Mode":  "2",
		"X-Bun-Terminal-Rows":  "24",
		"X-Bun-Terminal-Cols":  "80",
		"X-Bun-Config-Dump":    "0x01a1b2c3d40000000702185000",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	// Add after Inject must not write into the shared value slices.
	h.Add(HeaderTerminalRows, "99")
	h2 := http.Header{}
	injectHeaders(b, h2)
	if got := h2.Values(HeaderTerminalRows); len(got) != 1 || got[0] != "24" {
		t.Fatalf("shared values changed by Add: %q", got)
	}
	wire := string(b.AppendWire(nil))
	if !strings.HasPrefix(wire, "X-Bun-Config-Version: 1\r\nX-Bun-Registry-Hash: 0xa1b2c3d4\r\n") ||
		!strings.HasSuffix(wire, "X-Bun-Config-Dump: 0x01a1b2c3d40000000702185000\r\n") {
		t.Fatalf("wire form %q", wire)
	}
	// The wire form parses back into the same state through net/http.
	got, err := extractHeaders(parseWireHeaders(t, wire), State{})
	if err != nil || got != s {
		t.Fatalf("extract(wire) = %v, %v", got, err)
	}
}

func parseWireHeaders(t *testing.T, wire string) http.Header {
	t.Helper()
	req, err := http.ReadRequest(bufioReader("GET / HTTP/1.1\r\nHost: x\r\n" + wire + "\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return req.Header
}

// extractHeaders is ExtractHeadersFunc over an http.Header, the adapter a
// net/http front end writes for itself.
func extractHeaders(h http.Header, def State) (State, error) {
	return ExtractHeadersFunc(func(name string) (string, int) {
		if vs := h[name]; len(vs) > 0 {
			return vs[0], len(vs)
		}
		return "", 0
	}, def)
}

func TestExtractHeaders(t *testing.T) {
	def := DefaultState()
	withRows := def
	withRows.Rows = 40
	v2 := def
	v2.Version = 2
	for _, tc := range []struct {
		name    string
		h       map[string][]string
		want    State
		errHdr  string // header the error must name; "" for success
		errRule string
	}{
		{"no headers: the agent's state", nil, def, "", ""},
		{"dump alone", map[string][]string{"X-Bun-Config-Dump": {"0x02a1b2c3d40000000702285000"}}, func() State { s := v2; s.Rows = 40; return s }(), "", ""},
		{"dump upper case", map[string][]string{"X-Bun-Config-Dump": {"0X01A1B2C3D40000000702285000"}}, withRows, "", ""},
		{"dump with agreeing header", map[string][]string{"X-Bun-Config-Dump": {"0x01a1b2c3d40000000702285000"}, "X-Bun-Terminal-Rows": {"40"}}, withRows, "", ""},
		{"dump with disagreeing header", map[string][]string{"X-Bun-Config-Dump": {"0x01a1b2c3d40000000702285000"}, "X-Bun-Terminal-Rows": {"41"}}, def, "X-Bun-Terminal-Rows", "disagrees with X-Bun-Config-Dump"},
		{"dump with disagreeing hash", map[string][]string{"X-Bun-Config-Dump": {"0x01a1b2c3d40000000702185000"}, "X-Bun-Registry-Hash": {"0x00000000"}}, def, "X-Bun-Registry-Hash", "disagrees with X-Bun-Config-Dump"},
		{"dump malformed", map[string][]string{"X-Bun-Config-Dump": {"0x01a1"}}, def, "X-Bun-Config-Dump", "must be 0x and 26 hex digits"},
		{"dump breaks a rule", map[string][]string{"X-Bun-Config-Dump": {"0x01a1b2c3d40000000702185001"}}, def, "X-Bun-Config-Dump", "reserved must be 0"},
		{"dump twice", map[string][]string{"X-Bun-Config-Dump": {"0x01a1b2c3d40000000702185000", "0x01a1b2c3d40000000702185000"}}, def, "X-Bun-Config-Dump", "must appear once"},
		{"one header, rest default", map[string][]string{"X-Bun-Terminal-Rows": {"40"}}, withRows, "", ""},
		{"hash upper case", map[string][]string{"X-Bun-Registry-Hash": {"0XDEADBEEF"}}, func() State { s := def; s.RegistryHash = 0xdeadbeef; return s }(), "", ""},
		{"hash without 0x", map[string][]string{"X-Bun-Registry-Hash": {"deadbeef"}}, def, "X-Bun-Registry-Hash", "must be 0x and 8 hex digits"},
		{"hash 7 digits", map[string][]string{"X-Bun-Registry-Hash": {"0xdeadbee"}}, def, "X-Bun-Registry-Hash", "must be 0x and 8 hex digits"},
		{"flags bit 11", map[string][]string{"X-Bun-Feature-Flags": {"0x00000800"}}, def, "X-Bun-Feature-Flags", "featureFlags bits 11..31 must be 0"},
		{"mode 4", map[string][]string{"X-Bun-Terminal-Mode": {"4"}}, def, "X-Bun-Terminal-Mode", "terminalMode must be 0..3"},
		{"rows 256", map[string][]string{"X-Bun-Terminal-Rows": {"256"}}, def, "X-Bun-Terminal-Rows", "rows must be 1..255"},
		{"cols 0", map[string][]string{"X-Bun-Terminal-Cols": {"0"}}, def, "X-Bun-Terminal-Cols", "cols must be 1..255"},
		{"version 0", map[string][]string{"X-Bun-Config-Version": {"0"}}, def, "X-Bun-Config-Version", "version must be 1..255"},
		{"decimal with sign", map[string][]string{"X-Bun-Terminal-Rows": {"+40"}}, def, "X-Bun-Terminal-Rows", "must be a decimal number without sign or leading zeros"},
		{"decimal leading zero", map[string][]string{"X-Bun-Terminal-Rows": {"040"}}, def, "X-Bun-Terminal-Rows", "must be a decimal number without sign or leading zeros"},
		{"decimal empty", map[string][]string{"X-Bun-Terminal-Rows": {""}}, def, "X-Bun-Terminal-Rows", "must be a decimal number without sign or leading zeros"},
		{"decimal huge", map[string][]string{"X-Bun-Terminal-Rows": {"99999999999999999999"}}, def, "X-Bun-Terminal-Rows", "must be a decimal number without sign or leading zeros"},
		{"header twice", map[string][]string{"X-Bun-Terminal-Rows": {"40", "40"}}, def, "X-Bun-Terminal-Rows", "must appear once"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := extractHeaders(http.Header(tc.h), def)
			if tc.errHdr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %v, %v; want %v", got, err, tc.want)
				}
				return
			}
			var he *HeaderError
			if !errors.As(err, &he) || he.Header != tc.errHdr || he.Rule != tc.errRule {
				t.Fatalf("err = %v; want header %s rule %q", err, tc.errHdr, tc.errRule)
			}
			if got != def {
				t.Fatalf("state on error = %v, want the default unchanged", got)
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := NewRequestID()
		if len(id) != 16 || strings.ToLower(id) != id || !ValidRequestID(id) {
			t.Fatalf("request id %q", id)
		}
		if seen[id] {
			t.Fatalf("request id %q repeated", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "0123456789abcde", "0123456789abcdefa", "0123456789abcdeg"} {
		if ValidRequestID(bad) {
			t.Errorf("ValidRequestID(%q) = true", bad)
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// injectHeaders sets a block's headers on an http.Header, as a caller with
// net/http does (the codec itself knows no transport).
func injectHeaders(b *HeaderBlock, h http.Header) {
	for name, v := range b.All() {
		h[name] = v
	}
}
