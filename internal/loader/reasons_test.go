package loader

import (
	"testing"

	"github.com/regedge/regedge/internal/codec"
)

// TestReasonsMatchCodec: the protocol reasons of the C enum (generated into
// Go by bpf2go) have the codec's values, so a kernel verdict and a codec
// verdict compare as numbers, and every reason has its own word.
func TestReasonsMatchCodec(t *testing.T) {
	for _, tc := range []struct {
		kernel Reason
		codec  codec.Reason
	}{
		{ReasonOK, codec.ReasonOK}, {ReasonLength, codec.ReasonLength}, {ReasonType, codec.ReasonType},
		{ReasonChecksum, codec.ReasonChecksum}, {ReasonField, codec.ReasonField}, {ReasonValue, codec.ReasonValue},
		{ReasonState, codec.ReasonState}, {ReasonVersion, codec.ReasonVersion},
	} {
		if uint32(tc.kernel) != uint32(tc.codec) {
			t.Errorf("C enum %s = %d, codec %s = %d", tc.kernel, uint32(tc.kernel), tc.codec, uint32(tc.codec))
		}
	}
	if int(ReasonSource) != codec.NumReasons {
		t.Errorf("the kernel's own reasons start at %d, want right after the codec's %d", ReasonSource, codec.NumReasons)
	}
	seen := map[string]Reason{}
	for r := Reason(0); r < NumReasons; r++ {
		w := r.String()
		if w == "unknown" {
			t.Errorf("reason %d has no word", r)
		}
		if prev, dup := seen[w]; dup {
			t.Errorf("reasons %d and %d are both %q", prev, r, w)
		}
		seen[w] = r
	}
}
