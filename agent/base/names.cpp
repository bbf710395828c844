#include "agent/base/names.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace smik {

const char* protoName(Proto p) { return p == Proto::kUdp ? "UDP" : "TCP"; }

std::string kernelProtoName(uint8_t proto) {
  switch (proto) {
    case uint8_t(Proto::kTcp): return protoName(Proto::kTcp);
    case uint8_t(Proto::kUdp): return protoName(Proto::kUdp);
  }
  return std::to_string(proto);
}

std::string namespacedName(const std::string& ns, const std::string& name) { return ns + "/" + name; }

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::vector<std::string_view> labels(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    size_t dot = s.find('.', start);
    out.push_back(s.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) return out;
    start = dot + 1;
  }
}

}  // namespace

bool splitServiceName(std::string_view written, ServiceName* out, std::string* why) {
  std::string_view s = written;
  // An absolute name (trailing dot) means the same; only a qualified one can be.
  if (s.size() > 1 && s.back() == '.' && s.find('.') != s.size() - 1) s.remove_suffix(1);
  const std::vector<std::string_view> parts = labels(s);
  if (std::any_of(parts.begin(), parts.end(), [](std::string_view l) { return l.empty(); })) {
    *why = "an empty DNS label";
    return false;
  }
  if (parts.size() >= 3 && lower(parts[2]) != "svc") {
    *why = "not a Service name (NAME, NAME.NAMESPACE, NAME.NAMESPACE.svc or "
           "NAME.NAMESPACE.svc.CLUSTER-DOMAIN)";
    return false;
  }
  ServiceName n;
  n.name = std::string(parts[0]);
  if (parts.size() >= 2) n.ns = std::string(parts[1]);
  if (parts.size() >= 4) n.domain = lower(s.substr(parts[0].size() + parts[1].size() + parts[2].size() + 3));
  *out = std::move(n);
  return true;
}

bool isClusterDomain(std::string_view written, std::string_view cluster_domain) {
  const std::string w = lower(written);
  const std::string d = lower(cluster_domain);
  return w == d || (d.size() > w.size() && d.starts_with(w) && d[w.size()] == '.');
}

}  // namespace smik
