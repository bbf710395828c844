// Manifest parsing: YAML or JSON text (one or many documents) to validated,
// normalised model objects. Parsing never throws; every problem becomes a
// ParseError that names the file, the object and the reason.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/model/objects.h"

namespace smik::model {

struct ParseError {
  std::string file;
  ObjectRef object;  // as much of kind/namespace/name as could be read
  std::string reason;
  std::string str() const;  // "file: Kind ns/name: reason"
};

struct ParseResult {
  std::vector<Object> objects;
  std::vector<ParseError> errors;
  // Kubernetes kinds smik knows but does not use (Endpoints, Deployment...).
  int ignored = 0;
};

// Largest manifest file the agent reads; bigger files are rejected whole.
inline constexpr size_t kMaxManifestBytes = 4 * 1024 * 1024;
// Deepest nesting of maps and lists in one object (YAML or JSON); real
// manifests stay under 30. Deeper documents are rejected, not parsed: the
// YAML reader and every tree walk recurse once per level.
inline constexpr size_t kMaxNestingDepth = 100;
// Nodes that YAML aliases (*name) may add to one file, counting every alias
// as a copy of the node it names. Aliases are allowed (kubectl accepts them),
// but a few of them nested ("billion laughs") would make a small file expand
// to more nodes than memory holds.
inline constexpr uint64_t kMaxAliasNodes = 100'000;

// Parses every document in `text`. `file` is only used to label errors.
// Objects without metadata.namespace land in "default" (namespaced kinds).
ParseResult parseManifests(std::string_view text, const std::string& file);

// How a plain (unquoted) scalar resolves in the YAML 1.2 core schema.
enum class ScalarType { kString, kInt, kFloat, kBool };
ScalarType classifyPlainScalar(std::string_view s);

}  // namespace smik::model

#include <nlohmann/json_fwd.hpp>

namespace YAML {
class Node;
}

namespace smik::model {

// One document already in memory. Scalars must carry the tags a YAML
// reader gives them: "!" for quoted strings, "?" for plain ones.
ParseResult parseNode(const YAML::Node& document, const std::string& file);

// One document as JSON (the Kubernetes source: what the API server sent),
// read directly: the same meaning as the same object in a manifest file, a
// JSON string being a quoted scalar and a number or boolean a plain one.
ParseResult parseJson(const nlohmann::json& document, const std::string& file);

}  // namespace smik::model
