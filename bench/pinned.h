// smik's programs and maps, pinned under a benchmark run's own directory:
// going away, also when the run's setup throws after loading them (members
// are destroyed then), takes every program, link and pin with it, as
// `smik-agent --uninstall` does. A killed run leaves its pins behind.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "agent/datapath/datapath.h"

namespace smik::bench {

class PinnedDatapath {
 public:
  PinnedDatapath() = default;
  PinnedDatapath(const PinnedDatapath&) = delete;
  PinnedDatapath& operator=(const PinnedDatapath&) = delete;
  ~PinnedDatapath() { close(); }

  // cgroup: where the socket programs attach (empty: they are not attached).
  void open(const std::string& pin, const std::string& cgroup = "") {
    pin_ = pin;  // first: a load that fails halfway is uninstalled too
    datapath::Options o;
    o.pin_dir = pin;
    o.cgroup = cgroup;
    std::string err;
    dp_ = datapath::Datapath::open(o, &err);
    if (!dp_) throw std::runtime_error(err);
  }
  void close() {
    dp_.reset();
    std::string err;
    if (!pin_.empty()) datapath::Datapath::uninstall(pin_, &err);
    pin_.clear();
  }

  const std::string& pin() const { return pin_; }
  datapath::Datapath* operator->() const { return dp_.get(); }
  datapath::Datapath& operator*() const { return *dp_; }

 private:
  std::string pin_;
  std::unique_ptr<datapath::Datapath> dp_;
};

}  // namespace smik::bench
