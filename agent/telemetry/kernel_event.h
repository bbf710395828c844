// The kernel's event records (bpf/include/smik_abi.h: smik_event, and
// smik_http_event for http-deny) as the agent reads them off the ring
// buffer. A record is trusted for nothing but its bytes: one too short for
// its kind decodes to nothing, and nothing past its size is read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "bpf/include/smik_abi.h"

namespace smik::telemetry {

struct KernelEvent {
  smik_conn_key edge{};
  std::string kind;    // a name of SMIK_EVENT_KINDS, "unknown" for a newer kernel's
  std::string reason;  // connect-failed: SMIK_FAIL_REASONS; http-deny: SMIK_HTTP_COUNTER_FACTS
  uint32_t suppressed = 0;
  // http-deny only; empty when the judge did not have it (see smik_http_event)
  std::string method;
  std::string path;  // the bytes as sent, those outside '!'..'~' as %XX
  bool path_truncated = false;
};

// nullopt: `size` is short for the record's kind (the caller counts it).
std::optional<KernelEvent> decodeKernelEvent(const void* data, size_t size);

}  // namespace smik::telemetry
