// smik: the operator's CLI. explain and policy run the agent's own compiler on
// a manifest directory; status asks a running agent.
#include <httplib.h>

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "agent/compile/explain.h"
#include "agent/source/manifest_dir.h"

using namespace smik;

namespace {

struct Common {
  std::string manifests;
  std::string mode = "strict";
  std::string http_rules = "deny";
  bool mesh_all = false;
  std::string output = "text";
};

void addCommon(CLI::App* cmd, Common& c) {
  cmd->add_option("--manifests", c.manifests, "manifest directory")->required();
  cmd->add_option("--access-mode", c.mode, "strict | permissive | per-destination")->capture_default_str();
  cmd->add_option("--http-rules", c.http_rules, "deny | allow-tcp")->capture_default_str();
  cmd->add_flag("--mesh-all", c.mesh_all, "mesh every pod");
  cmd->add_option("-o,--output", c.output, "text | json")->capture_default_str();
}

bool load(const Common& c, model::ClusterState* state, compile::NodeConfig* node) {
  source::ManifestDir dir(c.manifests);
  dir.refresh();
  for (const auto& e : dir.errors()) std::cerr << "rejected: " << e.str() << "\n";
  if (!compile::parseAccessMode(c.mode, &node->access_mode)) {
    std::cerr << "unknown access mode " << c.mode << "\n";
    return false;
  }
  node->mesh_all = c.mesh_all;
  node->http_rules = c.http_rules == "allow-tcp" ? compile::HttpRulesAtL4::kGrantAllTcp
                                                 : compile::HttpRulesAtL4::kGrantNothing;
  *state = dir.state();
  return true;
}

int explainServiceCmd(const Common& c, const model::ClusterState& state,
                      const compile::NodeConfig& node, const std::string& to, model::Proto proto) {
  auto colon = to.rfind(':');
  std::string service = to.substr(0, colon);
  int port = std::atoi(to.substr(colon + 1).c_str());
  if (port < 1 || port > 65535) return std::cerr << "--to SERVICE:PORT wants a port\n", 2;
  std::vector<compile::ServiceExplanation> out;
  std::vector<std::string> notes;
  std::string err;
  if (!compile::explainService(state, node, service, port, proto, &out, &notes, &err)) {
    std::cerr << "explain: " << err << "\n";
    return 2;
  }
  nlohmann::json j = nlohmann::json::array();
  for (const auto& e : out) {
    nlohmann::json groups = nlohmann::json::array();
    for (const auto& g : e.groups) {
      nlohmann::json eps = nlohmann::json::array();
      for (const auto& ep : g.endpoints)
        eps.push_back({{"pod", ep.pod}, {"address", ep.address}, {"probability", ep.probability}});
      groups.push_back({{"service", g.service}, {"weight", g.weight}, {"share", g.share},
                        {"endpoints", eps}});
    }
    j.push_back({{"clusterIP", e.vip}, {"trafficSplit", e.split}, {"groups", groups}});
  }
  if (c.output == "json") {
    std::cout << nlohmann::json{{"tables", j}, {"notes", notes}}.dump(2) << "\n";
    return 0;
  }
  for (const auto& e : out) {
    std::cout << service << " " << e.vip << ": "
              << (e.split.empty() ? "no TrafficSplit, even over ready endpoints"
                                  : "TrafficSplit " + e.split)
              << "\n";
    if (e.groups.empty()) std::cout << "  no ready endpoint: connections are not translated\n";
    for (const auto& g : e.groups) {
      std::printf("  %5.1f%%  %s (weight %u)\n", g.share * 100, g.service.c_str(), g.weight);
      for (const auto& ep : g.endpoints)
        std::printf("          %5.1f%%  %s %s\n", ep.probability * 100, ep.address.c_str(),
                    ep.pod.c_str());
    }
  }
  for (const auto& n : notes) std::cout << "  " << n << "\n";
  return 0;
}

int explainCmd(const Common& c, const std::string& from, const std::string& to, int port,
               const std::string& proto_s) {
  model::ClusterState state;
  compile::NodeConfig node;
  if (!load(c, &state, &node)) return 2;
  model::Proto proto;
  if (proto_s == "tcp") proto = model::Proto::kTcp;
  else if (proto_s == "udp") proto = model::Proto::kUdp;
  else return std::cerr << "--proto must be tcp or udp\n", 2;
  if (to.find(':') != std::string::npos) return explainServiceCmd(c, state, node, to, proto);
  if (from.empty() || port == 0)
    return std::cerr << "explain --to NS/POD needs --from NS/POD and --port\n", 2;
  compile::Explanation e;
  std::string err;
  if (!compile::explain(state, node, from, to, port, proto, &e, &err)) {
    std::cerr << "explain: " << err << "\n";
    return 2;
  }
  if (c.output == "json") {
    nlohmann::json j{{"allowed", e.allowed}, {"summary", e.summary},
                     {"trafficTarget", e.traffic_target}, {"rule", e.rule}, {"details", e.details}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << e.summary << "\n";
    for (const auto& d : e.details) std::cout << "  - " << d << "\n";
  }
  return 0;
}

int policyCmd(const Common& c, const std::string& node_name) {
  model::ClusterState state;
  compile::NodeConfig node;
  if (!load(c, &state, &node)) return 2;
  node.node_name = node_name;
  compile::Plan plan = compile::compile(state, node);
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& [k, v] : plan.policy) {
    nlohmann::json e;
    e["destination"] = plan.identityName(k.dst_id);
    if (k.src_id == SMIK_ID_META) {
      e["enforced"] = (v.flags & SMIK_POL_F_ENFORCED) != 0;
    } else {
      e["source"] = plan.identityName(k.src_id);
      e["proto"] = k.proto == SMIK_PROTO_TCP ? "TCP" : "UDP";
      e["port"] = k.dport == 0 ? nlohmann::json("*") : nlohmann::json(k.dport);
      e["trafficTarget"] = plan.rules.at(v.rule_id - 1).traffic_target;
      e["rule"] = plan.rules.at(v.rule_id - 1).rule;
    }
    entries.push_back(e);
  }
  if (c.output == "json") {
    nlohmann::json j{{"policy", entries}, {"identities", plan.identities}};
    j["diagnostics"] = nlohmann::json::array();
    for (const auto& d : plan.diagnostics) j["diagnostics"].push_back(d.str());
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << "access mode " << compile::accessModeName(node.access_mode) << ", "
            << plan.identities.size() << " identities, " << plan.endpoints.size()
            << " meshed pods\n";
  for (const auto& e : entries) {
    if (e.contains("enforced")) {
      std::cout << "  enforce  " << e["destination"].get<std::string>() << " (default deny)\n";
    } else {
      std::cout << "  allow    " << e["source"].get<std::string>() << " -> "
                << e["destination"].get<std::string>() << " " << e["proto"].get<std::string>()
                << "/" << (e["port"].is_string() ? "*" : std::to_string(e["port"].get<int>()))
                << "   (" << e["trafficTarget"].get<std::string>() << ", "
                << e["rule"].get<std::string>() << ")\n";
    }
  }
  for (const auto& d : plan.diagnostics) std::cout << "  " << d.str() << "\n";
  return 0;
}

int statusCmd(const std::string& addr, const std::string& output, bool check) {
  auto colon = addr.rfind(':');
  httplib::Client cli(addr.substr(0, colon), std::atoi(addr.substr(colon + 1).c_str()));
  cli.set_connection_timeout(2);
  if (check) {  // for probes: exit status only
    auto r = cli.Get("/readyz");
    return r && r->status == 200 ? 0 : 1;
  }
  auto res = cli.Get("/status");
  if (!res || res->status != 200) {
    std::cerr << "no agent answering on " << addr << "\n";
    return 1;
  }
  if (output == "json") {
    std::cout << res->body;
    return 0;
  }
  auto j = nlohmann::json::parse(res->body);
  std::cout << "ready: " << (j["ready"].get<bool>() ? "yes" : "no") << "   node: "
            << j["node"].get<std::string>() << "   access mode: "
            << j["accessMode"].get<std::string>() << "   attach: "
            << j["attachMode"].get<std::string>() << "\n"
            << "policy generation " << j["policyGeneration"] << ", " << j["policyEntries"]
            << " entries, " << j["ipEntries"] << " IPs, " << j["identities"] << " identities\n";
  std::cout << "endpoints:\n";
  for (const auto& e : j["endpoints"]) std::cout << "  " << e.get<std::string>() << "\n";
  std::cout << "rejected objects (" << j["rejectedObjectsTotal"] << " since start):\n";
  for (const auto& e : j["rejected"]) std::cout << "  " << e.get<std::string>() << "\n";
  std::cout << "verdicts:\n";
  for (const auto& [k, v] : j["verdicts"].items())
    std::cout << "  " << k << ": " << v["packets"] << " packets\n";
  std::cout << "edges (new flows judged by the tc programs):\n";
  for (const auto& e : j["edges"])
    std::cout << "  " << e["source"].get<std::string>() << " -> "
              << e["destination"].get<std::string>() << " " << e["proto"].get<std::string>() << "/"
              << e["port"] << ": " << e["flowsAllowed"] << " flows allowed, "
              << e["packetsDenied"] << " packets denied\n";
  if (!j["diagnostics"].empty()) std::cout << "diagnostics:\n";
  for (const auto& e : j["diagnostics"]) std::cout << "  " << e.get<std::string>() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);  // the manifest reader's progress is the agent's news
  CLI::App app{"smik: SMI in the kernel"};
  app.require_subcommand(1);

  Common ec;
  std::string from, to, proto = "tcp";
  int port = 0;
  auto* explain = app.add_subcommand("explain", "why a connection is allowed or denied");
  addCommon(explain, ec);
  explain->add_option("--from", from, "source pod NS/POD");
  explain->add_option("--to", to, "destination pod NS/POD, or NS/SERVICE:PORT for where a "
                                   "connection to that Service goes")->required();
  explain->add_option("--port", port, "destination (pod) port")->check(CLI::Range(1, 65535));
  explain->add_option("--proto", proto, "tcp | udp")->capture_default_str();

  Common pc;
  std::string node;
  auto* policy = app.add_subcommand("policy", "the compiled policy");
  addCommon(policy, pc);
  policy->add_option("--node", node, "compile for this node only (default: every pod)");

  std::string http = "127.0.0.1:9464", so = "text";
  bool check = false;
  auto* status = app.add_subcommand("status", "a running agent's state");
  status->add_option("--http", http, "agent address")->capture_default_str();
  status->add_option("-o,--output", so, "text | json")->capture_default_str();
  status->add_flag("--check", check, "print nothing; exit 0 only if the agent is ready (probes)");

  CLI11_PARSE(app, argc, argv);
  if (explain->parsed()) return explainCmd(ec, from, to, port, proto);
  if (policy->parsed()) return policyCmd(pc, node);
  return statusCmd(http, so, check);
}
