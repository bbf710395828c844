// The one reader and writer of "host:port": listen flags, peer addresses,
// the API server's authority, `SERVICE:PORT` of explain.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agent/base/result.h"

namespace smik {

struct HostPort {
  std::string host;  // an IPv6 address without its brackets; "" where the rules allow it
  uint16_t port = 0;
  bool operator==(const HostPort&) const = default;
};

// The forms one caller takes beyond "host:port" and "[v6]:port" with a
// port in 1..65535. Each flag names a caller's need, so that what a listen
// flag accepts and what a peer address accepts differ visibly.
struct HostPortRules {
  bool empty_host = false;  // ":9464": every address (a listener's wildcard)
  bool port_zero = false;   // "host:0": any free port (a listener in tests)
  // "::1:9464": the last colon ends the host. Ambiguous for a reader (is
  // 9464 a port or the last group?); only listeners took it before brackets.
  bool unbracketed_ipv6 = false;
  std::optional<uint16_t> default_port;  // "host", "[v6]": this port
};

// "host:port" -> {host, port}, or why not (the message quotes the text).
Result<HostPort> parseHostPort(std::string_view text, const HostPortRules& rules = {});

// {host, port} -> "host:port", IPv6 in brackets: what parseHostPort reads.
std::string joinHostPort(std::string_view host, uint16_t port);

}  // namespace smik
