#include "api/peer/peer_grpc.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <set>
#include <sstream>

#include "agent/base/host_port.h"
#include "api/peer/wire.h"
#include "smik/v1/smik.grpc.pb.h"

namespace smik::peer {

namespace {

// Big enough for a list of every pod of a large cluster (each resource is a
// few dozen bytes; empty counts are left out); gRPC's default is 4 MiB.
constexpr int kMaxMessageBytes = 64 << 20;

bool readPem(const std::string& path, const char* flag, const char* marker, std::string* out,
             std::string* err) {
  if (path.empty()) return (*err = std::string(flag) + " is required"), false;
  std::ifstream f(path);
  std::stringstream ss;
  if (f) ss << f.rdbuf();
  if (!f) return (*err = std::string(flag) + ": cannot read " + path), false;
  *out = ss.str();
  if (out->find(marker) == std::string::npos)
    return (*err = std::string(flag) + ": " + path + " holds no PEM " + marker), false;
  return true;
}

bool knownKind(const std::string& k) {
  for (const char* kind :
       {"Pod", "Deployment", "DaemonSet", "StatefulSet", "Namespace", "TrafficSplit"})
    if (k == kind) return true;
  return false;
}

}  // namespace

bool loadTls(const TlsFiles& files, Tls* out, std::string* err) {
  std::vector<std::string> errors;
  std::string e;
  if (!readPem(files.cert, "--peer-tls-cert", "CERTIFICATE", &out->cert, &e)) errors.push_back(e);
  if (!readPem(files.key, "--peer-tls-key", "PRIVATE KEY", &out->key, &e)) errors.push_back(e);
  if (!readPem(files.ca, "--peer-tls-ca", "CERTIFICATE", &out->ca, &e)) errors.push_back(e);
  if (files.server_name.empty()) errors.push_back("--peer-tls-server-name must not be empty");
  out->server_name = files.server_name;
  if (errors.empty()) return true;
  *err = errors[0];
  for (size_t i = 1; i < errors.size(); i++) *err += "; " + errors[i];
  return false;
}

// ---- server -----------------------------------------------------------------

class PeerService final : public v1::Peer::Service {
 public:
  PeerService(const telemetry::Store& store, std::string node, std::string name)
      : store_(store), node_(std::move(node)), name_(std::move(name)) {}

  grpc::Status QueryMetrics(grpc::ServerContext* ctx, const v1::MetricsQuery* req,
                            v1::MetricsAnswer* out) override {
    if (!isPeer(*ctx))
      return {grpc::StatusCode::PERMISSION_DENIED,
              "the client certificate does not name " + name_ + " (DNS SAN)"};
    const api::MetricsQuery q = fromProto(*req);
    if (!knownKind(q.kind))
      return {grpc::StatusCode::INVALID_ARGUMENT, "no metrics for kind '" + q.kind + "'"};
    // This node's numbers only: the asking agent merges, so a peer never
    // asks further (no loops, no numbers counted twice).
    toProto(api::answerQuery(store_, node_, q), out);
    return grpc::Status::OK;
  }

 private:
  bool isPeer(const grpc::ServerContext& ctx) const {
    auto auth = ctx.auth_context();
    if (!auth) return false;
    for (const char* prop : {GRPC_PEER_DNS_PROPERTY_NAME, GRPC_X509_SAN_PROPERTY_NAME})
      for (const auto& v : auth->FindPropertyValues(prop))
        if (std::string(v.data(), v.size()) == name_) return true;
    return false;
  }

  const telemetry::Store& store_;
  std::string node_;
  std::string name_;
};

PeerServer::PeerServer() = default;
PeerServer::~PeerServer() { stop(); }

bool PeerServer::start(const std::string& addr, const Tls& tls, const telemetry::Store& store,
                       const std::string& node, std::string* err) {
  // Port 0 is allowed here (tests): any free port.
  if (Result<HostPort> hp = parseHostPort(addr, {.port_zero = true}); !hp)
    return (*err = "--peer-listen wants HOST:PORT: " + hp.error()), false;
  grpc::SslServerCredentialsOptions opts(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_root_certs = tls.ca;
  opts.pem_key_cert_pairs.push_back({tls.key, tls.cert});
  service_ = std::make_unique<PeerService>(store, node, tls.server_name);
  grpc::ServerBuilder b;
  b.AddListeningPort(addr, grpc::SslServerCredentials(opts), &port_);
  b.RegisterService(service_.get());
  b.SetMaxSendMessageSize(kMaxMessageBytes);
  server_ = b.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    service_.reset();
    port_ = 0;
    return (*err = "--peer-listen: cannot listen on " + addr +
                   " (address in use, or --peer-tls-key does not match --peer-tls-cert)"),
           false;
  }
  return true;
}

void PeerServer::stop() {
  if (!server_) return;
  // Queries are short; the deadline only bounds one stuck on a slow client.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_.reset();
  service_.reset();
  port_ = 0;
}

// ---- fan-out ------------------------------------------------------------------

struct GrpcFanout::Channel {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Peer::Stub> stub;
};

GrpcFanout::GrpcFanout(Tls tls, std::chrono::milliseconds timeout,
                       std::function<std::vector<PeerAddr>()> peers)
    : tls_(std::move(tls)), timeout_(timeout), peers_(std::move(peers)) {}

GrpcFanout::~GrpcFanout() = default;

std::shared_ptr<GrpcFanout::Channel> GrpcFanout::channelFor(const std::string& address) {
  // caller holds mu_
  auto& c = channels_[address];
  if (c) return c;
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = tls_.ca;
  opts.pem_private_key = tls_.key;
  opts.pem_cert_chain = tls_.cert;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(tls_.server_name);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  // gRPC backs off up to 2 min after a failed connect and fails calls fast
  // meanwhile: a node back from a restart would stay "missing" that long.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  c = std::make_shared<Channel>();
  c->channel = grpc::CreateCustomChannel(address, grpc::SslCredentials(opts), args);
  c->stub = v1::Peer::NewStub(c->channel);
  return c;
}

void GrpcFanout::count(const std::string& peer, const std::string& outcome,
                       const std::string& detail) {
  std::lock_guard<std::mutex> l(mu_);
  requests_[{peer, outcome}]++;
  auto& last = last_outcome_[peer];
  // Every SMI request asks every peer: log when a peer's state changes, not
  // on each request.
  if (last != outcome) {
    if (outcome == "ok")
      spdlog::info("metrics fan-out: peer {} answers", peer);
    else
      spdlog::warn("metrics fan-out: peer {}: {} ({}): answers leave its numbers out", peer,
                   outcome, detail);
    last = outcome;
  }
}

struct GrpcFanout::Call {
  PeerAddr peer;
  std::string name;  // for results and counters until it answers
  std::shared_ptr<Channel> channel;
  grpc::ClientContext ctx;
  v1::MetricsAnswer reply;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::MetricsAnswer>> rpc;
  bool done = false;
};

namespace {

// smik_peer_requests_total's outcome of a failed call.
const char* failureOutcome(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "timeout";
    case grpc::StatusCode::UNAVAILABLE: return "unavailable";
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED: return "denied";
    default: return "error";
  }
}

}  // namespace

std::vector<api::PeerResult> GrpcFanout::query(const api::MetricsQuery& q) {
  std::vector<std::unique_ptr<Call>> calls = callsFor(peers_());
  askAll(q, calls);
  std::vector<api::PeerResult> out;
  for (auto& c : calls) out.push_back(resultOf(*c));
  return out;
}

std::vector<std::unique_ptr<GrpcFanout::Call>> GrpcFanout::callsFor(
    const std::vector<PeerAddr>& peers) {
  std::lock_guard<std::mutex> l(mu_);
  std::set<std::string> wanted;
  for (const auto& p : peers) wanted.insert(p.address);
  std::erase_if(channels_, [&](const auto& kv) { return !wanted.count(kv.first); });
  std::vector<std::unique_ptr<Call>> calls;
  for (const auto& p : peers) {
    auto c = std::make_unique<Call>();
    c->peer = p;
    auto learned = learned_.find(p.address);
    c->name = !p.node.empty()           ? p.node
              : learned != learned_.end() ? learned->second
                                          : p.address;
    c->channel = channelFor(p.address);
    calls.push_back(std::move(c));
  }
  return calls;
}

// One deadline for all: the peers are asked in parallel, and the slowest one
// bounds the wait.
void GrpcFanout::askAll(const api::MetricsQuery& q, std::vector<std::unique_ptr<Call>>& calls) const {
  v1::MetricsQuery req;
  toProto(q, &req);
  const auto deadline = std::chrono::system_clock::now() + timeout_;
  grpc::CompletionQueue cq;
  for (auto& c : calls) {
    c->ctx.set_deadline(deadline);
    c->rpc = c->channel->stub->AsyncQueryMetrics(&c->ctx, req, &cq);
    c->rpc->Finish(&c->reply, &c->status, c.get());
  }
  for (size_t n = 0; n < calls.size(); n++) {
    void* tag = nullptr;
    bool ok = false;
    if (!cq.Next(&tag, &ok)) break;
    static_cast<Call*>(tag)->done = true;
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

api::PeerResult GrpcFanout::resultOf(Call& c) {
  api::PeerResult r;
  r.node = c.name;
  std::string outcome = "error";
  if (!c.done) {
    r.error = "no completion";
  } else if (!c.status.ok()) {
    r.error = c.status.error_message();
    outcome = failureOutcome(c.status);
  } else if (fromProto(c.reply, &r.answer, &r.error)) {
    r.ok = true;
    outcome = "ok";
    if (r.answer.node.empty()) r.answer.node = c.name;
    r.node = r.answer.node;
    if (c.peer.node.empty()) {
      std::lock_guard<std::mutex> l(mu_);
      learned_[c.peer.address] = r.node;
    }
  }
  // A peer named in advance keeps that name in its series; an unnamed one
  // is known by its address until it first answers with its node name.
  count(c.peer.node.empty() ? r.node : c.peer.node, outcome,
        r.error.empty() ? c.peer.address : c.peer.address + ": " + r.error);
  return r;
}

std::string GrpcFanout::prometheusText() const {
  std::lock_guard<std::mutex> l(mu_);
  std::string out =
      "# HELP smik_peer_requests_total Metrics queries this agent sent to peer agents "
      "(cluster-wide TrafficMetrics), by peer node and outcome.\n"
      "# TYPE smik_peer_requests_total counter\n";
  for (const auto& [k, n] : requests_) {
    std::string peer;
    for (char ch : k.first) {
      if (ch == '\\' || ch == '"') peer += '\\';
      peer += ch == '\n' ? ' ' : ch;
    }
    out += "smik_peer_requests_total{peer=\"" + peer + "\",outcome=\"" + k.second + "\"} " +
           std::to_string(n) + "\n";
  }
  return out;
}

}  // namespace smik::peer
