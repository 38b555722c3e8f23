/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one enum of verdict and drop reasons, shared by the kernel programs and
 * Go. 0..7 are docs/protocol.md §2.3 and equal internal/codec's Reason
 * values; 8.. are the kernel's own. bpf2go generates the Go constants from
 * the object's BTF (gen.go: -type regedge_reason), and internal/loader's
 * TestReasonsMatchCodec fails when 0..7 drift from the codec's. Never
 * renumber.
 */
#ifndef REGEDGE_REASON_H
#define REGEDGE_REASON_H

enum regedge_reason {
	REASON_OK = 0, /* passed: the counter at this index counts passes */
	REASON_LENGTH = 1,
	REASON_TYPE = 2,
	REASON_CHECKSUM = 3,
	REASON_FIELD = 4,
	REASON_VALUE = 5,
	REASON_STATE = 6,
	REASON_VERSION = 7,
	REASON_SOURCE = 8,
	REASON_FRAGMENT = 9,
	REASON_BLOCKED = 10,
	REASON_SYNFLOOD = 11,
	REASON_MALFORMED = 12,
	REASON_UNSIGNED = 13, /* no signature trailer while bus keys are configured */
	REASON_MAX = 14,
};

#endif
