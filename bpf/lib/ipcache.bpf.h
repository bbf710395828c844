/* The ipcache: pod (and node) address -> identity, for every pod of the
 * cluster. The tc programs and the HTTP judge read the same map (pinned by
 * name, or handed over with bpf_map__reuse_fd), so this is its one
 * definition: two copies could drift apart and a shared fd would then be
 * refused at load, or worse, read with another layout. */
#ifndef SMIK_IPCACHE_BPF_H
#define SMIK_IPCACHE_BPF_H

#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SMIK_MAX_IPS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct smik_ip_key);
  __type(value, struct smik_ip_info);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} smik_ipcache SEC(".maps");

#endif /* SMIK_IPCACHE_BPF_H */
