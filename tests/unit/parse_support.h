// Helpers of the parser tests (tests/unit/parse_*_test.cpp): parse a
// manifest, take the one object or the one error it gives.
#pragma once

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "agent/model/parse.h"

namespace smik::model {

inline ParseResult parse(std::string_view text) { return parseManifests(text, "t.yaml"); }

inline std::string errorsOf(const ParseResult& r) {
  std::string s;
  for (const ParseError& e : r.errors) s += e.str() + "\n";
  return s;
}

template <class T>
std::vector<T> all(const ParseResult& r) {
  std::vector<T> out;
  for (const Object& o : r.objects)
    if (const T* t = std::get_if<T>(&o)) out.push_back(*t);
  return out;
}

// The single object `text` parses to; fails the test on anything else.
template <class T>
T one(std::string_view text) {
  const ParseResult r = parse(text);
  EXPECT_TRUE(r.errors.empty()) << errorsOf(r);
  const std::vector<T> objs = all<T>(r);
  EXPECT_EQ(r.objects.size(), 1u);
  EXPECT_EQ(objs.size(), 1u);
  return objs.empty() ? T{} : objs[0];
}

// The single error `text` produces, as ParseError::str().
inline std::string error(std::string_view text) {
  const ParseResult r = parse(text);
  EXPECT_TRUE(r.objects.empty());
  EXPECT_EQ(r.errors.size(), 1u) << errorsOf(r);
  return r.errors.empty() ? "" : r.errors[0].str();
}

// A TCPRoute or UDPRoute manifest of the given version around `spec`.
inline std::string route(const std::string& kind, const std::string& version,
                         const std::string& spec) {
  return "apiVersion: specs.smi-spec.io/" + version + "\nkind: " + kind +
         "\nmetadata: {name: r, namespace: db}\n" + spec;
}

inline void PrintTo(const ObjectRef& r, std::ostream* os) { *os << "ObjectRef(" << r.str() << ")"; }

}  // namespace smik::model
