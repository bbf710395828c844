#include "agent/source/manifest_dir.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace smik::source {
namespace {

bool isManifest(const fs::path& p) {
  auto ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

}  // namespace

ManifestDir::ManifestDir(std::string dir)
    : dir_(std::move(dir)), inotify_(inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
  watch();
}

ManifestDir::~ManifestDir() = default;

void ManifestDir::watch() {
  if (!inotify_ || watch_fd_ >= 0) return;
  watch_fd_ = inotify_add_watch(inotify_.get(), dir_.c_str(),
                                IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVED_TO |
                                    IN_MOVED_FROM | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
}

void ManifestDir::waitForChange(int timeout_ms) {
  watch();  // the directory may have (re)appeared
  if (!inotify_) {
    usleep(timeout_ms * 1000);
    return;
  }
  pollfd p{inotify_.get(), POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return;
  usleep(5 * 1000);  // let a burst of writes settle into one refresh
  char buf[4096];
  while (true) {
    ssize_t n = read(inotify_.get(), buf, sizeof buf);
    if (n <= 0) break;
    for (char* q = buf; q < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(q);
      if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) watch_fd_ = -1;
      q += sizeof(inotify_event) + ev->len;
    }
  }
}

bool ManifestDir::readFile(const std::string& path, FileState* st) {
  std::string name = fs::path(path).filename();
  auto reject = [&](std::vector<model::ParseError> errors) {
    st->errors = std::move(errors);
    rejected_total_ += st->errors.size();
    for (const auto& err : st->errors) spdlog::error("manifests: rejected: {}", err.str());
    if (st->has_good) spdlog::warn("manifests: {}: keeping its last good version", name);
    return false;
  };
  if (st->size > static_cast<int64_t>(model::kMaxManifestBytes)) {
    st->content_hash = 0;
    return reject({{name, {}, "file is " + std::to_string(st->size) +
                                  " bytes, over the limit of " +
                                  std::to_string(model::kMaxManifestBytes)}});
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return reject({{name, {}, "cannot read file"}});
  // At most one byte over the limit: the file may have grown since stat().
  std::string text;
  char buf[1 << 16];
  while (in && text.size() <= model::kMaxManifestBytes) {
    in.read(buf, sizeof buf);
    text.append(buf, static_cast<size_t>(in.gcount()));
  }
  size_t hash = std::hash<std::string>{}(text);
  if (hash == st->content_hash && (st->has_good || !st->errors.empty())) return false;
  st->content_hash = hash;
  model::ParseResult r = model::parseManifests(text, name);
  if (!r.errors.empty()) return reject(std::move(r.errors));
  st->errors.clear();
  st->good.clear();
  st->good_pods.clear();
  // Pods, most of a cluster, are kept shared: every snapshot for the
  // compiler points at these rather than copying them.
  for (auto& o : r.objects) {
    if (auto* pod = std::get_if<model::Pod>(&o))
      st->good_pods.push_back(std::make_shared<const model::Pod>(std::move(*pod)));
    else
      st->good.push_back(std::move(o));
  }
  // Held until the file changes: no room for growth (at 5000 pods a file,
  // a third of the pointers' vector was spare).
  st->good_pods.shrink_to_fit();
  st->good.shrink_to_fit();
  st->has_good = true;
  spdlog::info("manifests: {} applied ({} objects)", name, st->good.size() + st->good_pods.size());
  return true;
}

bool ManifestDir::refresh() {
  dir_errors_.clear();
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) {
    // Keep everything in force: a vanished directory is an accident far more
    // often than a request to drop all policy.
    dir_errors_.push_back({dir_, {}, "manifest directory is missing; last good policy kept"});
    return false;
  }
  // List first, act after: a listing that fails halfway (EMFILE, EACCES) must
  // not read as "every file was deleted".
  std::map<std::string, struct stat> listed;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code fec;
    if (!isManifest(it->path()) || !it->is_regular_file(fec)) continue;
    struct stat sb {};
    if (stat(it->path().c_str(), &sb) == 0) listed[it->path().filename()] = sb;
  }
  if (ec) {
    dir_errors_.push_back({dir_, {}, "cannot list manifest directory (" + ec.message() +
                                         "); last good policy kept"});
    return false;
  }
  int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  bool changed = false;
  for (const auto& [name, sb] : listed) {
    FileState& st = files_[name];
    int64_t mtime = int64_t(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec;
    bool same = st.mtime_ns == mtime && st.size == sb.st_size && st.inode == sb.st_ino;
    if (same && !st.racy) continue;
    st.mtime_ns = mtime;
    st.size = sb.st_size;
    st.inode = sb.st_ino;
    st.racy = now - mtime < 2'000'000'000;
    changed |= readFile(dir_ + "/" + name, &st);
  }
  for (auto it = files_.begin(); it != files_.end();) {
    if (listed.count(it->first)) {
      ++it;
      continue;
    }
    spdlog::info("manifests: {} removed", it->first);
    changed |= it->second.has_good;
    it = files_.erase(it);
  }
  return changed;
}

model::ClusterState ManifestDir::state() const {
  model::ClusterState s;
  std::vector<std::shared_ptr<const model::Pod>> pods;
  for (const auto& [name, st] : files_) {
    for (const auto& o : st.good) s.add(o);
    pods.insert(pods.end(), st.good_pods.begin(), st.good_pods.end());
  }
  s.setPods(std::move(pods));  // sorted once: files list pods in any order
  return s;
}

std::vector<model::ParseError> ManifestDir::errors() const {
  std::vector<model::ParseError> out = dir_errors_;
  for (const auto& [name, st] : files_) out.insert(out.end(), st.errors.begin(), st.errors.end());
  return out;
}

}  // namespace smik::source
