// What the compiler said about one object: the compiler and services tests
// compare these lines.
#pragma once

#include <string>
#include <vector>

#include "agent/compile/compile.h"

namespace smik::compile {

// Diagnostics about one object, as "level: message".
inline std::vector<std::string> diagnosticsFor(const Plan& p, const model::ObjectRef& ref) {
  std::vector<std::string> out;
  for (const auto& d : p.diagnostics)
    if (d.object == ref)
      out.push_back(std::string(d.level == Diagnostic::Level::kInfo ? "info" : "warning") + ": " +
                    d.message);
  return out;
}

inline std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

}  // namespace smik::compile
