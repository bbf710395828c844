#include "agent/base/host_port.h"

namespace smik {

namespace {

// The digits of a port, nothing else (no sign, no space, no service name).
std::optional<uint32_t> portNumber(std::string_view digits) {
  if (digits.empty() || digits.size() > 5) return std::nullopt;
  uint32_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  return n;
}

struct Split {
  std::string_view host;
  std::optional<std::string_view> port;  // nullopt: no ":port" at all
};

// Where the host ends, or why it cannot be told.
Result<Split> split(std::string_view text, const HostPortRules& rules) {
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return fail("'[' without ']'");
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty()) return Split{text.substr(1, close - 1), std::nullopt};
    if (!rest.starts_with(':')) return fail("':' after ']'");
    return Split{text.substr(1, close - 1), rest.substr(1)};
  }
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return Split{text, std::nullopt};
  if (text.find(':') != colon && !rules.unbracketed_ipv6)
    return fail("an IPv6 address goes in brackets: [::1]:port");
  return Split{text.substr(0, colon), text.substr(colon + 1)};
}

}  // namespace

Result<HostPort> parseHostPort(std::string_view text, const HostPortRules& rules) {
  const auto refuse = [&](std::string_view why) {
    return fail("'" + std::string(text) + "' is not host:port (" + std::string(why) + ")");
  };
  const Result<Split> s = split(text, rules);
  if (!s) return refuse(s.error());
  if (s->host.empty() && (!rules.empty_host || text.starts_with('[')))
    return refuse("no host");
  HostPort out{std::string(s->host), 0};
  if (!s->port) {
    if (!rules.default_port) return refuse("no port");
    out.port = *rules.default_port;
    return out;
  }
  const std::optional<uint32_t> port = portNumber(*s->port);
  const uint32_t lowest = rules.port_zero ? 0 : 1;
  if (!port || *port < lowest || *port > 65535)
    return refuse("the port is a number in " + std::to_string(lowest) + "..65535");
  out.port = static_cast<uint16_t>(*port);
  return out;
}

std::string joinHostPort(std::string_view host, uint16_t port) {
  const bool bracket = host.find(':') != std::string_view::npos && !host.starts_with('[');
  std::string out = bracket ? "[" + std::string(host) + "]" : std::string(host);
  return out + ":" + std::to_string(port);
}

}  // namespace smik
