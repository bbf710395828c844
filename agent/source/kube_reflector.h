// One Kubernetes collection mirrored in memory, the way client-go's Reflector
// does it: LIST (paged), then WATCH from the list's resourceVersion, re-watch
// from the last seen version when a watch ends, relist only when the server
// says that version is gone (410), back off on everything else.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "agent/base/buffered_flat_map.h"
#include "agent/base/flat_map.h"
#include "agent/source/kube_http.h"

namespace smik::kube {

// A collection to mirror. Built-in kinds' list items carry no kind and
// apiVersion; the reflector fills them in from here.
struct Resource {
  std::string api_version;     // "v1", "discovery.k8s.io/v1", "split.smi-spec.io/v1alpha4"
  std::string kind;            // "Pod"
  std::string plural;          // "pods"
  std::string field_selector;  // optional, e.g. "spec.nodeName=node-1"

  // "/api/v1/pods", "/apis/discovery.k8s.io/v1/endpointslices": every namespace.
  std::string path() const;
  std::string str() const { return kind + "." + api_version; }
};

// Splits a watch body into events: one JSON document per line, whatever the
// chunk boundaries. The tail of an incomplete line waits for the next piece.
class LineFramer {
 public:
  // Calls on_line for every complete, non-blank line; stops early (and
  // returns false) when on_line returns false.
  bool feed(std::string_view chunk, const std::function<bool(std::string_view)>& on_line);
  size_t pending() const { return buf_.size(); }

 private:
  std::string buf_;
};

// Deepest JSON taken from an API server: its own decoder's limit, so no
// object it stores is refused. nlohmann parses and frees without recursing,
// but a copy or a print of what it parsed recurses once per level.
inline constexpr size_t kMaxApiJsonDepth = 10'000;

// An API server's reply, parsed; discarded (and *why) when it is not JSON
// or nests deeper than kMaxApiJsonDepth.
nlohmann::json parseApiJson(std::string_view text, std::string* why);

// What the reflector reads of one page of a list: the list's version, the
// continue token, and every item with its key, kind and apiVersion filled
// in from `resource` where the server left them out. nullopt (and *err)
// when the page is not a list.
//
// Items keep only what smik reads of their kind (metadata's names, labels,
// owners, uid and version; of a pod, its service account, node, host
// network, container ports, phase and addresses; of a namespace, service
// account or workload, its metadata): the text is read as a stream and the
// rest is never built.
struct ListPage {
  std::string resource_version;
  std::string next;  // continue token; empty on the last page
  std::vector<std::pair<std::string, nlohmann::json>> items;
};
std::optional<ListPage> decodeListPage(std::string_view body, const Resource& resource,
                                       std::string* err);

// A body handed over piece by piece as it arrives: the next piece into
// *piece, false when there is no more.
using NextPiece = std::function<bool(std::string* piece)>;

// decodeListPage on a body read as it arrives, so decoding overlaps the
// transfer: the same result (and errors) as decodeListPage on the whole
// body. `on_continue`, if set, is called with the page's continue token
// ("" on the last page) as soon as the list's metadata has been read,
// which a real API server writes before the items: the next page can be
// asked for while this one is still arriving. It is only a hint: a page
// that turns out not to be a list, or to name another token (a duplicated
// metadata), decodes to what the whole text says.
std::optional<ListPage> decodeListPageStream(
    const NextPiece& next, const Resource& resource, std::string* err,
    const std::function<void(const std::string& next_token)>& on_continue = nullptr);

// One line of a watch stream: its type (ADDED, MODIFIED, DELETED,
// BOOKMARK, ERROR) and object, normalised and trimmed as a list item is
// (an ERROR's Status is kept whole). nullopt (and *err) when the line is
// not an event.
struct WatchEvent {
  std::string type;
  std::string key;
  nlohmann::json object;
};
std::optional<WatchEvent> decodeWatchEvent(std::string_view line, const Resource& resource,
                                           std::string* err);

// The same from the text parsed whole, nothing trimmed: what the decoders
// above fall back to on anything out of the ordinary (invalid JSON, nesting
// past the limits, an object of another kind than its collection's), so
// that every error reads as it always did; and the reference they are
// fuzzed against (tests/fuzz/kube_object_fuzz.cpp).
std::optional<ListPage> decodeListPageWhole(std::string_view body, const Resource& resource,
                                            std::string* err);
std::optional<WatchEvent> decodeWatchEventWhole(std::string_view line, const Resource& resource,
                                                std::string* err);

struct ReflectorConfig {
  int page_size = 500;  // client-go's pager default
  // Watch lifetime asked of the server, random in [min, max] so that many
  // agents do not reconnect in step (client-go: 5..10 minutes).
  std::chrono::seconds watch_timeout_min{300};
  std::chrono::seconds watch_timeout_max{600};
  // Client-side deadline beyond timeoutSeconds: the server's own close is
  // the normal end; ours only catches a server that never closes.
  std::chrono::seconds watch_slack{30};
  // Retry delays after failures: doubling from initial to max, each
  // stretched by up to `jitter` of itself.
  std::chrono::milliseconds backoff_initial{800};
  std::chrono::milliseconds backoff_max{30'000};
  double jitter = 1.0;
  // A server's Retry-After is honoured up to this much.
  std::chrono::milliseconds retry_after_max{60'000};
  // A collection the server does not serve (CRD not installed): check again
  // this often. Slow: it is not an error to fix by hammering.
  std::chrono::milliseconds not_served_retry{60'000};
  // A watch that ends sooner than this without delivering anything counts
  // as a failure; otherwise a server that closes at once is a hot loop.
  std::chrono::milliseconds min_watch_duration{1'000};
  uint64_t seed = 0;  // 0: random
  // When set, every wait between tries goes here instead of a timed wait:
  // a test's fake clock sees each delay asked for and decides when it ends,
  // so retry pacing is checked without measuring wall time.
  std::function<void(std::chrono::milliseconds)> wait;
};

// What the reflector is doing, for status pages and tests.
struct ReflectorStatus {
  bool synced = false;           // one complete list has been applied
  bool not_served = false;       // last attempt got 404
  std::string last_error;        // empty after a success
  std::string resource_version;  // last one seen (list, event or bookmark)
  uint64_t lists = 0;            // complete lists applied
  uint64_t watches = 0;          // watch requests started
  uint64_t failures = 0;         // requests that ended in backoff
};

class Reflector {
 public:
  enum class Event { kUpsert, kDelete };
  // key is "ns/name" ("name" for cluster-scoped objects); `object` carries
  // kind and apiVersion. Called from the reflector's thread (run()).
  using OnEvent = std::function<void(Event, const std::string& key, const nlohmann::json& object)>;
  // Called after each complete list has been applied (synthetic deletes
  // included): the store now matches the server at some version.
  using OnSynced = std::function<void()>;

  Reflector(HttpClient& http, Resource resource, ReflectorConfig config, OnEvent on_event,
            OnSynced on_synced = nullptr);

  // Runs until stop(); blocking. Never throws for server or network trouble.
  void run();
  // From any thread: aborts the request in flight and makes run() return.
  void stop();

  ReflectorStatus status() const;
  // The current objects' keys, each with its compactFingerprint(). Only
  // that is kept: the objects themselves go to OnEvent (at 50k pods, full
  // objects would cost the agent hundreds of MiB).
  std::map<std::string, uint64_t> snapshot() const;
  const Resource& resource() const { return resource_; }

  static std::string keyOf(const nlohmann::json& object);
  static std::string fingerprint(const nlohmann::json& object);
  // fingerprint() in 8 bytes: a numeric resourceVersion (every API server's)
  // exactly, anything else hashed. A string per object cost 32 more bytes.
  static uint64_t compactFingerprint(const nlohmann::json& object);

 private:
  enum class Outcome { kOk, kRelist, kFailed, kNotServed, kStopped };
  struct Failure {
    Outcome outcome = Outcome::kOk;
    std::string error;
    std::optional<std::chrono::milliseconds> retry_after;
  };

  class PageFetch;
  Failure list();
  Failure watch();
  Failure classify(const HttpResponse& r, const char* what);
  // One watch event; sets *out to stop reading the stream.
  bool handleEvent(std::string_view line, Failure* out, bool* saw_event);
  using Versions = BufferedFlatMap<std::string, uint64_t>;
  void applyList(FlatMap<std::string, uint64_t> next, const Versions& old, const std::string& rv);
  void upsert(const std::string& key, nlohmann::json object);
  void remove(const std::string& key, const nlohmann::json& last);
  // What a delete found by relisting reports: kind, apiVersion and name.
  nlohmann::json stubFor(const std::string& key) const;
  std::chrono::milliseconds nextBackoff();
  // Sleeps unless stopped first; false if stopped.
  bool sleepFor(std::chrono::milliseconds d);
  void setError(const std::string& e);
  void recordFailure(const std::string& error, bool not_served);
  bool stopping() const;

  HttpClient& http_;
  const Resource resource_;
  const ReflectorConfig config_;
  OnEvent on_event_;
  OnSynced on_synced_;
  Cancel cancel_;

  mutable std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  // key -> compactFingerprint: 40 bytes an object, not a map node's 80.
  Versions store_;
  std::vector<PageFetch*> fetches_;        // list pages in flight: stop() abandons them
  ReflectorStatus status_;

  // run()'s thread only.
  std::string rv_;                  // last synced resourceVersion: where the next watch starts
  bool progressed_ = false;         // the last watch delivered at least one event
  bool consistent_relist_ = false;  // after a 410: list at "latest", not from cache
  std::chrono::milliseconds backoff_{0};
  std::mt19937_64 rng_;
};

}  // namespace smik::kube
