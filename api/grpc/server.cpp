#include "api/grpc/server.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>

#include "agent/agent.h"
#include "agent/base/host_port.h"
#include "agent/base/unique_fd.h"
#include "agent/compile/explain.h"
#include "api/proto/explain.h"
#include "api/proto/policy.h"
#include "api/proto/status.h"
#include "smik/v1/smik.grpc.pb.h"

namespace smik::api {

namespace pb = ::smik::v1;
using grpc::ServerContext;
using grpc::StatusCode;

namespace {

constexpr int kDefaultWindowS = 30;  // the SMI API's default ?t=


bool parseProto(const std::string& s, model::Proto* out) {
  std::string l = s;
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (l.empty() || l == "tcp") return (*out = model::Proto::kTcp), true;
  if (l == "udp") return (*out = model::Proto::kUdp), true;
  return false;
}

// "pod", "pods", "Pod"... -> the MetricsView kind; empty if not one with edges.
std::string metricsKind(std::string k) {
  std::transform(k.begin(), k.end(), k.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (k.empty() || k == "pod" || k == "pods" || k == "po") return "Pod";
  if (k == "deployment" || k == "deployments" || k == "deploy") return "Deployment";
  if (k == "daemonset" || k == "daemonsets" || k == "ds") return "DaemonSet";
  if (k == "statefulset" || k == "statefulsets" || k == "sts") return "StatefulSet";
  if (k == "namespace" || k == "namespaces" || k == "ns") return "Namespace";
  return "";
}

void fillResource(const telemetry::ResourceRef& r, pb::Resource* out) {
  out->set_kind(r.kind);
  out->set_namespace_(r.ns);
  out->set_name(r.name);
}

// The HTTP API's numbers exactly: Counts::latency(), whole µs as
// latencyQuantity() in smi_metrics.cpp.
void fillCounts(const telemetry::Counts& c, pb::Counts* out) {
  out->set_success(c.reportedSuccess());
  out->set_failure(c.reportedFailure());
  out->set_requests(c.countsRequests());
  out->set_refused(c.refused);
  out->set_timeout(c.timeout);
  out->set_policy(c.policy);
  out->set_reset(c.reset);
  const telemetry::Histogram& h = c.latency();
  auto ms = [&](double q) { return std::floor(h.quantile(q)) / 1000.0; };
  out->set_p50_ms(ms(0.50));
  out->set_p90_ms(ms(0.90));
  out->set_p99_ms(ms(0.99));
}

// One kernel map's entries, decoded for `smik map dump`: a method per map.
// Kernel ids are named through the plan of the current state; ids it does
// not know (a previous agent's, mid-change) stay bare numbers.
// The enforcement maps come read whole (held); the telemetry maps are read
// here, as they count.
class MapDump {
 public:
  MapDump(maps::Backend& maps, std::optional<maps::KernelState> held, compile::Plan plan,
          pb::DumpMapReply* out)
      : maps_(maps), held_(std::move(held)), plan_(std::move(plan)), out_(out) {}

  void policy() {
    for (const auto& [k, v] : held_->policy) {
      if (k.src_id == SMIK_ID_META)
        add("* -> " + id(k.dst_id), metaEntry(v));
      else
        add(id(k.src_id) + " -> " + id(k.dst_id) + " " + kernelProtoName(k.proto) + "/" +
                (k.dport == 0 ? "*" : std::to_string(k.dport)),
            "allow " + ruleOf(v.rule_id));
    }
  }

  void ipcache() {
    for (const auto& [a, v] : held_->ips)
      add(a.str(), "identity " + id(v.identity) + ((v.flags & SMIK_IP_F_LOCAL) ? " local" : ""));
  }

  void endpoints() {
    for (const auto& [ifindex, ep] : held_->endpoints) {
      std::string v = "identity " + id(ep.identity) + ", addrs";
      for (int i = 0; i < ep.naddrs && i < SMIK_ENDPOINT_ADDRS; i++)
        v += " " + kernelAddr(ep.families[i], ep.addrs[i]).str();
      v += ep.attach == SMIK_EP_ATTACH_TCX      ? ", tcx"
           : ep.attach == SMIK_EP_ATTACH_CLSACT ? ", clsact"
                                                : "";
      add("ifindex " + std::to_string(ifindex), v);
    }
  }

  void services() {
    for (const auto& [k, t] : held_->services) {
      std::string v = "svc " + std::to_string(t.svc_id);
      if (t.groups.empty()) v += ", no backend";
      for (const auto& g : t.groups) {
        v += "; weight " + std::to_string(g.weight) + ":";
        for (const auto& b : g.endpoints)
          v += " " + kernelAddr(b.family, b.addr).str() + ":" + std::to_string(b.port);
      }
      add(kernelAddr(k.family, k.addr).str() + ":" + std::to_string(k.port) + "/" +
              kernelProtoName(k.proto),
          v);
    }
  }

  void edges() {
    for (const auto& e : maps_.edges())
      add(id(e.key.src_id) + " -> " + id(e.key.dst_id) + " " + kernelProtoName(e.key.proto) + "/" +
              std::to_string(e.key.dport),
          "flows_allowed " + std::to_string(e.value.flows_allowed) + ", packets_denied " +
              std::to_string(e.value.packets_denied) + ", bytes_denied " +
              std::to_string(e.value.bytes_denied));
  }

  void conn() {
    for (const auto& e : maps_.connEdges()) {
      const auto& k = e.key;
      std::string key = kernelAddr(k.family, k.client).str() + " -> " +
                        kernelAddr(k.family, k.server).str() + " " +
                        std::to_string(k.port) + "/" + kernelProtoName(k.proto);
      if (k.svc_id) key += " via svc " + std::to_string(k.svc_id);
      add(key, connStats(e.stats));
    }
  }

 private:
  std::string id(uint32_t i) const {
    std::string n = plan_.identityName(i);
    return n == std::to_string(i) ? n : n + " (" + std::to_string(i) + ")";
  }

  void add(std::string k, std::string v) {
    auto* e = out_->add_entries();
    e->set_key(std::move(k));
    e->set_value(std::move(v));
  }

  static std::string metaEntry(const smik_policy_value& v) {
    return std::string((v.flags & SMIK_POL_F_ENFORCED) ? "enforced (default deny)"
                                                       : "not enforced") +
           ((v.flags & SMIK_POL_F_HOST_JUDGED) ? ", host sources judged" : "");
  }

  std::string ruleOf(uint32_t rule_id) const {
    std::string rule = "rule " + std::to_string(rule_id);
    if (rule_id >= 1 && rule_id <= plan_.rules.size())
      rule += " (" + plan_.rules[rule_id - 1].traffic_target + ", " +
              plan_.rules[rule_id - 1].rule + ")";
    return rule;
  }

  static std::string connStats(const smik_conn_stats& s) {
    return "client success " + std::to_string(s.client_success) + " refused " +
           std::to_string(s.client_refused) + " timeout " + std::to_string(s.client_timeout) +
           " policy " + std::to_string(s.client_policy) + " reset " +
           std::to_string(s.client_reset) + "; server success " +
           std::to_string(s.server_success) + " policy " + std::to_string(s.server_policy);
  }

  maps::Backend& maps_;
  const std::optional<maps::KernelState> held_;
  const compile::Plan plan_;
  pb::DumpMapReply* out_;
};

// The maps `smik map dump` knows, by the name it is asked for.
struct DumpableMap {
  const char* name;
  const char* pinned;
  void (MapDump::*dump)();
  bool read_whole;  // an enforcement map: MapDump gets the kernel state
};
constexpr DumpableMap kDumpable[] = {
    {"policy", maps::kPolicyMap, &MapDump::policy, true},
    {"ipcache", maps::kIpcacheMap, &MapDump::ipcache, true},
    {"endpoints", maps::kEndpointsMap, &MapDump::endpoints, true},
    {"services", maps::kServicesMap, &MapDump::services, true},
    {"edges", maps::kEdgesMap, &MapDump::edges, false},
    {"conn", maps::kConnMap, &MapDump::conn, false},
};

const DumpableMap* findDumpable(const std::string& name) {
  for (const auto& m : kDumpable)
    if (name == m.name) return &m;
  return nullptr;
}

// "policy, ipcache, ... or conn"
std::string dumpableNames() {
  std::string out;
  for (size_t i = 0; i < std::size(kDumpable); i++)
    out += std::string(i == 0 ? "" : i + 1 == std::size(kDumpable) ? " or " : ", ") +
           kDumpable[i].name;
  return out;
}

}  // namespace

class AgentService final : public pb::Agent::Service {
 public:
  AgentService(Agent* agent, ViewForRequest cluster_view)
      : agent_(agent), cluster_view_(std::move(cluster_view)) {}
  void stopping() { stopping_ = true; }

  grpc::Status Status(ServerContext*, const pb::StatusRequest*, pb::StatusReply* out) override {
    *out = statusReply(agent_->status());
    addVerdictList(out);
    return grpc::Status::OK;
  }

  grpc::Status Explain(ServerContext*, const pb::ExplainRequest* req,
                       pb::ExplainReply* out) override {
    model::Proto proto;
    if (!parseProto(req->proto(), &proto))
      return {StatusCode::INVALID_ARGUMENT, "proto must be tcp or udp, not " + req->proto()};
    const std::string& to = req->to();
    // Answered from what is in force, as compiled (never compiled again here).
    const std::shared_ptr<const AppliedView> applied = agent_->applied();
    const model::ClusterState& state = *applied->state;
    const compile::NodeConfig& node = applied->node;
    const compile::Plan* plan = applied->compiled ? applied->plan.get() : nullptr;
    std::string err;
    if (to.find(':') != std::string::npos) {  // NS/SERVICE:PORT, else NS/POD
      const Result<HostPort> service = parseHostPort(to);
      if (!service)
        return {StatusCode::INVALID_ARGUMENT, "to NS/SERVICE:PORT wants a port: " + service.error()};
      std::vector<compile::ServiceExplanation> tables;
      std::vector<std::string> notes;
      if (!compile::explainService(state, node, service->host, service->port, proto, &tables,
                                   &notes, &err, plan))
        return {StatusCode::NOT_FOUND, err};
      *out = explainReply(tables, notes);
      return grpc::Status::OK;
    }
    if (req->from().empty() || req->port() < 1 || req->port() > 65535)
      return {StatusCode::INVALID_ARGUMENT, "to NS/POD needs from NS/POD and a port"};
    std::optional<compile::HttpRequest> request;
    if (!req->method().empty() || !req->path().empty() || req->headers_size() > 0) {
      request = compile::HttpRequest{req->method().empty() ? "GET" : req->method(),
                                     req->path().empty() ? "/" : req->path()};
      for (const auto& h : req->headers()) {
        if (h.name().empty()) return {StatusCode::INVALID_ARGUMENT, "a header without a name"};
        request->headers.emplace_back(h.name(), h.value());
      }
    }
    compile::Explanation e;
    if (!compile::explain(state, node, req->from(), to, static_cast<uint16_t>(req->port()), proto,
                          &e, &err, plan, request ? &*request : nullptr))
      return {StatusCode::NOT_FOUND, err};
    *out = explainReply(e);
    return grpc::Status::OK;
  }

  grpc::Status GetPolicy(ServerContext*, const pb::GetPolicyRequest*,
                         pb::GetPolicyReply* out) override {
    const std::shared_ptr<const AppliedView> applied = agent_->applied();
    *out = policyReply(*applied->plan, agent_->nodeConfig());
    return grpc::Status::OK;
  }

  grpc::Status ListEdges(ServerContext*, const pb::ListEdgesRequest* req,
                         pb::ListEdgesReply* out) override {
    const std::string kind = metricsKind(req->kind());
    if (kind.empty())
      return {
          StatusCode::INVALID_ARGUMENT,
          "kind must be pod, deployment, daemonset, statefulset or namespace, not " + req->kind()};
    const telemetry::MetricsView& local = agent_->metrics();
    const int window = std::clamp<int>(req->window_seconds() == 0
                                           ? kDefaultWindowS
                                           : std::min<uint32_t>(req->window_seconds(), 1 << 30),
                                       1, std::max(1, local.maxWindow()));
    // Every node's numbers, as the TrafficMetrics API gives them, unless
    // asked for this node's alone.
    std::unique_ptr<telemetry::MetricsView> cluster;
    if (!req->local() && cluster_view_) cluster = cluster_view_(window);
    const telemetry::MetricsView& view = cluster ? *cluster : local;
    std::vector<telemetry::ResourceRef> refs;
    std::string name = req->name();
    const bool is_ns = kind == "Namespace";
    // A namespace's metrics are asked with -n NS as often as by name.
    if (is_ns && name.empty()) name = req->namespace_();
    if (!name.empty()) {
      telemetry::ResourceRef r{kind, is_ns ? "" : req->namespace_(), name};
      if (!view.exists(r))
        return {StatusCode::NOT_FOUND,
                kind + " " + (r.ns.empty() ? "" : r.ns + "/") + name + " not found"};
      refs.push_back(r);
    } else {
      refs = view.list(kind, req->namespace_());
    }
    out->set_window_seconds(window);
    out->set_timestamp_unix_ms(
        std::chrono::duration_cast<std::chrono::milliseconds>(view.now().time_since_epoch())
            .count());
    for (const auto& r : refs) {
      auto* rm = out->add_resources();
      fillResource(r, rm->mutable_resource());
      fillCounts(view.inbound(r, window), rm->mutable_inbound());
      for (const auto& e : view.edges(r, window)) {
        auto* pe = rm->add_edges();
        fillResource(e.peer, pe->mutable_peer());
        const bool client = e.side == telemetry::Side::kClient;
        pe->set_direction(client ? "to" : "from");
        pe->set_side(client ? "client" : "server");
        fillCounts(e.counts, pe->mutable_counts());
      }
    }
    // Known once the peers have been asked, by the queries above.
    for (const auto& node : view.missingNodes()) out->add_missing_nodes(node);
    return grpc::Status::OK;
  }

  grpc::Status WatchEvents(ServerContext* ctx, const pb::WatchRequest* req,
                           grpc::ServerWriter<pb::Event>* w) override {
    telemetry::EventHub& hub = agent_->events();
    const int id = hub.subscribe();
    // Tells the client it is subscribed: it misses nothing published from now.
    w->SendInitialMetadata();
    const std::set<std::string> kinds(req->kinds().begin(), req->kinds().end());
    telemetry::Event e;
    bool client_gone = false;
    // next() times out so a cancelled client or a stopping agent is noticed
    // even when no event comes.
    while (!stopping_ && !ctx->IsCancelled()) {
      if (!hub.next(id, &e, 200)) continue;
      if (!kinds.empty() && !kinds.count(e.kind)) continue;
      pb::Event pe;
      pe.set_time_unix_ns(
          std::chrono::duration_cast<std::chrono::nanoseconds>(e.time.time_since_epoch()).count());
      pe.set_kind(e.kind);
      pe.set_reason(e.reason);
      pe.set_client(e.client);
      pe.set_server(e.server);
      pe.set_port(e.port);
      pe.set_proto(e.proto);
      pe.set_suppressed(e.suppressed);
      pe.set_method(e.method);
      pe.set_path(e.path);
      pe.set_path_truncated(e.path_truncated);
      if (!w->Write(pe)) {
        client_gone = true;
        break;
      }
    }
    hub.unsubscribe(id);
    if (stopping_ && !client_gone) return {StatusCode::UNAVAILABLE, "the agent is stopping"};
    return grpc::Status::OK;
  }

  grpc::Status DumpMap(ServerContext*, const pb::DumpMapRequest* req,
                       pb::DumpMapReply* out) override {
    const DumpableMap* map = findDumpable(req->name());
    if (!map)
      return {StatusCode::INVALID_ARGUMENT, "no map " + req->name() + ": " + dumpableNames()};
    // The enforcement maps are read whole or not at all: a dump of half a
    // table would look like a policy that is not the one in force.
    std::optional<maps::KernelState> held;
    if (map->read_whole) {
      Result<maps::KernelState> read = agent_->maps().read();
      if (!read) return {StatusCode::UNAVAILABLE, "read maps: " + read.error()};
      held = std::move(read).value();
    }
    out->set_name(map->pinned);
    // Kernel ids named through the plan in force (a copy: a dump is rare).
    MapDump dump{agent_->maps(), std::move(held), *agent_->applied()->plan, out};
    (dump.*map->dump)();
    return grpc::Status::OK;
  }

 private:
  Agent* agent_;
  const ViewForRequest cluster_view_;
  std::atomic<bool> stopping_{false};
};

namespace {

// True if a process accepts connections on the unix socket at path.
bool socketAnswers(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
}

}  // namespace

GrpcServer::GrpcServer() = default;
GrpcServer::~GrpcServer() { stop(); }

bool GrpcServer::start(const std::string& socket_path, Agent* agent, std::string* err) {
  in_use_ = false;
  if (socket_path.empty() || socket_path.size() >= sizeof(sockaddr_un{}.sun_path))
    return (*err = "--grpc: a socket path of 1 to 107 characters, got '" + socket_path + "'"),
           false;
  std::error_code ec;
  auto parent = std::filesystem::path(socket_path).parent_path();
  if (!parent.empty() && !std::filesystem::create_directories(parent, ec) && ec)
    return (*err = "cannot create " + parent.string() + ": " + ec.message()), false;
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return (*err = socket_path + " exists and is not a socket: not replacing it"), false;
    if (socketAnswers(socket_path)) {
      in_use_ = true;
      return (*err = "another process serves " + socket_path), false;
    }
    ::unlink(socket_path.c_str());  // left by an agent that did not exit cleanly
  }

  service_ = std::make_unique<AgentService>(agent, cluster_view_);
  grpc::ServerBuilder b;
  b.AddListeningPort("unix:" + socket_path, grpc::InsecureServerCredentials());
  b.RegisterService(service_.get());
  // The socket is born 0600: no other user can connect between bind and chmod.
  mode_t old_mask = ::umask(0177);
  server_ = b.BuildAndStart();
  ::umask(old_mask);
  if (!server_ || ::lstat(socket_path.c_str(), &st) != 0) {
    server_.reset();
    service_.reset();
    return (*err = "cannot listen on unix:" + socket_path), false;
  }
  path_ = socket_path;
  inode_ = st.st_ino;
  if (::chmod(socket_path.c_str(), 0600) != 0) {
    *err = "chmod 0600 " + socket_path + ": " + std::strerror(errno);
    stop();
    return false;
  }
  return true;
}

void GrpcServer::stop() {
  if (!server_) return;
  service_->stopping();
  // Event streams notice `stopping` within 200 ms; the deadline only bounds
  // a handler stuck in a write to a client that stopped reading.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_.reset();
  service_.reset();
  struct stat st {};
  // Only our own socket: a later agent may already have replaced it.
  if (!path_.empty() && ::lstat(path_.c_str(), &st) == 0 && st.st_ino == inode_)
    ::unlink(path_.c_str());
  path_.clear();
}

}  // namespace smik::api
