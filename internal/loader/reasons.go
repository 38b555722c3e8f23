package loader

import "github.com/regedge/regedge/internal/codec"

// Reason is a kernel verdict: the protocol reasons of internal/codec (0..7)
// followed by the kernel's own. The values equal enum regedge_reason in
// bpf/include/reason.h; TestReasonEnumMatchesC fails when they drift.
type Reason uint32

const (
	ReasonOK               = Reason(codec.ReasonOK)
	ReasonLength           = Reason(codec.ReasonLength)
	ReasonType             = Reason(codec.ReasonType)
	ReasonChecksum         = Reason(codec.ReasonChecksum)
	ReasonField            = Reason(codec.ReasonField)
	ReasonValue            = Reason(codec.ReasonValue)
	ReasonState            = Reason(codec.ReasonState)
	ReasonVersion          = Reason(codec.ReasonVersion)
	ReasonSource    Reason = 8
	ReasonFragment  Reason = 9
	ReasonBlocked   Reason = 10
	ReasonSynflood  Reason = 11
	ReasonMalformed Reason = 12
	// ReasonUnsigned: a valid bus datagram without a signature trailer
	// while the agent requires one (SetRequireSigned).
	ReasonUnsigned Reason = 13

	// NumReasons is REASON_MAX: the size of the per-hook counter arrays.
	NumReasons = 14
)

var kernelReasonWords = [...]string{"source", "fragment", "blocked", "synflood", "malformed", "unsigned"}

// String returns the reason word used in metrics (docs/metrics.md).
func (r Reason) String() string {
	if r < codec.NumReasons {
		return codec.Reason(r).String()
	}
	if i := int(r) - codec.NumReasons; i < len(kernelReasonWords) {
		return kernelReasonWords[i]
	}
	return "unknown"
}
