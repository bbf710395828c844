// Raw request heads to the aggregated API's routes (--secure-listen), as a
// listener handles them. Whatever the bytes: the path the handler answers
// is canonical, every path that names a resource was authorized as exactly
// that resource before it was answered, a denied one never reaches the
// handler, and no metrics come back for a path that was not reviewed.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/http/listen.h"
#include "api/http/router.h"
#include "api/http/secure_api.h"
#include "api/smi/smi_metrics.h"
#include "tests/fuzz/fixture.h"

namespace {

using smik::api::ResourceAttributes;

bool same(const ResourceAttributes& a, const ResourceAttributes& b) {
  return a.verb == b.verb && a.resource == b.resource && a.subresource == b.subresource &&
         a.ns == b.ns && a.name == b.name;
}

struct Recorder : smik::api::Authorizer {
  bool allow = true;
  std::vector<ResourceAttributes> asked;
  bool allowed(const smik::api::UserInfo&, const ResourceAttributes& a, std::string*) override {
    asked.push_back(a);
    return allow;
  }
};

struct Served {
  std::string path;
  int status;
  std::string kind;
  size_t asked_before;  // reviews made before the handler ran
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static Recorder authorizer;
  static std::vector<Served> served;
  static const smik::api::Router routes = smik::api::secureApiRoutes(
      {[] {
         static const auto rh = std::make_shared<const smik::api::RequestHeaderConfig>();
         return rh;
       },
       [](const httplib::Request& req) -> std::optional<std::string> {
         // No client certificate without a TLS connection: the flag stands in.
         if (req.get_header_value("X-Fuzz-No-Cert") == "1") return std::nullopt;
         return "front-proxy-client";
       },
       [](const std::string& path, const std::string& t, bool local_only) {
         smik::api::SmiResponse r =
             smik::api::answerSmiRequest(smik::fuzz::store(), nullptr, path, t, local_only);
         const auto body = nlohmann::json::parse(r.body, nullptr, false);
         served.push_back({path, r.status,
                           body.is_object() ? body.value("kind", std::string()) : "",
                           authorizer.asked.size()});
         return r;
       },
       &authorizer});
  authorizer.allow = data[0] & 1;
  authorizer.asked.clear();
  served.clear();
  std::string head = smik::fuzz::headOf(data + 1, size - 1);
  // An authenticated user, unless the input says otherwise: most inputs
  // should get as far as authorization.
  if (data[0] & 2) {
    const size_t eol = head.find("\r\n");
    head.insert(eol + 2, "X-Remote-User: alice\r\nX-Remote-Group: devs\r\n");
  }
  (void)smik::api::answerHead(routes, head, false);
  for (const Served& s : served) {
    std::string why;
    if (smik::api::canonicalPath(s.path, &why) != s.path) __builtin_trap();
    const auto attrs = smik::api::smiAttributes(s.path);
    if (attrs) {
      // Reviewed as exactly what is served, before, and allowed.
      if (s.asked_before == 0 || !same(authorizer.asked[s.asked_before - 1], *attrs) ||
          !authorizer.allow)
        __builtin_trap();
    } else if (s.status == 200 && (s.kind == "TrafficMetrics" || s.kind == "TrafficMetricsList")) {
      __builtin_trap();  // metrics for a path no review covered
    }
  }
  return 0;
}
