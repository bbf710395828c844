#include "tests/kube/fake_cluster.h"

#include <httplib.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <regex>

#include "api/http/listen.h"
#include "tests/kube/h2_server.h"

namespace smik::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

json scalar(const YAML::Node& n) {
  const std::string& v = n.Scalar();
  if (n.Tag() == "!") return v;  // quoted: always a string
  static const std::regex kInt("[-+]?[0-9]+");
  static const std::regex kFloat("[-+]?([0-9]+\\.[0-9]*|\\.[0-9]+)([eE][-+]?[0-9]+)?");
  if (v == "true" || v == "True" || v == "TRUE") return true;
  if (v == "false" || v == "False" || v == "FALSE") return false;
  if (v.empty() || v == "~" || v == "null" || v == "Null" || v == "NULL") return nullptr;
  if (std::regex_match(v, kInt)) {
    try {
      return std::stoll(v);
    } catch (...) {
      return v;
    }
  }
  if (std::regex_match(v, kFloat)) return std::stod(v);
  return v;
}

json toJson(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.Scalar()] = toJson(kv.second);
      return o;
    }
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& e : n) a.push_back(toJson(e));
      return a;
    }
    case YAML::NodeType::Scalar:
      return scalar(n);
    default:
      return nullptr;
  }
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Every kind smik reads pluralises the simple way.
std::string pluralOf(const std::string& kind) { return lower(kind) + "s"; }

bool isCrd(const std::string& api_version) {
  return api_version.find(".smi-spec.io/") != std::string::npos;
}

std::string str(const json& j, const char* a, const char* b) {
  if (!j.contains(a) || !j[a].is_object()) return "";
  const json& x = j[a];
  return x.contains(b) && x[b].is_string() ? x[b].get<std::string>() : "";
}

void status(httplib::Response& res, int code, const std::string& reason,
            const std::string& message) {
  res.status = code;
  res.set_content(json{{"kind", "Status"},
                       {"apiVersion", "v1"},
                       {"metadata", json::object()},
                       {"status", "Failure"},
                       {"message", message},
                       {"reason", reason},
                       {"code", code}}
                      .dump(),
                  "application/json");
}

// SMI kinds by group, and the versions that have each (UDPRoute is new).
std::vector<std::string> smiPlurals(const std::string& group, const std::string& version) {
  if (group == "access.smi-spec.io") return {"traffictargets"};
  if (group == "split.smi-spec.io") return {"trafficsplits"};
  if (group == "specs.smi-spec.io") {
    std::vector<std::string> p = {"httproutegroups", "tcproutes"};
    if (version == "v1alpha4") p.push_back("udproutes");
    return p;
  }
  return {};
}

}  // namespace

std::vector<json> yamlDocuments(const std::string& text) {
  std::vector<json> out;
  for (const auto& doc : YAML::LoadAll(text))
    if (doc.IsMap()) out.push_back(toJson(doc));
  return out;
}

FakeCluster::FakeCluster(Options options) : options_(std::move(options)) {
  rv_ = options_.first_rv;
  compacted_rv_ = options_.first_rv;
  if (options_.tls && options_.http2) {
    h2_ = std::make_unique<H2Server>(
        options_.address, options_.port, options_.tls_dir + "/server.crt",
        options_.tls_dir + "/server.key",
        [this](const httplib::Request& req, httplib::Response& res) { route(req, res); });
    port_ = h2_->port();
    return;
  }
  if (options_.tls) {
    server_ = std::make_unique<httplib::SSLServer>((options_.tls_dir + "/server.crt").c_str(),
                                                   (options_.tls_dir + "/server.key").c_str());
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  server_->set_tcp_nodelay(true);  // as Go's net/http: no 40 ms Nagle stalls
  // Every watch holds a worker for minutes; an agent opens one per collection.
  server_->new_task_queue = [] { return new httplib::ThreadPool(64); };
  auto handler = [this](const httplib::Request& req, httplib::Response& res) { route(req, res); };
  server_->Get(".*", handler);
  server_->Post(".*", handler);
  server_->Patch(".*", handler);
  // cpp-httplib listens with a backlog of 5: an agent starting 14
  // reflectors at once overflows it and a dropped SYN costs a 1 s
  // retransmit. Real API servers listen with a large backlog; so do we, by
  // listening again on the socket httplib made (Linux updates the backlog).
  int listen_fd = -1;
  api::rememberListenSocket(*server_, &listen_fd);
  if (options_.port > 0) {
    if (!server_->bind_to_port(options_.address, options_.port)) throw std::runtime_error("bind failed");
    port_ = options_.port;
  } else {
    port_ = server_->bind_to_any_port(options_.address);
  }
  api::listenWide(listen_fd);
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  while (!server_->is_running()) std::this_thread::sleep_for(1ms);
}

FakeCluster::~FakeCluster() {
  stopping_ = true;
  changed_.notify_all();
  if (h2_) {
    h2_.reset();
    return;
  }
  server_->stop();
  thread_.join();
}

std::string FakeCluster::url() const {
  return std::string(options_.tls ? "https" : "http") + "://" + options_.address + ":" +
         std::to_string(port_);
}

void FakeCluster::writeKubeconfig(const std::string& path) const {
  std::ofstream f(path);
  f << "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: " << url()
    << "\n";
  if (options_.tls) f << "    certificate-authority: " << options_.tls_dir << "/ca.crt\n";
  if (options_.tls && options_.address != "127.0.0.1") f << "    tls-server-name: 127.0.0.1\n";
  f << "users:\n- name: agent\n  user:\n    token: " << options_.token << "\n"
    << "contexts:\n- name: fake\n  context: {cluster: fake, user: agent}\n"
    << "current-context: fake\n";
}

void FakeCluster::apply(json object) {
  const std::string api_version = object.value("apiVersion", "");
  const std::string kind = object.value("kind", "");
  const std::string collection = api_version + "/" + pluralOf(kind);
  const std::string ns = str(object, "metadata", "namespace");
  const std::string name = str(object, "metadata", "name");
  const std::string key = collection + " " + ns + "/" + name;
  {
    std::lock_guard lock(mu_);
    auto it = objects_.find(key);
    const bool exists = it != objects_.end();
    object["metadata"]["uid"] =
        exists ? it->second.object["metadata"]["uid"] : json("uid-" + std::to_string(rv_ + 1));
    object["metadata"]["resourceVersion"] = std::to_string(++rv_);
    std::string item;
    if (isCrd(api_version)) {
      item = object.dump();
    } else {
      json bare = object;
      bare.erase("kind");
      bare.erase("apiVersion");
      item = bare.dump();
    }
    objects_[key] = {object, rv_, std::move(item)};
    log_.push_back({rv_, exists ? "MODIFIED" : "ADDED", collection, object});
  }
  changed_.notify_all();
}

void FakeCluster::applyYaml(const std::string& text) {
  for (auto& doc : yamlDocuments(text)) apply(std::move(doc));
}

void FakeCluster::remove(const std::string& kind, const std::string& ns, const std::string& name) {
  {
    std::lock_guard lock(mu_);
    for (auto it = objects_.begin(); it != objects_.end(); ++it) {
      const json& o = it->second.object;
      if (o.value("kind", "") != kind || str(o, "metadata", "namespace") != ns ||
          str(o, "metadata", "name") != name)
        continue;
      json last = o;
      last["metadata"]["resourceVersion"] = std::to_string(++rv_);
      log_.push_back({rv_, "DELETED", it->first.substr(0, it->first.find(' ')), last});
      objects_.erase(it);
      break;
    }
  }
  changed_.notify_all();
}

size_t FakeCluster::objectCount() const {
  std::lock_guard lock(mu_);
  return objects_.size();
}

void FakeCluster::expireWatches() {
  {
    std::lock_guard lock(mu_);
    compacted_rv_ = rv_ + 1;
    ++expire_epoch_;
  }
  changed_.notify_all();
}

void FakeCluster::setAuthorizer(std::function<bool(const json& spec)> allow) {
  std::lock_guard lock(mu_);
  authorizer_ = std::move(allow);
}

std::vector<json> FakeCluster::reviews() const {
  std::lock_guard lock(mu_);
  return reviews_;
}

void FakeCluster::serveVersions(const std::string& group, std::vector<std::string> versions) {
  std::lock_guard lock(mu_);
  options_.smi_versions[group] = std::move(versions);
}

std::vector<json> FakeCluster::events() const {
  std::lock_guard lock(mu_);
  std::vector<json> out;
  for (const auto& [k, e] : events_) out.push_back(e);
  return out;
}

std::vector<std::string> FakeCluster::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

size_t FakeCluster::connections() const {
  if (h2_) return h2_->connectionsAccepted();
  std::lock_guard lock(mu_);
  return peers_.size();
}

size_t FakeCluster::connectionsOpen() const {
  return h2_ ? h2_->connectionsOpen() : connections();
}

size_t FakeCluster::streams() const {
  if (h2_) return h2_->streamsOpened();
  std::lock_guard lock(mu_);
  return requests_.size();
}

uint64_t FakeCluster::bytesRead() const { return h2_ ? h2_->bytesRead() : 0; }
uint64_t FakeCluster::bytesWritten() const { return h2_ ? h2_->bytesWritten() : 0; }

bool FakeCluster::discovery(const std::string& path, httplib::Response& res) const {
  std::lock_guard lock(mu_);
  static const std::regex kGroup("/apis/([^/]+)");
  static const std::regex kGroupVersion("/apis/([^/]+)/([^/]+)");
  std::smatch m;
  if (std::regex_match(path, m, kGroup)) {
    auto it = options_.smi_versions.find(m[1]);
    if (it == options_.smi_versions.end()) return false;
    json versions = json::array();
    for (const auto& v : it->second)
      versions.push_back({{"groupVersion", it->first + "/" + v}, {"version", v}});
    res.set_content(json{{"kind", "APIGroup"},
                         {"apiVersion", "v1"},
                         {"name", it->first},
                         {"versions", versions},
                         {"preferredVersion", versions.at(0)}}
                        .dump(),
                    "application/json");
    return true;
  }
  if (std::regex_match(path, m, kGroupVersion)) {
    auto it = options_.smi_versions.find(m[1]);
    if (it == options_.smi_versions.end()) return false;
    if (std::find(it->second.begin(), it->second.end(), m[2].str()) == it->second.end())
      return false;
    json resources = json::array();
    for (const auto& p : smiPlurals(m[1], m[2]))
      resources.push_back({{"name", p}, {"namespaced", true}, {"verbs", {"get", "list", "watch"}}});
    res.set_content(json{{"kind", "APIResourceList"},
                         {"apiVersion", "v1"},
                         {"groupVersion", m[1].str() + "/" + m[2].str()},
                         {"resources", resources}}
                        .dump(),
                    "application/json");
    return true;
  }
  return false;
}

void FakeCluster::route(const httplib::Request& req, httplib::Response& res) {
  {
    std::lock_guard lock(mu_);
    std::string q;
    for (const auto& [k, v] : req.params) q += (q.empty() ? "?" : "&") + k + "=" + v;
    requests_.push_back(req.method + " " + req.path + q);
    peers_.insert(req.remote_addr + ":" + std::to_string(req.remote_port));
  }
  if (req.get_header_value("Authorization") != "Bearer " + options_.token)
    return status(res, 401, "Unauthorized", "bad token");

  static const std::regex kEvents("/api/v1/namespaces/([^/]+)/events(/([^/]+))?");
  static const std::regex kCore("/api/v1/([a-z]+)");
  static const std::regex kGroupList("/apis/([^/]+)/([^/]+)/([a-z]+)");
  std::smatch m;
  static const std::regex kObject("/api/v1/namespaces/([^/]+)/([a-z]+)/([^/]+)");
  if (std::regex_match(req.path, m, kEvents)) return serveEvents(req, res, m[1], m[3]);
  if (req.method == "POST" && req.path == "/apis/authorization.k8s.io/v1/subjectaccessreviews") {
    json review = json::parse(req.body, nullptr, false);
    if (!review.is_object()) return status(res, 400, "BadRequest", "not JSON");
    bool allowed = false;
    {
      std::lock_guard lock(mu_);
      reviews_.push_back(review["spec"]);
      allowed = authorizer_ && authorizer_(review["spec"]);
    }
    review["status"] = {{"allowed", allowed}};
    if (!allowed) review["status"]["reason"] = "denied by the fake authorizer";
    res.status = 201;
    res.set_content(review.dump(), "application/json");
    return;
  }
  if (req.method == "GET" && std::regex_match(req.path, m, kObject)) {
    std::lock_guard lock(mu_);
    auto it = objects_.find("v1/" + m[2].str() + " " + m[1].str() + "/" + m[3].str());
    if (it == objects_.end()) return status(res, 404, "NotFound", m[3].str() + " not found");
    res.set_content(it->second.object.dump(), "application/json");
    return;
  }
  if (req.method != "GET") return status(res, 405, "MethodNotAllowed", req.method);
  if (std::regex_match(req.path, m, kCore))
    return serveCollection(req, res, "v1/" + m[1].str(), "v1", "");
  if (std::regex_match(req.path, m, kGroupList)) {
    const std::string group = m[1], version = m[2], plural = m[3];
    std::vector<std::string> served;
    {
      std::lock_guard lock(mu_);
      auto it = options_.smi_versions.find(group);
      if (it != options_.smi_versions.end()) served = it->second;
    }
    if (group.find(".smi-spec.io") != std::string::npos) {
      if (std::find(served.begin(), served.end(), version) == served.end())
        return status(res, 404, "NotFound", "the server could not find the requested resource");
      auto plurals = smiPlurals(group, version);
      if (std::find(plurals.begin(), plurals.end(), plural) == plurals.end())
        return status(res, 404, "NotFound", "the server could not find the requested resource");
    }
    return serveCollection(req, res, group + "/" + version + "/" + plural, group + "/" + version,
                           "");
  }
  if (discovery(req.path, res)) return;
  status(res, 404, "NotFound", "the server could not find the requested resource");
}

void FakeCluster::serveCollection(const httplib::Request& req, httplib::Response& res,
                                  const std::string& collection, const std::string& api_version,
                                  const std::string& kind) {
  const std::string w = req.get_param_value("watch");
  if (w == "1" || w == "true") return serveWatch(req, res, collection, api_version, kind);
  size_t limit = req.has_param("limit") ? std::stoul(req.get_param_value("limit")) : 0;
  if (options_.max_page && (limit == 0 || limit > options_.max_page)) limit = options_.max_page;
  // The continue token is the key ("ns/name") to go on from, as a real API
  // server's names the last key it sent: a page starts where the last one
  // ended, not by walking the collection from its start again.
  const std::string prefix = collection + " ";
  const std::string from = prefix + req.get_param_value("continue");
  // Written as a real API server writes a list: kind, apiVersion, then
  // metadata (version and continue token) before the items.
  std::string items, list_kind, cont, rv;
  {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (auto it = objects_.lower_bound(from); it != objects_.end(); ++it) {
      if (it->first.compare(0, prefix.size(), prefix) != 0) break;
      if (limit && n == limit) {
        cont = it->first.substr(prefix.size());
        break;
      }
      if (list_kind.empty()) list_kind = it->second.object.value("kind", "") + "List";
      if (n++) items += ',';
      items += it->second.item;
    }
    rv = std::to_string(rv_);
  }
  std::string body = "{\"kind\":" + json(list_kind.empty() ? "List" : list_kind).dump() +
                     ",\"apiVersion\":" + json(api_version).dump() +
                     ",\"metadata\":{\"resourceVersion\":" + json(rv).dump();
  if (!cont.empty()) body += ",\"continue\":" + json(cont).dump();
  body += "},\"items\":[";
  body.reserve(body.size() + items.size() + 2);
  body += items;
  body += "]}";
  res.set_content(std::move(body), "application/json");
}

void FakeCluster::serveWatch(const httplib::Request& req, httplib::Response& res,
                             const std::string& collection, const std::string&,
                             const std::string&) {
  uint64_t from = 0;
  try {
    from = std::stoull(req.get_param_value("resourceVersion"));
  } catch (...) {
  }
  const bool bookmarks = req.get_param_value("allowWatchBookmarks") == "true";
  int timeout_s = 300;
  if (req.has_param("timeoutSeconds")) timeout_s = std::stoi(req.get_param_value("timeoutSeconds"));
  uint64_t epoch;
  {
    std::lock_guard lock(mu_);
    if (from < compacted_rv_)
      return status(res, 410, "Expired", "too old resource version: " + std::to_string(from));
    epoch = expire_epoch_;
  }
  struct WatchState {
    uint64_t sent_rv;
    std::chrono::steady_clock::time_point deadline, last_bookmark;
  };
  auto st = std::make_shared<WatchState>(
      WatchState{from, std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s),
                 std::chrono::steady_clock::now()});
  res.set_chunked_content_provider(
      "application/json", [this, st, collection, bookmarks, epoch](size_t, httplib::DataSink& sink) {
        if (stopping_) return false;
        std::string out;
        bool expired = false;
        {
          std::unique_lock lock(mu_);
          auto pending = [&] {
            if (stopping_ || expire_epoch_ != epoch) return true;
            return !log_.empty() && log_.back().rv > st->sent_rv;
          };
          changed_.wait_for(lock, 100ms, pending);
          if (expire_epoch_ != epoch) {
            expired = true;
          } else {
            // The log is in version order: start after what was sent, not
            // from its beginning (at 50k objects, every wake of every watch
            // walked them all).
            const auto first = std::upper_bound(
                log_.begin(), log_.end(), st->sent_rv,
                [](uint64_t rv, const Change& c) { return rv < c.rv; });
            for (auto c_it = first; c_it != log_.end(); ++c_it) {
              const Change& c = *c_it;
              st->sent_rv = c.rv;
              if (c.collection != collection) continue;
              out += json{{"type", c.type}, {"object", c.object}}.dump() + "\n";
            }
          }
          const auto now = std::chrono::steady_clock::now();
          if (!expired && out.empty() && bookmarks && now - st->last_bookmark > 1s) {
            st->last_bookmark = now;
            st->sent_rv = std::max(st->sent_rv, rv_);
            out = json{{"type", "BOOKMARK"},
                       {"object",
                        {{"kind", "Bookmark"},
                         {"metadata", {{"resourceVersion", std::to_string(st->sent_rv)}}}}}}
                      .dump() +
                  "\n";
          }
        }
        if (stopping_) return false;
        if (expired) {
          std::string e = json{{"type", "ERROR"},
                               {"object",
                                {{"kind", "Status"},
                                 {"apiVersion", "v1"},
                                 {"status", "Failure"},
                                 {"reason", "Expired"},
                                 {"code", 410},
                                 {"message", "too old resource version"}}}}
                              .dump() +
                          "\n";
          sink.write(e.data(), e.size());
          sink.done();
          return true;
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;
        if (std::chrono::steady_clock::now() > st->deadline) sink.done();
        return true;
      });
}

void FakeCluster::serveEvents(const httplib::Request& req, httplib::Response& res,
                              const std::string& ns, const std::string& name) {
  if (events_forbidden_)
    return status(res, 403, "Forbidden",
                  "events is forbidden: User cannot create resource \"events\" in namespace " + ns);
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded()) return status(res, 400, "BadRequest", "not JSON");
  std::lock_guard lock(mu_);
  if (req.method == "POST") {
    const std::string key = ns + "/" + str(body, "metadata", "name");
    if (events_.count(key)) return status(res, 409, "AlreadyExists", key + " already exists");
    events_[key] = body;
    res.status = 201;
    res.set_content(body.dump(), "application/json");
    return;
  }
  if (req.method == "PATCH") {
    auto it = events_.find(ns + "/" + name);
    if (it == events_.end()) return status(res, 404, "NotFound", name + " not found");
    it->second.merge_patch(body);
    res.set_content(it->second.dump(), "application/json");
    return;
  }
  status(res, 405, "MethodNotAllowed", req.method);
}

}  // namespace smik::testing
