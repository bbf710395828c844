/* The reverse-translation map: written by sock_lb at connect()/sendmsg(),
 * read back by getpeername/recvmsg and by sockops (which service a
 * connection dialled). Pinned by name, so both objects share it. */
#ifndef SMIK_REVNAT_BPF_H
#define SMIK_REVNAT_BPF_H

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "addr.bpf.h"

/* {socket, backend} -> the service address it dialled. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, SMIK_MAX_REVNAT);
  __type(key, struct smik_revnat_key);
  __type(value, struct smik_revnat_value);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_revnat SEC(".maps");

#endif /* SMIK_REVNAT_BPF_H */
