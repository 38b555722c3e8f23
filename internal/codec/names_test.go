package codec

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestErrorCodeString(t *testing.T) {
	for _, tc := range []struct {
		code ErrorCode
		want string
	}{
		{ErrCodeBadLength, "bad length"},
		{ErrCodeBadChecksum, "bad checksum"},
		{ErrCodeUnknownType, "unknown type"},
		{ErrCodeInvalid, "invalid field or value"},
		{ErrCodeNotAllowed, "not allowed"},
		{ErrCodeStorage, "storage (not persisted; retry)"},
		{0, "unknown"},
		{7, "unknown"},
	} {
		t.Run(strconv.Itoa(int(tc.code)), func(t *testing.T) {
			if got := tc.code.String(); got != tc.want {
				t.Fatalf("ErrorCode(%d).String() = %q, want %q", tc.code, got, tc.want)
			}
		})
	}
}

func TestParseFrameType(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want FrameType
		ok   bool
	}{
		{"UPDATE", TypeUpdate, true},
		{"update", TypeUpdate, true},
		{"FEATURE_TOGGLE", TypeFeatureToggle, true},
		{"toggle", TypeFeatureToggle, true},
		{"Toggle", TypeFeatureToggle, true},
		{"RESIZE", TypeResize, true},
		{"heartbeat", TypeHeartbeat, true},
		{"ACK", TypeAck, true},
		{"error", TypeError, true},
		{"BULK", TypeBulk, true},
		{"32", TypeBulk, true},
		{"0x20", TypeBulk, true},
		{"3", 3, true}, // a number need not be a known type
		{"255", 255, true},
		{"256", 0, false},
		{"-1", 0, false},
		{"", 0, false},
		{"UPDATES", 0, false},
		{"TYPE_0x03", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := ParseFrameType(tc.in)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Fatalf("ParseFrameType(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
	// Every named type reads back from its own name.
	for _, ft := range frameTypes {
		if got, ok := ParseFrameType(ft.String()); !ok || got != ft {
			t.Errorf("ParseFrameType(%q) = %v, %v", ft.String(), got, ok)
		}
	}
}

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		name, field, value string
		want               Entry
		errWhat            string // "" when valid
	}{
		{"name and decimal", "rows", "40", Entry{FieldRows, 40}, ""},
		{"any case", "RegistryHash", "0xa1b2c3d4", Entry{FieldRegistryHash, 0xa1b2c3d4}, ""},
		{"numeric id", "10", "24", Entry{FieldRows, 24}, ""},
		{"unknown numeric id is kept for the frame check", "3", "1", Entry{3, 1}, ""},
		{"out of range value is kept for the frame check", "rows", "256", Entry{FieldRows, 256}, ""},
		{"full u64", "featureFlags", "18446744073709551615", Entry{FieldFeatureFlags, 1<<64 - 1}, ""},
		{"unknown name", "width", "1", Entry{}, "field"},
		{"empty field", "", "1", Entry{}, "field"},
		{"negative id", "-1", "1", Entry{}, "field"},
		{"value not a number", "rows", "many", Entry{}, "value of rows"},
		{"value over u64", "rows", "18446744073709551616", Entry{}, "value of rows"},
		{"empty value", "cols", "", Entry{}, "value of cols"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseEntry(tc.field, tc.value)
			if tc.errWhat == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseEntry(%q, %q) = %+v, %v; want %+v", tc.field, tc.value, got, err, tc.want)
				}
				return
			}
			var se *SyntaxError
			if !errors.As(err, &se) || se.What != tc.errWhat || got != (Entry{}) {
				t.Fatalf("ParseEntry(%q, %q) = %+v, %v; want a *SyntaxError about %q and no entry", tc.field, tc.value, got, err, tc.errWhat)
			}
		})
	}
	_, err := ParseEntry("width", "1")
	for _, f := range fields {
		if !strings.Contains(err.Error(), f.Name) {
			t.Errorf("the unknown-field error %q does not list %s", err, f.Name)
		}
	}
}

// FuzzParseEntry: no panic; a parsed entry has the named field's id and the
// value the text spells; an error is a *SyntaxError and leaves no entry.
func FuzzParseEntry(f *testing.F) {
	for _, s := range [][2]string{{"rows", "40"}, {"10", "0x18"}, {"registryHash", "0xa1b2c3d4"}, {"x", "1"}, {"rows", "-1"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, field, value string) {
		e, err := ParseEntry(field, value)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || e != (Entry{}) {
				t.Fatalf("ParseEntry(%q, %q) = %+v, %v: want a *SyntaxError and no entry", field, value, e, err)
			}
			return
		}
		if fd, ok := FieldByName(field); ok && fd.ID != e.Field {
			t.Fatalf("field %q parsed as id %d, want %d", field, e.Field, fd.ID)
		}
		if v, err := strconv.ParseUint(value, 0, 64); err != nil || v != e.Value {
			t.Fatalf("value %q parsed as %d", value, e.Value)
		}
	})
}

// FuzzParseFrameType: no panic, and a name that parses reads back the same.
func FuzzParseFrameType(f *testing.F) {
	for _, s := range []string{"UPDATE", "toggle", "0x20", "255", "256", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ft, ok := ParseFrameType(s)
		if !ok {
			return
		}
		if back, ok := ParseFrameType(ft.String()); ft.String()[0] != 'T' && (!ok || back != ft) {
			t.Fatalf("%q parsed as %v, whose name reads back as %v, %v", s, ft, back, ok)
		}
	})
}
