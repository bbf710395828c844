// "Why is this connection allowed or denied?" answered from the same compiler
// the agent runs, for the CLI and (later) the gRPC API.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "agent/compile/compile.h"

namespace smik::compile {

struct Explanation {
  bool allowed = false;
  std::string summary;                // one line: verdict and what decided it
  std::string traffic_target;         // deciding TrafficTarget (ns/name), if any
  std::string rule;                   // deciding rule ("TCPRoute tcp-ports"), if any
  std::vector<std::string> details;   // why each candidate TrafficTarget did not match
  std::string http_match;             // the HTTPRouteGroup match that granted the request, if any
};

// One HTTP/1.x request on the connection explained: what the kernel's judge
// reads of it (bpf/http_verdict.bpf.c).
struct HttpRequest {
  std::string method;  // as sent: "GET"; a method SMI does not name is OTHER
  std::string path;    // the request target; from '?' on it is not matched
  std::vector<std::pair<std::string, std::string>> headers = {};  // (name, value) as sent
};

// from/to are "ns/pod". Errors (unknown pod...) come back in *err.
// applied: the plan compiled from state for node, when the caller has it
// (the agent's, in force); it answers for destinations on node.node_name,
// any other destination is judged by compiling for its own node.
// request: when the connection passes L4 to a port the HTTP judge governs,
// that request's verdict too (without one the answer says it is judged).
bool explain(const model::ClusterState& state, NodeConfig node, const std::string& from,
             const std::string& to, uint16_t port, model::Proto proto, Explanation* out,
             std::string* err, const Plan* applied = nullptr,
             const HttpRequest* request = nullptr);

// The HTTP judge's verdict on one request of src to dst:port, as the kernel
// takes it (granted() in bpf/http_verdict.bpf.c): the grant of the edge for
// the method, against the patterns the path matches and the header
// conditions the header lines hold. Fills allowed,
// traffic_target, rule, http_match, details; returns false if the port is
// not judged.
bool explainHttp(const Plan& plan, uint32_t src_id, uint32_t dst_id, uint16_t port,
                 const HttpRequest& request, Explanation* out);

// Where a connection to a Service port goes: for each of its ClusterIPs, the
// TrafficSplit applied (if any), each group's share and each endpoint's
// probability. service is "ns/name".
struct ServiceChoice {
  std::string pod;  // ns/name, when known
  std::string address;  // ip:port
  double probability = 0;
};
struct ServiceGroupExplained {
  std::string service;
  uint32_t weight = 0;
  double share = 0;
  std::vector<ServiceChoice> endpoints;
};
struct ServiceExplanation {
  std::string vip;  // ip:port/proto
  std::string split;
  std::vector<ServiceGroupExplained> groups;
};
bool explainService(const model::ClusterState& state, const NodeConfig& node,
                    const std::string& service, uint16_t port, model::Proto proto,
                    std::vector<ServiceExplanation>* out, std::vector<std::string>* notes,
                    std::string* err, const Plan* applied = nullptr);

}  // namespace smik::compile
