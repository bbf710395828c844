// A small Kubernetes API server for tests, on 127.0.0.1: objects in memory
// with a cluster-wide resourceVersion, discovery of the SMI groups, paged
// lists (built-in kinds' items without kind/apiVersion, as real servers
// send them), chunked watches with bookmarks, forced 410s, bearer-token
// auth, HTTPS, and an Events endpoint that records what the agent writes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace smik::testing {

class H2Server;

// YAML (multi-document) to JSON documents, with YAML 1.2 core-schema scalars:
// unquoted 80 is a number, "80" a string, true a bool — as kubectl sends them.
std::vector<nlohmann::json> yamlDocuments(const std::string& text);

class FakeCluster {
 public:
  struct Options {
    bool tls = false;     // serve HTTPS with tests/fixtures/kube/tls (SAN 127.0.0.1)
    // With tls: HTTP/2 only (ALPN h2), as a real API server offers it;
    // without: HTTP/1.1 only, which cannot multiplex watches.
    bool http2 = false;
    std::string tls_dir;  // where server.crt/server.key/ca.crt are
    std::string token = "smik-test-token";
    int port = 0;  // 0: any free port
    // Where to listen. Another address (a pod's, with the constructor run in
    // its netns): the kubeconfig checks the certificate as 127.0.0.1's.
    std::string address = "127.0.0.1";
    // Served versions of each SMI group (discovery and list/watch).
    std::map<std::string, std::vector<std::string>> smi_versions = {
        {"access.smi-spec.io", {"v1alpha3", "v1alpha2"}},
        {"specs.smi-spec.io", {"v1alpha4", "v1alpha3"}},
        {"split.smi-spec.io", {"v1alpha4", "v1alpha2"}},
    };
    size_t max_page = 0;  // > 0: never more items per page than this
    // Where this server's history starts; watches from before it get 410
    // (a restarted API server whose etcd compacted what we last saw).
    uint64_t first_rv = 1000;
  };

  explicit FakeCluster(Options options);
  ~FakeCluster();
  FakeCluster(const FakeCluster&) = delete;
  FakeCluster& operator=(const FakeCluster&) = delete;

  std::string url() const;
  int port() const { return port_; }
  // Writes a kubeconfig for this server (token auth; CA when TLS) to path.
  void writeKubeconfig(const std::string& path) const;

  // Create or replace (by apiVersion group, kind, namespace, name); fills in
  // uid and resourceVersion and tells every watcher.
  void apply(nlohmann::json object);
  void applyYaml(const std::string& text);
  void remove(const std::string& kind, const std::string& ns, const std::string& name);
  size_t objectCount() const;

  // Every open watch gets an in-stream 410, and watches from any version
  // before now are refused with 410 (etcd compaction).
  void expireWatches();
  // Events: POSTs and PATCHes to /api/v1/namespaces/*/events.
  std::vector<nlohmann::json> events() const;
  void forbidEvents(bool forbidden) { events_forbidden_ = forbidden; }
  // SubjectAccessReviews: the answer for each review's spec (default: deny),
  // and the specs asked so far.
  void setAuthorizer(std::function<bool(const nlohmann::json& spec)> allow);
  std::vector<nlohmann::json> reviews() const;
  // An SMI CRD upgraded in place: the group now serves these versions.
  void serveVersions(const std::string& group, std::vector<std::string> versions);
  // Requests seen, "GET /api/v1/pods?watch=1" style, for assertions.
  std::vector<std::string> requests() const;
  // TCP connections clients have made to this server (over HTTP/1.1: the
  // connections that carried a request), and those open now (HTTP/2 only;
  // HTTP/1.1 reports the same as connections()).
  size_t connections() const;
  size_t connectionsOpen() const;
  // Requests: HTTP/2 streams, or HTTP/1.1 requests.
  size_t streams() const;
  // HTTP/2 only: TLS bytes read and written, all connections.
  uint64_t bytesRead() const;
  uint64_t bytesWritten() const;

 private:
  struct Stored {
    nlohmann::json object;
    uint64_t rv = 0;
    // The object as a list item, serialised once per write (built-in
    // kinds' without kind and apiVersion): a list page is these joined, not
    // a DOM copied and dumped per request.
    std::string item;
  };
  struct Change {
    uint64_t rv;
    std::string type;  // ADDED MODIFIED DELETED
    std::string collection;
    nlohmann::json object;
  };
  void route(const httplib::Request& req, httplib::Response& res);
  void serveCollection(const httplib::Request& req, httplib::Response& res,
                       const std::string& collection, const std::string& api_version,
                       const std::string& kind);
  void serveWatch(const httplib::Request& req, httplib::Response& res,
                  const std::string& collection, const std::string& api_version,
                  const std::string& kind);
  void serveEvents(const httplib::Request& req, httplib::Response& res, const std::string& ns,
                   const std::string& name);
  bool discovery(const std::string& path, httplib::Response& res) const;

  Options options_;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<H2Server> h2_;  // Options::http2: serves instead of server_
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> events_forbidden_{false};

  mutable std::mutex mu_;
  std::condition_variable changed_;
  uint64_t rv_ = 1000;
  uint64_t compacted_rv_ = 0;   // watches from before this get 410
  uint64_t expire_epoch_ = 0;  // bumped by expireWatches()
  std::map<std::string, Stored> objects_;  // "collection ns/name"
  std::vector<Change> log_;
  std::map<std::string, nlohmann::json> events_;  // "ns/name"
  std::vector<std::string> requests_;
  std::set<std::string> peers_;  // "addr:port" of every request
  std::function<bool(const nlohmann::json&)> authorizer_;
  std::vector<nlohmann::json> reviews_;
};

}  // namespace smik::testing
