// The cluster a test's manifests describe, parsed as the agent parses them.
// A parse error fails the test that wrote the manifests.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "agent/model/objects.h"
#include "agent/model/parse.h"

namespace smik::testing {

inline std::string errorsOf(const model::ParseResult& r) {
  std::string s;
  for (const auto& e : r.errors) s += e.str() + "\n";
  return s;
}

inline model::ClusterState stateFrom(const model::ParseResult& r) {
  EXPECT_TRUE(r.errors.empty()) << errorsOf(r);
  model::ClusterState s;
  for (const auto& o : r.objects) s.add(o);
  return s;
}

// Any number of YAML documents.
inline model::ClusterState stateOf(const std::string& yaml) {
  return stateFrom(model::parseManifests(yaml, "test.yaml"));
}

}  // namespace smik::testing
