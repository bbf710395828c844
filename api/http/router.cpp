#include "api/http/router.h"

#include <arpa/inet.h>
#include <httplib.h>

#include <algorithm>
#include <cstring>

namespace smik::api {
namespace {

// RFC 3986 pchar without '%': unreserved, sub-delims, ':' and '@'.
bool isPathChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return c != '\0' && std::strchr("-._~!$&'()*+,;=:@", c) != nullptr;
}

void plain(httplib::Response& res, int status, const std::string& text) {
  res.status = status;
  res.set_content(text + "\n", "text/plain");
}

}  // namespace

std::optional<std::string> canonicalPath(std::string_view target, std::string* why) {
  const auto fail = [&](std::string reason) {
    *why = std::move(reason);
    return std::nullopt;
  };
  std::string_view path = target.substr(0, target.find('?'));
  if (path.empty() || path.front() != '/') return fail("the path does not start with /");
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path == "/") return std::string(path);
  std::string out;
  out.reserve(path.size());
  size_t start = 1;
  while (start <= path.size()) {
    const size_t end = std::min(path.find('/', start), path.size());
    const std::string_view segment = path.substr(start, end - start);
    if (segment.empty()) return fail("empty path segment");
    if (segment == "." || segment == "..") return fail("dot segment in the path");
    for (const char c : segment) {
      if (c == '%') return fail("percent-encoding in the path");
      if (!isPathChar(c)) return fail("unexpected character in the path");
    }
    out += '/';
    out += segment;
    start = end + 1;
  }
  return out;
}

bool isLoopbackAddress(std::string_view ip) {
  const std::string s(ip);
  in_addr v4;
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (inet_pton(AF_INET6, s.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

Router& Router::add(Route route) {
  routes_.push_back(std::move(route));
  return *this;
}

const Route* Router::find(std::string_view path) const {
  const Route* best = nullptr;
  for (const Route& r : routes_) {
    if (r.path == path && !r.prefix) return &r;
    const bool under = r.prefix && path.starts_with(r.path) &&
                       (path.size() == r.path.size() || path[r.path.size()] == '/');
    if (under && (!best || r.path.size() > best->path.size())) best = &r;
  }
  return best;
}

void Router::serve(const httplib::Request& req, bool local_client, httplib::Response& res) const {
  if (req.method != "GET" && req.method != "HEAD") {
    res.set_header("Allow", "GET, HEAD");
    return plain(res, 405, "only GET and HEAD are served");
  }
  // Nothing here takes a body: refused before a byte of it is read.
  const std::string length = req.get_header_value("Content-Length");
  if ((!length.empty() && length != "0") || req.has_header("Transfer-Encoding"))
    return plain(res, 413, "request bodies are not accepted");
  std::string why;
  std::optional<std::string> path = canonicalPath(req.target, &why);
  if (!path) return plain(res, 400, why);
  const Route* route = find(*path);
  if (!route) return plain(res, 404, "not found");
  if (route->local_only && !local_client)
    return plain(res, 404, *path + " is served to loopback clients only");
  route->handler(RoutedRequest{req, std::move(*path), local_client}, res);
}

const Route* routeOf(const Router& router, std::string_view target) {
  std::string why;
  const std::optional<std::string> path = canonicalPath(target, &why);
  return path ? router.find(*path) : nullptr;
}

}  // namespace smik::api
