// Reading the cluster install (daemonset/) in the install tests
// (tests/unit/daemonset_*_test.cpp): its files as YAML documents, their
// parts by kind and name, and running the real tools on them.
#pragma once

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "agent/source/kube_cache.h"
#include "agent/telemetry/store.h"
#include "api/http/http_server.h"
#include "tests/support/host_port.h"


namespace daemonset_test {

namespace fs = std::filesystem;

const fs::path kRepo = SMIK_SOURCE_DIR;
const fs::path kInstall = kRepo / "daemonset";
const fs::path kChart = kInstall / "helm" / "smik";
const std::string kNs = "smik-system";

// Files under daemonset/ that are YAML but not resources of the kustomization,
// each for a reason: an opt-in patch, a DaemonSet applied after the install
// is gone, and a PodMonitor that only applies where the Prometheus Operator's
// CRDs are installed.
const std::set<std::string> kNotResources = {"kustomization.yaml", "privileged-patch.yaml",
                                             "uninstall.yaml", "podmonitor.yaml"};

// Every kind the install uses, at the apiVersion Kubernetes serves it.
const std::set<std::pair<std::string, std::string>> kRealKinds = {
    {"v1", "Namespace"},
    {"v1", "ServiceAccount"},
    {"v1", "ConfigMap"},
    {"v1", "Secret"},
    {"v1", "Service"},
    {"apps/v1", "DaemonSet"},
    {"rbac.authorization.k8s.io/v1", "ClusterRole"},
    {"rbac.authorization.k8s.io/v1", "ClusterRoleBinding"},
    {"rbac.authorization.k8s.io/v1", "Role"},
    {"rbac.authorization.k8s.io/v1", "RoleBinding"},
    {"apiextensions.k8s.io/v1", "CustomResourceDefinition"},
    {"apiregistration.k8s.io/v1", "APIService"},
    {"monitoring.coreos.com/v1", "PodMonitor"},
    {"kustomize.config.k8s.io/v1beta1", "Kustomization"},
};

// The agent's flags and their env names as planned (issue 5). The manifests
// may only use these; AgentHasEveryFlagTheManifestsPass checks the real agent.
const std::set<std::string> kPlannedFlags = {"--kubeconfig",
                                             "--node",
                                             "--access-mode",
                                             "--http-rules",
                                             "--http-non-http1",
                                             "--host-traffic",
                                             "--deny-response",
                                             "--mesh-all",
                                             "--mesh-namespaces",
                                             "--log-level",
                                             "--metrics-window",
                                             "--http",
                                             "--pin-dir",
                                             "--cgroup",
                                             "--grpc",
                                             "--peer-listen",
                                             "--peer-tls-cert",
                                             "--peer-tls-key",
                                             "--peer-tls-ca",
                                             "--peer-namespace",
                                             "--secure-listen",
                                             "--tls-cert-file",
                                             "--tls-private-key-file",
                                             "--uninstall",
                                             "--manifests",
                                             "--metrics-interval-ms",
                                             "--force-clsact",
                                             "--cluster-domain"};
const std::set<std::string> kPlannedEnv = {
    "SMIK_NODE_NAME",       "SMIK_ACCESS_MODE", "SMIK_HTTP_RULES",    "SMIK_MESH_ALL",
    "SMIK_MESH_NAMESPACES", "SMIK_LOG_LEVEL",   "SMIK_METRICS_WINDOW", "SMIK_HOST_TRAFFIC",
    "SMIK_CT_MAX",          "SMIK_CLUSTER_DOMAIN",     "SMIK_DENY_RESPONSE", "SMIK_HTTP_NON_HTTP1"};

// Read-only view of a YAML node: a missing key gives an empty view instead of
// yaml-cpp's throwing (const) or inserting (non-const) operator[], and
// assigning a view rebinds it (YAML::Node's operator= overwrites the node it
// refers to, in the document).
class Y {
 public:
  Y() = default;
  explicit Y(const YAML::Node& n)
      : n_(std::make_shared<const YAML::Node>(n)), ok_(n.IsDefined() && !n.IsNull()) {}
  Y operator[](const std::string& key) const {
    if (!ok_ || !n_->IsMap()) return Y();
    const YAML::Node& c = *n_;
    return Y(c[key]);
  }
  explicit operator bool() const { return ok_; }
  std::string str() const { return ok_ && n_->IsScalar() ? n_->Scalar() : ""; }
  int num(int fallback) const {
    std::string s = str();
    return !s.empty() && std::all_of(s.begin(), s.end(), ::isdigit) ? std::stoi(s) : fallback;
  }
  std::vector<Y> items() const {
    std::vector<Y> out;
    if (ok_ && n_->IsSequence())
      for (const auto& i : *n_) out.push_back(Y(i));
    return out;
  }
  std::vector<std::pair<std::string, Y>> entries() const {
    std::vector<std::pair<std::string, Y>> out;
    if (ok_ && n_->IsMap())
      for (const auto& kv : *n_) out.push_back({kv.first.Scalar(), Y(kv.second)});
    return out;
  }
  const YAML::Node& node() const { return *n_; }

 private:
  std::shared_ptr<const YAML::Node> n_ = std::make_shared<const YAML::Node>();
  bool ok_ = false;
};

using Docs = std::vector<Y>;
using KindName = std::pair<std::string, std::string>;

inline std::string readFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline Docs loadDocs(const std::string& text) {
  Docs out;
  for (const auto& d : YAML::LoadAll(text))
    if (d.IsMap()) out.push_back(Y(d));
  return out;
}

inline Docs loadFile(const fs::path& p) { return loadDocs(readFile(p)); }

inline std::string str(const Y& y) { return y.str(); }

// Every YAML file under daemonset/ except the chart's templates (Go templates,
// not YAML until rendered).
inline std::vector<fs::path> yamlFiles() {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(kInstall)) {
    if (!e.is_regular_file()) continue;
    auto ext = e.path().extension();
    if (ext != ".yaml" && ext != ".yml") continue;
    auto rel = fs::relative(e.path(), kChart / "templates");
    if (!rel.empty() && *rel.begin() != "..") continue;
    out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

inline std::vector<std::string> kustomizationResources() {
  std::vector<std::string> out;
  Y k(YAML::LoadFile((kInstall / "kustomization.yaml").string()));
  for (const auto& r : k["resources"].items()) out.push_back(r.str());
  return out;
}

// What `kubectl apply -k daemonset/` sends, read from the plain files.
inline Docs plainInstall() {
  Docs out;
  for (const auto& r : kustomizationResources())
    for (auto& d : loadFile(kInstall / r)) out.push_back(d);
  return out;
}

inline std::set<KindName> kindNames(const Docs& docs) {
  std::set<KindName> out;
  for (const auto& d : docs) out.insert({str(d["kind"]), str(d["metadata"]["name"])});
  return out;
}

inline Y find(const Docs& docs, const std::string& kind, const std::string& name) {
  for (const auto& d : docs)
    if (str(d["kind"]) == kind && str(d["metadata"]["name"]) == name) return d;
  return Y();
}

inline Y byName(const Y& list, const std::string& name) {
  for (const auto& item : list.items())
    if (str(item["name"]) == name) return item;
  return Y();
}

inline bool contains(const Y& seq, const std::string& v) {
  for (const auto& s : seq.items())
    if (str(s) == v) return true;
  return false;
}

// "--flag=value" args as a map; bare "--flag" maps to "".
inline std::map<std::string, std::string> parseArgs(const Y& args) {
  std::map<std::string, std::string> out;
  for (const auto& a : args.items()) {
    std::string s = str(a);
    auto eq = s.find('=');
    out[s.substr(0, eq)] = eq == std::string::npos ? "" : s.substr(eq + 1);
  }
  return out;
}

inline int portOf(const std::string& hostport) {
  const auto hp = smik::testing::parseHostPort(hostport);
  return hp ? hp->port : -1;
}

inline bool under(const std::string& path, const std::string& dir) {
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

// A probe's or Service's port: a number, or the name of one of the container's ports.
inline int resolvePort(const Y& port, const Y& container) {
  std::string s = str(port);
  if (!s.empty() && std::all_of(s.begin(), s.end(), ::isdigit)) return std::stoi(s);
  Y p = byName(container["ports"], s);
  return p ? p["containerPort"].num(-1) : -1;
}

// Whether the agent's --http listener answers `path` to a client on
// another address: kubelet probes a hostNetwork pod at the node's address,
// Prometheus scrapes from anywhere. /status and the TrafficMetrics API
// answer loopback clients only.
// The agent's real --http route table, over an empty store and status.
inline const smik::api::Router& agentRoutes() {
  static const smik::telemetry::Store store;
  static const smik::api::Router routes = smik::api::httpRoutes(
      {[] { return true; }, [] { return std::string(); }, [] { return smik::AgentStatus{}; },
       &store, "node"},
      nullptr);
  return routes;
}

inline bool servedToRemoteClients(const std::string& path) {
  const smik::api::Route* r = agentRoutes().find(path);
  return r && !r->local_only;
}

inline std::string cliDefaultSocket() {
  std::string src = readFile(kRepo / "api" / "cli" / "smik.cpp");
  std::smatch m;
  std::regex re(R"re(kDefaultSocket\s*=\s*"([^"]+)")re");
  return std::regex_search(src, m, re) ? m[1].str() : "";
}

// ---- processes -------------------------------------------------------------

inline bool onPath(const std::string& tool) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "");
  std::string dir;
  while (std::getline(ss, dir, ':'))
    if (!dir.empty() && access((fs::path(dir) / tool).c_str(), X_OK) == 0) return true;
  return false;
}

struct Ran {
  int status = -1;  // exit status, -1 if it did not exit
  std::string out, err;
};

inline Ran run(const std::string& cmd) {
  Ran r;
  fs::path errFile = fs::temp_directory_path() / ("smik-ds-" + std::to_string(getpid()) + ".err");
  FILE* p = popen((cmd + " 2>" + errFile.string()).c_str(), "r");
  if (!p) return r;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.err = readFile(errFile);
  fs::remove(errFile);
  return r;
}

inline std::string quote(const std::string& s) { return "'" + s + "'"; }

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "smik-ds-XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

inline std::string base64Decode(const std::string& in) {
  static const std::string chars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (char c : in) {
    auto pos = chars.find(c);
    if (pos == std::string::npos) continue;  // padding, newlines
    val = (val << 6) + static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

}  // namespace daemonset_test
