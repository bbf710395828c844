// smik-agent's cluster-wide metrics, wired from its flags: the peer listener
// (--peer-listen) and the fan-out the HTTP SMI API merges through.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "agent/telemetry/store.h"
#include "api/smi/merged_view.h"

namespace smik::peer {

struct PeerConfig {
  std::string listen;  // empty: no peer listener
  std::string tls_cert, tls_key, tls_ca;
  std::string tls_server_name;  // empty: "smik-peer." + ns
  std::string peers;  // static "[NODE=]HOST:PORT,..."
  std::string ns = "smik-system";
  std::string selector = "app.kubernetes.io/name=smik-agent";
  int port = 9465;
  int timeout_ms = 2000;
};

void addPeerOptions(CLI::App& app, PeerConfig& cfg);

class PeerServer;
class GrpcFanout;

class PeerApi {
 public:
  PeerApi();
  ~PeerApi();
  PeerApi(const PeerApi&) = delete;
  PeerApi& operator=(const PeerApi&) = delete;

  // Starts the listener and the fan-out cfg asks for, each needing the three
  // TLS files. A part that cannot start stays off and is described in the
  // returned errors; the agent keeps enforcing either way. Without TLS
  // files, --peer-listen or --peers, both are off and nothing is an error:
  // a single node answers for itself.
  std::vector<std::string> start(const PeerConfig& cfg, const telemetry::Store& store,
                                 const std::string& node);
  // nullptr when there is no fan-out.
  api::PeerFanout* fanout() const;
  void stop();

 private:
  std::unique_ptr<PeerServer> server_;
  std::unique_ptr<GrpcFanout> fanout_;
};

}  // namespace smik::peer
