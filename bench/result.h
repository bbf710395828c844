// One machine-readable line per figure, collected by bench/run into
// bench/results/latest.json:
//   RESULT <name> <value> <unit> <baseline|-> <ratio|-> <reps> <min> <max>
// value = median of the repetitions; baseline/ratio "-" when there is none.
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace smik::bench {

// Removes --quick from argv (Google Benchmark rejects flags it does not
// know) and says whether it was there.
inline bool takeQuick(int* argc, char** argv) {
  bool quick = false;
  int kept = 0;
  for (int i = 0; i < *argc; i++) {
    if (std::string(argv[i]) == "--quick")
      quick = true;
    else
      argv[kept++] = argv[i];
  }
  *argc = kept;
  return quick;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Prints the RESULT line for `samples` (one value per repetition); returns the median.
inline double result(const std::string& name, const std::vector<double>& samples,
                     const std::string& unit, double baseline = 0) {
  double m = median(samples);
  double lo = samples.empty() ? 0 : *std::min_element(samples.begin(), samples.end());
  double hi = samples.empty() ? 0 : *std::max_element(samples.begin(), samples.end());
  if (baseline > 0)
    std::printf("RESULT %s %.6g %s %.6g %.4f %zu %.6g %.6g\n", name.c_str(), m, unit.c_str(),
                baseline, m / baseline, samples.size(), lo, hi);
  else
    std::printf("RESULT %s %.6g %s - - %zu %.6g %.6g\n", name.c_str(), m, unit.c_str(),
                samples.size(), lo, hi);
  std::fflush(stdout);
  return m;
}

}  // namespace smik::bench
