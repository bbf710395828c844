// Offline checks of the cluster install under daemonset/ (plain manifests,
// kustomization, Helm chart, gen-certs.sh, Dockerfile). No root, no cluster:
// the parts that need kubectl, helm or openssl skip, saying so, when the
// tool is not on PATH. The same checks run on the plain files and on what
// `kubectl kustomize` and `helm template` render, so the three cannot drift.
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

namespace fs = std::filesystem;

namespace {

const fs::path kRepo = SMIK_SOURCE_DIR;
const fs::path kInstall = kRepo / "daemonset";
const fs::path kChart = kInstall / "helm" / "smik";
const std::string kNs = "smik-system";

// Files under daemonset/ that are YAML but not resources of the kustomization,
// each for a reason: an opt-in patch, and a DaemonSet applied after the install
// is gone.
const std::set<std::string> kNotResources = {"kustomization.yaml", "privileged-patch.yaml",
                                             "uninstall.yaml"};

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
    {"kustomize.config.k8s.io/v1beta1", "Kustomization"},
};

// The agent's flags and their env names as planned (issue 5). The manifests
// may only use these; AgentHasEveryFlagTheManifestsPass checks the real agent.
const std::set<std::string> kPlannedFlags = {"--kubeconfig",
                                             "--node",
                                             "--access-mode",
                                             "--http-rules",
                                             "--host-traffic",
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
                                             "--force-clsact"};
const std::set<std::string> kPlannedEnv = {
    "SMIK_NODE_NAME",       "SMIK_ACCESS_MODE", "SMIK_HTTP_RULES",    "SMIK_MESH_ALL",
    "SMIK_MESH_NAMESPACES", "SMIK_LOG_LEVEL",   "SMIK_METRICS_WINDOW", "SMIK_HOST_TRAFFIC",
    "SMIK_CT_MAX"};

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

std::string readFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Docs loadDocs(const std::string& text) {
  Docs out;
  for (const auto& d : YAML::LoadAll(text))
    if (d.IsMap()) out.push_back(Y(d));
  return out;
}

Docs loadFile(const fs::path& p) { return loadDocs(readFile(p)); }

std::string str(const Y& y) { return y.str(); }

// Every YAML file under daemonset/ except the chart's templates (Go templates,
// not YAML until rendered).
std::vector<fs::path> yamlFiles() {
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

std::vector<std::string> kustomizationResources() {
  std::vector<std::string> out;
  Y k(YAML::LoadFile((kInstall / "kustomization.yaml").string()));
  for (const auto& r : k["resources"].items()) out.push_back(r.str());
  return out;
}

// What `kubectl apply -k daemonset/` sends, read from the plain files.
Docs plainInstall() {
  Docs out;
  for (const auto& r : kustomizationResources())
    for (auto& d : loadFile(kInstall / r)) out.push_back(d);
  return out;
}

std::set<KindName> kindNames(const Docs& docs) {
  std::set<KindName> out;
  for (const auto& d : docs) out.insert({str(d["kind"]), str(d["metadata"]["name"])});
  return out;
}

Y find(const Docs& docs, const std::string& kind, const std::string& name) {
  for (const auto& d : docs)
    if (str(d["kind"]) == kind && str(d["metadata"]["name"]) == name) return d;
  return Y();
}

Y byName(const Y& list, const std::string& name) {
  for (const auto& item : list.items())
    if (str(item["name"]) == name) return item;
  return Y();
}

bool contains(const Y& seq, const std::string& v) {
  for (const auto& s : seq.items())
    if (str(s) == v) return true;
  return false;
}

// "--flag=value" args as a map; bare "--flag" maps to "".
std::map<std::string, std::string> parseArgs(const Y& args) {
  std::map<std::string, std::string> out;
  for (const auto& a : args.items()) {
    std::string s = str(a);
    auto eq = s.find('=');
    out[s.substr(0, eq)] = eq == std::string::npos ? "" : s.substr(eq + 1);
  }
  return out;
}

int portOf(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  return colon == std::string::npos ? -1 : std::atoi(hostport.c_str() + colon + 1);
}

bool under(const std::string& path, const std::string& dir) {
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

// A probe's or Service's port: a number, or the name of one of the container's ports.
int resolvePort(const Y& port, const Y& container) {
  std::string s = str(port);
  if (!s.empty() && std::all_of(s.begin(), s.end(), ::isdigit)) return std::stoi(s);
  Y p = byName(container["ports"], s);
  return p ? p["containerPort"].num(-1) : -1;
}

// Whether the agent's --http listener answers `path` to a client on
// another address: kubelet probes a hostNetwork pod at the node's address,
// Prometheus scrapes from anywhere. /status and the TrafficMetrics API
// answer loopback clients only.
bool servedToRemoteClients(const std::string& path) {
  static const smik::telemetry::Store store;
  static const smik::api::Router routes = smik::api::httpRoutes(
      {[] { return true; }, [] { return std::string(); }, [] { return smik::AgentStatus{}; },
       &store, "node"},
      nullptr);
  const smik::api::Route* r = routes.find(path);
  return r && !r->local_only;
}

std::string cliDefaultSocket() {
  std::string src = readFile(kRepo / "api" / "cli" / "smik.cpp");
  std::smatch m;
  std::regex re(R"re(kDefaultSocket\s*=\s*"([^"]+)")re");
  return std::regex_search(src, m, re) ? m[1].str() : "";
}

// ---- processes -------------------------------------------------------------

bool onPath(const std::string& tool) {
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

Ran run(const std::string& cmd) {
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

std::string quote(const std::string& s) { return "'" + s + "'"; }

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "smik-ds-XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string base64Decode(const std::string& in) {
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

// ---- RBAC --------------------------------------------------------------------

// "v1" -> "" (core), "discovery.k8s.io/v1" -> "discovery.k8s.io".
std::string apiGroupOf(const std::string& apiVersion) {
  auto slash = apiVersion.find('/');
  return slash == std::string::npos ? "" : apiVersion.substr(0, slash);
}

bool allows(const Y& role, const std::string& group, const std::string& resource,
            const std::string& verb) {
  for (const auto& rule : role["rules"].items()) {
    if (rule["resourceNames"]) continue;  // never the whole collection
    bool g = contains(rule["apiGroups"], group) || contains(rule["apiGroups"], "*");
    bool r = contains(rule["resources"], resource) || contains(rule["resources"], "*");
    bool v = contains(rule["verbs"], verb) || contains(rule["verbs"], "*");
    if (g && r && v) return true;
  }
  return false;
}

// Every grant the agent needs that `role` lacks, and every grant it has
// beyond reading (least privilege), as readable lines.
std::vector<std::string> rbacProblems(const Y& role) {
  std::vector<std::string> out;
  for (const auto& res : smik::kube::smikResources())
    for (const char* verb : {"get", "list", "watch"})
      if (!allows(role, apiGroupOf(res.api_version), res.plural, verb))
        out.push_back("no " + std::string(verb) + " on " + res.plural + " (" + res.api_version +
                      ")");
  for (const char* group : {"", "events.k8s.io"})
    for (const char* verb : {"create", "patch"})
      if (!allows(role, group, "events", verb))
        out.push_back("no " + std::string(verb) + " on events in group '" + group + "'");
  if (!allows(role, "authorization.k8s.io", "subjectaccessreviews", "create"))
    out.push_back("no create on subjectaccessreviews");
  const std::set<std::string> read = {"get", "list", "watch"};
  for (const auto& rule : role["rules"].items())
    for (const auto& verb : rule["verbs"].items()) {
      if (read.count(str(verb))) continue;
      for (const auto& res : rule["resources"].items())
        if (str(res) != "events" && str(res) != "subjectaccessreviews")
          out.push_back("writes: " + str(verb) + " on " + str(res));
    }
  return out;
}

void expectBinding(const Docs& docs, const std::string& kind, const std::string& roleKind,
                   const std::string& roleName, const std::string& ns) {
  for (const auto& d : docs) {
    if (str(d["kind"]) != kind || str(d["roleRef"]["kind"]) != roleKind ||
        str(d["roleRef"]["name"]) != roleName)
      continue;
    if (kind == "RoleBinding") {
      EXPECT_EQ(str(d["metadata"]["namespace"]), "kube-system");
    }
    for (const auto& s : d["subjects"].items())
      if (str(s["kind"]) == "ServiceAccount" && str(s["name"]) == "smik-agent" &&
          str(s["namespace"]) == ns)
        return;
  }
  ADD_FAILURE() << "no " << kind << " of " << roleKind << " " << roleName << " to ServiceAccount "
                << ns << "/smik-agent";
}

void checkRbac(const Docs& docs, const std::string& ns) {
  Y role = find(docs, "ClusterRole", "smik-agent");
  ASSERT_TRUE(role) << "no ClusterRole smik-agent";
  for (const auto& p : rbacProblems(role)) ADD_FAILURE() << "ClusterRole smik-agent: " << p;
  Y sa = find(docs, "ServiceAccount", "smik-agent");
  ASSERT_TRUE(sa) << "no ServiceAccount smik-agent";
  EXPECT_EQ(str(sa["metadata"]["namespace"]), ns);
  expectBinding(docs, "ClusterRoleBinding", "ClusterRole", "smik-agent", ns);
  expectBinding(docs, "ClusterRoleBinding", "ClusterRole", "system:auth-delegator", ns);
  expectBinding(docs, "RoleBinding", "Role", "extension-apiserver-authentication-reader", ns);
}

// ---- DaemonSet -----------------------------------------------------------------

// Name of the volume that is hostPath `path`, or "".
std::string hostPathVolume(const Y& pod, const std::string& path) {
  for (const auto& v : pod["volumes"].items())
    if (str(v["hostPath"]["path"]) == path) return str(v["name"]);
  return "";
}

Y mountOf(const Y& container, const std::string& volume) {
  for (const auto& m : container["volumeMounts"].items())
    if (str(m["name"]) == volume) return m;
  return Y();
}

bool privileged(const Y& c) { return str(c["securityContext"]["privileged"]) == "true"; }

// The init container that mounts `volume` with Bidirectional propagation, if any.
Y bidirectionalInit(const Y& pod, const std::string& volume) {
  for (const auto& c : pod["initContainers"].items()) {
    Y m = mountOf(c, volume);
    if (m && str(m["mountPropagation"]) == "Bidirectional") return c;
  }
  return Y();
}

std::string script(const Y& c) {
  std::string s;
  for (const auto& part : {c["command"], c["args"]})
    for (const auto& a : part.items()) s += str(a) + "\n";
  return s;
}

void checkAgentDaemonSet(const Docs& docs, const std::string& ns) {
  Y ds = find(docs, "DaemonSet", "smik-agent");
  ASSERT_TRUE(ds) << "no DaemonSet smik-agent";
  EXPECT_EQ(str(ds["metadata"]["namespace"]), ns);
  // The agents find their peers by this label.
  EXPECT_EQ(str(ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]), "smik-agent");
  Y tmpl = ds["spec"]["template"];
  EXPECT_EQ(str(tmpl["metadata"]["labels"]["app.kubernetes.io/name"]), "smik-agent");
  EXPECT_EQ(str(ds["spec"]["updateStrategy"]["type"]), "RollingUpdate");
  EXPECT_EQ(str(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"]), "1");

  Y pod = tmpl["spec"];
  EXPECT_EQ(str(pod["hostNetwork"]), "true");
  EXPECT_EQ(str(pod["dnsPolicy"]), "ClusterFirstWithHostNet");
  EXPECT_EQ(str(pod["priorityClassName"]), "system-node-critical");
  bool everyTaint = false;
  for (const auto& t : pod["tolerations"].items())
    everyTaint |= str(t["operator"]) == "Exists" && !t["key"] && !t["effect"];
  EXPECT_TRUE(everyTaint) << "no toleration {operator: Exists} for every taint";
  ASSERT_TRUE(pod["terminationGracePeriodSeconds"]);
  EXPECT_LE(pod["terminationGracePeriodSeconds"].num(1000), 30);
  EXPECT_EQ(str(pod["serviceAccountName"]), "smik-agent");

  // Kubernetes refuses Bidirectional propagation in unprivileged containers.
  for (const auto& list : {pod["initContainers"], pod["containers"]})
    for (const auto& c : list.items())
      for (const auto& m : c["volumeMounts"].items())
        if (str(m["mountPropagation"]) == "Bidirectional") {
          EXPECT_TRUE(privileged(c)) << str(c["name"]) << ": Bidirectional but not privileged";
        }

  Y agent = byName(pod["containers"], "agent");
  ASSERT_TRUE(agent) << "no container named agent";
  EXPECT_FALSE(privileged(agent)) << "the agent is privileged by default";
  std::set<std::string> caps;
  for (const auto& c : agent["securityContext"]["capabilities"]["add"].items()) caps.insert(str(c));
  for (const char* c : {"BPF", "NET_ADMIN", "SYS_ADMIN", "PERFMON", "SYS_RESOURCE"})
    EXPECT_TRUE(caps.count(c)) << "capability " << c << " not added";
  bool unconfined =
      str(tmpl["metadata"]["annotations"]
              ["container.apparmor.security.beta.kubernetes.io/agent"]) == "unconfined" ||
      str(agent["securityContext"]["appArmorProfile"]["type"]) == "Unconfined";
  EXPECT_TRUE(unconfined) << "runtime-default AppArmor forbids pinning under /sys/fs/bpf";

  auto args = parseArgs(agent["args"]);
  for (const auto& [flag, value] : args)
    EXPECT_TRUE(kPlannedFlags.count(flag)) << "agent flag " << flag << " is not in the plan";
  for (const char* f : {"--node", "--http", "--pin-dir", "--cgroup", "--grpc", "--peer-listen",
                        "--peer-tls-cert", "--peer-tls-key", "--peer-tls-ca", "--secure-listen",
                        "--tls-cert-file", "--tls-private-key-file"})
    EXPECT_TRUE(args.count(f)) << "agent lacks " << f;
  EXPECT_EQ(args["--node"], "$(NODE_NAME)");
  Y nodeName = byName(agent["env"], "NODE_NAME");
  EXPECT_EQ(str(nodeName["valueFrom"]["fieldRef"]["fieldPath"]), "spec.nodeName");

  // Settings come from ConfigMap smik-config, as env names the agent knows.
  bool fromConfig = false;
  for (const auto& e : agent["envFrom"].items())
    fromConfig |= str(e["configMapRef"]["name"]) == "smik-config";
  EXPECT_TRUE(fromConfig) << "agent does not read ConfigMap smik-config";
  Y cm = find(docs, "ConfigMap", "smik-config");
  ASSERT_TRUE(cm) << "no ConfigMap smik-config";
  EXPECT_EQ(str(cm["metadata"]["namespace"]), ns);
  for (const auto& [key, value] : cm["data"].entries()) EXPECT_TRUE(kPlannedEnv.count(key)) << key;
  const std::set<std::string> modes = {"strict", "permissive", "per-destination"};
  EXPECT_TRUE(modes.count(str(cm["data"]["SMIK_ACCESS_MODE"])))
      << str(cm["data"]["SMIK_ACCESS_MODE"]);
  const std::set<std::string> rules = {"deny", "allow-tcp"};
  EXPECT_TRUE(rules.count(str(cm["data"]["SMIK_HTTP_RULES"])));
  EXPECT_EQ(str(cm["data"]["SMIK_HOST_TRAFFIC"]), "allow") << "the default: probes pass";
  const std::set<std::string> bools = {"true", "false"};
  EXPECT_TRUE(bools.count(str(cm["data"]["SMIK_MESH_ALL"])));

  // bpffs from the host, mounted there by a privileged init container if needed.
  std::string bpffs = hostPathVolume(pod, "/sys/fs/bpf");
  ASSERT_FALSE(bpffs.empty()) << "no hostPath /sys/fs/bpf";
  EXPECT_TRUE(bidirectionalInit(pod, bpffs)) << "nothing mounts bpffs Bidirectional";
  Y bpfMount = mountOf(agent, bpffs);
  ASSERT_TRUE(bpfMount) << "agent does not mount bpffs";
  EXPECT_EQ(str(bpfMount["mountPath"]), "/sys/fs/bpf");
  EXPECT_NE(str(bpfMount["mountPropagation"]), "") << "agent would miss a later bpffs mount";
  EXPECT_TRUE(under(args["--pin-dir"], str(bpfMount["mountPath"]))) << args["--pin-dir"];

  // The cgroup2 root: its own host mount, made by an init container.
  std::string cg = hostPathVolume(pod, "/run/smik/cgroupv2");
  ASSERT_FALSE(cg.empty()) << "no hostPath /run/smik/cgroupv2";
  Y cgMount = mountOf(agent, cg);
  ASSERT_TRUE(cgMount) << "agent does not mount the cgroup2 root";
  EXPECT_EQ(args["--cgroup"], str(cgMount["mountPath"]));
  Y cgInit = bidirectionalInit(pod, cg);
  ASSERT_TRUE(cgInit) << "nothing mounts cgroup2 Bidirectional";
  std::string sh = script(cgInit);
  EXPECT_NE(sh.find("mount -t cgroup2"), std::string::npos) << sh;
  EXPECT_NE(sh.find("cgroup2fs"), std::string::npos) << "mounts again on every start: " << sh;

  // The CLI's socket, where `smik` looks by default (kubectl exec ... smik status).
  std::string run = hostPathVolume(pod, "/run/smik");
  ASSERT_FALSE(run.empty()) << "no hostPath /run/smik";
  Y runMount = mountOf(agent, run);
  ASSERT_TRUE(runMount);
  EXPECT_TRUE(under(args["--grpc"], str(runMount["mountPath"]))) << args["--grpc"];
  EXPECT_EQ(args["--grpc"], cliDefaultSocket());

  std::string btf = hostPathVolume(pod, "/sys/kernel/btf");
  ASSERT_FALSE(btf.empty()) << "no hostPath /sys/kernel/btf";
  Y btfMount = mountOf(agent, btf);
  ASSERT_TRUE(btfMount);
  EXPECT_EQ(str(btfMount["readOnly"]), "true");

  // TLS Secrets: optional, so the agent starts before gen-certs.sh ran.
  auto checkSecret = [&](const std::string& secret, std::vector<std::string> flags) {
    std::string vol;
    for (const auto& v : pod["volumes"].items())
      if (str(v["secret"]["secretName"]) == secret) {
        vol = str(v["name"]);
        EXPECT_EQ(str(v["secret"]["optional"]), "true") << secret;
      }
    ASSERT_FALSE(vol.empty()) << "Secret " << secret << " not mounted";
    Y m = mountOf(agent, vol);
    ASSERT_TRUE(m) << secret;
    for (const auto& f : flags)
      EXPECT_TRUE(under(args[f], str(m["mountPath"]))) << f << "=" << args[f];
  };
  checkSecret("smik-peer-tls", {"--peer-tls-cert", "--peer-tls-key", "--peer-tls-ca"});
  checkSecret("smik-api-tls", {"--tls-cert-file", "--tls-private-key-file"});

  // Listen ports are declared, and as host ports (hostNetwork).
  for (const auto& [flag, name] : std::vector<std::pair<std::string, std::string>>{
           {"--http", "http"}, {"--peer-listen", "peer-grpc"}, {"--secure-listen", "api"}}) {
    Y p = byName(agent["ports"], name);
    ASSERT_TRUE(p) << "no container port " << name;
    EXPECT_EQ(p["containerPort"].num(-1), portOf(args[flag])) << flag;
    EXPECT_EQ(str(p["hostPort"]), str(p["containerPort"])) << name;
  }

  // Probes on the agent's HTTP port, on paths the agent serves them.
  for (const auto& [probe, path] :
       std::vector<std::pair<std::string, std::string>>{{"startupProbe", "/healthz"},
                                                        {"livenessProbe", "/healthz"},
                                                        {"readinessProbe", "/readyz"}}) {
    Y get = agent[probe]["httpGet"];
    ASSERT_TRUE(get) << probe << " is not httpGet";
    EXPECT_EQ(str(get["path"]), path) << probe;
    EXPECT_TRUE(servedToRemoteClients(str(get["path"])))
        << probe << ": the agent does not serve " << str(get["path"]) << " to kubelet";
    EXPECT_EQ(resolvePort(get["port"], agent), portOf(args["--http"])) << probe;
  }
  // Prometheus scrapes the port of --http, at /metrics unless told otherwise.
  Y scrape = tmpl["metadata"]["annotations"];
  EXPECT_EQ(str(scrape["prometheus.io/scrape"]), "true");
  EXPECT_EQ(scrape["prometheus.io/port"].num(-1), portOf(args["--http"]));
  const std::string metrics_path =
      scrape["prometheus.io/path"] ? str(scrape["prometheus.io/path"]) : "/metrics";
  EXPECT_TRUE(servedToRemoteClients(metrics_path)) << metrics_path;

  Y startup = agent["startupProbe"];
  EXPECT_GE(startup["periodSeconds"].num(10) * startup["failureThreshold"].num(3), 120)
      << "startup probe gives up before a large cluster's first sync";

  Y res = agent["resources"];
  EXPECT_TRUE(res["requests"]["cpu"] && res["requests"]["memory"]) << "no requests";
  EXPECT_TRUE(res["limits"]["memory"]) << "no memory limit";
}

void checkApiService(const Docs& docs, const std::string& ns) {
  Y api = find(docs, "APIService", "v1alpha1.metrics.smi-spec.io");
  ASSERT_TRUE(api) << "no APIService v1alpha1.metrics.smi-spec.io";
  Y spec = api["spec"];
  EXPECT_EQ(str(spec["group"]), "metrics.smi-spec.io");
  EXPECT_EQ(str(spec["version"]), "v1alpha1");
  EXPECT_EQ(str(spec["service"]["name"]), "smik-api");
  EXPECT_EQ(str(spec["service"]["namespace"]), ns);
  EXPECT_EQ(str(spec["service"]["port"]), "443");
  // The API server rejects both together, and needs one of them.
  bool insecure = str(spec["insecureSkipTLSVerify"]) == "true";
  bool ca = !str(spec["caBundle"]).empty();
  EXPECT_NE(insecure, ca) << "exactly one of insecureSkipTLSVerify and caBundle";

  Y svc = find(docs, "Service", "smik-api");
  ASSERT_TRUE(svc) << "no Service smik-api";
  EXPECT_EQ(str(svc["metadata"]["namespace"]), ns);
  Y ds = find(docs, "DaemonSet", "smik-agent");
  ASSERT_TRUE(ds);
  Y labels = ds["spec"]["template"]["metadata"]["labels"];
  ASSERT_FALSE(svc["spec"]["selector"].entries().empty());
  for (const auto& [key, value] : svc["spec"]["selector"].entries())
    EXPECT_EQ(str(labels[key]), str(value)) << "selector misses the agents";
  Y agent = byName(ds["spec"]["template"]["spec"]["containers"], "agent");
  auto args = parseArgs(agent["args"]);
  bool found = false;
  for (const auto& p : svc["spec"]["ports"].items())
    if (str(p["port"]) == "443") {
      found = true;
      EXPECT_EQ(resolvePort(p["targetPort"], agent), portOf(args["--secure-listen"]));
    }
  EXPECT_TRUE(found) << "Service smik-api has no port 443";
}

// ---- Helm ----------------------------------------------------------------------

bool valuesHave(const Y& values, const std::string& dotted) {
  Y n = values;
  std::stringstream ss(dotted);
  std::string key;
  while (std::getline(ss, key, '.')) {
    // Present with an empty value (tag: "", meshNamespaces: []) counts.
    bool has = false;
    for (const auto& [k, v] : n.entries()) has |= k == key;
    if (!has) return false;
    n = n[key];
  }
  return true;
}

Ran helmTemplate(const std::string& extra) {
  return run("helm template smik " + quote(kChart.string()) + " -n " + kNs + " --include-crds " +
             extra);
}

}  // namespace

// ---- plain files ---------------------------------------------------------------

TEST(Daemonset, EveryYamlParsesAndNamesARealKind) {
  auto files = yamlFiles();
  std::set<std::string> names;
  for (const auto& f : files) names.insert(fs::relative(f, kInstall).string());
  for (const char* f : {"namespace.yaml", "rbac.yaml", "config.yaml", "daemonset.yaml",
                        "apiservice.yaml", "kustomization.yaml", "privileged-patch.yaml",
                        "uninstall.yaml", "helm/smik/Chart.yaml", "helm/smik/values.yaml"})
    EXPECT_TRUE(names.count(f)) << "missing daemonset/" << f;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    Docs docs;
    ASSERT_NO_THROW(docs = loadFile(f));
    ASSERT_FALSE(docs.empty());
    if (f == kChart / "Chart.yaml" || f == kChart / "values.yaml") continue;
    for (const auto& d : docs) {
      std::string av = str(d["apiVersion"]), kind = str(d["kind"]);
      EXPECT_TRUE(kRealKinds.count({av, kind}))
          << av << " " << kind << " is not a kind the install uses";
      if (kind != "Kustomization") {
        EXPECT_FALSE(str(d["metadata"]["name"]).empty());
      }
    }
  }
}

TEST(Daemonset, KustomizationListsEveryManifestAndOnlyThose) {
  std::set<std::string> listed;
  for (const auto& r : kustomizationResources()) {
    EXPECT_TRUE(fs::exists(kInstall / r)) << r << " is listed but missing";
    EXPECT_TRUE(listed.insert(r).second) << r << " is listed twice";
  }
  std::set<std::string> expected;
  for (const auto& f : yamlFiles()) {
    auto rel = fs::relative(f, kInstall);
    if (*rel.begin() == "helm" || kNotResources.count(rel.string())) continue;
    expected.insert(rel.string());
  }
  EXPECT_EQ(listed, expected);
  // The opt-in patch is there to be uncommented.
  EXPECT_NE(readFile(kInstall / "kustomization.yaml").find("- path: privileged-patch.yaml"),
            std::string::npos);
}

TEST(Daemonset, AgentDaemonSet) { checkAgentDaemonSet(plainInstall(), kNs); }

TEST(Daemonset, ClusterRoleCoversEveryWatchedResource) {
  auto resources = smik::kube::smikResources();
  ASSERT_GE(resources.size(), 14u);
  EXPECT_EQ(apiGroupOf("v1"), "");
  EXPECT_EQ(apiGroupOf("discovery.k8s.io/v1"), "discovery.k8s.io");
  checkRbac(plainInstall(), kNs);
}

// The RBAC check itself: without any one of its rules the role must fail it.
TEST(Daemonset, RbacCheckCatchesEveryMissingRule) {
  Y role = find(plainInstall(), "ClusterRole", "smik-agent");
  ASSERT_TRUE(role);
  ASSERT_TRUE(rbacProblems(role).empty());
  const size_t n = role["rules"].items().size();
  ASSERT_GT(n, 0u);
  for (size_t i = 0; i < n; ++i) {
    YAML::Node cut = YAML::Clone(role.node());
    YAML::Node rules(YAML::NodeType::Sequence);
    for (size_t j = 0; j < n; ++j)
      if (j != i) rules.push_back(YAML::Clone(role.node()["rules"][j]));
    cut["rules"] = rules;
    EXPECT_FALSE(rbacProblems(Y(cut)).empty()) << "rule " << i << " is not needed, or not checked";
  }
  YAML::Node extra = YAML::Clone(role.node());
  extra["rules"][0]["verbs"].push_back("delete");
  EXPECT_FALSE(rbacProblems(Y(extra)).empty()) << "a write verb went unnoticed";
}

TEST(Daemonset, ApiService) {
  Docs docs = plainInstall();
  checkApiService(docs, kNs);
  // Plain manifests cannot know the CA gen-certs.sh makes.
  EXPECT_EQ(str(find(docs, "APIService",
                     "v1alpha1.metrics.smi-spec.io")["spec"]["insecureSkipTLSVerify"]),
            "true");
}

TEST(Daemonset, UninstallRemovesTheAgentsPins) {
  Docs docs = loadFile(kInstall / "uninstall.yaml");
  Y ds = find(docs, "DaemonSet", "smik-uninstall");
  ASSERT_TRUE(ds);
  Y pod = ds["spec"]["template"]["spec"];
  EXPECT_EQ(str(pod["hostNetwork"]), "true") << "tc hooks are in the node's netns";
  // Not an agent: no peer, no Service endpoint.
  EXPECT_NE(str(ds["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]),
            "smik-agent");
  bool everyTaint = false;
  for (const auto& t : pod["tolerations"].items())
    everyTaint |= str(t["operator"]) == "Exists" && !t["key"];
  EXPECT_TRUE(everyTaint);
  Y agentDs = find(plainInstall(), "DaemonSet", "smik-agent");
  auto agentArgs =
      parseArgs(byName(agentDs["spec"]["template"]["spec"]["containers"], "agent")["args"]);
  Y un = byName(pod["initContainers"], "uninstall");
  ASSERT_TRUE(un);
  auto args = parseArgs(un["args"]);
  EXPECT_TRUE(args.count("--uninstall"));
  EXPECT_EQ(args["--pin-dir"], agentArgs["--pin-dir"]);
  std::string bpffs = hostPathVolume(pod, "/sys/fs/bpf");
  ASSERT_FALSE(bpffs.empty());
  Y m = mountOf(un, bpffs);
  ASSERT_TRUE(m);
  EXPECT_TRUE(under(args["--pin-dir"], str(m["mountPath"])));
  for (const auto& c : pod["initContainers"].items())
    for (const auto& vm : c["volumeMounts"].items())
      if (str(vm["mountPropagation"]) == "Bidirectional") {
        EXPECT_TRUE(privileged(c)) << str(c["name"]);
      }
}

std::string sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  char byte[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(byte, sizeof byte, "%02x", md[i]);
    hex += byte;
  }
  return hex;
}

std::set<std::string> yamlFilesIn(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".yaml") names.insert(e.path().filename().string());
  return names;
}

// daemonset/crds holds the SMI SDK's CRDs byte for byte (daemonset/crds/README.md
// names the upstream commit): an edit here would make smik serve a schema no
// other SMI implementation accepts. Pinned by hash, so a change is deliberate.
TEST(Daemonset, CrdsAreTheSmiSdkOnesUnchanged) {
  const std::map<std::string, std::string> upstream = {
      {"access.yaml", "8411dba41e6d8021795519d83d9fb64a436cf856ca307cf678594f4a11456f46"},
      {"httproutegroup.yaml", "a5cc9041bb6c24e351a698602f080e88892da7b8819bb91fccaa5c5d94d6a90b"},
      {"split.yaml", "edfbf0a4cb2f7a6eba0354bada43156600ada5ab00541ae9d2dc05e74f32f3ae"},
      {"tcproute.yaml", "8d6b064d609c57586f42d89e16f219a9d8f24bb97c0b42e5fac54e2b035687c5"},
      {"udproute.yaml", "25230e36028c7cc47bb467c7f13d5d65c30734c4163dad7873d986a3716fc5db"},
  };
  std::set<std::string> names;
  for (const auto& [name, hash] : upstream) names.insert(name);
  EXPECT_EQ(yamlFilesIn(kInstall / "crds"), names);
  for (const auto& [name, hash] : upstream)
    EXPECT_EQ(sha256Hex(readFile(kInstall / "crds" / name)), hash) << name << " was edited";
}

// Helm wants the CRDs inside the chart; that copy must not drift from the one
// the kustomization installs.
TEST(Daemonset, ChartCrdsAreTheInstallOnes) {
  const fs::path crds = kInstall / "crds";
  const std::set<std::string> names = yamlFilesIn(crds);
  ASSERT_FALSE(names.empty()) << crds;
  EXPECT_EQ(yamlFilesIn(kChart / "crds"), names);
  for (const auto& f : names)
    EXPECT_EQ(readFile(kChart / "crds" / f), readFile(crds / f)) << f << " differs from " << crds;
}

// The DaemonSet's args and ConfigMap keys (read with envFrom) that no CLI11
// option or environment name in `sources` defines.
std::vector<std::string> optionsTheAgentLacks(const std::string& sources, const Docs& docs) {
  std::set<std::string> flags, envs;
  std::regex opt(R"re(add_(?:option|flag)\(\s*"([^"]+)")re"), env(R"re(envname\(\s*"([^"]+)")re");
  for (auto it = std::sregex_iterator(sources.begin(), sources.end(), opt);
       it != std::sregex_iterator(); ++it) {
    std::stringstream names((*it)[1].str());
    std::string n;
    while (std::getline(names, n, ',')) flags.insert(n);
  }
  for (auto it = std::sregex_iterator(sources.begin(), sources.end(), env);
       it != std::sregex_iterator(); ++it)
    envs.insert((*it)[1]);
  Y ds = find(docs, "DaemonSet", "smik-agent");
  std::vector<std::string> missing;
  for (const auto& [flag, v] :
       parseArgs(byName(ds["spec"]["template"]["spec"]["containers"], "agent")["args"]))
    if (!flags.count(flag)) missing.push_back(flag);
  for (const auto& [key, value] : find(docs, "ConfigMap", "smik-config")["data"].entries())
    if (!envs.count(key)) missing.push_back(key);
  return missing;
}

// Every .cpp under agent/ and api/ (the peer flags live with the peer API).
std::string agentSources() {
  std::string all;
  for (const char* dir : {"agent", "api"})
    for (const auto& e : fs::recursive_directory_iterator(kRepo / dir))
      if (e.path().extension() == ".cpp") all += readFile(e.path());
  return all;
}

// The real agent accepts what the manifests pass. A flag renamed in the
// agent but not in the manifests is a DaemonSet that crash-loops on
// "unknown option": a failure, never a skip.
TEST(Daemonset, AgentHasEveryFlagTheManifestsPass) {
  const std::string sources = agentSources();
  ASSERT_NE(sources.find("\"--pin-dir\""), std::string::npos) << "no CLI11 options found under agent/";
  for (const auto& m : optionsTheAgentLacks(sources, plainInstall()))
    ADD_FAILURE() << "the manifests pass " << m << ", the agent has no such option";
}

// The check above catches a rename: the same sources with one flag and one
// environment name renamed leave exactly those missing.
TEST(Daemonset, ARenamedFlagIsReportedMissing) {
  std::string sources = agentSources();
  const Docs docs = plainInstall();
  ASSERT_TRUE(optionsTheAgentLacks(sources, docs).empty());
  for (const auto& [from, to] : {std::pair{"add_option(\"--pin-dir", "add_option(\"--bpf-pin-dir"},
                                 std::pair{"envname(\"SMIK_ACCESS_MODE\"", "envname(\"SMIK_MODE\""}}) {
    const size_t at = sources.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    sources.replace(at, std::string(from).size(), to);
  }
  std::vector<std::string> missing = optionsTheAgentLacks(sources, docs);
  std::sort(missing.begin(), missing.end());
  EXPECT_EQ(missing, (std::vector<std::string>{"--pin-dir", "SMIK_ACCESS_MODE"}));
}

TEST(Daemonset, GenCertsMakesBothSecrets) {
  if (!onPath("openssl") || !onPath("bash")) GTEST_SKIP() << "openssl or bash not on PATH";
  TempDir tmp;
  Ran r = run("bash " + quote((kInstall / "gen-certs.sh").string()) + " --dry-run --days 2 --out " +
              quote(tmp.path.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  Docs docs = loadDocs(r.out);
  ASSERT_EQ(docs.size(), 2u) << r.out;
  for (const auto& [name, dir] : std::vector<std::pair<std::string, std::string>>{
           {"smik-api-tls", "api"}, {"smik-peer-tls", "peer"}}) {
    SCOPED_TRACE(name);
    Y s = find(docs, "Secret", name);
    ASSERT_TRUE(s);
    EXPECT_EQ(str(s["metadata"]["namespace"]), kNs);
    EXPECT_EQ(str(s["type"]), "kubernetes.io/tls");
    for (const char* k : {"tls.crt", "tls.key", "ca.crt"})
      EXPECT_EQ(base64Decode(str(s["data"][k])), readFile(tmp.path / dir / k)) << k;
    fs::path d = tmp.path / dir;
    EXPECT_EQ(run("openssl verify -CAfile " + quote((d / "ca.crt").string()) + " " +
                  quote((d / "tls.crt").string()))
                  .status,
              0);
  }
  Ran api = run("openssl x509 -noout -ext subjectAltName,extendedKeyUsage -in " +
                quote((tmp.path / "api" / "tls.crt").string()));
  EXPECT_NE(api.out.find("DNS:smik-api.smik-system.svc"), std::string::npos) << api.out;
  EXPECT_NE(api.out.find("Server Authentication"), std::string::npos) << api.out;
  Ran peer = run("openssl x509 -noout -ext subjectAltName,extendedKeyUsage -in " +
                 quote((tmp.path / "peer" / "tls.crt").string()));
  EXPECT_NE(peer.out.find("DNS:smik-peer.smik-system"), std::string::npos) << peer.out;
  EXPECT_EQ(peer.out.find("IP Address"), std::string::npos) << "peers are dialled by name, not IP";
  EXPECT_NE(peer.out.find("Client Authentication"), std::string::npos)
      << "peers are mTLS clients too";
  // Separate CAs: the API's serving key cannot join the peer mesh.
  EXPECT_NE(run("openssl verify -CAfile " + quote((tmp.path / "peer" / "ca.crt").string()) + " " +
                quote((tmp.path / "api" / "tls.crt").string()))
                .status,
            0);
}

TEST(Daemonset, DockerfileShipsBothBinariesOnDebian12) {
  std::string df = readFile(kInstall / "Dockerfile");
  EXPECT_NE(df.find("FROM debian:12 AS build"), std::string::npos);
  EXPECT_NE(df.find("FROM debian:12-slim"), std::string::npos);
  EXPECT_NE(df.find(".ci/deps"), std::string::npos) << "build packages must come from .ci/deps";
  EXPECT_NE(df.find("--target smik-agent smik"), std::string::npos);
  EXPECT_NE(df.find("COPY --from=build /build/smik-agent /build/smik /usr/local/bin/"),
            std::string::npos);
  EXPECT_NE(df.find("ENTRYPOINT [\"/usr/local/bin/smik-agent\"]"), std::string::npos);
  std::string ignore = readFile(kRepo / ".dockerignore");
  EXPECT_NE(ignore.find("build/"), std::string::npos);
  EXPECT_NE(ignore.find(".git"), std::string::npos);
}

// ---- Helm chart (static) -----------------------------------------------------------

TEST(Daemonset, HelmChartValuesCoverTheTemplates) {
  Y chart(YAML::LoadFile((kChart / "Chart.yaml").string()));
  EXPECT_EQ(str(chart["apiVersion"]), "v2");
  EXPECT_EQ(str(chart["name"]), "smik");
  EXPECT_FALSE(str(chart["version"]).empty());
  Y values(YAML::LoadFile((kChart / "values.yaml").string()));
  for (const char* v :
       {"image.repository", "image.tag", "image.pullPolicy", "accessMode", "meshNamespaces",
        "meshAll", "httpRules", "logLevel", "privileged", "resources", "tolerations",
        "tls.api.existingSecret", "tls.peer.existingSecret"})
    EXPECT_TRUE(valuesHave(values, v)) << "values.yaml lacks " << v;

  std::regex ref(R"re(\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+))re");
  size_t refs = 0;
  for (const auto& e : fs::directory_iterator(kChart / "templates")) {
    std::string src = readFile(e.path());
    for (auto it = std::sregex_iterator(src.begin(), src.end(), ref); it != std::sregex_iterator();
         ++it) {
      ++refs;
      std::string dotted = (*it)[1].str().substr(1);
      EXPECT_TRUE(valuesHave(values, dotted))
          << e.path().filename() << " uses .Values." << dotted << ", which values.yaml lacks";
    }
  }
  EXPECT_GT(refs, 20u) << "the scan found (almost) no .Values references";

  // Helm's defaults are the plain install's.
  Y cm = find(plainInstall(), "ConfigMap", "smik-config")["data"];
  EXPECT_EQ(str(values["accessMode"]), str(cm["SMIK_ACCESS_MODE"]));
  EXPECT_EQ(str(values["httpRules"]), str(cm["SMIK_HTTP_RULES"]));
  EXPECT_EQ(str(values["hostTraffic"]), str(cm["SMIK_HOST_TRAFFIC"]));
  EXPECT_EQ(str(values["meshAll"]), str(cm["SMIK_MESH_ALL"]));
  EXPECT_EQ(str(values["logLevel"]), str(cm["SMIK_LOG_LEVEL"]));
  EXPECT_EQ(str(values["metricsWindow"]), str(cm["SMIK_METRICS_WINDOW"]));
  EXPECT_EQ(str(values["ctMax"]), str(cm["SMIK_CT_MAX"]));
  EXPECT_TRUE(values["meshNamespaces"].items().empty());
  EXPECT_EQ(str(cm["SMIK_MESH_NAMESPACES"]), "");
  EXPECT_EQ(str(values["privileged"]), "false");
}

// ---- rendered by the real tools --------------------------------------------------

TEST(Daemonset, KubectlKustomizeRendersThePlainFiles) {
  if (!onPath("kubectl")) GTEST_SKIP() << "kubectl not on PATH";
  Ran r = run("kubectl kustomize " + quote(kInstall.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  Docs rendered = loadDocs(r.out);
  EXPECT_EQ(kindNames(rendered), kindNames(plainInstall()));
  checkAgentDaemonSet(rendered, kNs);
  checkRbac(rendered, kNs);
  checkApiService(rendered, kNs);
}

TEST(Daemonset, PrivilegedPatchMakesOnlyTheAgentPrivileged) {
  if (!onPath("kubectl")) GTEST_SKIP() << "kubectl not on PATH";
  TempDir overlay;
  fs::copy_file(kInstall / "privileged-patch.yaml", overlay.path / "privileged-patch.yaml");
  std::ofstream(overlay.path / "kustomization.yaml")
      << "resources:\n  - " << fs::relative(kInstall, overlay.path).string()
      << "\npatches:\n  - path: privileged-patch.yaml\n";
  Ran r = run("kubectl kustomize " + quote(overlay.path.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  Docs rendered = loadDocs(r.out);
  Y ds = find(rendered, "DaemonSet", "smik-agent");
  ASSERT_TRUE(ds);
  Y containers = ds["spec"]["template"]["spec"]["containers"];
  ASSERT_EQ(containers.items().size(), 1u)
      << "the patch added a container instead of changing the agent";
  EXPECT_TRUE(privileged(byName(containers, "agent")));
  EXPECT_EQ(kindNames(rendered), kindNames(plainInstall()));
}

TEST(Daemonset, HelmTemplateRendersTheSameInstall) {
  if (!onPath("helm")) GTEST_SKIP() << "helm not on PATH";
  Ran lint = run("helm lint " + quote(kChart.string()));
  EXPECT_EQ(lint.status, 0) << lint.out << lint.err;
  Ran r = helmTemplate("");
  ASSERT_EQ(r.status, 0) << r.err;
  Docs rendered = loadDocs(r.out);
  // Helm creates the namespace (--create-namespace) and generates the TLS Secrets.
  auto expected = kindNames(plainInstall());
  expected.erase({"Namespace", kNs});
  expected.insert({"Secret", "smik-api-tls"});
  expected.insert({"Secret", "smik-peer-tls"});
  EXPECT_EQ(kindNames(rendered), expected);
  checkAgentDaemonSet(rendered, kNs);
  checkRbac(rendered, kNs);
  checkApiService(rendered, kNs);
  // The aggregator trusts the CA that signed the serving certificate.
  Y secret = find(rendered, "Secret", "smik-api-tls");
  EXPECT_EQ(str(find(rendered, "APIService", "v1alpha1.metrics.smi-spec.io")["spec"]["caBundle"]),
            str(secret["data"]["ca.crt"]));

  Ran priv = helmTemplate("--set privileged=true");
  ASSERT_EQ(priv.status, 0) << priv.err;
  Y ds = find(loadDocs(priv.out), "DaemonSet", "smik-agent");
  EXPECT_TRUE(privileged(byName(ds["spec"]["template"]["spec"]["containers"], "agent")));

  // An existing Secret without a known CA must not yield an unverifiable APIService.
  EXPECT_NE(helmTemplate("--set tls.api.existingSecret=mine").status, 0);
}
