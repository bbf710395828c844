// The directory source: a folder of multi-document YAML/JSON manifests, the
// embedded default for a machine with no cluster. Each file is applied whole
// or not at all: a file that fails keeps its last good version in force.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/base/unique_fd.h"
#include "agent/model/objects.h"
#include "agent/model/parse.h"
#include "agent/source/source.h"

namespace smik::source {

class ManifestDir : public Source {
 public:
  explicit ManifestDir(std::string dir);
  ~ManifestDir() override;
  ManifestDir(const ManifestDir&) = delete;
  ManifestDir& operator=(const ManifestDir&) = delete;

  // Re-reads files that changed since the last call. True if the objects in
  // force changed. Newly rejected objects are added to rejectedTotal().
  bool refresh() override;
  // Blocks until the directory reports a change or timeout_ms passes.
  void waitForChange(int timeout_ms) override;

  model::ClusterState state() const override;
  // Problems now: rejected objects of every file, plus directory-level errors.
  std::vector<model::ParseError> errors() const override;
  uint64_t rejectedTotal() const override { return rejected_total_; }
  std::string describe() const override { return "manifests " + dir_; }
  const std::string& dir() const { return dir_; }

 private:
  struct FileState {
    int64_t mtime_ns = -1;
    int64_t size = -1;
    uint64_t inode = 0;
    // Written so recently that a same-size rewrite in the same timestamp tick
    // would look unchanged ("racy git"): re-read and compare content.
    bool racy = false;
    size_t content_hash = 0;
    bool has_good = false;
    // The last version that parsed cleanly: pods apart, shared with snapshots.
    std::vector<model::Object> good;
    std::vector<std::shared_ptr<const model::Pod>> good_pods;
    std::vector<model::ParseError> errors;
  };
  // Re-reads one file; true if the objects it contributes changed.
  bool readFile(const std::string& path, FileState* fs);
  void watch();

  std::string dir_;
  std::map<std::string, FileState> files_;  // by file name, applied in name order
  std::vector<model::ParseError> dir_errors_;
  uint64_t rejected_total_ = 0;
  UniqueFd inotify_;   // invalid: no inotify, waitForChange sleeps
  int watch_fd_ = -1;  // a watch descriptor of inotify_, not a file
};

}  // namespace smik::source
