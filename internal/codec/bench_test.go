package codec

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
)

// Benchmarks of the hot paths and, in the same package and run, the baselines
// a user would otherwise write (encoding/json of the state, http.Header.Set of
// the same headers). docs/benchmarks.md records the ratios.

var (
	sinkState  State
	sinkBytes  []byte
	sinkArr    [StateSize]byte
	sinkReason Reason
	sinkString string
	sinkErr    error
)

// jsonState is what a user would marshal without this package.
type jsonState struct {
	Version      uint8  `json:"version"`
	RegistryHash uint32 `json:"registryHash"`
	FeatureFlags uint32 `json:"featureFlags"`
	TerminalMode uint8  `json:"terminalMode"`
	Rows         uint8  `json:"rows"`
	Cols         uint8  `json:"cols"`
	Reserved     uint8  `json:"reserved"`
}

func BenchmarkSerialize(b *testing.B) {
	s := DefaultState()
	b.ReportAllocs()
	for b.Loop() {
		sinkArr = s.Bytes()
	}
}

func BenchmarkSerializeAppend(b *testing.B) {
	s := DefaultState()
	buf := make([]byte, 0, StateSize)
	b.ReportAllocs()
	for b.Loop() {
		sinkBytes = s.Append(buf[:0])
	}
}

func BenchmarkDeserialize(b *testing.B) {
	raw := DefaultState().Bytes()
	var s State
	b.ReportAllocs()
	for b.Loop() {
		sinkErr = DecodeStateInto(&s, raw[:])
	}
}

// BenchmarkDeserializeValue is the value-returning form, for comparison.
func BenchmarkDeserializeValue(b *testing.B) {
	raw := DefaultState().Bytes()
	b.ReportAllocs()
	for b.Loop() {
		sinkState, sinkErr = DecodeState(raw[:])
	}
}

func BenchmarkBaselineJSONMarshal(b *testing.B) {
	s := DefaultState()
	js := jsonState(s)
	b.ReportAllocs()
	for b.Loop() {
		sinkBytes, sinkErr = json.Marshal(&js)
	}
}

func BenchmarkBaselineJSONUnmarshal(b *testing.B) {
	s := DefaultState()
	data, err := json.Marshal(jsonState(s))
	if err != nil {
		b.Fatal(err)
	}
	var js jsonState
	b.ReportAllocs()
	for b.Loop() {
		sinkErr = json.Unmarshal(data, &js)
	}
}

func BenchmarkDumpFormat(b *testing.B) {
	s := DefaultState()
	buf := make([]byte, 0, DumpSize)
	b.ReportAllocs()
	for b.Loop() {
		sinkBytes = s.AppendDump(buf[:0])
	}
}

func BenchmarkDumpParse(b *testing.B) {
	d := DefaultState().Dump()
	b.ReportAllocs()
	for b.Loop() {
		sinkState, sinkErr = ParseDump(d)
	}
}

func BenchmarkUpdateEncode(b *testing.B) {
	f := Update(FieldRows, 40)
	buf := make([]byte, 0, FixedFrameSize)
	b.ReportAllocs()
	for b.Loop() {
		sinkBytes = f.Append(buf[:0])
	}
}

func BenchmarkUpdateDecode(b *testing.B) {
	f := Update(FieldRows, 40)
	raw := f.Bytes()
	var out Frame
	b.ReportAllocs()
	for b.Loop() {
		sinkErr = DecodeFrameInto(&out, raw)
	}
}

func BenchmarkFrameCheck(b *testing.B) {
	f := Update(FieldRows, 40)
	raw := f.Bytes()
	b.ReportAllocs()
	for b.Loop() {
		sinkReason = CheckFrame(raw)
	}
}

func BenchmarkFrameCheckInvalid(b *testing.B) {
	f := Update(FieldRows, 40)
	raw := f.Bytes()
	raw[13] ^= 1
	b.ReportAllocs()
	for b.Loop() {
		sinkReason = CheckFrame(raw)
	}
}

func bulk3() Frame {
	f, _ := Bulk(Entry{FieldTerminalMode, 2}, Entry{FieldRows, 40}, Entry{FieldCols, 120})
	return f
}

func BenchmarkBulk3Encode(b *testing.B) {
	f := bulk3()
	buf := make([]byte, 0, BulkSize(3))
	b.ReportAllocs()
	for b.Loop() {
		sinkBytes = f.Append(buf[:0])
	}
}

func BenchmarkBulk3Decode(b *testing.B) {
	f := bulk3()
	raw := f.Bytes()
	var out Frame
	b.ReportAllocs()
	for b.Loop() {
		sinkErr = DecodeFrameInto(&out, raw)
	}
}

func BenchmarkDatagramCheck(b *testing.B) {
	f := bulk3()
	raw := AppendDatagram(nil, DefaultState(), &f)
	b.ReportAllocs()
	for b.Loop() {
		sinkReason = CheckDatagram(raw, &DefaultVersions)
	}
}

func BenchmarkHeaderInject(b *testing.B) {
	blk := NewHeaderBlock(DefaultState())
	h := make(http.Header, 16)
	b.ReportAllocs()
	for b.Loop() {
		injectHeaders(blk, h)
	}
}

func BenchmarkHeaderAppend(b *testing.B) {
	blk := NewHeaderBlock(DefaultState())
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		sinkBytes = blk.AppendWire(buf[:0])
	}
}

// BenchmarkBaselineHeaderSet sets the same seven headers as a user would,
// formatting each value from the state.
func BenchmarkBaselineHeaderSet(b *testing.B) {
	s := DefaultState()
	h := make(http.Header, 16)
	b.ReportAllocs()
	for b.Loop() {
		h.Set("X-Bun-Config-Version", strconv.Itoa(int(s.Version)))
		h.Set("X-Bun-Registry-Hash", "0x"+strconv.FormatUint(uint64(s.RegistryHash), 16))
		h.Set("X-Bun-Feature-Flags", "0x"+strconv.FormatUint(uint64(s.FeatureFlags), 16))
		h.Set("X-Bun-Terminal-Mode", strconv.Itoa(int(s.TerminalMode)))
		h.Set("X-Bun-Terminal-Rows", strconv.Itoa(int(s.Rows)))
		h.Set("X-Bun-Terminal-Cols", strconv.Itoa(int(s.Cols)))
		h.Set("X-Bun-Config-Dump", s.Dump())
	}
}

func BenchmarkHeaderExtract(b *testing.B) {
	h := http.Header{}
	injectHeaders(NewHeaderBlock(DefaultState()), h)
	def := DefaultState()
	b.ReportAllocs()
	for b.Loop() {
		sinkState, sinkErr = extractHeaders(h, def)
	}
}

func BenchmarkHeaderExtractNone(b *testing.B) {
	h := http.Header{"Accept": {"application/json"}}
	def := DefaultState()
	b.ReportAllocs()
	for b.Loop() {
		sinkState, sinkErr = extractHeaders(h, def)
	}
}

func BenchmarkRequestID(b *testing.B) {
	buf := make([]byte, 0, RequestIDSize)
	b.ReportAllocs()
	for b.Loop() {
		sinkBytes = AppendRequestID(buf[:0])
	}
}

func BenchmarkRequestIDString(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sinkString = NewRequestID()
	}
}
