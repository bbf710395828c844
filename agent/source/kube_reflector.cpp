#include "agent/source/kube_reflector.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <set>
#include <thread>

#include "agent/model/parse.h"

namespace smik::kube {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

std::string urlEncode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

std::string stringAt(const json& j, const char* a, const char* b) {
  if (!j.is_object()) return "";
  auto ia = j.find(a);
  if (ia == j.end() || !ia->is_object()) return "";
  auto ib = ia->find(b);
  return ib != ia->end() && ib->is_string() ? ib->get<std::string>() : "";
}

std::string resourceVersionOf(const json& object) {
  return stringAt(object, "metadata", "resourceVersion");
}

// "HTTP 500: etcdserver: leader changed" from a Status body, if it is one.
std::string describeStatus(long code, const json& status) {
  std::string out = "HTTP " + std::to_string(code);
  if (status.is_object() && status.contains("message") && status["message"].is_string())
    out += ": " + status["message"].get<std::string>();
  return out;
}

// client-go's isTooLargeResourceVersionError: this API server is behind the
// version we ask for (HA skew after a failover); only a relist helps.
bool isTooLargeResourceVersion(const json& status) {
  if (!status.is_object()) return false;
  auto details = status.find("details");
  if (details == status.end() || !details->is_object()) return false;
  auto causes = details->find("causes");
  if (causes == details->end() || !causes->is_array()) return false;
  return std::any_of(causes->begin(), causes->end(), [](const json& c) {
    if (!c.is_object()) return false;
    const auto reason = c.find("reason");
    return reason != c.end() && *reason == "ResourceVersionTooLarge";
  });
}

std::optional<milliseconds> parseRetryAfter(const std::map<std::string, std::string>& headers) {
  auto it = headers.find("retry-after");
  if (it == headers.end() || it->second.empty()) return std::nullopt;
  // The HTTP-date form is legal but the API server only sends seconds;
  // anything else falls back to the ordinary backoff.
  if (!std::all_of(it->second.begin(), it->second.end(), ::isdigit)) return std::nullopt;
  return milliseconds(std::strtoll(it->second.c_str(), nullptr, 10) * 1000);
}

// Deeper than `limit` brackets, strings skipped: one pass over the text,
// before anything is built from it.
bool jsonNestedDeeperThan(std::string_view text, size_t limit) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

// Built-in kinds' list items carry no kind and apiVersion.
void normalise(json* object, const Resource& resource) {
  if (!object->is_object()) return;
  const auto missing = [&](const char* k) {
    const auto it = object->find(k);
    return it == object->end() || *it == "";
  };
  if (missing("kind")) (*object)["kind"] = resource.kind;
  if (missing("apiVersion")) (*object)["apiVersion"] = resource.api_version;
}

}  // namespace

json parseApiJson(std::string_view text, std::string* why) {
  if (jsonNestedDeeperThan(text, kMaxApiJsonDepth)) {
    *why = "nests deeper than " + std::to_string(kMaxApiJsonDepth) + " levels";
    return json(json::value_t::discarded);
  }
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) *why = "is not JSON";
  return j;
}

std::optional<ListPage> decodeListPageWhole(std::string_view body, const Resource& resource,
                                       std::string* err) {
  std::string why = "is not a JSON object";
  json doc = parseApiJson(body, &why);
  if (doc.is_discarded() || !doc.is_object()) {
    *err = "response " + why;
    return std::nullopt;
  }
  ListPage page;
  // The list's own version, never an item's: items come in key order,
  // not version order, so an item's version can be older than the list.
  page.resource_version = stringAt(doc, "metadata", "resourceVersion");
  page.next = stringAt(doc, "metadata", "continue");
  const auto items = doc.find("items");
  if (items == doc.end() || !items->is_array()) return page;
  for (json& item : *items) {
    if (!item.is_object()) {
      *err = "a list item is not a JSON object";
      return std::nullopt;
    }
    normalise(&item, resource);
    std::string key = Reflector::keyOf(item);
    page.items.emplace_back(std::move(key), std::move(item));
  }
  return page;
}

std::optional<WatchEvent> decodeWatchEventWhole(std::string_view line, const Resource& resource,
                                           std::string* err) {
  std::string why = "is not a JSON object";
  json ev = parseApiJson(line, &why);
  if (ev.is_discarded() || !ev.is_object()) {
    *err = "event " + why;
    return std::nullopt;
  }
  const auto obj = ev.find("object");
  if (obj == ev.end() || !obj->is_object()) {
    *err = "event without object";
    return std::nullopt;
  }
  const auto type = ev.find("type");
  WatchEvent out;
  out.type = type != ev.end() && type->is_string() ? type->get<std::string>() : "";
  out.object = std::move(*obj);
  // An ERROR's object is a Status, not one of the collection's.
  if (out.type != "ERROR") normalise(&out.object, resource);
  out.key = Reflector::keyOf(out.object);
  return out;
}

namespace {

// What is kept of an object, by where in it a value sits. A value under a
// dropped key is read past and never built: a real pod is ~2.5 KiB of JSON
// (managedFields, container specs, conditions) of which the parser reads a
// few fields, and building all of it as a DOM cost more than parsing.
enum class Keep {
  kAll,           // everything below
  kObject,        // one object of the collection: by kind (see childOf)
  kMetadata,      // the fields some parser or an Event reads
  kPodSpec,       // what parsePod reads of spec
  kPodContainers, // each container's ports
  kContainer,
  kPodStatus,
};

// What the collection's parser reads of its objects' top level.
enum class Shape {
  kPod,           // metadata, and a few fields of spec and status
  kMetadataOnly,  // namespaces, service accounts, workloads: names and owners
  kWhole,         // SMI kinds, Services, EndpointSlices: all but metadata
};

Shape shapeOf(const Resource& r) {
  if (r.api_version == "v1" && r.kind == "Pod") return Shape::kPod;
  if ((r.api_version == "v1" && (r.kind == "Namespace" || r.kind == "ServiceAccount")) ||
      (r.api_version == "apps/v1" &&
       (r.kind == "Deployment" || r.kind == "ReplicaSet" || r.kind == "DaemonSet" ||
        r.kind == "StatefulSet")))
    return Shape::kMetadataOnly;
  return Shape::kWhole;
}

bool isOneOf(const std::string& key, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (key == k) return true;
  return false;
}

// The rule for `key` under a value kept by `parent`; nullopt: dropped.
std::optional<Keep> childOf(Keep parent, Shape shape, const std::string& key) {
  switch (parent) {
    case Keep::kAll:
      return Keep::kAll;
    case Keep::kObject:
      if (key == "metadata") return Keep::kMetadata;
      if (key == "apiVersion" || key == "kind" || shape == Shape::kWhole) return Keep::kAll;
      if (shape == Shape::kPod && key == "spec") return Keep::kPodSpec;
      if (shape == Shape::kPod && key == "status") return Keep::kPodStatus;
      return std::nullopt;
    case Keep::kMetadata:
      // uid and resourceVersion: Events name the object by them, and the
      // version is what the reflector tells changes by.
      if (isOneOf(key, {"name", "namespace", "labels", "creationTimestamp", "ownerReferences",
                        "uid", "resourceVersion"}))
        return Keep::kAll;
      return std::nullopt;
    case Keep::kPodSpec:
      if (isOneOf(key, {"serviceAccountName", "serviceAccount", "nodeName", "hostNetwork"}))
        return Keep::kAll;
      if (key == "containers") return Keep::kPodContainers;
      return std::nullopt;
    case Keep::kPodContainers:
      return Keep::kContainer;  // an array's elements
    case Keep::kContainer:
      if (key == "ports") return Keep::kAll;
      return std::nullopt;
    case Keep::kPodStatus:
      if (isOneOf(key, {"phase", "podIP", "podIPs"})) return Keep::kAll;
      return std::nullopt;
  }
  return std::nullopt;
}

// A rule is for one shape of value; any other shape is kept whole, for the
// parser to name what is wrong with it.
Keep forShape(Keep rule, bool is_array) {
  const bool wants_array = rule == Keep::kPodContainers;
  return rule == Keep::kAll || is_array == wants_array ? rule : Keep::kAll;
}

// nlohmann's SAX events to a list page's items or a watch event's object,
// each built with only what is kept. It gives up (false, and the caller
// decodes the text whole) on anything out of the ordinary, so that its
// result is always what the whole decode would give: invalid JSON, nesting
// past the limits, a duplicated top-level key, an item that is not an
// object, or an object that names a kind other than its collection's.
class TrimmingReader {
 public:
  enum class Mode { kListPage, kWatchEvent };
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  TrimmingReader(Mode mode, const Resource& resource)
      : mode_(mode), resource_(resource), shape_(shapeOf(resource)) {}

  std::optional<ListPage> page;     // kListPage, when read
  // kListPage: called with the continue token when the list's metadata has
  // been read (a hint: see decodeListPageStream).
  const std::function<void(const std::string&)>* on_meta = nullptr;
  std::optional<WatchEvent> event;  // kWatchEvent, when read

  bool null() { return value(json(nullptr)); }
  bool boolean(bool v) { return value(json(v)); }
  bool number_integer(number_integer_t v) { return value(json(v)); }
  bool number_unsigned(number_unsigned_t v) { return value(json(v)); }
  bool number_float(number_float_t v, const string_t&) { return value(json(v)); }
  bool string(string_t& v) {
    if (depth_ == 1 && skip_ == 0 && mode_ == Mode::kWatchEvent && root_key_ == "type") {
      type_ = std::move(v);
      has_type_ = true;
      return true;
    }
    return value(json(std::move(v)));
  }
  bool binary(binary_t&) { return false; }  // not in JSON text
  bool start_object(std::size_t) { return open(false); }
  bool start_array(std::size_t) { return open(true); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(string_t& k) {
    if (skip_ > 0) return true;
    if (depth_ == 1) {
      // A top-level key twice: the whole decode keeps the last, this one
      // would have used both.
      if (!seen_.insert(k).second && (k == "items" || k == "metadata" || k == "type" || k == "object"))
        return false;
      root_key_ = std::move(k);
      return true;
    }
    Frame& f = frames_.back();
    f.child = childOf(f.keep, shape_, k);
    f.key = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    return false;
  }

  // After a complete read: what the whole decode would give.
  bool finish() {
    if (mode_ == Mode::kListPage) {
      if (!items_seen_) {
        // No items array: an empty page, as the whole decode reads it.
        if (seen_.count("items")) return false;  // items of another type
      }
      ListPage p;
      p.resource_version = stringAt(root_meta_, "metadata", "resourceVersion");
      p.next = stringAt(root_meta_, "metadata", "continue");
      p.items = std::move(items_);
      page = std::move(p);
      return true;
    }
    if (!object_done_ || !has_type_) return false;  // let the whole decode say what is missing
    if (any_trim_ && type_ == "ERROR") return false;
    WatchEvent ev;
    ev.type = std::move(type_);
    ev.object = std::move(current_);
    if (ev.type != "ERROR") normalise(&ev.object, resource_);
    ev.key = Reflector::keyOf(ev.object);
    event = std::move(ev);
    return true;
  }

 private:
  struct Frame {
    json* value;
    Keep keep;
    std::string key;            // an object's key being read
    std::optional<Keep> child;  // what is kept of that key's value
  };

  // Where a new value goes: the frame on top, under its current key.
  // nullptr: dropped.
  json* slot() {
    Frame& f = frames_.back();
    if (f.value->is_array()) {
      f.value->push_back(json());
      return &f.value->back();
    }
    if (!f.child) return nullptr;
    return &(*f.value)[f.key];
  }

  bool value(json&& v) {
    if (skip_ > 0) return true;
    if (depth_ == 0) return false;  // a bare scalar: not an object
    if (depth_ == 1) {
      if (mode_ == Mode::kWatchEvent && root_key_ == "type") return false;  // not a string
      return true;  // other top-level scalars are not read
    }
    if (frames_.empty()) return false;  // a list item that is not an object
    if (json* s = slot()) *s = std::move(v);
    return true;
  }

  bool open(bool is_array) {
    ++depth_;
    if (depth_ > static_cast<int>(kMaxApiJsonDepth)) return false;
    if (object_depth_ > 0 && depth_ - object_depth_ + 1 > static_cast<int>(model::kMaxNestingDepth))
      return false;  // the cache names it, from the whole decode
    if (skip_ > 0) {
      ++skip_;
      return true;
    }
    if (depth_ == 1) return !is_array;  // the page or event: an object
    if (depth_ == 2) return openTopLevel(is_array);
    if (depth_ == 3 && in_items_) {
      if (is_array) return false;  // "a list item is not a JSON object"
      return startObject(Keep::kObject);
    }
    if (frames_.empty()) {
      ++skip_;  // under a top-level key that is not read
      return true;
    }
    Frame& parent = frames_.back();
    const std::optional<Keep> rule =
        parent.value->is_array() ? std::optional<Keep>(childOf(parent.keep, shape_, "")) : parent.child;
    json* s = slot();
    if (!s || !rule) {
      ++skip_;
      return true;
    }
    *s = is_array ? json::array() : json::object();
    frames_.push_back({s, forShape(*rule, is_array), {}, std::nullopt});
    return true;
  }

  bool openTopLevel(bool is_array) {
    if (mode_ == Mode::kListPage) {
      if (root_key_ == "items") {
        if (!is_array) return false;
        in_items_ = true;
        items_seen_ = true;
        return true;
      }
      if (root_key_ == "metadata") {
        root_meta_ = json::object();
        current_ = is_array ? json::array() : json::object();
        frames_.push_back({&current_, Keep::kAll, {}, std::nullopt});
        meta_open_ = true;
        return true;
      }
      ++skip_;
      return true;
    }
    if (root_key_ == "object") {
      if (is_array) return false;  // "event without object"
      // An ERROR's object is a Status, not one of the collection's: whole.
      // An object before its type (nlohmann prints keys sorted; API
      // servers put the type first) is trimmed, and read again whole if
      // the type then says ERROR.
      return startObject(has_type_ && type_ == "ERROR" ? Keep::kAll : Keep::kObject);
    }
    ++skip_;
    return true;
  }

  bool startObject(Keep keep) {
    current_ = json::object();
    object_depth_ = depth_;
    // Trimmed by kind: it must be of the collection's kind (checked at its end).
    trimmed_ = keep == Keep::kObject && shape_ != Shape::kWhole;
    any_trim_ = keep == Keep::kObject;
    frames_.push_back({&current_, keep, {}, std::nullopt});
    return true;
  }

  bool close() {
    --depth_;
    if (skip_ > 0) {
      --skip_;
      return true;
    }
    if (depth_ == 0) return true;
    if (depth_ == 1 && in_items_ && mode_ == Mode::kListPage && frames_.empty()) {
      in_items_ = false;  // the items array
      return true;
    }
    if (frames_.empty()) return false;
    frames_.pop_back();
    if (!frames_.empty()) return true;
    if (meta_open_) {
      meta_open_ = false;
      root_meta_["metadata"] = std::move(current_);
      if (on_meta && *on_meta) (*on_meta)(stringAt(root_meta_, "metadata", "continue"));
      return true;
    }
    object_depth_ = 0;
    if (trimmed_ && namesOtherKind(current_)) return false;
    if (mode_ == Mode::kWatchEvent) {
      object_done_ = true;
      return true;
    }
    normalise(&current_, resource_);
    std::string key = Reflector::keyOf(current_);
    items_.emplace_back(std::move(key), std::move(current_));
    current_ = json();
    return true;
  }

  // Trimmed for its collection's kind, but it says it is another: what the
  // parser reads of that kind may have been dropped.
  bool namesOtherKind(const json& object) const {
    const auto other = [&](const char* field, const std::string& want) {
      const auto it = object.find(field);
      return it != object.end() && *it != "" && *it != want;
    };
    return other("kind", resource_.kind) || other("apiVersion", resource_.api_version);
  }

  const Mode mode_;
  const Resource& resource_;
  const Shape shape_;
  int depth_ = 0;  // open objects and arrays
  int skip_ = 0;   // how deep inside a value that is dropped
  std::set<std::string> seen_;  // top-level keys
  std::string root_key_;
  std::vector<Frame> frames_;
  json current_;           // the object (or page metadata) being built
  int object_depth_ = 0;   // depth_ of that object, 0 when none is open
  bool trimmed_ = false;
  bool any_trim_ = false;  // its metadata at least
  bool meta_open_ = false;
  bool in_items_ = false;
  bool items_seen_ = false;
  json root_meta_ = json::object();
  std::vector<std::pair<std::string, json>> items_;
  std::string type_;
  bool has_type_ = false;
  bool object_done_ = false;
};

template <class T>
std::optional<T> readTrimmed(std::string_view text, TrimmingReader::Mode mode,
                             const Resource& resource, std::optional<T> TrimmingReader::*result) {
  TrimmingReader reader(mode, resource);
  if (!json::sax_parse(text.begin(), text.end(), &reader) || !reader.finish()) return std::nullopt;
  return std::move(reader.*result);
}

// A body's pieces as they arrive, read by nlohmann's parser through
// PieceIterator: a step is a pointer bump, the end of a piece pulls the
// next. Every piece is kept, for the whole decode to fall back on.
class PieceReader {
 public:
  explicit PieceReader(const NextPiece& next) : next_(next) {}
  bool more() { return p_ != e_ || refill(); }
  char peek() const { return *p_; }
  void step() { ++p_; }
  // Every piece, the rest of the body pulled first.
  std::string whole() {
    while (refill()) {
    }
    std::string out;
    size_t n = 0;
    for (const auto& piece : pieces_) n += piece.size();
    out.reserve(n);
    for (const auto& piece : pieces_) out += piece;
    return out;
  }

 private:
  bool refill() {
    std::string piece;
    while (!ended_) {
      if (!next_(&piece)) {
        ended_ = true;
        break;
      }
      if (piece.empty()) continue;
      pieces_.push_back(std::move(piece));
      p_ = pieces_.back().data();
      e_ = p_ + pieces_.back().size();
      return true;
    }
    return false;
  }

  const NextPiece& next_;
  std::vector<std::string> pieces_;
  const char* p_ = nullptr;
  const char* e_ = nullptr;
  bool ended_ = false;
};

// An input iterator over a PieceReader; any two compare equal at its end.
struct PieceIterator {
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = char;
  PieceReader* in;
  char operator*() const { return in->peek(); }
  PieceIterator& operator++() {
    in->step();
    return *this;
  }
  PieceIterator operator++(int) {
    PieceIterator was = *this;
    in->step();
    return was;
  }
  friend bool operator==(const PieceIterator& a, const PieceIterator&) { return !a.in->more(); }
  friend bool operator!=(const PieceIterator& a, const PieceIterator&) { return a.in->more(); }
};

}  // namespace

std::optional<ListPage> decodeListPageStream(
    const NextPiece& next, const Resource& resource, std::string* err,
    const std::function<void(const std::string&)>& on_continue) {
  PieceReader in(next);
  {
    TrimmingReader reader(TrimmingReader::Mode::kListPage, resource);
    reader.on_meta = &on_continue;
    if (json::sax_parse(PieceIterator{&in}, PieceIterator{&in}, &reader) && reader.finish())
      return std::move(reader.page);
  }
  return decodeListPageWhole(in.whole(), resource, err);
}

std::optional<ListPage> decodeListPage(std::string_view body, const Resource& resource,
                                       std::string* err) {
  if (auto page = readTrimmed(body, TrimmingReader::Mode::kListPage, resource, &TrimmingReader::page))
    return page;
  return decodeListPageWhole(body, resource, err);
}

std::optional<WatchEvent> decodeWatchEvent(std::string_view line, const Resource& resource,
                                           std::string* err) {
  if (auto ev = readTrimmed(line, TrimmingReader::Mode::kWatchEvent, resource, &TrimmingReader::event))
    return ev;
  return decodeWatchEventWhole(line, resource, err);
}

std::string Resource::path() const {
  const bool core = api_version.find('/') == std::string::npos;
  return (core ? "/api/" : "/apis/") + api_version + "/" + plural;
}

bool LineFramer::feed(std::string_view chunk,
                      const std::function<bool(std::string_view)>& on_line) {
  buf_.append(chunk);
  size_t start = 0;
  bool keep_going = true;
  for (size_t nl; keep_going && (nl = buf_.find('\n', start)) != std::string::npos;
       start = nl + 1) {
    std::string_view line(buf_.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") != std::string_view::npos) keep_going = on_line(line);
  }
  buf_.erase(0, start);
  return keep_going;
}

// One list page's GET on a thread of its own, its body handed to the
// reflector's thread piece by piece as it arrives: the reflector decodes
// page N while page N+1 is already asked for and on its way. Each piece is
// copied by the reader (as the whole body was before) while the transfer
// waits for it, so the body's bytes are held where they always were: in the
// HTTP client's buffer, which past 4 MiB pauses the stream (see
// kube_http.cpp), so a slow decode still holds the server back on this
// stream alone. (Letting the transfer thread copy pieces, or decode, on its
// own heap cost 5-11 MiB of RSS at 50k pods: glibc gives each thread an
// arena, and every page's thread left a partly used one behind.)
class Reflector::PageFetch {
 public:
  PageFetch(Reflector& owner, std::string path, std::string token)
      : owner_(owner), token_(std::move(token)) {
    {
      std::lock_guard lock(owner_.mu_);
      owner_.fetches_.push_back(this);
      if (owner_.stopping_) abandonLocked();
    }
    transfer_ = std::thread([this, path = std::move(path)] { fetch(path); });
  }
  ~PageFetch() {
    {
      std::lock_guard lock(owner_.mu_);
      std::erase(owner_.fetches_, this);
      abandonLocked();  // a no-op for a page read to its end
    }
    transfer_.join();
  }
  PageFetch(const PageFetch&) = delete;
  PageFetch& operator=(const PageFetch&) = delete;

  // The continue token this page was asked with ("" for the first page).
  const std::string& token() const { return token_; }

  // The next piece of a 2xx body into *piece; false at its end, or when
  // the request failed or was abandoned.
  bool next(std::string* piece) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return offered_ || transferred_ || abandoned_; });
    if (abandoned_ || !offered_) return false;
    piece->assign(offer_);
    offered_ = false;
    cv_.notify_all();
    return true;
  }

  // Once the request has ended: its response. *abandoned when stop() gave
  // up on it (its response then says nothing).
  const HttpResponse& response(bool* abandoned) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return transferred_; });
    *abandoned = abandoned_;
    return response_;
  }

 private:
  friend class Reflector;

  // Cancels the request and wakes both sides; owner_.mu_ held.
  void abandonLocked() {
    cancel_.cancel();
    std::lock_guard lock(mu_);
    abandoned_ = true;
    cv_.notify_all();
  }

  void fetch(const std::string& path) {
    HttpResponse r = owner_.http_.get(
        path,
        [&](std::string_view d) {
          // Offered to the reader, and held until it has taken its copy.
          std::unique_lock lock(mu_);
          if (abandoned_) return false;
          offer_ = d;
          offered_ = true;
          cv_.notify_all();
          cv_.wait(lock, [&] { return !offered_ || abandoned_; });
          offered_ = false;
          return !abandoned_;
        },
        cancel_);
    std::lock_guard lock(mu_);
    response_ = std::move(r);
    transferred_ = true;
    cv_.notify_all();
  }

  Reflector& owner_;
  const std::string token_;
  Cancel cancel_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string_view offer_;  // valid while offered_
  bool offered_ = false;
  bool transferred_ = false;
  bool abandoned_ = false;
  HttpResponse response_;
  std::thread transfer_;  // last: started once the rest is ready
};

Reflector::Reflector(HttpClient& http, Resource resource, ReflectorConfig config, OnEvent on_event,
                     OnSynced on_synced)
    : http_(http),
      resource_(std::move(resource)),
      config_(config),
      on_event_(std::move(on_event)),
      on_synced_(std::move(on_synced)),
      rng_(config.seed ? config.seed : std::random_device{}()) {}

std::string Reflector::keyOf(const json& object) {
  const std::string ns = stringAt(object, "metadata", "namespace");
  const std::string name = stringAt(object, "metadata", "name");
  return ns.empty() ? name : ns + "/" + name;
}

void Reflector::run() {
  bool need_list = true;
  // Consecutive relists forced by 410 with no watch progress in between:
  // the first is immediate, later ones back off, so a server that keeps
  // expiring us cannot make us spin list after list.
  int forced_relists = 0;
  while (!stopping()) {
    const bool listing = need_list;
    const Failure f = listing ? list() : watch();
    if (progressed_) forced_relists = 0;
    progressed_ = false;
    switch (f.outcome) {
      case Outcome::kOk:
        // A list forced by 410 keeps its backoff: list, watch, 410, list...
        // succeeds at every step yet must still slow down.
        if (listing && forced_relists == 0) backoff_ = milliseconds(0);
        need_list = false;
        break;
      case Outcome::kStopped:
        return;
      case Outcome::kRelist:
        setError(f.error);
        need_list = true;
        consistent_relist_ = true;
        if (++forced_relists > 1 && !sleepFor(nextBackoff())) return;
        break;
      case Outcome::kNotServed:
        recordFailure(f.error, true);
        // List again when it is back: a CRD installed later starts empty.
        need_list = true;
        if (!sleepFor(config_.not_served_retry)) return;
        break;
      case Outcome::kFailed:
        recordFailure(f.error, false);
        if (!sleepFor(f.retry_after ? std::min(*f.retry_after, config_.retry_after_max)
                                    : nextBackoff()))
          return;
        break;
    }
  }
}

bool Reflector::stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

void Reflector::recordFailure(const std::string& error, bool not_served) {
  std::lock_guard lock(mu_);
  status_.last_error = error;
  status_.not_served = not_served;
  ++status_.failures;
}

void Reflector::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (PageFetch* f : fetches_) f->abandonLocked();
  }
  stop_cv_.notify_all();
  cancel_.cancel();
}

ReflectorStatus Reflector::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

std::map<std::string, uint64_t> Reflector::snapshot() const {
  std::lock_guard lock(mu_);
  std::map<std::string, uint64_t> out;
  store_.forEach(
      [&](const std::string& key, uint64_t fp) { out.emplace_hint(out.end(), key, fp); });
  return out;
}

std::string Reflector::fingerprint(const json& object) {
  // resourceVersion changes with every write; a server that omits it still
  // gets change detection, at the price of a hash.
  std::string rv = stringAt(object, "metadata", "resourceVersion");
  if (!rv.empty()) return rv;
  return "#" + std::to_string(std::hash<std::string>{}(object.dump()));
}

uint64_t Reflector::compactFingerprint(const json& object) {
  // An API server's versions are etcd revisions: decimal numbers, kept
  // exactly. Anything else by its hash, marked by the top bit.
  const std::string fp = fingerprint(object);
  uint64_t n = 0;
  const auto [end, ec] = std::from_chars(fp.data(), fp.data() + fp.size(), n);
  if (ec == std::errc() && end == fp.data() + fp.size() && !fp.empty() && fp[0] != '0' &&
      n < (uint64_t(1) << 63))
    return n;
  return std::hash<std::string>{}(fp) | (uint64_t(1) << 63);
}

json Reflector::stubFor(const std::string& key) const {
  json stub = {{"kind", resource_.kind}, {"apiVersion", resource_.api_version}};
  const auto slash = key.find('/');
  if (slash == std::string::npos) {
    stub["metadata"] = {{"name", key}};
  } else {
    stub["metadata"] = {{"namespace", key.substr(0, slash)}, {"name", key.substr(slash + 1)}};
  }
  return stub;
}

Reflector::Failure Reflector::list() {
  // Pages are handed on as they arrive and only keys and versions are kept:
  // holding a 50k-pod list as JSON until its last page costs hundreds of MiB.
  // The store is replaced, and vanished objects deleted, once the list is whole.
  // The list's keys and versions in the order they come (a real API
  // server's: key order), sorted once when the list is whole.
  std::vector<std::pair<std::string, uint64_t>> next;
  Versions old;
  {
    std::lock_guard lock(mu_);
    old = store_;
  }
  const auto pagePath = [&](const std::string& cont) {
    std::string query = "?limit=" + std::to_string(config_.page_size);
    // A continue token carries its own version; the first page reads from
    // the watch cache ("0", cheap for N agents) unless a 410 told us that
    // cache is behind, then from etcd ("" = latest, consistent).
    if (!cont.empty())
      query += "&continue=" + urlEncode(cont);
    else if (!consistent_relist_)
      query += "&resourceVersion=0";
    if (!resource_.field_selector.empty())
      query += "&fieldSelector=" + urlEncode(resource_.field_selector);
    return resource_.path() + query;
  };
  // The page being read, and the next one once its token is known: asked
  // for as soon as this page's metadata is read (a real API server writes
  // it before the items), or else once this page is decoded.
  auto current = std::make_unique<PageFetch>(*this, pagePath(""), "");
  std::unique_ptr<PageFetch> ahead;
  std::string list_rv;
  const std::function<void(const std::string&)> on_continue = [&](const std::string& token) {
    if (!ahead && !token.empty()) ahead = std::make_unique<PageFetch>(*this, pagePath(token), token);
  };
  for (;;) {
    std::string why;
    std::optional<ListPage> page = decodeListPageStream(
        [&](std::string* piece) { return current->next(piece); }, resource_, &why, on_continue);
    bool abandoned = false;
    const HttpResponse& r = current->response(&abandoned);
    // Whatever went wrong with this page, the one asked for ahead of it is
    // not wanted (its destructor cancels it).
    if (abandoned || r.cancelled) return {Outcome::kStopped, "", std::nullopt};
    if (r.status != 200 || !r.error.empty()) return classify(r, "list");
    if (!page) return {Outcome::kFailed, "list " + resource_.path() + ": " + why, std::nullopt};
    list_rv = std::move(page->resource_version);
    // The page read whole may name another token than its metadata first
    // did: only the page's own counts.
    if (ahead && ahead->token() != page->next) ahead.reset();
    if (!ahead && !page->next.empty())
      ahead = std::make_unique<PageFetch>(*this, pagePath(page->next), page->next);
    for (auto& [key, item] : page->items) {
      const uint64_t fp = compactFingerprint(item);
      const uint64_t* was = old.find(key);
      if (!was || *was != fp) on_event_(Event::kUpsert, key, item);
      next.emplace_back(std::move(key), fp);
    }
    if (!ahead) break;
    current = std::move(ahead);
  }
  // A key listed twice keeps its last version, as assigning it did.
  applyList(FlatMap<std::string, uint64_t>::fromUnsorted(
                std::move(next), FlatMap<std::string, uint64_t>::Keep::kLast),
            old, list_rv);
  consistent_relist_ = false;
  return {};
}

void Reflector::applyList(FlatMap<std::string, uint64_t> next, const Versions& old,
                          const std::string& rv) {
  // Objects deleted while we were not watching have no DELETED event: the
  // diff against the old store is the only way to learn of them.
  old.forEach([&](const std::string& key, uint64_t) {
    if (!next.count(key)) on_event_(Event::kDelete, key, stubFor(key));
  });
  {
    std::lock_guard lock(mu_);
    store_ = Versions(std::move(next));
    status_.synced = true;
    status_.not_served = false;
    status_.last_error.clear();
    status_.resource_version = rv;
    ++status_.lists;
  }
  rv_ = rv;
  if (on_synced_) on_synced_();
}

Reflector::Failure Reflector::watch() {
  std::uniform_int_distribution<int64_t> pick(
      config_.watch_timeout_min.count(),
      std::max(config_.watch_timeout_min.count(), config_.watch_timeout_max.count()));
  const std::chrono::seconds timeout(pick(rng_));
  std::string query = "?watch=1&allowWatchBookmarks=true&resourceVersion=" + urlEncode(rv_) +
                      "&timeoutSeconds=" + std::to_string(timeout.count());
  if (!resource_.field_selector.empty())
    query += "&fieldSelector=" + urlEncode(resource_.field_selector);
  {
    std::lock_guard lock(mu_);
    ++status_.watches;
  }
  LineFramer framer;
  Failure stream_failure;
  bool saw_event = false;
  const auto started = std::chrono::steady_clock::now();
  const HttpResponse r = http_.get(
      resource_.path() + query,
      [&](std::string_view chunk) {
        return framer.feed(chunk, [&](std::string_view line) {
          return handleEvent(line, &stream_failure, &saw_event);
        });
      },
      cancel_, timeout + config_.watch_slack);
  // Progress resets the backoff: a watch that delivered events and then
  // broke is a normal reconnect, not a failing server.
  if (saw_event) {
    backoff_ = milliseconds(0);
    progressed_ = true;
  }
  if (r.cancelled) return {Outcome::kStopped, "", std::nullopt};
  if (stream_failure.outcome != Outcome::kOk) return stream_failure;
  if (r.status != 200 || !r.error.empty()) return classify(r, "watch");
  if (!saw_event && std::chrono::steady_clock::now() - started < config_.min_watch_duration)
    return {Outcome::kFailed, "watch " + resource_.path() + ": closed at once with no events",
            std::nullopt};
  {
    std::lock_guard lock(mu_);
    status_.last_error.clear();
  }
  return {};
}

bool Reflector::handleEvent(std::string_view line, Failure* out, bool* saw_event) {
  const auto fail = [&](std::string why) {
    *out = {Outcome::kFailed, "watch " + resource_.path() + ": " + why, std::nullopt};
    return false;
  };
  std::string why;
  std::optional<WatchEvent> ev = decodeWatchEvent(line, resource_, &why);
  if (!ev) return fail(why);
  const std::string& type = ev->type;
  json& object = ev->object;
  if (type == "ERROR") {
    const auto code_it = object.find("code");
    const long code = code_it != object.end() && code_it->is_number_integer()
                          ? code_it->get<long>()
                          : 0;
    const std::string why = describeStatus(code, object);
    // The 410 form that arrives after a 200: our version was compacted away.
    if (code == 410 || isTooLargeResourceVersion(object)) {
      *out = {Outcome::kRelist, "watch " + resource_.path() + ": " + why, std::nullopt};
      return false;
    }
    return fail(why);
  }
  const std::string rv = resourceVersionOf(object);
  if (type == "BOOKMARK") {
    // Not an object: only a newer version to resume from.
  } else if (type == "ADDED" || type == "MODIFIED") {
    upsert(ev->key, std::move(object));
  } else if (type == "DELETED") {
    remove(ev->key, object);
  } else {
    return fail("unknown event type \"" + type + "\"");
  }
  *saw_event = true;
  if (!rv.empty())
    rv_ = rv;
  // The stream works again (an event or a bookmark arrived): the last
  // failure is over now, not when this watch ends minutes later; cleared
  // with the version it brought, so that no reader sees the one without the
  // other.
  std::lock_guard lock(mu_);
  if (!rv.empty())
    status_.resource_version = rv;
  status_.last_error.clear();
  return true;
}

void Reflector::upsert(const std::string& key, json object) {
  {
    std::lock_guard lock(mu_);
    store_.put(key, compactFingerprint(object));
  }
  on_event_(Event::kUpsert, key, object);
}

void Reflector::remove(const std::string& key, const json& last) {
  {
    std::lock_guard lock(mu_);
    store_.erase(key);
  }
  on_event_(Event::kDelete, key, last);
}

Reflector::Failure Reflector::classify(const HttpResponse& r, const char* what) {
  const std::string where = std::string(what) + " " + resource_.path();
  if (r.status == 0 || (r.status >= 200 && r.status < 300))
    return {Outcome::kFailed, where + ": " + (r.error.empty() ? "no response" : r.error),
            std::nullopt};
  std::string ignored;
  const json status = parseApiJson(r.body, &ignored);
  const std::string why = where + ": " + describeStatus(r.status, status);
  if (r.status == 404) return {Outcome::kNotServed, why, std::nullopt};
  // 410 on a list is an expired continue token; on a watch, a compacted
  // version. Either way only a fresh, consistent list recovers.
  if (r.status == 410 || isTooLargeResourceVersion(status))
    return {Outcome::kRelist, why, std::nullopt};
  if (r.status == 429 || r.status == 503)
    return {Outcome::kFailed, why, parseRetryAfter(r.headers)};
  return {Outcome::kFailed, why, std::nullopt};
}

milliseconds Reflector::nextBackoff() {
  backoff_ =
      backoff_.count() == 0 ? config_.backoff_initial : std::min(backoff_ * 2, config_.backoff_max);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const double stretch = 1.0 + config_.jitter * unit(rng_);
  return milliseconds(static_cast<int64_t>(backoff_.count() * stretch));
}

bool Reflector::sleepFor(milliseconds d) {
  if (config_.wait) {
    config_.wait(d);
    std::lock_guard lock(mu_);
    return !stopping_;
  }
  std::unique_lock lock(mu_);
  stop_cv_.wait_for(lock, d, [&] { return stopping_; });
  return !stopping_;
}

void Reflector::setError(const std::string& e) {
  std::lock_guard lock(mu_);
  status_.last_error = e;
}

}  // namespace smik::kube
