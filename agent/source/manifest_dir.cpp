#include "agent/source/manifest_dir.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace smik::source {
namespace {

bool isManifest(const fs::path& p) {
  auto ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

}  // namespace

ManifestDir::ManifestDir(std::string dir) : dir_(std::move(dir)) {
  inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  watch();
}

ManifestDir::~ManifestDir() {
  if (inotify_fd_ >= 0) close(inotify_fd_);
}

void ManifestDir::watch() {
  if (inotify_fd_ < 0 || watch_fd_ >= 0) return;
  watch_fd_ = inotify_add_watch(inotify_fd_, dir_.c_str(),
                                IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVED_TO |
                                    IN_MOVED_FROM | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
}

void ManifestDir::waitForChange(int timeout_ms) {
  watch();  // the directory may have (re)appeared
  if (inotify_fd_ < 0) {
    usleep(timeout_ms * 1000);
    return;
  }
  pollfd p{inotify_fd_, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return;
  usleep(20 * 1000);  // let a burst of writes settle into one refresh
  char buf[4096];
  while (true) {
    ssize_t n = read(inotify_fd_, buf, sizeof buf);
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
  st->errors.clear();
  if (st->size > static_cast<int64_t>(model::kMaxManifestBytes)) {
    st->errors.push_back({name, {}, "file is " + std::to_string(st->size) +
                                        " bytes, over the limit of " +
                                        std::to_string(model::kMaxManifestBytes)});
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    st->errors.push_back({name, {}, "cannot read file"});
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  model::ParseResult r = model::parseManifests(ss.str(), name);
  if (!r.errors.empty()) {
    st->errors = std::move(r.errors);
    return false;
  }
  st->good = std::move(r.objects);
  st->has_good = true;
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
  bool changed = false;
  std::map<std::string, bool> seen;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (!isManifest(e.path()) || !e.is_regular_file(ec)) continue;
    std::string name = e.path().filename();
    seen[name] = true;
    struct stat sb {};
    if (stat(e.path().c_str(), &sb) != 0) continue;
    FileState& st = files_[name];
    int64_t mtime = int64_t(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec;
    if (st.mtime_ns == mtime && st.size == sb.st_size && st.inode == sb.st_ino) continue;
    st.mtime_ns = mtime;
    st.size = sb.st_size;
    st.inode = sb.st_ino;
    if (readFile(e.path(), &st)) {
      changed = true;
      spdlog::info("manifests: {} applied ({} objects)", name, st.good.size());
    } else {
      rejected_total_ += st.errors.size();
      for (const auto& err : st.errors) spdlog::error("manifests: rejected: {}", err.str());
      if (st.has_good) spdlog::warn("manifests: {}: keeping its last good version", name);
    }
  }
  for (auto it = files_.begin(); it != files_.end();) {
    if (seen.count(it->first)) {
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
  for (const auto& [name, st] : files_)
    for (const auto& o : st.good) s.add(o);
  return s;
}

std::vector<model::ParseError> ManifestDir::errors() const {
  std::vector<model::ParseError> out = dir_errors_;
  for (const auto& [name, st] : files_) out.insert(out.end(), st.errors.begin(), st.errors.end());
  return out;
}

}  // namespace smik::source
