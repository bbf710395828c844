// The tests' "host:port" reader: listen flags in manifests, the URLs of
// fake servers. The product's parser (agent/base/host_port.h), with the
// URL around the authority taken off.
#pragma once

#include <optional>
#include <string_view>

#include "agent/base/host_port.h"

namespace smik::testing {

using smik::HostPort;

// "host:port", "[v6]:port", ":port", with an optional "scheme://" before
// and a path after ("https://127.0.0.1:6443/api"). nullopt without a port
// in 1..65535.
inline std::optional<HostPort> parseHostPort(std::string_view s) {
  if (auto scheme = s.find("://"); scheme != std::string_view::npos) s.remove_prefix(scheme + 3);
  if (auto path = s.find('/'); path != std::string_view::npos) s = s.substr(0, path);
  Result<HostPort> hp = smik::parseHostPort(s, {.empty_host = true});
  if (!hp) return std::nullopt;
  return *std::move(hp);
}

}  // namespace smik::testing
