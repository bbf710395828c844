// The agents' peer API over the network: the smik.v1.Peer service on a TCP
// listener (PeerServer) and the client side that asks every peer at once
// (GrpcFanout). Both speak mutual TLS only: metrics cross nodes, and the
// listener must not answer whoever reaches the port.
//
// Peers are dialled by IP, so the name verified in the server's certificate
// is a fixed DNS SAN (--peer-tls-server-name, default smik-peer.smik-system),
// and the server requires the same SAN in the client's certificate: a
// certificate that merely chains to the CA (a CA shared with other uses) is
// not a peer.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/telemetry/store.h"
#include "api/peer/discovery.h"
#include "api/smi/merged_view.h"

namespace grpc {
class Server;
}

namespace smik::peer {

inline constexpr const char* kDefaultServerName = "smik-peer.smik-system";

struct TlsFiles {
  std::string cert, key, ca;  // PEM files
  std::string server_name = kDefaultServerName;
};

struct Tls {
  std::string cert, key, ca;  // PEM text
  std::string server_name = kDefaultServerName;
};

// Reads the three files; err names the flag (--peer-tls-cert, ...) of each
// one missing, unreadable or not PEM.
bool loadTls(const TlsFiles& files, Tls* out, std::string* err);

class PeerService;

class PeerServer {
 public:
  PeerServer();
  ~PeerServer();
  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;

  // Serves smik.v1.Peer, and nothing else, on addr ("host:port"; port 0:
  // any free one, see port()), answering from store alone. store outlives
  // the server.
  bool start(const std::string& addr, const Tls& tls, const telemetry::Store& store,
             const std::string& node, std::string* err);
  int port() const { return port_; }
  void stop();

 private:
  std::unique_ptr<PeerService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

class GrpcFanout : public api::PeerFanout {
 public:
  // peers is asked on every query: the cluster's agents come and go.
  GrpcFanout(Tls tls, std::chrono::milliseconds timeout,
             std::function<std::vector<PeerAddr>()> peers);
  ~GrpcFanout() override;

  std::vector<api::PeerResult> query(const api::MetricsQuery& q) override;
  // smik_peer_requests_total{peer, outcome}: outcome ok, timeout,
  // unavailable (refused, unreachable, TLS handshake failed), denied (the
  // peer did not accept our certificate), error (anything else, an answer
  // that cannot be merged).
  std::string prometheusText() const override;

 private:
  struct Channel;
  struct Call;  // one peer's request and its outcome
  std::shared_ptr<Channel> channelFor(const std::string& address);
  // The steps of query(): a call per peer, named as its series will be;
  // every call sent at once under one deadline; each one's answer (or
  // failure) decoded and counted.
  std::vector<std::unique_ptr<Call>> callsFor(const std::vector<PeerAddr>& peers);
  void askAll(const api::MetricsQuery& q, std::vector<std::unique_ptr<Call>>& calls) const;
  api::PeerResult resultOf(Call& call);
  void count(const std::string& peer, const std::string& outcome, const std::string& detail);

  Tls tls_;
  std::chrono::milliseconds timeout_;
  std::function<std::vector<PeerAddr>()> peers_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Channel>> channels_;   // by address
  std::map<std::string, std::string> learned_;                  // address -> node it answered as
  std::map<std::pair<std::string, std::string>, uint64_t> requests_;  // (peer, outcome)
  std::map<std::string, std::string> last_outcome_;             // by peer: log changes only
};

}  // namespace smik::peer
