/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * docs/protocol.md §1 and §2.3 in C: the checks the kernel runs on a config
 * bus datagram. The reference is internal/codec; the Go tests run every
 * vector in testdata/ and a differential fuzzer through these functions
 * (Program.Run) and require the same verdict and reason.
 *
 * The common datagram (a state and a fixed frame) is judged in place in the
 * packet (small_datagram_reason); longer ones are first copied into a
 * scratch buffer (a per-CPU map value), so every access is at a bounded
 * offset of one buffer.
 */
#ifndef REGEDGE_PROTOCOL_H
#define REGEDGE_PROTOCOL_H

#include <linux/types.h>
#include "reason.h"

#define STATE_SIZE 13
#define FIXED_FRAME_SIZE 14
#define BULK_ENTRY_SIZE 13
#define MAX_BULK_ENTRIES 16
#define MAX_FRAME_SIZE (2 + BULK_ENTRY_SIZE * MAX_BULK_ENTRIES) /* 210 */
#define MIN_DATAGRAM (STATE_SIZE + FIXED_FRAME_SIZE)             /* 27 */
#define MAX_DATAGRAM (STATE_SIZE + MAX_FRAME_SIZE)               /* 223 */
/* A signed datagram (docs/protocol.md §3.1a) is a datagram and a trailer of
 * this size: the kernel checks its length only, userspace the signature. */
#define TRAILER_SIZE 72
#define SCRATCH_SIZE 256

#define TYPE_UPDATE 0x01
#define TYPE_FEATURE_TOGGLE 0x02
#define TYPE_RESIZE 0x04
#define TYPE_HEARTBEAT 0x05
#define TYPE_ACK 0x06
#define TYPE_ERROR 0x07
#define TYPE_BULK 0x20

#define NUM_FEATURE_FLAGS 11

struct scratch {
	__u8 b[SCRATCH_SIZE];
};

/* Runtime config that userspace changes without reloading: the accepted
 * config versions (a 256-bit set), the block list's size and the bus
 * allow-list. */
#define ALLOW_FAST_V4 16
#define ALLOW_FAST_V6 8
#define ALLOW_USE_TRIE 0xffffffff

/* Bus public keys are configured: a datagram without a trailer is dropped
 * (REASON_UNSIGNED) once it has passed every other check. */
#define CFG_REQUIRE_TRAILER 1

struct allow4 {
	__u32 addr; /* network order, masked */
	__u32 mask;
};

struct allow6 {
	__u32 addr[4];
	__u32 mask[4];
};

/*
 * The node's own unicast addresses, as many as fit (the agent keeps them
 * current from netlink, internal/loader localaddr_linux.go): a packet to one
 * of them is delivered here, so a drop needs no FIB lookup to know it is
 * ours. Not finding the destination here proves nothing (the node may have
 * more addresses than fit: LOCAL_INCOMPLETE; broadcast, no route): the FIB
 * then decides, as before.
 */
#define LOCAL_V4 8
#define LOCAL_V6 4
#define LOCAL_INCOMPLETE 1

struct local6 {
	__u64 addr[2]; /* the 16 network-order bytes, as two native loads read them */
};

struct regedge_cfg {
	__u64 versions[4];
	__u32 block_count; /* entries on the block list: 0 skips its lookup */
	/* The bus allow-list, when short, as a list checked in a few compares
	 * (an LPM trie lookup costs more than the rest of the datagram check);
	 * ALLOW_USE_TRIE when longer: then allow_v4/allow_v6 decide. */
	__u32 allow4_n;
	__u32 allow6_n;
	__u32 flags; /* CFG_* */
	/* The local address list (above): its counts and LOCAL_* flags, written
	 * together by the agent's address watcher and by nothing else. */
	__u32 local4_n;
	__u32 local6_n;
	__u32 local_flags;
	__u32 local_pad; /* local6 on an 8-byte boundary */
	struct local6 local6[LOCAL_V6];
	__u32 local4[LOCAL_V4]; /* network order */
	struct allow4 allow4[ALLOW_FAST_V4];
	struct allow6 allow6[ALLOW_FAST_V6];
};

/*
 * Word loads at byte offsets. BPF has no unaligned-load instruction in C's
 * eyes (a packed struct or memcpy becomes byte loads and shifts), but the
 * kernel allows unaligned packet and map value access on the machines we
 * run on (x86-64, arm64: efficient unaligned access; BPF_F_STRICT_ALIGNMENT
 * is not set), so a plain word load is one instruction instead of eight.
 */
typedef __u64 __attribute__((may_alias)) u64_any;
typedef __u32 __attribute__((may_alias)) u32_any;

static __always_inline __u64 load64(const __u8 *p) { return *(const u64_any *)p; }
static __always_inline __u32 load32(const __u8 *p) { return *(const u32_any *)p; }

static __always_inline __u32 be32_at(const __u8 *p) { return __builtin_bswap32(load32(p)); }
static __always_inline __u64 be64_at(const __u8 *p) { return __builtin_bswap64(load64(p)); }

/* xor14 is the XOR of p[0..13], a fixed frame and its checksum byte (0 when
 * the checksum holds): two overlapping word loads, the overlap (bytes 6 and
 * 7) shifted out of the second, folded to a byte. */
static __always_inline __u8 xor14(const __u8 *p)
{
	__u64 x = load64(p) ^ (load64(p + 6) >> 16);
	x ^= x >> 32;
	x ^= x >> 16;
	x ^= x >> 8;
	return (__u8)x;
}

/*
 * §1 on 13 wire bytes: version (0) not 0; featureFlags (5..8) <= 0x7ff, that
 * is bytes 5, 6 zero and byte 7 <= 7; terminalMode (9) <= 3; rows (10) and
 * cols (11) not 0; reserved (12) 0. Bytes 5..12 are checked as one word
 * (little-endian: byte 5 lowest): the bits that must be clear are bytes 5
 * and 6, the high five bits of byte 7, the high six of byte 9 and byte 12;
 * bytes 10 and 11 must not be 0.
 */
#define STATE_CLEAR_MASK 0xff0000fc00f8ffffULL

static __always_inline int state_reason(const __u8 *s)
{
	__u64 w = load64(s + 5);
	if (s[0] == 0 || (w & STATE_CLEAR_MASK) != 0 || (w & 0x0000ff0000000000ULL) == 0 ||
	    (w & 0x00ff000000000000ULL) == 0)
		return REASON_STATE;
	return REASON_OK;
}

static __always_inline int version_ok(const struct regedge_cfg *cfg, __u8 v)
{
	return (cfg->versions[(v >> 6) & 3] >> (v & 63)) & 1;
}

/*
 * The UPDATE rules of one field id and value: field, then value, by table
 * instead of a switch. The value is taken as its 8 wire bytes loaded
 * little-endian (load64: the wire's most significant byte lowest, no byte
 * swap), and a value fits in w bits when every bit above them is clear, so
 * each known id has the mask of the bits that must be clear: bytes 0..6
 * for version, rows and cols (8 bits); 0..3 for registryHash (32); 0..5
 * and the top five bits of byte 6 for featureFlags (11); 0..6 and the top
 * six bits of byte 7 for terminalMode (2); all of it for reserved (0). An
 * unknown id has mask 0. Version, rows and cols must also not be 0: their
 * last wire byte (byte 7) is not.
 */
#define FIELD_NONZERO 0x0c01u /* ids 0, 10, 11 */
static const __u64 field_clear[13] = {
	[0] = 0x00ffffffffffffffULL,  /* version */
	[1] = 0x00000000ffffffffULL,  /* registryHash */
	[5] = 0x00f8ffffffffffffULL,  /* featureFlags */
	[9] = 0xfcffffffffffffffULL,  /* terminalMode */
	[10] = 0x00ffffffffffffffULL, /* rows */
	[11] = 0x00ffffffffffffffULL, /* cols */
	[12] = 0xffffffffffffffffULL, /* reserved */
};

static __always_inline int known_field(__u32 id)
{
	return id <= 12 && field_clear[id] != 0;
}

/* v_le: the value's wire bytes as load64 reads them. */
static __always_inline int entry_reason(__u32 id, __u64 v_le)
{
	if (id > 12)
		return REASON_FIELD;
	__u64 clear = field_clear[id];
	if (clear == 0)
		return REASON_FIELD;
	if ((v_le & clear) != 0 || (v_le >> 56) < ((FIELD_NONZERO >> id) & 1))
		return REASON_VALUE;
	return REASON_OK;
}

/* ERROR message: printable ASCII, left-aligned, zero-padded. */
static __always_inline int error_message_ok(const __u8 *m)
{
	int padding = 0;
#pragma clang loop unroll(full)
	for (int i = 0; i < 8; i++) {
		__u8 c = m[i];
		if (c == 0)
			padding = 1;
		else if (padding || c < 0x20 || c > 0x7e)
			return 0;
	}
	return 1;
}

/* A 14-byte frame at f: type, checksum, field, value. */
static __always_inline int fixed_reason(const __u8 *f)
{
	__u8 t = f[0];
	/* The fixed types 1, 2, 4, 5, 6, 7 as bits of one constant. A BULK
	 * (only reached here from a datagram of a fixed frame's length) is
	 * never 14 bytes long. */
	if (t > 7 || ((0xf6 >> t) & 1) == 0)
		return t == TYPE_BULK ? REASON_LENGTH : REASON_TYPE;

	if (xor14(f) != 0)
		return REASON_CHECKSUM;

	__u32 id = be32_at(f + 1);
	__u64 v = be64_at(f + 5);
	switch (t) {
	case TYPE_UPDATE:
		return entry_reason(id, load64(f + 5));
	case TYPE_FEATURE_TOGGLE:
		if (id != 5)
			return REASON_FIELD;
		return (v >> 1) < NUM_FEATURE_FLAGS ? REASON_OK : REASON_VALUE;
	case TYPE_RESIZE:
		if (id != 0)
			return REASON_FIELD;
		if ((v & ~0x00ff00ffULL) != 0 || (v & 0xff) == 0 || (v & 0xff0000) == 0)
			return REASON_VALUE;
		return REASON_OK;
	case TYPE_HEARTBEAT:
		return id == 0 ? REASON_OK : REASON_FIELD;
	case TYPE_ACK:
		if (id != TYPE_UPDATE && id != TYPE_FEATURE_TOGGLE && id != TYPE_RESIZE && id != TYPE_BULK)
			return REASON_FIELD;
		return v == 0 ? REASON_OK : REASON_VALUE;
	case TYPE_ERROR:
		if (id < 1 || id > 6) /* 6: storage */
			return REASON_FIELD;
		return error_message_ok(f + 5) ? REASON_OK : REASON_VALUE;
	}
	return REASON_TYPE;
}

/* A BULK frame of flen bytes at buf[STATE_SIZE]; its length is checked. */
static __always_inline int bulk_reason(const struct scratch *sc, __u32 flen)
{
	const __u8 *f = sc->b + STATE_SIZE;
	__u32 last = flen - 1;
	__u8 x = 0;

	for (__u32 i = 0; i < MAX_FRAME_SIZE - 1; i++) {
		if (i >= last)
			break;
		x ^= f[i];
	}
	asm volatile("" : "+r"(last)); /* keep the check below: the compiler knows it holds, the verifier must see it */
	if (last >= MAX_FRAME_SIZE)
		return REASON_LENGTH; /* unreachable; bounds the access for the verifier */
	if (x != f[last])
		return REASON_CHECKSUM;

	__u32 n = (flen - 2) / BULK_ENTRY_SIZE;
	for (__u32 e = 0; e < MAX_BULK_ENTRIES; e++) {
		if (e >= n)
			break;
		const __u8 *p = f + 1 + e * BULK_ENTRY_SIZE;
		__u32 id = be32_at(p);
		if (!known_field(id))
			return REASON_FIELD;
		if (p[12] != 0)
			return REASON_VALUE;
		int r = entry_reason(id, load64(p + 4));
		if (r != REASON_OK)
			return r;
	}
	return REASON_OK;
}

static __always_inline int bulk_len_ok(__u32 flen)
{
	return flen >= 2 + BULK_ENTRY_SIZE && flen <= MAX_FRAME_SIZE && (flen - 2) % BULK_ENTRY_SIZE == 0;
}

/* The verdict r of a datagram with or without a trailer, once the
 * configuration's demand for one is applied. */
static __always_inline int unsigned_reason(int r, int has_trailer, const struct regedge_cfg *cfg)
{
	if (r == REASON_OK && !has_trailer && (cfg->flags & CFG_REQUIRE_TRAILER))
		return REASON_UNSIGNED;
	return r;
}

/*
 * §2.3 for a datagram of exactly MIN_DATAGRAM bytes (a state and a fixed
 * frame, the common case) at b, which may point into the packet itself.
 */
static __always_inline int small_datagram_reason(const __u8 *b, const struct regedge_cfg *cfg)
{
	if (state_reason(b) != REASON_OK)
		return REASON_STATE;
	if (!version_ok(cfg, b[0]))
		return REASON_VERSION;
	return unsigned_reason(fixed_reason(b + STATE_SIZE), 0, cfg);
}

/*
 * §2.3 for a datagram of len bytes whose first min(len, MAX_DATAGRAM) bytes
 * are in sc: length, state, version, then the frame; then, with
 * CFG_REQUIRE_TRAILER, REASON_UNSIGNED for a valid datagram without a
 * trailer. A trailer's bytes are never read (the copy may not hold them).
 */
static __always_inline int datagram_reason(const struct scratch *sc, __u32 len,
					   const struct regedge_cfg *cfg)
{
	if (len < MIN_DATAGRAM)
		return REASON_LENGTH;
	if (len == MIN_DATAGRAM)
		return small_datagram_reason(sc->b, cfg);
	if (state_reason(sc->b) != REASON_OK)
		return REASON_STATE;
	if (!version_ok(cfg, sc->b[0]))
		return REASON_VERSION;

	/* The frame's length, or the frame's length plus a trailer (§3.1a):
	 * 72 is not a multiple of 13, so at most one reading fits. */
	__u32 flen = len - STATE_SIZE;
	int signed_ = 0;
	if (sc->b[STATE_SIZE] == TYPE_BULK) {
		if (!bulk_len_ok(flen)) {
			if (flen <= TRAILER_SIZE || !bulk_len_ok(flen - TRAILER_SIZE))
				return REASON_LENGTH;
			flen -= TRAILER_SIZE;
			signed_ = 1;
		}
		return unsigned_reason(bulk_reason(sc, flen), signed_, cfg);
	}
	if (flen != FIXED_FRAME_SIZE && flen != FIXED_FRAME_SIZE + TRAILER_SIZE)
		return REASON_LENGTH;
	return unsigned_reason(fixed_reason(sc->b + STATE_SIZE), flen != FIXED_FRAME_SIZE, cfg);
}

#endif
