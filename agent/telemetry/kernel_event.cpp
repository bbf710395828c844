#include "agent/telemetry/kernel_event.h"

#include <cstring>

namespace smik::telemetry {
namespace {

// The path's bytes are the client's: an event (and gRPC's strings, which
// must be UTF-8) carries them printable and unambiguous.
std::string printablePath(const uint8_t* bytes, size_t n) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t b = bytes[i];
    if (b > 0x20 && b < 0x7f) {
      out += static_cast<char>(b);  // a '%' too: the request's escapes stay as sent
    } else {
      out += '%';
      out += kHex[b >> 4];
      out += kHex[b & 0xf];
    }
  }
  return out;
}

}  // namespace

std::optional<KernelEvent> decodeKernelEvent(const void* data, size_t size) {
  smik_event ev;
  if (!data || size < sizeof ev) return std::nullopt;
  std::memcpy(&ev, data, sizeof ev);
  KernelEvent out;
  out.edge = ev.edge;
  out.kind = abi::nameOf(abi::kEventKinds, ev.kind, "unknown");
  out.suppressed = ev.suppressed;
  if (ev.kind != SMIK_EV_HTTP_DENY) {
    out.reason = abi::nameOf(abi::kFailReasons, ev.reason);
    return out;
  }
  smik_http_event h;
  if (size < sizeof h) return std::nullopt;
  std::memcpy(&h, data, sizeof h);
  out.reason = abi::nameOf(abi::kHttpCounters, ev.reason);
  if ((h.flags & SMIK_EV_HTTP_METHOD) && h.method < SMIK_HTTP_METHODS)
    out.method = abi::kHttpMethods[h.method];
  if (h.flags & SMIK_EV_HTTP_PATH) {
    const size_t n = h.path_len < SMIK_EV_PATH_MAX ? h.path_len : SMIK_EV_PATH_MAX;
    out.path = printablePath(h.path, n);
    out.path_truncated = (h.flags & SMIK_EV_HTTP_TRUNCATED) != 0;
  }
  return out;
}

}  // namespace smik::telemetry
