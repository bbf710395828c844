// The one "host:port" reader of the tests: listen flags in manifests, the
// URLs of fake servers.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace smik::testing {

struct HostPort {
  std::string host;  // without brackets for IPv6
  int port = 0;
  bool operator==(const HostPort&) const = default;
};

// "host:port", "[v6]:port", with an optional "scheme://" before and a path
// after ("https://127.0.0.1:6443/api"). nullopt without a port in 1..65535.
inline std::optional<HostPort> parseHostPort(std::string_view s) {
  if (auto scheme = s.find("://"); scheme != std::string_view::npos) s.remove_prefix(scheme + 3);
  if (auto path = s.find('/'); path != std::string_view::npos) s = s.substr(0, path);
  HostPort hp;
  std::string_view port;
  if (s.starts_with('[')) {
    const auto close = s.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    hp.host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos || s.find(':') != colon) return std::nullopt;
    hp.host = std::string(s.substr(0, colon));
    port = s.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5) return std::nullopt;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    hp.port = hp.port * 10 + (c - '0');
  }
  if (hp.port < 1 || hp.port > 65535) return std::nullopt;
  return hp;
}

}  // namespace smik::testing
