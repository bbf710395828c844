// Histogram (agent/telemetry/histogram.cpp) against the kernel's bucket
// function: the user-space inverse must agree with smik_hist_bucket for every
// bucket, and quantiles read back from it must be close enough to publish.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "agent/telemetry/metrics.h"

namespace smik::telemetry {
namespace {

void record(Histogram& h, uint64_t v, uint64_t times = 1) {
  h.buckets[smik_hist_bucket(v)] += times;
}

double relativeError(double estimate, double truth) { return std::fabs(estimate - truth) / truth; }

// What smik_abi.h promises: a bucket's midpoint within 1 / (2 SMIK_HIST_SUB)
// of any value in it (6.25% with 8 buckets per power of two).
constexpr double kBound = 1.0 / (2 * SMIK_HIST_SUB);

// ---- layout -------------------------------------------------------------------

TEST(HistogramLayout, EveryBucketLowMapsBackToItsBucket) {
  for (uint32_t b = 0; b < SMIK_HIST_BUCKETS; b++) {
    const double low = Histogram::bucketLow(b);
    ASSERT_EQ(low, std::floor(low)) << "bucket " << b;
    EXPECT_EQ(smik_hist_bucket(static_cast<uint64_t>(low)), b) << "bucket " << b << " low " << low;
  }
}

TEST(HistogramLayout, BucketsTileTheValuesWithoutGaps) {
  for (uint32_t b = 0; b + 1 < SMIK_HIST_BUCKETS; b++) {
    const auto last = static_cast<uint64_t>(Histogram::bucketLow(b + 1)) - 1;
    EXPECT_EQ(smik_hist_bucket(last), b) << "last value of bucket " << b;
    EXPECT_LT(Histogram::bucketLow(b), Histogram::bucketLow(b + 1));
  }
}

TEST(HistogramLayout, SmallValuesAreExact) {
  for (uint32_t v = 0; v < 2 * SMIK_HIST_SUB; v++) {
    EXPECT_EQ(Histogram::bucketLow(smik_hist_bucket(v)), v);
    EXPECT_EQ(Histogram::bucketMid(smik_hist_bucket(v)), v);
  }
}

TEST(HistogramLayout, KnownBuckets) {
  EXPECT_EQ(SMIK_HIST_BUCKETS, 208);  // 8 per power of two up to 2^28: README's table
  constexpr uint32_t S = SMIK_HIST_SUB;
  EXPECT_EQ(Histogram::bucketLow(S), S);
  EXPECT_EQ(Histogram::bucketLow(2 * S), 2 * S);  // the first bucket of width 2
  EXPECT_EQ(Histogram::bucketLow(2 * S + 1), 2 * S + 2);
  EXPECT_EQ(Histogram::bucketMid(2 * S), 2 * S + 0.5);  // holds 2S and 2S + 1
  EXPECT_EQ(Histogram::bucketLow(SMIK_HIST_BUCKETS - 1),
            (2.0 * S - 1) * (1 << (SMIK_HIST_MAX_LOG2 - 1 - SMIK_HIST_SUB_LOG2)));
  EXPECT_EQ(smik_hist_bucket(uint64_t{1} << 40), SMIK_HIST_BUCKETS - 1u);
}

// Values the bucket function could mishandle: every power of two and its
// neighbours up to 2^64 - 1 land in a bucket that exists, never lower than a
// smaller value's, and everything from 2^SMIK_HIST_MAX_LOG2 up saturates in
// the last bucket (an index past the array would be refused by the BPF
// programs' bounds check and the sample lost, or overrun it in C++).
TEST(HistogramLayout, EveryValueLandsInABucketInOrder) {
  uint32_t prev = 0;
  for (uint64_t v = 0; v < (uint64_t{1} << 16); v++) {
    const uint32_t b = smik_hist_bucket(v);
    ASSERT_LT(b, uint32_t{SMIK_HIST_BUCKETS}) << v;
    ASSERT_GE(b, prev) << v;
    prev = b;
  }
  for (int k = 16; k < 64; k++) {
    const uint64_t p = uint64_t{1} << k;
    for (uint64_t v : {p - 1, p, p + 1, p + p / 3}) {
      const uint32_t b = smik_hist_bucket(v);
      ASSERT_LT(b, uint32_t{SMIK_HIST_BUCKETS}) << v;
      ASSERT_GE(b, prev) << v;
      prev = b;
      if (k >= SMIK_HIST_MAX_LOG2) {
        EXPECT_EQ(b, SMIK_HIST_BUCKETS - 1u) << v;
      }
    }
  }
  EXPECT_EQ(smik_hist_bucket(UINT64_MAX), SMIK_HIST_BUCKETS - 1u);
  EXPECT_EQ(smik_hist_bucket((uint64_t{1} << SMIK_HIST_MAX_LOG2) - 1), SMIK_HIST_BUCKETS - 1u);
  EXPECT_EQ(smik_hist_bucket((uint64_t{1} << (SMIK_HIST_MAX_LOG2 - 1)) - 1),
            SMIK_HIST_BUCKETS - 1u - SMIK_HIST_SUB);
}

TEST(HistogramLayout, MidpointWithinTheBoundOfEveryValue) {
  const uint64_t top = uint64_t{1} << 27;
  double worst = 0;
  // Every value up to 2^14, then a stride that is not a power of two so the
  // sweep lands at varied offsets inside buckets.
  for (uint64_t v = 1; v <= top; v += v < (1 << 14) ? 1 : v / 997) {
    const double err = relativeError(Histogram::bucketMid(smik_hist_bucket(v)), v);
    worst = std::max(worst, err);
    ASSERT_LE(err, kBound) << "value " << v;
  }
  // The extremes of each bucket are where the error peaks.
  for (uint32_t b = SMIK_HIST_SUB; b + 1 < SMIK_HIST_BUCKETS; b++) {
    const double low = Histogram::bucketLow(b), last = Histogram::bucketLow(b + 1) - 1;
    worst = std::max({worst, relativeError(Histogram::bucketMid(b), low),
                      relativeError(Histogram::bucketMid(b), last)});
  }
  EXPECT_LE(worst, kBound);
  EXPECT_GT(worst, kBound * 0.9);  // and the bound is not loose: kBound is the layout's
}

// ---- quantiles ----------------------------------------------------------------

TEST(HistogramQuantile, EmptyIsZero) {
  Histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.quantile(0.5), 0);
  EXPECT_EQ(h.quantile(0.99), 0);
}

TEST(HistogramQuantile, UniformOneToTenThousand) {
  Histogram h;
  for (uint64_t v = 1; v <= 10000; v++) record(h, v);
  EXPECT_EQ(h.count(), 10000u);
  EXPECT_LE(relativeError(h.quantile(0.5), 5000), kBound) << h.quantile(0.5);
  EXPECT_LE(relativeError(h.quantile(0.9), 9000), kBound) << h.quantile(0.9);
  EXPECT_LE(relativeError(h.quantile(0.99), 9900), kBound) << h.quantile(0.99);
  EXPECT_LE(h.quantile(0.5), h.quantile(0.9));
  EXPECT_LE(h.quantile(0.9), h.quantile(0.99));
}

TEST(HistogramQuantile, ConstantSmallValueIsExact) {
  Histogram h;
  record(h, 7, 1000);
  EXPECT_EQ(h.quantile(0.5), 7);
  EXPECT_EQ(h.quantile(0.99), 7);
  EXPECT_EQ(h.quantile(1.0), 7);
}

TEST(HistogramQuantile, ConstantLargeValueIsTheBucketMidpoint) {
  Histogram h;
  record(h, 250000, 42);  // 250 ms
  const double mid = Histogram::bucketMid(smik_hist_bucket(250000));
  EXPECT_EQ(h.quantile(0.5), mid);
  EXPECT_EQ(h.quantile(0.99), mid);
  EXPECT_LE(relativeError(mid, 250000), kBound);
}

TEST(HistogramQuantile, BimodalSplitsAtTheRank) {
  Histogram h;
  record(h, 100, 900);    // fast local connects
  record(h, 50000, 100);  // a slow remote tail
  EXPECT_LE(relativeError(h.quantile(0.5), 100), kBound);
  EXPECT_LE(relativeError(h.quantile(0.9), 100), kBound);  // rank 900: still the fast mode
  EXPECT_LE(relativeError(h.quantile(0.91), 50000), kBound);
  EXPECT_LE(relativeError(h.quantile(0.99), 50000), kBound);
}

TEST(HistogramQuantile, NearestRankOnTinySamples) {
  Histogram h;
  record(h, 3);
  record(h, 6);  // both below SMIK_HIST_SUB: a bucket each, exact
  EXPECT_EQ(h.quantile(0.5), 3);
  EXPECT_EQ(h.quantile(0.51), 6);
  EXPECT_EQ(h.quantile(1.0), 6);
  Histogram hundred;
  for (uint64_t v = 1; v <= 100; v++) record(hundred, v < 16 ? v : 15);
  EXPECT_EQ(hundred.quantile(0.07), 7);  // 0.07 * 100 is 7.000000000000001 in binary
}

TEST(HistogramQuantile, OutOfRangeQIsClamped) {
  Histogram h;
  record(h, 2);
  record(h, 7);
  EXPECT_EQ(h.quantile(0), 2);
  EXPECT_EQ(h.quantile(-1), 2);
  EXPECT_EQ(h.quantile(2), 7);
}

// ---- arithmetic ---------------------------------------------------------------

TEST(HistogramArithmetic, AddThenSubtractIsIdentity) {
  Histogram a, b;
  record(a, 5, 3);
  record(a, 70000, 2);
  record(b, 5, 1);
  record(b, 900, 4);
  Histogram sum = a;
  sum.add(b);
  EXPECT_EQ(sum.count(), 10u);
  EXPECT_EQ(sum.buckets[smik_hist_bucket(5)], 4u);
  sum.subtract(b);
  EXPECT_EQ(sum.buckets, a.buckets);
}

TEST(HistogramArithmetic, WindowIsTheDifferenceOfSnapshots) {
  Histogram earlier, later;
  record(earlier, 1000, 10);
  later = earlier;
  record(later, 1000, 5);
  record(later, 3, 2);
  later.subtract(earlier);
  EXPECT_EQ(later.count(), 7u);
  EXPECT_EQ(later.buckets[smik_hist_bucket(1000)], 5u);
}

TEST(HistogramArithmetic, SubtractSaturatesWhenTheMapWasRecreated) {
  Histogram earlier, later;
  record(earlier, 1000, 10);
  record(later, 1000, 4);
  later.subtract(earlier);
  EXPECT_EQ(later.count(), 0u);
}

TEST(CountsArithmetic, AddAndSubtractEveryField) {
  Counts a;
  a.success = 10, a.refused = 1, a.timeout = 2, a.policy = 3, a.reset = 4;
  record(a.handshake_us, 500, 10);
  record(a.srtt_us, 80, 10);
  Counts b;
  b.success = 5, b.refused = 1, b.timeout = 1, b.policy = 1, b.reset = 1;
  record(b.handshake_us, 500, 5);
  record(b.srtt_us, 80, 5);

  Counts sum = a;
  sum.add(b);
  EXPECT_EQ(sum.success, 15u);
  EXPECT_EQ(sum.failure(), 9u);
  EXPECT_EQ(sum.reset, 5u);
  EXPECT_EQ(sum.handshake_us.count(), 15u);
  EXPECT_EQ(sum.srtt_us.count(), 15u);

  sum.subtract(b);
  EXPECT_EQ(sum.success, a.success);
  EXPECT_EQ(sum.refused, a.refused);
  EXPECT_EQ(sum.timeout, a.timeout);
  EXPECT_EQ(sum.policy, a.policy);
  EXPECT_EQ(sum.reset, a.reset);
  EXPECT_EQ(sum.handshake_us.buckets, a.handshake_us.buckets);
  EXPECT_EQ(sum.srtt_us.buckets, a.srtt_us.buckets);
}

TEST(CountsArithmetic, SubtractSaturates) {
  Counts small, big;
  big.success = 3, big.timeout = 2;
  small.subtract(big);
  EXPECT_EQ(small.success, 0u);
  EXPECT_EQ(small.failure(), 0u);
  EXPECT_TRUE(small.empty());
}

TEST(CountsArithmetic, ResetIsNotAFailureButNotEmpty) {
  Counts c;
  c.reset = 1;
  EXPECT_EQ(c.failure(), 0u);
  EXPECT_FALSE(c.empty());
}

}  // namespace
}  // namespace smik::telemetry
