// Manifest text (YAML or JSON, one or many documents) to the model, as the
// manifest directory reads a file: whatever it holds, objects or errors
// naming the file come back, never a crash, a hang or a blow-up.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/model/parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const smik::model::ParseResult r = smik::model::parseManifests(text, "fuzz.yaml");
  for (const auto& e : r.errors)
    if (e.file != "fuzz.yaml" || e.reason.empty()) __builtin_trap();  // every error is named
  smik::model::ClusterState state;
  for (const auto& o : r.objects) state.add(o);
  return 0;
}
