/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The proxy ports, a constant of each object that includes this header, set
 * by the loader through CollectionSpec.Variables before load.
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
		if (p != 0 && p == port)
			return 1;
	}
	return 0;
}

#endif
