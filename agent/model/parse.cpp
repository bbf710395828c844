#include "agent/model/parse.h"

#include "agent/compile/http_regex.h"

#include <arpa/inet.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

namespace smik::model {

std::string ParseError::str() const {
  const std::string obj = object.str();
  return file + ": " + (obj.empty() ? "" : obj + ": ") + reason;
}

namespace {

// Thrown while reading one document and turned into that document's ParseError.
struct Invalid {
  std::string reason;
};

[[noreturn]] void fail(std::string reason) { throw Invalid{std::move(reason)}; }

std::string quote(const std::string& s) { return "\"" + s + "\""; }

bool isDecimal(char c) { return c >= '0' && c <= '9'; }
bool isOctal(char c) { return c >= '0' && c <= '7'; }
bool isHex(char c) { return isDecimal(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Non-empty and every character a digit of that kind.
bool allDigits(std::string_view s, bool (*digit)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), digit);
}

std::string_view withoutSign(std::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  return s;
}

// The YAML 1.2 core schema, by hand: std::regex matches recursively, one
// stack frame per character, and a long scalar (a megabyte of digits fits in
// a manifest) overflows the stack.
// int: [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+
bool isCoreInt(std::string_view s) {
  if (s.starts_with("0o")) return allDigits(s.substr(2), isOctal);
  if (s.starts_with("0x")) return allDigits(s.substr(2), isHex);
  return allDigits(withoutSign(s), isDecimal);
}

// float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? | [-+]?\.(inf|Inf|INF)
//        | \.(nan|NaN|NAN)
bool isCoreFloat(std::string_view s) {
  if (s == ".nan" || s == ".NaN" || s == ".NAN") return true;
  s = withoutSign(s);
  if (s == ".inf" || s == ".Inf" || s == ".INF") return true;
  size_t i = 0;
  while (i < s.size() && isDecimal(s[i])) ++i;
  const size_t whole = i;
  size_t fraction = 0;
  if (i < s.size() && s[i] == '.') {
    for (++i; i < s.size() && isDecimal(s[i]); ++i) ++fraction;
  }
  if (whole == 0 && fraction == 0) return false;
  if (i == s.size()) return true;
  if (s[i] != 'e' && s[i] != 'E') return false;
  return allDigits(withoutSign(s.substr(i + 1)), isDecimal);
}

bool isCoreBool(std::string_view s) {
  for (const char* b : {"true", "True", "TRUE", "false", "False", "FALSE"})
    if (s == b) return true;
  return false;
}

}  // namespace

ScalarType classifyPlainScalar(std::string_view s) {
  if (isCoreInt(s)) return ScalarType::kInt;
  if (isCoreFloat(s)) return ScalarType::kFloat;
  if (isCoreBool(s)) return ScalarType::kBool;
  return ScalarType::kString;
}

namespace {

// One node of a document from either reader: yaml-cpp's tree (manifest
// files) or nlohmann's (the Kubernetes API's JSON, read as it is rather
// than converted to a YAML tree first, which cost more than the rest of the
// parse). A JSON string is what YAML calls a quoted scalar; a number or a
// boolean a plain one, spelled as nlohmann prints it: so a field means the
// same to the parser whichever reader it came from.
class Node {
 public:
  explicit Node(YAML::Node yaml) : yaml_(std::move(yaml)) {}
  // nullptr: an absent JSON member.
  explicit Node(const nlohmann::json* json) : json_(json), is_json_(true) {
    if (json && (json->is_number() || json->is_boolean())) printed_ = json->dump();
  }

  bool IsDefined() const { return is_json_ ? json_ != nullptr : yaml_.IsDefined(); }
  bool IsNull() const { return is_json_ ? json_ && json_->is_null() : yaml_.IsNull(); }
  bool IsMap() const { return is_json_ ? json_ && json_->is_object() : yaml_.IsMap(); }
  bool IsSequence() const { return is_json_ ? json_ && json_->is_array() : yaml_.IsSequence(); }
  bool IsScalar() const {
    return is_json_ ? json_ && (json_->is_string() || json_->is_number() || json_->is_boolean())
                    : yaml_.IsScalar();
  }
  // "" for what is not a scalar, as yaml-cpp has it.
  const std::string& Scalar() const {
    static const std::string kNone;
    if (!is_json_) return yaml_.Scalar();
    if (json_ && json_->is_string()) return json_->get_ref<const std::string&>();
    return json_ && !printed_.empty() ? printed_ : kNone;
  }
  // Unquoted: resolved by the YAML core schema (a JSON number or boolean).
  bool IsPlain() const { return is_json_ ? !printed_.empty() : yaml_.Tag() == "?"; }
  // Const lookup: never inserts. Undefined when absent (or not a map).
  Node operator[](const std::string& key) const {
    if (!is_json_) return Node(static_cast<const YAML::Node&>(yaml_)[key]);
    if (!json_ || !json_->is_object()) return Node(static_cast<const nlohmann::json*>(nullptr));
    const auto it = json_->find(key);
    return Node(it == json_->end() ? nullptr : &*it);
  }
  size_t size() const { return is_json_ ? (json_ && json_->is_structured() ? json_->size() : 0) : yaml_.size(); }
  Node operator[](size_t i) const {
    return is_json_ ? Node(&(*json_)[i]) : Node(static_cast<const YAML::Node&>(yaml_)[i]);
  }
  // A map's entries in order; `key` is null when a YAML key is not a string.
  template <class F>
  void forEachEntry(F&& f) const {
    if (is_json_) {
      for (const auto& [k, v] : json_->items()) f(k, nullptr, Node(&v));
      return;
    }
    for (const auto& kv : yaml_) f(kv.first.Scalar(), &kv.first, Node(kv.second));
  }
  // Line of a YAML node (0-based); -1 when it has none, as a JSON node.
  int line() const { return is_json_ ? -1 : yaml_.Mark().line; }
  bool isJson() const { return is_json_; }

 private:
  YAML::Node yaml_;
  const nlohmann::json* json_ = nullptr;
  bool is_json_ = false;
  std::string printed_;  // a JSON number or boolean as text
};

// Plain (unquoted) scalars resolve as in the YAML 1.2 core schema, so `name: 1`
// is a number and `name: "1"` a string, as the API server would see them.
ScalarType classify(const Node& n) {
  if (!n.IsPlain()) return ScalarType::kString;
  const std::string& s = n.Scalar();
  // Fast path: most scalars are names, which cannot start a number or boolean.
  if (s.empty() || !std::strchr("0123456789+-.tTfF", s[0])) return ScalarType::kString;
  return classifyPlainScalar(s);
}

std::string describe(const Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "null";
  if (n.IsMap()) return "a map";
  if (n.IsSequence()) return "a list";
  // Bounded: error messages end up in logs and events.
  std::string s = n.Scalar().size() > 64 ? n.Scalar().substr(0, 61) + "..." : n.Scalar();
  return classify(n) == ScalarType::kString ? quote(s) : s;
}

// A node with its path from the document root, so every error names its field.
class Field {
 public:
  Field(Node node, std::string path) : node_(std::move(node)), path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  const Node& node() const { return node_; }
  // An explicit null counts as absent, as it does for the API server.
  bool present() const { return node_.IsDefined() && !node_.IsNull(); }

  [[noreturn]] void missing() const { fail("missing required field " + path_); }
  void expect(bool ok, const char* what) const {
    if (!ok)
      fail((path_.empty() ? "document" : path_) + ": expected " + what + ", got " +
           describe(node_));
  }
  const Field& required() const {
    if (!present()) missing();
    return *this;
  }

  Field operator[](const std::string& key) const {
    std::string p = path_.empty() ? key : path_ + "." + key;
    if (!present()) return Field(undefinedLike(), std::move(p));
    expect(node_.IsMap(), "a map");
    return Field(node_[key], std::move(p));  // const lookup: never inserts
  }

  std::vector<Field> items() const {
    std::vector<Field> out;
    if (!present()) return out;
    expect(node_.IsSequence(), "a list");
    for (size_t i = 0; i < node_.size(); ++i)
      out.emplace_back(node_[i], path_ + "[" + std::to_string(i) + "]");
    return out;
  }

  std::vector<std::pair<std::string, Field>> entries() const {
    std::vector<std::pair<std::string, Field>> out;
    if (!present()) return out;
    expect(node_.IsMap(), "a map");
    node_.forEachEntry([&](const std::string& key, const YAML::Node* yaml_key, Node value) {
      // JSON keys are strings; a YAML key may be anything.
      if (yaml_key) {
        const Field k(Node(*yaml_key), path_ + " key");
        k.expect(k.node().IsScalar() && classify(k.node()) == ScalarType::kString, "a string");
      }
      out.emplace_back(key, Field(std::move(value), path_ + "." + key));
    });
    return out;
  }

  std::optional<std::string> str() const {
    if (!present()) return std::nullopt;
    expect(node_.IsScalar() && classify(node_) == ScalarType::kString, "a string");
    return node_.Scalar();
  }

  // Names and kinds: present and non-empty.
  std::string name() const {
    std::string s = required().str().value();
    if (s.empty()) fail(path_ + ": must not be empty");
    return s;
  }

  std::optional<bool> boolean() const {
    if (!present()) return std::nullopt;
    expect(node_.IsScalar() && classify(node_) == ScalarType::kBool, "a boolean");
    return node_.Scalar()[0] == 't' || node_.Scalar()[0] == 'T';
  }

  // Decimal integer; nullopt when it does not fit in 64 bits.
  std::optional<int64_t> integer(bool allow_numeric_string) const {
    const char* what = allow_numeric_string ? "an integer or a numeric string" : "an integer";
    required().expect(node_.IsScalar(), what);
    const ScalarType type = classify(node_);
    expect(type == ScalarType::kInt || (allow_numeric_string && type == ScalarType::kString), what);
    std::string s = node_.Scalar();
    if (!s.empty() && s[0] == '+') s.erase(0, 1);
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc::result_out_of_range) return std::nullopt;
    expect(ec == std::errc() && end == s.data() + s.size(), what);
    return v;
  }

 private:
  // An absent node from the same reader as this one.
  Node undefinedLike() const {
    return node_.isJson() ? Node(static_cast<const nlohmann::json*>(nullptr))
                          : Node(YAML::Node(YAML::NodeType::Undefined));
  }

  Node node_;
  std::string path_;
};

uint16_t parsePort(const Field& f, bool allow_numeric_string) {
  const std::optional<int64_t> v = f.integer(allow_numeric_string);
  if (!v || *v < 1 || *v > 65535)
    fail(f.path() + ": port " + f.node().Scalar() + " out of range 1..65535");
  return static_cast<uint16_t>(*v);
}

// `family`: AF_INET, AF_INET6, or AF_UNSPEC for either.
bool isIp(const std::string& ip, int family) {
  unsigned char buf[sizeof(in6_addr)];
  return ((family == AF_UNSPEC || family == AF_INET) && inet_pton(AF_INET, ip.c_str(), buf) == 1) ||
         ((family == AF_UNSPEC || family == AF_INET6) && inet_pton(AF_INET6, ip.c_str(), buf) == 1);
}

std::string parseIp(const Field& f, int family = AF_UNSPEC) {
  const std::string ip = f.name();
  if (!isIp(ip, family))
    fail(f.path() + ": invalid " +
         (family == AF_INET    ? "IPv4 "
          : family == AF_INET6 ? "IPv6 "
                               : "IP ") +
         "address " + quote(ip));
  return ip;
}

// TCP (also when absent or ""), UDP; nullopt for SCTP, which smik does not
// handle: callers drop such ports without an error.
std::optional<Proto> parseProtocol(const Field& f) {
  const std::string p = f.str().value_or("");
  if (p.empty() || p == "TCP") return Proto::kTcp;
  if (p == "UDP") return Proto::kUdp;
  if (p == "SCTP") return std::nullopt;
  fail(f.path() + ": unsupported protocol " + quote(p) + " (TCP, UDP or SCTP)");
}

// A named port as Kubernetes allows it (IANA_SVC_NAME): at most 15 of a-z,
// 0-9 and '-', at least one letter, no leading, trailing or double '-'.
bool isPortName(const std::string& s) {
  if (s.empty() || s.size() > 15 || s.front() == '-' || s.back() == '-' ||
      s.find("--") != std::string::npos)
    return false;
  bool letter = false;
  for (const char c : s) {
    if (c >= 'a' && c <= 'z')
      letter = true;
    else if (!(c >= '0' && c <= '9') && c != '-')
      return false;
  }
  return letter;
}

ObjectMeta parseMeta(const Field& doc, bool namespaced) {
  const Field m = doc["metadata"].required();
  ObjectMeta meta;
  meta.name = m["name"].name();
  if (namespaced) meta.ns = m["namespace"].str().value_or("");
  if (namespaced && meta.ns.empty()) meta.ns = "default";
  for (const auto& [key, value] : m["labels"].entries())
    meta.labels[key] = value.str().value_or("");
  meta.creation_timestamp = m["creationTimestamp"].str().value_or("");
  for (const Field& ref : m["ownerReferences"].items()) {
    bool controller = ref["controller"].boolean().value_or(false);
    if (meta.owner_kind.empty() || controller) {
      meta.owner_kind = ref["kind"].name();
      meta.owner_name = ref["name"].name();
    }
    if (controller) break;
  }
  return meta;
}

Pod parsePod(const Field& doc, ObjectMeta meta) {
  Pod p;
  p.meta = std::move(meta);
  const Field spec = doc["spec"];
  p.service_account = spec["serviceAccountName"].str().value_or("");
  if (p.service_account.empty()) p.service_account = spec["serviceAccount"].str().value_or("");
  if (p.service_account.empty()) p.service_account = "default";
  p.node_name = spec["nodeName"].str().value_or("");
  p.host_network = spec["hostNetwork"].boolean().value_or(false);

  const Field status = doc["status"];
  p.phase = status["phase"].str().value_or("");
  for (const Field& entry : status["podIPs"].items()) p.ips.push_back(parseIp(entry["ip"]));
  const Field pod_ip = status["podIP"];
  if (p.ips.empty() && !pod_ip.str().value_or("").empty()) p.ips.push_back(parseIp(pod_ip));

  for (const Field& container : spec["containers"].items()) {
    for (const Field& f : container["ports"].items()) {
      ContainerPort cp;
      cp.name = f["name"].str().value_or("");
      cp.port = parsePort(f["containerPort"], false);
      const std::optional<Proto> proto = parseProtocol(f["protocol"]);
      if (!proto) continue;
      cp.proto = *proto;
      p.container_ports.push_back(std::move(cp));
    }
  }
  return p;
}

// targetPort: a number, an all-digits string (a number), or a port name.
// Absent, null, 0 and "" default to `port`, as Kubernetes does.
void parseTargetPort(const Field& f, ServicePort& sp) {
  sp.target_port_number = sp.port;
  if (!f.present()) return;
  const char* what = "an integer or a port name";
  f.expect(f.node().IsScalar(), what);
  const ScalarType type = classify(f.node());
  f.expect(type == ScalarType::kInt || type == ScalarType::kString, what);
  const std::string& s = f.node().Scalar();
  if (s.empty()) return;
  const bool numeric =
      type == ScalarType::kInt || s.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) {
    const std::optional<int64_t> v = f.integer(true);
    if (v == 0) return;
    if (!v || *v < 1 || *v > 65535) fail(f.path() + ": port " + s + " out of range 1..65535");
    sp.target_port_number = static_cast<uint16_t>(*v);
    return;
  }
  if (!isPortName(s)) fail(f.path() + ": invalid port name " + quote(s));
  sp.target_port_number = 0;
  sp.target_port_name = s;
}

Service parseService(const Field& doc, ObjectMeta meta) {
  Service svc;
  svc.meta = std::move(meta);
  const Field spec = doc["spec"];
  svc.type = spec["type"].str().value_or("");
  if (svc.type.empty()) svc.type = "ClusterIP";

  // clusterIPs supersedes clusterIP; "None" (headless) and "" (not yet
  // allocated) are not addresses.
  std::vector<Field> ips = spec["clusterIPs"].items();
  if (ips.empty()) ips.push_back(spec["clusterIP"]);
  for (const Field& f : ips) {
    const std::string ip = f.str().value_or("");
    if (ip.empty() || ip == "None") continue;
    svc.cluster_ips.push_back(parseIp(f));
  }

  for (const Field& f : spec["ports"].items()) {
    ServicePort sp;
    sp.name = f["name"].str().value_or("");
    sp.port = parsePort(f["port"], false);
    parseTargetPort(f["targetPort"], sp);
    const std::optional<Proto> proto = parseProtocol(f["protocol"]);
    if (!proto) continue;
    sp.proto = *proto;
    svc.ports.push_back(std::move(sp));
  }

  for (const auto& [key, value] : spec["selector"].entries())
    svc.selector[key] = value.str().value_or("");
  svc.has_selector = !svc.selector.empty();
  return svc;
}

EndpointSlice parseEndpointSlice(const Field& doc, ObjectMeta meta) {
  static const std::string kServiceNameLabel = "kubernetes.io/service-name";
  EndpointSlice es;
  es.meta = std::move(meta);
  const auto label = es.meta.labels.find(kServiceNameLabel);
  if (label == es.meta.labels.end() || label->second.empty())
    fail("missing required field metadata.labels." + kServiceNameLabel);
  es.service_name = label->second;

  const Field address_type = doc["addressType"];
  es.address_type = address_type.name();
  int family = AF_UNSPEC;
  if (es.address_type == "IPv4")
    family = AF_INET;
  else if (es.address_type == "IPv6")
    family = AF_INET6;
  else if (es.address_type != "FQDN")
    fail(address_type.path() + ": unsupported address type " + quote(es.address_type) +
         " (IPv4, IPv6 or FQDN)");

  // FQDN endpoints are host names: nothing smik could use, so none are kept.
  if (family != AF_UNSPEC) {
    for (const Field& f : doc["endpoints"].items()) {
      EndpointSlice::Endpoint ep;
      for (const Field& a : f["addresses"].required().items())
        ep.addresses.push_back(parseIp(a, family));
      ep.ready = f["conditions"]["ready"].boolean().value_or(true);
      const Field ref = f["targetRef"];
      if (ref["kind"].str().value_or("") == "Pod") ep.target_pod = ref["name"].str().value_or("");
      es.endpoints.push_back(std::move(ep));
    }
  }

  for (const Field& f : doc["ports"].items()) {
    EndpointSlice::Port port;
    port.name = f["name"].str().value_or("");
    if (f["port"].present()) port.port = parsePort(f["port"], false);
    const std::optional<Proto> proto = parseProtocol(f["protocol"]);
    if (!proto) continue;
    port.proto = *proto;
    es.ports.push_back(std::move(port));
  }
  return es;
}

// split.smi-spec.io/v1alpha2+: a plain, whole, non-negative YAML integer.
int64_t parseWeight(const Field& f) {
  f.required().expect(f.node().IsScalar(), "a whole number");
  const std::string what = "weight " + describe(f.node());
  switch (classify(f.node())) {
    case ScalarType::kInt: {
      const std::optional<int64_t> v = f.integer(false);
      if (!v) fail(f.path() + ": " + what + " is out of range");
      if (*v < 0) fail(f.path() + ": " + what + " is negative; weights must not be negative");
      return *v;
    }
    case ScalarType::kFloat: {
      // .inf and .nan are YAML floats; strtod does not read them.
      const std::string& text = f.node().Scalar();
      if (text.find_first_of("iInN") != std::string::npos)
        fail(f.path() + ": " + what + " is not a number");
      const double d = std::strtod(text.c_str(), nullptr);
      if (d != std::floor(d))
        fail(f.path() + ": " + what + " is fractional; weights must be whole numbers");
      fail(f.path() + ": " + what + " must be written as an integer");
    }
    case ScalarType::kString:
      fail(f.path() + ": " + what +
           " is not a number (a string); weights are plain integers since v1alpha2");
    case ScalarType::kBool:
      break;
  }
  fail(f.path() + ": " + what + " is not a number");
}

// Kubernetes resource.Quantity ("500m", "1", "1.5", "2k", "1Gi") to its value
// in milli-units. nullopt with `why` set when it cannot be one.
std::optional<int64_t> quantityToMilli(const std::string& q, std::string& why) {
  size_t i = 0;
  bool negative = false;
  if (i < q.size() && (q[i] == '+' || q[i] == '-')) negative = q[i++] == '-';
  std::string digits;  // integer and fraction digits, without the point
  int fraction = 0;
  bool point = false;
  for (; i < q.size(); ++i) {
    if (q[i] >= '0' && q[i] <= '9') {
      digits += q[i];
      fraction += point;
    } else if (q[i] == '.' && !point) {
      point = true;
    } else {
      break;
    }
  }
  if (digits.empty()) {
    why = "is not a quantity";
    return std::nullopt;
  }
  // Milli-units per unit of each suffix.
  static const std::map<std::string, int64_t> kMilli = {
      {"m", 1},
      {"", 1000},
      {"k", 1000LL * 1000},
      {"M", 1000LL * 1000 * 1000},
      {"G", 1000LL * 1000 * 1000 * 1000},
      {"Ki", 1024LL * 1000},
      {"Mi", 1024LL * 1024 * 1000},
      {"Gi", 1024LL * 1024 * 1024 * 1000},
  };
  const std::string suffix = q.substr(i);
  const auto unit = kMilli.find(suffix);
  if (unit == kMilli.end()) {
    why = "has an unsupported suffix " + quote(suffix) + " (m, k, M, G, Ki, Mi, Gi or none)";
    return std::nullopt;
  }
  while (fraction > 0 && digits.back() == '0') {
    digits.pop_back();
    --fraction;
  }
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size()));
  if (digits.empty()) return 0;  // zero, whatever its sign
  if (negative) {
    why = "is negative; weights must not be negative";
    return std::nullopt;
  }
  if (digits.size() > 38) {  // 10^38 still fits in 128 bits
    why = "has too many digits";
    return std::nullopt;
  }
  unsigned __int128 milli = 0;
  for (const char c : digits) milli = milli * 10 + static_cast<unsigned>(c - '0');
  const unsigned __int128 unit_milli = static_cast<unsigned __int128>(unit->second);
  if (milli > ~static_cast<unsigned __int128>(0) / unit_milli) {
    why = "is out of range";
    return std::nullopt;
  }
  milli *= unit_milli;
  for (int k = 0; k < fraction; ++k, milli /= 10) {
    if (milli % 10 != 0) {
      why = "is not a whole number of milli-units";
      return std::nullopt;
    }
  }
  if (milli > static_cast<unsigned __int128>(INT64_MAX)) {
    why = "is out of range";
    return std::nullopt;
  }
  return static_cast<int64_t>(milli);
}

// split.smi-spec.io/v1alpha1: a resource.Quantity, written as a YAML number
// or string; normalised to milli-units so mixed suffixes keep their ratio.
int64_t parseQuantityWeight(const Field& f) {
  f.required().expect(f.node().IsScalar() && classify(f.node()) != ScalarType::kBool,
                      "a quantity such as 1 or \"500m\"");
  std::string why;
  const std::optional<int64_t> v = quantityToMilli(f.node().Scalar(), why);
  if (!v) fail(f.path() + ": weight " + describe(f.node()) + " " + why);
  return *v;
}

// A TrafficSplit's Service, as written (objects.h), to its name alone. The
// spec keeps a split within its namespace: a name elsewhere is an error, never
// a Service that happens to share the first label.
std::string resolveSplitService(const Field& f, TrafficSplit* ts) {
  const std::string written = f.name();
  ServiceName n;
  std::string why;
  if (!::smik::splitServiceName(written, &n, &why)) fail(f.path() + ": " + quote(written) + ": " + why);
  if (!n.ns.empty() && n.ns != ts->meta.ns)
    fail(f.path() + ": " + quote(written) + " names a Service in namespace " + quote(n.ns) +
         "; a TrafficSplit's Services are in its own namespace (" + quote(ts->meta.ns) + ")");
  if (!n.domain.empty()) ts->qualified.push_back({f.path(), written, n.domain});
  return n.name;
}

// All versions share spec.service and spec.backends; v1alpha3+ add `matches`
// (pruned by the API server on older versions, so not read there).
TrafficSplit parseTrafficSplit(const Field& doc, ObjectMeta meta, const std::string& version) {
  TrafficSplit ts;
  ts.meta = std::move(meta);
  ts.original_version = version;
  const Field spec = doc["spec"].required();
  ts.service = resolveSplitService(spec["service"], &ts);
  for (const Field& b : spec["backends"].required().items()) {
    TrafficSplitBackend backend;
    backend.service = resolveSplitService(b["service"], &ts);
    backend.weight =
        version == "v1alpha1" ? parseQuantityWeight(b["weight"]) : parseWeight(b["weight"]);
    ts.backends.push_back(std::move(backend));
  }
  if (version == "v1alpha3" || version == "v1alpha4") {
    for (const Field& m : spec["matches"].items()) {
      const std::string kind = m["kind"].name();
      if (kind != "HTTPRouteGroup")
        fail(m["kind"].path() + ": unsupported match kind " + quote(kind) +
             " (only HTTPRouteGroup)");
      ts.match_names.push_back(m["name"].name());
    }
  }
  ts.has_matches = !ts.match_names.empty();
  return ts;
}

// `source`: a source may also be smik's Host subject (objects.h).
Subject parseSubject(const Field& f, const std::string& tt_namespace, bool source) {
  Subject s;
  s.kind = f["kind"].name();
  if (source && s.isHost()) {
    s.name = f["name"].name();
    if (s.name != kHostSubjectName)
      fail(f["name"].path() + ": a Host source is named " + quote(kHostSubjectName) +
           " (the destination's own node), not " + quote(s.name));
    if (f["namespace"].present()) fail(f["namespace"].path() + ": a Host source has no namespace");
    return s;
  }
  if (s.kind != "ServiceAccount")
    fail(f["kind"].path() + ": unsupported subject kind " + quote(s.kind) +
         (source ? " (ServiceAccount, or Host for the node itself)" : " (only ServiceAccount)"));
  s.name = f["name"].name();
  s.ns = f["namespace"].str().value_or("");
  if (s.ns.empty()) s.ns = tt_namespace;
  return s;
}

TrafficRule parseRule(const Field& f, bool allow_udp) {
  TrafficRule r;
  r.kind = f["kind"].name();
  if (r.kind != "HTTPRouteGroup" && r.kind != "TCPRoute" && (r.kind != "UDPRoute" || !allow_udp))
    fail(f["kind"].path() + ": unsupported rule kind " + quote(r.kind) +
         (r.kind == "UDPRoute" ? " (needs access.smi-spec.io/v1alpha3)" : ""));
  r.name = f["name"].name();
  for (const Field& m : f["matches"].items()) r.matches.push_back(m.name());
  return r;
}

// v1alpha1 has no `spec` and calls the rules `specs`; v1alpha1/2 have
// destination.port; v1alpha3 requires rules and sources (possibly empty).
// A destination.port on v1alpha3 is ignored: the API server prunes it.
TrafficTarget parseTrafficTarget(const Field& doc, ObjectMeta meta, const std::string& version) {
  TrafficTarget tt;
  tt.meta = std::move(meta);
  tt.original_version = version;
  const bool v1 = version == "v1alpha1";
  const bool v3 = version == "v1alpha3";
  const Field body = v1 ? doc : doc["spec"].required();

  const Field dest = body["destination"].required();
  tt.destination = parseSubject(dest, tt.meta.ns, false);
  if (!v3 && dest["port"].present()) tt.legacy_port = parsePort(dest["port"], true);

  const Field rules = body[v1 ? "specs" : "rules"];
  const Field sources = body["sources"];
  if (v3) {
    rules.required();
    sources.required();
  }
  for (const Field& r : rules.items()) tt.rules.push_back(parseRule(r, v3));
  for (const Field& s : sources.items()) tt.sources.push_back(parseSubject(s, tt.meta.ns, true));
  return tt;
}

// Routes older than specs v1alpha4 carry no ports: all ports.
L4Route parseL4Route(const Field& doc, ObjectMeta meta, Proto proto, const std::string& version) {
  L4Route r;
  r.meta = std::move(meta);
  r.proto = proto;
  if (version != "v1alpha4") return r;
  const Field ports = doc["spec"]["matches"]["ports"].required();
  for (const Field& p : ports.items()) r.ports.push_back(parsePort(p, false));
  return r;
}

// The CRD types headers as a list of single-entry maps; the spec prose shows a
// map. Both are accepted.
std::vector<std::pair<std::string, std::string>> parseHeaders(const Field& f) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!f.present()) return out;
  f.expect(f.node().IsSequence() || f.node().IsMap(), "a list or a map");
  std::vector<Field> maps = f.node().IsMap() ? std::vector<Field>{f} : f.items();
  for (const Field& m : maps) {
    m.expect(m.node().IsMap(), "a map");
    for (const auto& [key, value] : m.entries()) out.emplace_back(key, value.str().value_or(""));
  }
  return out;
}

// A regex the kernel's judge cannot run (outside the subset, or a DFA over
// the state budget) rejects its HTTPRouteGroup: the last good version stays.
void checkHttpRegex(const std::string& path, const std::string& regex, compile::http::Anchor anchor) {
  namespace http = compile::http;
  auto dfa = http::compileDfa({{regex, anchor}});
  if (auto* e = std::get_if<http::RegexError>(&dfa))
    fail(path + ": " + e->describe({{regex, anchor}}) + " (the kernel's HTTP judge cannot run it)");
}

HttpRouteGroup parseHttpRouteGroup(const Field& doc, ObjectMeta meta, const std::string& version) {
  static const std::set<std::string> kMethods = {"*",      "GET",     "HEAD",    "PUT",   "POST",
                                                 "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  HttpRouteGroup g;
  g.meta = std::move(meta);
  const bool top_level = version == "v1alpha1" || version == "v1alpha2";
  const Field matches = (top_level ? doc["matches"] : doc["spec"]["matches"]).required();
  for (const Field& m : matches.items()) {
    HttpMatch hm;
    hm.name = m["name"].name();
    hm.path_regex = m["pathRegex"].str().value_or("");
    for (const Field& method : m["methods"].items()) {
      hm.methods.push_back(method.name());
      if (!kMethods.count(hm.methods.back()))
        fail(method.path() + ": unsupported method " + quote(hm.methods.back()));
    }
    hm.headers = parseHeaders(m["headers"]);
    checkHttpRegex(m["pathRegex"].path(), hm.path_regex, compile::http::Anchor::kPrefix);
    for (const auto& [name, value] : hm.headers) {
      namespace http = compile::http;
      const std::string path = m["headers"].path() + "." + name;
      if (!http::isHeaderName(name)) fail(path + ": a header name is a token (RFC 9110 5.1)");
      // As the kernel runs it: the lowercased name and ':' before the value.
      const auto dfa = http::compileHeaderDfa({{name, value}});
      if (const auto* e = std::get_if<http::RegexError>(&dfa))
        fail(path + ": " + e->why + " (the kernel's HTTP judge cannot run it)");
    }
    g.matches.push_back(std::move(hm));
  }
  return g;
}

// Kinds smik reads but does not use, by API group (any version).
const std::map<std::string, std::string>& ignoredKinds() {
  static const std::map<std::string, std::string> kinds = {
      {"Endpoints", ""},
      {"ConfigMap", ""},
      {"Secret", ""},
      {"Job", "batch"},
      {"CronJob", "batch"},
      {"APIService", "apiregistration.k8s.io"},
      {"CustomResourceDefinition", "apiextensions.k8s.io"},
  };
  return kinds;
}

bool isOneOf(const std::string& v, std::initializer_list<const char*> set) {
  for (const char* s : set)
    if (v == s) return true;
  return false;
}

// nullopt: a kind that is counted as ignored.
std::optional<Object> parseObject(const Field& doc, const std::string& api_version,
                                  const std::string& kind) {
  const size_t slash = api_version.find('/');
  const std::string group = slash == std::string::npos ? "" : api_version.substr(0, slash);
  const std::string version =
      slash == std::string::npos ? api_version : api_version.substr(slash + 1);
  const bool core = api_version == "v1";
  const bool access = group == "access.smi-spec.io";
  const bool specs = group == "specs.smi-spec.io";
  const bool split = group == "split.smi-spec.io";
  const auto unsupported = [&] {
    fail("unsupported apiVersion " + quote(api_version) + " for " + kind);
  };

  if (kind == "Namespace") {
    if (!core) unsupported();
    return Namespace{parseMeta(doc, false)};
  }
  if (kind == "ServiceAccount") {
    if (!core) unsupported();
    return ServiceAccount{parseMeta(doc, true)};
  }
  if (kind == "Pod") {
    if (!core) unsupported();
    return parsePod(doc, parseMeta(doc, true));
  }
  if (kind == "TrafficTarget") {
    if (!access || !isOneOf(version, {"v1alpha1", "v1alpha2", "v1alpha3"})) unsupported();
    return parseTrafficTarget(doc, parseMeta(doc, true), version);
  }
  if (kind == "TCPRoute" || kind == "HTTPRouteGroup") {
    if (!specs || !isOneOf(version, {"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}))
      unsupported();
    if (kind == "TCPRoute") return parseL4Route(doc, parseMeta(doc, true), Proto::kTcp, version);
    return parseHttpRouteGroup(doc, parseMeta(doc, true), version);
  }
  if (kind == "UDPRoute") {
    if (!specs || version != "v1alpha4") unsupported();
    return parseL4Route(doc, parseMeta(doc, true), Proto::kUdp, version);
  }
  if (kind == "Service") {
    if (!core) unsupported();
    return parseService(doc, parseMeta(doc, true));
  }
  if (kind == "EndpointSlice") {
    if (group != "discovery.k8s.io" || !isOneOf(version, {"v1", "v1beta1"})) unsupported();
    return parseEndpointSlice(doc, parseMeta(doc, true));
  }
  if (kind == "TrafficSplit") {
    if (!split || !isOneOf(version, {"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}))
      unsupported();
    return parseTrafficSplit(doc, parseMeta(doc, true), version);
  }
  if (isOneOf(kind, {"Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"})) {
    if (group != "apps") unsupported();
    return Workload{parseMeta(doc, true), kind};
  }
  const auto it = ignoredKinds().find(kind);
  if (it == ignoredKinds().end()) fail("unknown kind " + quote(kind));
  if (it->second.empty() ? !core : group != it->second) unsupported();
  parseMeta(doc, true);
  return std::nullopt;
}

// Best effort: names the object in errors found before or
// while its metadata is validated.
ObjectRef peekRef(const Node& doc) {
  ObjectRef ref;
  const auto scalar = [](const Node& n) {
    return n.IsDefined() && n.IsScalar() ? n.Scalar() : std::string();
  };
  if (!doc.IsMap()) return ref;
  ref.kind = scalar(doc["kind"]);
  const Node meta = doc["metadata"];
  if (meta.IsDefined() && meta.IsMap()) {
    ref.name = scalar(meta["name"]);
    ref.ns = scalar(meta["namespace"]);
  }
  // Scope is only known for kinds smik reads.
  static const std::set<std::string> kNamespaced = {
      "ServiceAccount", "Pod",     "TrafficTarget", "TCPRoute",    "UDPRoute",
      "HTTPRouteGroup", "Service", "EndpointSlice", "TrafficSplit"};
  const bool namespaced =
      kNamespaced.count(ref.kind) || (ignoredKinds().count(ref.kind) && ref.kind != "APIService" &&
                                      ref.kind != "CustomResourceDefinition");
  if (ref.kind == "Namespace") ref.ns.clear();
  if (namespaced && ref.ns.empty() && !ref.name.empty()) ref.ns = "default";
  return ref;
}

// The shape of a file, checked on the YAML reader's events before any node
// is built: nesting depth, and what aliases would add if every one were
// copied out. yaml-cpp itself shares an aliased node rather than copying it,
// but every walk of the tree (ours, a List's items) visits it once per alias.
class ShapeGuard : public YAML::EventHandler {
 public:
  struct Exceeded {
    std::string reason;
    YAML::Mark mark;
  };

  void OnDocumentStart(const YAML::Mark& mark) override {
    // yaml-cpp 0.7 never consumes a ',' outside any collection ("{a: 1},"):
    // it starts document after document at the same token, forever
    // (upstream issue 1040; fixed in 0.8). A document that starts where the
    // last one started is that loop.
    if (documents_ > 0 && mark.pos <= last_document_pos_)
      throw Exceeded{"a ',' outside any list or map", mark};
    ++documents_;
    last_document_pos_ = mark.pos;
    frames_.clear();
    anchors_.clear();  // anchors are per document
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t anchor) override { add(1, anchor); }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t anchor,
                const std::string&) override {
    add(1, anchor);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    const auto it = anchors_.find(anchor);
    // An anchor still open is one of this node's own parents: a cycle.
    if (it == anchors_.end()) throw Exceeded{"an alias names a node that contains it", mark};
    alias_nodes_ = saturatingAdd(alias_nodes_, it->second);
    if (alias_nodes_ > kMaxAliasNodes)
      throw Exceeded{"aliases expand to more than " + std::to_string(kMaxAliasNodes) + " nodes",
                     mark};
    add(it->second, YAML::NullAnchor);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(mark, anchor);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(mark, anchor);
  }
  void OnMapEnd() override { close(); }

 private:
  struct Frame {
    YAML::anchor_t anchor;
    uint64_t nodes;  // itself and everything under it, aliases copied out
  };

  static uint64_t saturatingAdd(uint64_t a, uint64_t b) {
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
  }
  void open(const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (frames_.size() >= kMaxNestingDepth)
      throw Exceeded{"nested deeper than " + std::to_string(kMaxNestingDepth) + " levels", mark};
    frames_.push_back({anchor, 1});
  }
  void close() {
    const Frame f = frames_.back();
    frames_.pop_back();
    add(f.nodes, f.anchor);
  }
  // A finished node of `nodes` nodes: counted into its parent, remembered
  // under its anchor.
  void add(uint64_t nodes, YAML::anchor_t anchor) {
    if (anchor != YAML::NullAnchor) anchors_[anchor] = nodes;
    if (!frames_.empty()) frames_.back().nodes = saturatingAdd(frames_.back().nodes, nodes);
  }

  std::vector<Frame> frames_;
  std::map<YAML::anchor_t, uint64_t> anchors_;
  uint64_t alias_nodes_ = 0;  // the whole file's
  size_t documents_ = 0;
  int last_document_pos_ = 0;
};

// "document at line 3: nested deeper than 100 levels", or empty when the
// text's shape is within bounds. Syntax errors are left to the reader proper.
std::string shapeError(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  ShapeGuard guard;
  try {
    while (parser.HandleNextDocument(guard)) {
    }
  } catch (const ShapeGuard::Exceeded& e) {
    return "line " + std::to_string(e.mark.line + 1) + ": " + e.reason;
  } catch (const std::exception&) {
    // A syntax error, reported as such by the reader proper.
  }
  return "";
}

void parseDocument(const Node& node, bool in_list, const std::string& file, ParseResult& out) {
  if (!node.IsDefined() || node.IsNull()) return;
  ObjectRef ref;
  try {
    ref = peekRef(node);
    const Field doc(node, "");
    doc.expect(node.IsMap(), "a map");
    const std::string api_version = doc["apiVersion"].name();
    const std::string kind = doc["kind"].name();
    if (kind == "List") {
      if (in_list) fail("a List inside a List");
      if (api_version != "v1") fail("unsupported apiVersion " + quote(api_version) + " for List");
      for (const Field& item : doc["items"].items()) parseDocument(item.node(), true, file, out);
      return;
    }
    if (std::optional<Object> obj = parseObject(doc, api_version, kind)) {
      out.objects.push_back(std::move(*obj));
    } else {
      ++out.ignored;
    }
  } catch (const Invalid& e) {
    std::string reason = e.reason;
    // Without a name the object can only be found by its position.
    if (ref.name.empty())
      reason += " (document at line " + std::to_string(node.line() + 1) + ")";
    out.errors.push_back({file, ref, std::move(reason)});
  } catch (const std::exception& e) {
    out.errors.push_back({file, ref, std::string("internal error: ") + e.what()});
  }
}

}  // namespace

ParseResult parseNode(const YAML::Node& document, const std::string& file) {
  ParseResult out;
  try {
    parseDocument(Node(document), false, file, out);
  } catch (const std::exception& e) {
    out.errors.push_back({file, {}, std::string("cannot parse: ") + e.what()});
  }
  return out;
}

ParseResult parseJson(const nlohmann::json& document, const std::string& file) {
  ParseResult out;
  try {
    parseDocument(Node(&document), false, file, out);
  } catch (const std::exception& e) {
    out.errors.push_back({file, {}, std::string("cannot parse: ") + e.what()});
  }
  return out;
}

ParseResult parseManifests(std::string_view text, const std::string& file) {
  ParseResult out;
  if (text.size() > kMaxManifestBytes) {
    out.errors.push_back({file,
                          {},
                          "file too large (" + std::to_string(text.size()) + " bytes, limit " +
                              std::to_string(kMaxManifestBytes) + ")"});
    return out;
  }
  const std::string copy(text);
  if (std::string shape = shapeError(copy); !shape.empty()) {
    out.errors.push_back({file, {}, "rejected before parsing: " + shape});
    return out;
  }
  try {
    for (const YAML::Node& doc : YAML::LoadAll(copy)) parseDocument(Node(doc), false, file, out);
  } catch (const YAML::Exception& e) {
    std::string reason = "YAML syntax error";
    if (!e.mark.is_null())
      reason += " at line " + std::to_string(e.mark.line + 1) + ", column " +
                std::to_string(e.mark.column + 1);
    out.errors.push_back({file, {}, reason + ": " + e.msg});
  } catch (const std::exception& e) {
    out.errors.push_back({file, {}, std::string("cannot parse: ") + e.what()});
  } catch (...) {
    out.errors.push_back({file, {}, "cannot parse: unknown error"});
  }
  return out;
}

}  // namespace smik::model
