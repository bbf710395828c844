// HTTP/2 over TLS (ALPN h2 only), as a real API server speaks to client-go,
// for the fake API server: each stream's request goes to a cpp-httplib
// style handler, so one set of routes serves HTTP/1.1 and HTTP/2. A chunked
// content provider (a watch) runs on a thread of its own and its output is
// sent as the client's flow-control window allows, so one slow stream
// never holds up the connection's others. Counts connections and streams:
// what an agent costs the API server.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace smik::testing {

class H2Server {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // Listens on address:port (0: any free port) with cert/key (PEM files).
  H2Server(const std::string& address, int port, const std::string& cert_file,
           const std::string& key_file, Handler handler);
  ~H2Server();
  H2Server(const H2Server&) = delete;
  H2Server& operator=(const H2Server&) = delete;

  int port() const { return port_; }
  uint64_t connectionsAccepted() const { return accepted_.load(); }
  uint64_t streamsOpened() const { return streams_.load(); }
  size_t connectionsOpen() const { return open_.load(); }
  // TLS bytes in and out over every connection.
  uint64_t bytesRead() const { return bytes_in_.load(); }
  uint64_t bytesWritten() const { return bytes_out_.load(); }

  struct Connection;

 private:
  void acceptLoop();
  void serve(int fd, const std::string& peer_addr, int peer_port);

  Handler handler_;
  void* ssl_ctx_ = nullptr;  // SSL_CTX*
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes every poll on stop
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> accepted_{0}, streams_{0}, bytes_in_{0}, bytes_out_{0};
  std::atomic<size_t> open_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::thread> connections_;
};

}  // namespace smik::testing
