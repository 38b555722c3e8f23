/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The proxy ports, a constant of each object that includes this header, set
 * by the loader through CollectionSpec.Variables before load: the non-zero
 * ports from slot 0 on, then zeroes.
 */
#ifndef REGEDGE_PORTS_H
#define REGEDGE_PORTS_H

#include <linux/types.h>
#include "maps.h"

volatile const __u16 proxy_ports[MAX_PROXY_PORTS] = {4873};

static __always_inline int is_proxy_port(__u16 port)
{
#pragma clang loop unroll(full)
	for (int i = 0; i < MAX_PROXY_PORTS; i++) {
		__u16 p = proxy_ports[i]; /* one load: the constant is volatile */
		/* The loader packs the ports from slot 0: the first empty slot
		 * ends the list (and the verifier, which knows the constants,
		 * drops the loads after it). */
		if (p == 0)
			return 0;
		if (p == port)
			return 1;
	}
	return 0;
}

#endif
