// The agent's gRPC API (smik.v1, api/proto/smik/v1/smik.proto) on a unix
// socket: what `smik` asks a running agent. The socket's mode (0600) is the
// access control: only the agent's user (root) may talk to it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>

#include "api/smi/smi_metrics.h"

namespace grpc {
class Server;
}

namespace smik {
class Agent;
}

namespace smik::api {

class AgentService;

class GrpcServer {
 public:
  GrpcServer();
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // Listens on unix:socket_path, creating its parent directory and replacing
  // a stale socket file. Fails, with socketInUse() true, when a live process
  // answers on the path: another agent's API is never taken over.
  bool start(const std::string& socket_path, Agent* agent, std::string* err);
  // ListEdges answers for every node through this (the peer fan-out), unless
  // the request asks for this node alone. Before start().
  void setClusterView(ViewForRequest per_request) { cluster_view_ = std::move(per_request); }
  bool socketInUse() const { return in_use_; }
  // Ends open event streams, stops serving and removes the socket file.
  void stop();

 private:
  ViewForRequest cluster_view_;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string path_;
  ino_t inode_ = 0;
  bool in_use_ = false;
};

}  // namespace smik::api
