// Histogram and Counts arithmetic. The bucket layout is the kernel's
// (smik_hist_bucket in smik_abi.h); bucketLow is its exact inverse, so user
// space never needs a copy of the table.
#include <algorithm>
#include <cmath>

#include "agent/telemetry/metrics.h"

namespace smik::telemetry {

namespace {

// Per-CPU maps are read without a lock and a map can be re-created under a
// running agent (restart, upgrade): a "later" snapshot may then be smaller.
// Saturating keeps a window at zero instead of wrapping to 2^64.
uint64_t saturatingSub(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

// Octave (log2 of the power of two) of bucket b >= SMIK_HIST_SUB.
int octave(uint32_t b) { return static_cast<int>(b / SMIK_HIST_SUB) + SMIK_HIST_SUB_LOG2 - 1; }

// Width of bucket b in µs: one value each below SMIK_HIST_SUB, then
// 1/SMIK_HIST_SUB of its power of two.
double bucketWidth(uint32_t b) {
  if (b < SMIK_HIST_SUB) return 1;
  return std::ldexp(1.0, octave(b) - SMIK_HIST_SUB_LOG2);
}

}  // namespace

uint64_t Histogram::count() const {
  uint64_t n = 0;
  for (uint64_t c : buckets) n += c;
  return n;
}

double Histogram::bucketLow(uint32_t b) {
  if (b < SMIK_HIST_SUB) return b;
  const uint32_t sub = b % SMIK_HIST_SUB;
  return std::ldexp(static_cast<double>(SMIK_HIST_SUB + sub), octave(b) - SMIK_HIST_SUB_LOG2);
}

// Values are whole µs, so a bucket holds the integers low .. low+width-1 and
// their midpoint is exact for the unit-width buckets (below 2 SMIK_HIST_SUB
// µs) instead of being off by half a microsecond. The last bucket also holds everything above
// its range; its nominal midpoint is the best a fixed layout can say.
double Histogram::bucketMid(uint32_t b) { return bucketLow(b) + (bucketWidth(b) - 1) / 2; }

double Histogram::quantile(double q) const {
  const uint64_t n = count();
  if (n == 0) return 0;
  // The rank of the q-th value among n (1-based), as "nearest rank" does it:
  // p50 of {a, b} is a, p100 is the largest. The epsilon keeps 0.07 * 100
  // (7.000000000000001 in binary) at rank 7.
  const double want = std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(n) - 1e-9);
  const uint64_t rank = std::clamp<uint64_t>(static_cast<uint64_t>(want), 1, n);
  uint64_t seen = 0;
  for (uint32_t b = 0; b < buckets.size(); b++) {
    seen += buckets[b];
    if (seen >= rank) return bucketMid(b);
  }
  return bucketMid(buckets.size() - 1);  // unreachable: seen reaches n
}

void Histogram::add(const Histogram& o) {
  for (size_t b = 0; b < buckets.size(); b++) buckets[b] += o.buckets[b];
}

void Histogram::subtract(const Histogram& o) {
  for (size_t b = 0; b < buckets.size(); b++) buckets[b] = saturatingSub(buckets[b], o.buckets[b]);
}

void Counts::add(const Counts& o) {
  success += o.success;
  refused += o.refused;
  timeout += o.timeout;
  policy += o.policy;
  reset += o.reset;
  handshake_us.add(o.handshake_us);
  srtt_us.add(o.srtt_us);
  http_success += o.http_success;
  http_failure += o.http_failure;
  response_us.add(o.response_us);
}

void Counts::subtract(const Counts& o) {
  success = saturatingSub(success, o.success);
  refused = saturatingSub(refused, o.refused);
  timeout = saturatingSub(timeout, o.timeout);
  policy = saturatingSub(policy, o.policy);
  reset = saturatingSub(reset, o.reset);
  handshake_us.subtract(o.handshake_us);
  srtt_us.subtract(o.srtt_us);
  http_success = saturatingSub(http_success, o.http_success);
  http_failure = saturatingSub(http_failure, o.http_failure);
  response_us.subtract(o.response_us);
}

}  // namespace smik::telemetry
