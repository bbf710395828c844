#include "agent/source/kube_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace smik::kube {
namespace {

namespace fs = std::filesystem;

std::optional<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

// A named entry keeps the directory of the file that defined it: its
// relative paths are relative to that file, not to the first one.
struct Named {
  YAML::Node body;
  fs::path dir;
};

struct Merged {
  std::map<std::string, Named> clusters, users, contexts;
  std::string current_context;
};

void mergeList(const YAML::Node& list, const char* body_key, const fs::path& dir,
               std::map<std::string, Named>* into) {
  if (!list || !list.IsSequence()) return;
  for (const auto& item : list) {
    if (!item.IsMap() || !item["name"]) continue;
    into->emplace(item["name"].as<std::string>(""), Named{item[body_key], dir});
  }
}

std::string str(const YAML::Node& n, const char* key) {
  if (!n || !n.IsMap() || !n[key] || !n[key].IsScalar()) return "";
  return n[key].as<std::string>("");
}

std::string resolvePath(const std::string& p, const fs::path& dir) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return (dir / p).lexically_normal().string();
}

// "-data" fields are base64 in the file; the rest of smik wants PEM bytes.
bool decodeData(const YAML::Node& n, const char* key, std::string* out, std::string* error) {
  const std::string raw = str(n, key);
  if (raw.empty()) return true;
  auto decoded = base64Decode(raw);
  if (!decoded) {
    *error = std::string(key) + " is not valid base64";
    return false;
  }
  *out = std::move(*decoded);
  return true;
}

ConfigResult resolve(const Merged& m, const std::string& context_name, const std::string& label) {
  ConfigResult r;
  const std::string ctx_name = context_name.empty() ? m.current_context : context_name;
  if (ctx_name.empty()) {
    r.error = label + ": no current-context and no context given";
    return r;
  }
  auto ctx = m.contexts.find(ctx_name);
  if (ctx == m.contexts.end()) {
    r.error = label + ": context \"" + ctx_name + "\" not found";
    return r;
  }
  const std::string cluster_name = str(ctx->second.body, "cluster");
  auto cluster = m.clusters.find(cluster_name);
  if (cluster == m.clusters.end()) {
    r.error = label + ": context \"" + ctx_name + "\": cluster \"" + cluster_name + "\" not found";
    return r;
  }
  KubeConfig c;
  c.ns = str(ctx->second.body, "namespace");
  const YAML::Node& cl = cluster->second.body;
  c.server = str(cl, "server");
  while (!c.server.empty() && c.server.back() == '/') c.server.pop_back();
  if (c.server.empty()) {
    r.error = label + ": cluster \"" + cluster_name + "\" has no server";
    return r;
  }
  c.ca_file = resolvePath(str(cl, "certificate-authority"), cluster->second.dir);
  c.insecure_skip_tls_verify = cl && cl.IsMap() && cl["insecure-skip-tls-verify"] &&
                               cl["insecure-skip-tls-verify"].as<bool>(false);
  c.tls_server_name = str(cl, "tls-server-name");
  c.proxy_url = str(cl, "proxy-url");
  std::string err;
  if (!decodeData(cl, "certificate-authority-data", &c.ca_data, &err)) {
    r.error = label + ": cluster \"" + cluster_name + "\": " + err;
    return r;
  }
  // A context without a user is anonymous access: legal, if rarely useful.
  const std::string user_name = str(ctx->second.body, "user");
  if (!user_name.empty()) {
    auto user = m.users.find(user_name);
    if (user == m.users.end()) {
      r.error = label + ": context \"" + ctx_name + "\": user \"" + user_name + "\" not found";
      return r;
    }
    const YAML::Node& u = user->second.body;
    const fs::path& dir = user->second.dir;
    c.token = str(u, "token");
    c.token_file = resolvePath(str(u, "tokenFile"), dir);
    c.client_cert_file = resolvePath(str(u, "client-certificate"), dir);
    c.client_key_file = resolvePath(str(u, "client-key"), dir);
    if (!decodeData(u, "client-certificate-data", &c.client_cert_data, &err) ||
        !decodeData(u, "client-key-data", &c.client_key_data, &err)) {
      r.error = label + ": user \"" + user_name + "\": " + err;
      return r;
    }
    // Silently ignoring these would mean talking to the API anonymously and
    // reading 403s as "the cluster has no objects".
    for (const char* unsupported : {"exec", "auth-provider", "username"}) {
      if (u && u.IsMap() && u[unsupported]) {
        r.error = label + ": user \"" + user_name + "\": " + unsupported + " is not supported";
        return r;
      }
    }
    const bool has_cert = !c.client_cert_file.empty() || !c.client_cert_data.empty();
    const bool has_key = !c.client_key_file.empty() || !c.client_key_data.empty();
    if (has_cert != has_key) {
      r.error =
          label + ": user \"" + user_name + "\": client certificate and key must come together";
      return r;
    }
  }
  r.config = std::move(c);
  return r;
}

// Adds one file to `m`; false (with error) if it exists but is not a kubeconfig.
bool mergeFile(const std::string& path, Merged* m, std::string* error) {
  auto text = readFile(path);
  if (!text) return true;  // kubectl skips missing KUBECONFIG entries too
  YAML::Node doc;
  try {
    doc = YAML::Load(*text);
  } catch (const YAML::Exception& e) {
    *error = path + ": " + e.what();
    return false;
  }
  if (doc.IsNull()) return true;
  if (!doc.IsMap()) {
    *error = path + ": not a kubeconfig (top level is not a mapping)";
    return false;
  }
  const fs::path dir = fs::absolute(fs::path(path)).parent_path();
  try {
    mergeList(doc["clusters"], "cluster", dir, &m->clusters);
    mergeList(doc["users"], "user", dir, &m->users);
    mergeList(doc["contexts"], "context", dir, &m->contexts);
  } catch (const YAML::Exception& e) {
    *error = path + ": " + e.what();
    return false;
  }
  if (m->current_context.empty()) m->current_context = str(doc, "current-context");
  return true;
}

}  // namespace

ConfigResult loadKubeconfigFile(const std::string& path, const std::string& context) {
  if (!fs::exists(path)) return ConfigResult{std::nullopt, path + ": no such file"};
  return loadKubeconfig(path, context);
}

ConfigResult loadKubeconfig(const std::string& paths, const std::string& context) {
  Merged m;
  std::string error;
  std::stringstream ss(paths);
  std::string path;
  bool any = false;
  while (std::getline(ss, path, ':')) {
    if (path.empty()) continue;
    any = any || fs::exists(path);
    if (!mergeFile(path, &m, &error)) return ConfigResult{std::nullopt, error};
  }
  if (!any) return ConfigResult{std::nullopt, "kubeconfig: none of \"" + paths + "\" exists"};
  return resolve(m, context, "kubeconfig " + paths);
}

ConfigResult loadInCluster(const std::function<const char*(const char*)>& getenv,
                           const std::string& sa_dir) {
  const char* host = getenv("KUBERNETES_SERVICE_HOST");
  const char* port = getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !*host || !port || !*port)
    return {std::nullopt, "not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset"};
  KubeConfig c;
  const std::string h = host;
  // An IPv6 service address needs brackets to be a URL authority.
  const bool ipv6 = h.find(':') != std::string::npos && h.front() != '[';
  c.server = "https://" + (ipv6 ? "[" + h + "]" : h) + ":" + port;
  c.token_file = sa_dir + "/token";
  c.ca_file = sa_dir + "/ca.crt";
  // Fail now, not on every request: without a token every call is a 401.
  if (!readFile(c.token_file)) return {std::nullopt, c.token_file + ": cannot read"};
  if (!fs::exists(c.ca_file)) return {std::nullopt, c.ca_file + ": cannot read"};
  if (auto ns = readFile(sa_dir + "/namespace")) c.ns = trim(*ns);
  return {std::move(c), ""};
}

std::optional<std::string> base64Decode(const std::string& in) {
  auto value = [](unsigned char ch) -> int {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+' || ch == '-') return 62;
    if (ch == '/' || ch == '_') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  bool padding = false;
  for (unsigned char ch : in) {
    if (std::isspace(ch)) continue;
    if (ch == '=') {
      padding = true;
      continue;
    }
    const int v = value(ch);
    if (v < 0 || padding) return std::nullopt;  // data after '=' is corrupt
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (bits >= 6) return std::nullopt;  // a lone trailing character holds no byte
  return out;
}

TokenSource::TokenSource(std::string token, std::string token_file,
                         std::chrono::milliseconds refresh)
    : token_(std::move(token)), token_file_(std::move(token_file)), refresh_(refresh) {}

std::string TokenSource::token() {
  std::lock_guard lock(mu_);
  if (token_file_.empty()) return token_;
  const auto now = Clock::now();
  if (!read_at_ || now - *read_at_ >= refresh_) {
    // A failed read keeps the old token: the kubelet replaces the file by
    // rename, so a transient failure should not drop a still-valid token.
    if (auto t = readFile(token_file_)) token_ = trim(*t);
    read_at_ = now;
  }
  return token_;
}

void TokenSource::invalidate() {
  std::lock_guard lock(mu_);
  read_at_.reset();
}

}  // namespace smik::kube
