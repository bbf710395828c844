// Raw request heads to the agent's --http routes, through a listener's own
// request handling: httplib's parser, the canonical path, the router, the
// handlers. Whatever the bytes, a client that is not on loopback gets the
// probes and /metrics and never /status or the TrafficMetrics API (JSON).
#include <cstddef>
#include <cstdint>

#include "api/http/http_server.h"
#include "api/http/listen.h"
#include "tests/fuzz/fixture.h"

namespace {

const smik::api::Router& routes() {
  static const smik::api::Router r =
      smik::api::httpRoutes({[] { return true; }, [] { return std::string(); },
                             [] {
                               smik::AgentStatus s;
                               s.endpoints = {"shop/web-1a-x veth1(7)"};
                               return s;
                             },
                             &smik::fuzz::store(), "node-a"},
                            nullptr);
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool local = data[0] & 1;
  const std::string response =
      smik::api::answerHead(routes(), smik::fuzz::headOf(data + 1, size - 1), local);
  // /status and TrafficMetrics are the JSON answers (HEAD: only the header says so).
  if (!local && smik::fuzz::statusOf(response) == 200 &&
      response.find("Content-Type: application/json") != std::string::npos)
    __builtin_trap();
  return 0;
}
