#include "api/peer/peer_api.h"

#include <spdlog/spdlog.h>

#include "api/peer/discovery.h"
#include "api/peer/peer_grpc.h"

namespace smik::peer {

void addPeerOptions(CLI::App& app, PeerConfig& cfg) {
  const char* group = "Cluster-wide metrics (peer agents)";
  app.add_option("--peer-listen", cfg.listen,
                 "HOST:PORT of the peer API (TCP, mutual TLS); empty: off")
      ->envname("SMIK_PEER_LISTEN")
      ->group(group);
  app.add_option("--peer-tls-cert", cfg.tls_cert, "PEM certificate, as server and as client")
      ->envname("SMIK_PEER_TLS_CERT")
      ->group(group);
  app.add_option("--peer-tls-key", cfg.tls_key, "PEM private key of --peer-tls-cert")
      ->envname("SMIK_PEER_TLS_KEY")
      ->group(group);
  app.add_option("--peer-tls-ca", cfg.tls_ca, "PEM CA that signs every peer's certificate")
      ->envname("SMIK_PEER_TLS_CA")
      ->group(group);
  app.add_option("--peer-tls-server-name", cfg.tls_server_name,
                 "DNS SAN every peer certificate carries (peers are dialled by IP); "
                 "default smik-peer.<--peer-namespace>")
      ->envname("SMIK_PEER_TLS_SERVER_NAME")
      ->group(group);
  app.add_option("--peers", cfg.peers, "static peers: [NODE=]HOST:PORT,... (besides discovered ones)")
      ->envname("SMIK_PEERS")
      ->group(group);
  app.add_option("--peer-namespace", cfg.ns, "namespace of the agent pods that are peers")
      ->envname("SMIK_PEER_NAMESPACE")
      ->capture_default_str()
      ->group(group);
  app.add_option("--peer-selector", cfg.selector, "label selector of the agent pods that are peers")
      ->envname("SMIK_PEER_SELECTOR")
      ->capture_default_str()
      ->group(group);
  app.add_option("--peer-port", cfg.port, "peer API port of discovered peers")
      ->envname("SMIK_PEER_PORT")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535))
      ->group(group);
  app.add_option("--peer-timeout-ms", cfg.timeout_ms,
                 "how long a TrafficMetrics request waits for each peer")
      ->envname("SMIK_PEER_TIMEOUT_MS")
      ->capture_default_str()
      ->check(CLI::Range(50, 60000))
      ->group(group);
}

PeerApi::PeerApi() = default;
PeerApi::~PeerApi() { stop(); }

std::vector<std::string> PeerApi::start(const PeerConfig& cfg, const telemetry::Store& store,
                                        const std::string& node) {
  std::vector<std::string> errors;
  const bool any_tls = !cfg.tls_cert.empty() || !cfg.tls_key.empty() || !cfg.tls_ca.empty();
  if (!any_tls && cfg.listen.empty() && cfg.peers.empty()) return errors;

  Tls tls;
  std::string err;
  // The name the install's certificates carry: smik-peer.<namespace>.
  const std::string server_name =
      cfg.tls_server_name.empty() ? "smik-peer." + cfg.ns : cfg.tls_server_name;
  if (!loadTls({cfg.tls_cert, cfg.tls_key, cfg.tls_ca, server_name}, &tls, &err)) {
    // Never plaintext across nodes: no TLS, no peer API at all.
    errors.push_back("cluster-wide metrics off (peer listener not started, peers not asked): " +
                     err);
    return errors;
  }

  DiscoveryConfig discovery;
  discovery.ns = cfg.ns;
  discovery.port = cfg.port;
  discovery.self_node = node;
  std::vector<PeerAddr> fixed;
  bool peers_ok = true;
  if (!LabelSelector::parse(cfg.selector, &discovery.selector, &err)) {
    errors.push_back("--peer-selector: " + err + ": peers not asked");
    peers_ok = false;
  }
  if (!parsePeerList(cfg.peers, &fixed, &err)) {
    errors.push_back(err + ": peers not asked");
    peers_ok = false;
  }

  if (!cfg.listen.empty()) {
    server_ = std::make_unique<PeerServer>();
    if (server_->start(cfg.listen, tls, store, node, &err)) {
      spdlog::info("peer API on {} (port {}, mutual TLS, {})", cfg.listen, server_->port(),
                   server_name);
    } else {
      errors.push_back(err);
      server_.reset();
    }
  }

  if (peers_ok) {
    // Discovery reads the cluster state the store already shares with the
    // agent: no copy of every pod per request, and a rescan only when the
    // state changed.
    struct Cache {
      std::mutex mu;
      std::shared_ptr<const model::ClusterState> state;
      std::vector<PeerAddr> discovered;
    };
    auto cache = std::make_shared<Cache>();
    auto peers = [&store, discovery, fixed, cache] {
      auto state = store.topology();
      std::lock_guard<std::mutex> l(cache->mu);
      if (state != cache->state) {
        cache->discovered = discoverPeers(*state, discovery);
        cache->state = std::move(state);
      }
      std::vector<PeerAddr> all = fixed;
      for (const auto& p : cache->discovered) {
        bool listed = false;
        for (const auto& f : fixed) listed = listed || f.address == p.address;
        if (!listed) all.push_back(p);
      }
      return all;
    };
    fanout_ = std::make_unique<GrpcFanout>(tls, std::chrono::milliseconds(cfg.timeout_ms),
                                           std::move(peers));
  }
  return errors;
}

api::PeerFanout* PeerApi::fanout() const { return fanout_.get(); }

void PeerApi::stop() {
  if (server_) server_->stop();
  server_.reset();
}

}  // namespace smik::peer
