// Request paths, one way for every listener: the canonical form that is
// both authorized and routed (a path authorized in one spelling and served
// in another is how requests slip past authorization), and the route table
// over it. Plain string work: no std::regex ever sees a request.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace smik::api {

// The canonical path of a request-target (what follows the first '?' is
// the query and not looked at): "/" and segments joined by "/", with one
// trailing "/" dropped ("/apis/x/" is "/apis/x"; "/" stays "/"). nullopt,
// and *why, for anything two readers could take two ways: an empty segment
// ("//"), a "." or ".." segment, a '%' (no name served here needs
// percent-encoding, and decoding is where "%2F" and "%2e%2e" hide), a
// backslash, a byte outside printable ASCII, or not starting with "/".
std::optional<std::string> canonicalPath(std::string_view target, std::string* why);

// Whether an address (as getpeername() prints it) is this host's loopback:
// 127.0.0.0/8, ::1 or an IPv4-mapped 127.x.
bool isLoopbackAddress(std::string_view ip);

// A request as the router sees it, after the listener has read it.
struct RoutedRequest {
  const httplib::Request& http;
  std::string path;   // canonical
  bool local_client;  // from loopback
};

using RouteHandler = std::function<void(const RoutedRequest&, httplib::Response&)>;

struct Route {
  std::string path;  // canonical
  RouteHandler handler;
  bool prefix = false;      // also every path under path + "/"
  bool local_only = false;  // loopback clients only; others get 404
  // Answered on the listener's probe lane: cheap and never waiting on
  // anything (health and readiness), so it answers while slow requests
  // occupy every other worker.
  bool probe = false;
};

class Router {
 public:
  Router& add(Route route);
  // The route for a canonical path: an exact one first, else the longest
  // prefix; nullptr when none.
  const Route* find(std::string_view path) const;
  // One request: GET and HEAD only, no request body, a canonical path, a
  // route that serves this client; each failure its own status (400, 404,
  // 405, 413) and the route's handler otherwise.
  void serve(const httplib::Request& req, bool local_client, httplib::Response& res) const;

 private:
  std::vector<Route> routes_;
};

// The route a request-target would take, without serving it: the
// listener's choice of lane before the request is read in full.
const Route* routeOf(const Router& router, std::string_view target);

}  // namespace smik::api
