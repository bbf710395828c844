// smik-agent: enforces SMI access policy with eBPF on this node.
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>

#include "agent/agent.h"
#include "agent/datapath/datapath.h"
#include "agent/datapath/system.h"
#include "agent/source/kube_source.h"
#include "agent/source/manifest_dir.h"
#include "api/grpc/server.h"
#include "api/http/http_server.h"
#include "api/http/secure_api.h"
#include "api/smi/smi_metrics.h"
#include "api/peer/peer_api.h"

namespace {
std::atomic<bool> g_stop{false};
void onSignal(int) { g_stop = true; }

std::string hostName() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// Access mode, HTTP-rule handling, host traffic and meshed namespaces into
// `node`; false (logged) on a value that is none of the choices.
bool applyPolicySettings(const std::string& mode, const std::string& http_rules,
                         const std::string& host_traffic, bool mesh_all,
                         const std::vector<std::string>& mesh_namespaces,
                         smik::compile::NodeConfig* node) {
  if (!smik::compile::parseAccessMode(mode, &node->access_mode)) {
    spdlog::error("--access-mode: {} is not strict, permissive or per-destination", mode);
    return false;
  }
  if (!smik::compile::parseHostTraffic(host_traffic, &node->host_traffic)) {
    spdlog::error("--host-traffic: {} is not allow or policy", host_traffic);
    return false;
  }
  if (!smik::compile::parseHttpRules(http_rules, &node->http_rules)) {
    spdlog::error("--http-rules: {} is not enforce, deny or allow-tcp", http_rules);
    return false;
  }
  node->mesh_all = mesh_all;
  // From an env var, an empty list arrives as one empty name.
  for (const auto& n : mesh_namespaces)
    if (!n.empty()) node->mesh_namespaces.push_back(n);
  return true;
}

// The manifest directory, or the Kubernetes API (kubeconfig, else the pod's
// service account). nullptr (logged) when no API configuration loads.
std::unique_ptr<smik::source::Source> makeSource(
    const std::string& manifests, const std::string& kubeconfig, const std::string& context,
    bool record_events, const std::string& node, std::optional<smik::kube::KubeConfig>* kube_config,
    smik::kube::KubeSource** kube) {
  if (!manifests.empty()) return std::make_unique<smik::source::ManifestDir>(manifests);
  auto loaded = kubeconfig.empty() ? smik::kube::loadInCluster(std::getenv)
                                   : smik::kube::loadKubeconfig(kubeconfig, context);
  if (!loaded.config) {
    spdlog::error("{}{}", loaded.error,
                  kubeconfig.empty() ? " (outside a cluster, pass --kubeconfig or --manifests)" : "");
    return nullptr;
  }
  *kube_config = loaded.config;
  smik::kube::KubeSourceOptions options;
  options.record_events = record_events;
  options.events.host = node;
  auto source = std::make_unique<smik::kube::KubeSource>(*loaded.config, options);
  *kube = source.get();
  return source;
}

// The DaemonSet mounts the serving Secret as optional: without it, serve a
// self-signed certificate (the plain APIService skips verification) rather
// than no API.
void fallBackToSelfSigned(smik::api::SecureApiConfig* server) {
  if (server->cert_file.empty()) return;
  if (access(server->cert_file.c_str(), R_OK) == 0 && access(server->key_file.c_str(), R_OK) == 0)
    return;
  spdlog::warn("{} or {} unreadable: serving a self-signed certificate", server->cert_file,
               server->key_file);
  server->cert_file.clear();
  server->key_file.clear();
}

// The APIService's endpoint; its requests fan out to the peers like --http's.
std::unique_ptr<smik::api::AggregatedApi> startAggregatedApi(
    smik::kube::HttpClient& kube, const smik::api::AggregatedApi::Options& options,
    smik::Agent* agent, smik::peer::PeerApi& peers, const std::string& node) {
  smik::api::ViewForRequest merged;
  if (peers.fanout()) merged = smik::api::mergedViews(*peers.fanout(), agent->metrics(), node);
  auto api = std::make_unique<smik::api::AggregatedApi>(
      kube, options, [agent, merged](const std::string& path, const std::string& t, bool local_only) {
        return smik::api::answerSmiRequest(agent->metrics(), merged, path, t, local_only);
      });
  api->start();
  return api;
}
// Every flag of smik-agent, as parsed.
struct Flags {
  smik::AgentConfig cfg;
  std::string manifests, kubeconfig, kube_context;
  std::vector<std::string> mesh_namespaces;
  bool record_events = true;
  smik::api::AggregatedApi::Options aggregated;
  std::string mode = "strict", http_rules = "enforce", host_traffic = "allow", log_level = "info";
  std::string grpc_socket = "/run/smik/agent.sock";
  std::string deny_response = "reject";
  std::string non_http1 = "deny";
  bool uninstall = false, mesh_all = false;
  smik::peer::PeerConfig peer_cfg;
};

// Where objects come from.
void addSourceFlags(CLI::App& app, Flags& f) {
  auto* manifests_opt =
      app.add_option("--manifests", f.manifests,
                     "directory of SMI/Kubernetes manifests (YAML/JSON) instead of the API server")
          ->envname("SMIK_MANIFESTS");
  app.add_option("--kubeconfig", f.kubeconfig,
                 "kubeconfig file(s), ':'-separated; neither this nor --manifests: in-cluster config")
      ->envname("SMIK_KUBECONFIG")
      ->excludes(manifests_opt);
  app.add_option("--context", f.kube_context, "kubeconfig context (default: current-context)")
      ->envname("SMIK_KUBE_CONTEXT");
  app.add_option("--events", f.record_events,
                 "write Kubernetes Events on SMI objects smik rejects or cannot apply")
      ->envname("SMIK_EVENTS")
      ->capture_default_str();
}

// The aggregated TrafficMetrics API (--secure-listen).
void addSecureApiFlags(CLI::App& app, Flags& f) {
  app.add_option("--secure-listen", f.aggregated.server.listen,
                 "HTTPS address of the TrafficMetrics API for the APIService (empty: none)")
      ->envname("SMIK_SECURE_LISTEN");
  app.add_option("--tls-cert-file", f.aggregated.server.cert_file,
                 "serving certificate of --secure-listen (missing: self-signed)")
      ->envname("SMIK_TLS_CERT_FILE");
  app.add_option("--tls-private-key-file", f.aggregated.server.key_file, "its private key")
      ->envname("SMIK_TLS_PRIVATE_KEY_FILE");
  app.add_option("--requestheader-client-ca-file", f.aggregated.requestheader_ca_file,
                 "CA of the aggregator's client certificate (default: kube-system/"
                 "extension-apiserver-authentication)");
  app.add_option("--requestheader-allowed-names", f.aggregated.allowed_names,
                 "client certificate CNs allowed (default: the ConfigMap's)")
      ->delimiter(',');
}

// A DNS name: what a name written NAME.NS.svc.DOMAIN is compared with.
std::string clusterDomainCheck(const std::string& d) {
  if (d.empty() || d.front() == '.' || d.back() == '.' || d.find("..") != std::string::npos ||
      d.find_first_of(" /:") != std::string::npos)
    return "a DNS domain such as cluster.local";
  return "";
}

// The node, its policy settings, the data path and the other listeners.
void addNodeFlags(CLI::App& app, Flags& f) {
  f.cfg.node.node_name = hostName();
  app.add_option("--node", f.cfg.node.node_name, "this node's name (pods with spec.nodeName == NODE are local)")
      ->envname("SMIK_NODE_NAME")
      ->capture_default_str();
  app.add_option("--mesh-namespaces", f.mesh_namespaces,
                 "namespaces whose pods are meshed besides those labelled smik.io/mesh=enabled")
      ->envname("SMIK_MESH_NAMESPACES")
      ->delimiter(',');
  app.add_option("--http", f.cfg.http,
                 "listen address of /healthz, /readyz, /metrics (and, to loopback clients, "
                 "/status and the TrafficMetrics API)")
      ->capture_default_str();
  app.add_option("--grpc", f.grpc_socket, "unix socket of the gRPC API (smik CLI); empty: none")
      ->capture_default_str();
  app.add_option("--pin-dir", f.cfg.pin_dir, "bpffs directory for maps and links")->capture_default_str();
  app.add_option("--cgroup", f.cfg.cgroup, "cgroup2 directory for socket programs (default: cgroup2 root)");
  app.add_option("--access-mode", f.mode, "strict | permissive | per-destination")
      ->envname("SMIK_ACCESS_MODE")
      ->capture_default_str();
  app.add_option("--http-rules", f.http_rules,
                 "HTTPRouteGroup rules: enforce (each request judged in the kernel: methods, "
                 "paths) | deny (grant nothing) | allow-tcp (all TCP ports)")
      ->envname("SMIK_HTTP_RULES")
      ->capture_default_str();
  app.add_option("--http-max-request-line", f.cfg.http_judge.max_line,
                 "bytes of a request line (empty lines before it too) past which the request "
                 "is refused 414")
      ->default_val(SMIK_HTTP_DEFAULT_MAX_LINE)
      ->envname("SMIK_HTTP_MAX_REQUEST_LINE")
      ->capture_default_str()
      ->check(CLI::Range(64, 1 << 20));
  app.add_option("--http-max-head", f.cfg.http_judge.max_head,
                 "bytes of a request's header block (also trailers, a chunk-size line) past "
                 "which it is refused 431")
      ->default_val(SMIK_HTTP_DEFAULT_MAX_HEAD)
      ->envname("SMIK_HTTP_MAX_HEAD")
      ->capture_default_str()
      ->check(CLI::Range(64, 1 << 20));
  app.add_option("--http-max-headers", f.cfg.http_judge.max_headers,
                 "header lines of a request past which it is refused 431")
      ->default_val(SMIK_HTTP_DEFAULT_MAX_HEADERS)
      ->envname("SMIK_HTTP_MAX_HEADERS")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--http-non-http1", f.non_http1,
                 "a connection to a port HTTP rules govern that is not HTTP/1.x from its first "
                 "bytes (TLS, the HTTP/2 preface): deny (refused, counted as not_http1) | "
                 "allow-tcp (passed unjudged: the rule's sources have the port at L4)")
      ->envname("SMIK_HTTP_NON_HTTP1")
      ->capture_default_str()
      ->check(CLI::IsMember({"deny", "allow-tcp"}));
  app.add_option("--host-traffic", f.host_traffic,
                 "traffic from this node's own addresses (kubelet probes): allow (unjudged) | "
                 "policy (needs a TrafficTarget source kind Host, name local)")
      ->envname("SMIK_HOST_TRAFFIC")
      ->capture_default_str();
  app.add_flag("--mesh-all", f.mesh_all, "mesh every pod, whatever its namespace's smik.io/mesh label")
      ->envname("SMIK_MESH_ALL");
  app.add_option("--cluster-domain", f.cfg.node.cluster_domain,
                 "the cluster's DNS domain (kubelet's --cluster-domain): a TrafficSplit may name "
                 "a Service NAME.NAMESPACE.svc.DOMAIN")
      ->envname("SMIK_CLUSTER_DOMAIN")
      ->capture_default_str()
      ->check(clusterDomainCheck);
  app.add_option("--deny-response", f.deny_response,
                 "what a denied new TCP or UDP flow gets: reject (a RST, or ICMP administratively "
                 "prohibited for UDP, rate-limited per source: the client fails at once) | drop "
                 "(nothing: the client retries until it gives up)")
      ->envname("SMIK_DENY_RESPONSE")
      ->capture_default_str()
      ->check(CLI::IsMember({"reject", "drop"}));
  app.add_flag("--force-clsact", f.cfg.force_clsact, "attach with clsact even where tcx exists");
  app.add_flag("--uninstall", f.uninstall, "remove every program, link, tc hook and pin, then exit");
  app.add_option("--log-level", f.log_level, "trace|debug|info|warn|error")
      ->envname("SMIK_LOG_LEVEL")
      ->capture_default_str();
  app.add_option("--metrics-interval-ms", f.cfg.metrics_interval_ms,
                 "how often the kernel's connection counters are read")
      ->capture_default_str()
      ->check(CLI::Range(100, 60000));
  app.add_option("--ct-max", f.cfg.ct_max,
                 "conntrack entries (flows in progress) of a new smik_ct; a pinned one keeps its "
                 "size until --uninstall")
      ->envname("SMIK_CT_MAX")
      ->capture_default_str()
      ->check(CLI::Range(1024, 1 << 24));
  app.add_option("--metrics-window", f.cfg.metrics_window_s,
                 "longest TrafficMetrics window (?t=) kept, seconds")
      ->envname("SMIK_METRICS_WINDOW")
      ->capture_default_str()
      ->check(CLI::Range(30, 3600));
  smik::peer::addPeerOptions(app, f.peer_cfg);  // cluster-wide TrafficMetrics
}

// Every setting can also come from the environment (SMIK_*): the
// DaemonSet's ConfigMap is mounted with envFrom.
void addFlags(CLI::App& app, Flags& f) {
  addSourceFlags(app, f);
  addSecureApiFlags(app, f);
  addNodeFlags(app, f);
}

// --uninstall: every program, link, tc hook and pin under the pin dir.
int uninstall(const std::string& pin_dir) {
  std::string err;
  if (!smik::datapath::Datapath::uninstall(pin_dir, &err)) {
    spdlog::error("uninstall: {}", err);
    return 1;
  }
  spdlog::info("uninstalled: {} and every hook it held are gone", pin_dir);
  return 0;
}

std::unique_ptr<smik::datapath::Datapath> openDatapath(const smik::AgentConfig& cfg,
                                                       std::string* err) {
  smik::datapath::Options o;
  o.pin_dir = cfg.pin_dir;
  o.force_clsact = cfg.force_clsact;
  o.cgroup = cfg.cgroup;
  o.ct_max = cfg.ct_max;
  o.deny_response = cfg.deny_response;
  o.http = cfg.http_judge;
  return smik::datapath::Datapath::open(o, err);
}

// The agent's API connections bypass its own socket programs (why: at
// smik_own_sockets in bpf/sock_lb.bpf.c), through the open data path's map.
void bypassOwnSockets(const smik::datapath::Datapath& dp) {
  if (auto own = dp.ownSocketRegistrar())
    smik::kube::setSocketHook(std::move(own));
  else
    spdlog::error("no socket registrar: the agent's API connections may be translated");
}

// What the agent serves besides enforcing, started in order and stopped in
// reverse. The peers first: http and grpc answer through their fan-out.
struct Apis {
  smik::peer::PeerApi peers;
  smik::api::HttpServer http;
  smik::api::GrpcServer grpc;
  std::unique_ptr<smik::api::AggregatedApi> aggregated;

  // False (logged) when one that enforcement's operators rely on cannot start.
  bool start(const Flags& f, smik::Agent* agent, smik::kube::KubeSource* kube) {
    const std::string& node = f.cfg.node.node_name;
    // Cluster-wide metrics are an answer, not enforcement: a part that cannot
    // start is logged and left off.
    for (const auto& e : peers.start(f.peer_cfg, agent->metrics(), node)) spdlog::error("{}", e);
    // Remote clients of --http get probes and /metrics only: /status and the
    // TrafficMetrics API answer loopback clients (and --secure-listen).
    std::string err;
    http.setPeers(peers.fanout());
    if (!http.start(f.cfg.http, agent, &err)) {
      spdlog::error("{}", err);
      return false;
    }
    if (peers.fanout())  // `smik metrics` answers for the cluster, as the API does
      grpc.setClusterView(smik::api::mergedViews(*peers.fanout(), agent->metrics(), node));
    if (!f.grpc_socket.empty() && !grpc.start(f.grpc_socket, agent, &err)) {
      // Enforcement matters more than the local API: a second agent on the
      // same socket path (tests, a misconfigured node) gets no API, not an exit.
      if (!grpc.socketInUse()) {
        spdlog::error("{}", err);
        return false;
      }
      spdlog::error("{}: the gRPC API is not served", err);
    }
    if (!f.aggregated.server.listen.empty())
      aggregated = startAggregatedApi(kube->http(), f.aggregated, agent, peers, node);
    return true;
  }
  void stop() {
    if (aggregated) aggregated->stop();
    grpc.stop();
    http.stop();
  }
};

void stopOnSignals() {
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}
}  // namespace

int main(int argc, char** argv) {
  // A fixed mmap threshold: every block of 128 KiB or more (the snapshot's
  // and the plan's vectors, a manifest file's text, a list page) is its own
  // mapping, given back when freed. glibc's default raises the threshold to
  // the largest block freed so far, after which such blocks come from the
  // heap, spread it, and leave the long-lived small objects allocated
  // between them scattered over more pages: at 50k pods the agent's RSS
  // read ~2 MiB higher in most runs (bench/README.md, issue 13).
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  Flags f;
  CLI::App app{"smik-agent: SMI access control enforced in the kernel with eBPF"};
  addFlags(app, f);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(f.log_level));
  smik::AgentConfig& cfg = f.cfg;
  if (f.uninstall) return uninstall(cfg.pin_dir);
  if (!applyPolicySettings(f.mode, f.http_rules, f.host_traffic, f.mesh_all, f.mesh_namespaces,
                           &cfg.node))
    return 2;
  cfg.deny_response = f.deny_response == "drop" ? SMIK_DENY_DROP : SMIK_DENY_REJECT;
  cfg.http_judge.flags = f.non_http1 == "allow-tcp" ? SMIK_HTTP_CFG_NOT_HTTP1_TCP : 0;
  if (cfg.cgroup.empty()) cfg.cgroup = smik::datapath::cgroup2Mount();
  spdlog::info("node {}, access mode {}, host traffic {}, denials {}, cluster domain {}, pin dir {}, "
               "cgroup2 {}",
               cfg.node.node_name, f.mode, f.host_traffic, f.deny_response, cfg.node.cluster_domain,
               cfg.pin_dir,
               cfg.cgroup.empty() ? "(not mounted)" : cfg.cgroup);

  std::optional<smik::kube::KubeConfig> kube_config;
  smik::kube::KubeSource* kube = nullptr;
  std::unique_ptr<smik::source::Source> source = makeSource(
      f.manifests, f.kubeconfig, f.kube_context, f.record_events, cfg.node.node_name, &kube_config,
      &kube);
  if (!source) return 2;
  spdlog::info("objects from {}", source->describe());
  if (!f.aggregated.server.listen.empty() && !kube_config) {
    spdlog::error("--secure-listen authorizes through the Kubernetes API: not with --manifests");
    return 2;
  }
  fallBackToSelfSigned(&f.aggregated.server);
  std::string err;
  auto dp = openDatapath(cfg, &err);
  if (!dp) {
    spdlog::error("{}", err);
    return 1;
  }
  if (kube_config) bypassOwnSockets(*dp);
  auto agent = smik::Agent::create(cfg, std::move(source), std::move(dp));
  Apis apis;
  if (!apis.start(f, agent.get(), kube)) return 1;
  stopOnSignals();
  if (kube) kube->start();
  agent->run(g_stop);
  apis.stop();
  spdlog::info("stopping: programs and maps stay pinned under {} and keep enforcing", cfg.pin_dir);
  return 0;
}
