// The kernel's run-time statistics of one loaded BPF program (counted only
// while bpf_enable_stats(BPF_STATS_RUN_TIME) is held: two clock reads per
// run, so the benchmarks take them in a pass of their own).
#pragma once

#include <bpf/bpf.h>

#include <cstdint>
#include <string>

namespace smik::bench {

struct ProgStats {
  std::string name;
  uint64_t run_ns = 0, runs = 0;
};

inline ProgStats statsOf(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof info;
  ProgStats p;
  if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) return p;
  p.name = info.name;
  p.run_ns = info.run_time_ns;
  p.runs = info.run_cnt;
  return p;
}

}  // namespace smik::bench
