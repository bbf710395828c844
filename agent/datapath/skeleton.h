// The owner of one BPF object, through the skeleton bpftool generates for
// it (tc_policy, sock_lb, sockops: the skeleton is named after its source
// file). Open, load and destroy happen here and nowhere else; programs and
// maps are reached through it by their C names (skel->maps.smik_ct), and
// what must outlive it (a map the backend writes, a link) is taken as a
// UniqueFd. Not copyable; moving hands the object over.
#pragma once

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "agent/base/result.h"
#include "agent/base/unique_fd.h"

namespace smik::datapath {

template <typename T>  // a bpftool skeleton struct: T::open, T::load, T::destroy
class Skeleton {
 public:
  // Opens the object (no kernel state yet). Maps declared pinned by name are
  // bound to their pins under pin_root when they exist, and pinned there at
  // load() when they do not: that is how a restarted agent keeps the maps
  // the running programs read.
  static Result<Skeleton> open(const std::string& pin_root) {
    LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_root.c_str());
    T* skel = T::open(&opts);
    if (!skel) return fail(std::string("open BPF object: ") + std::strerror(errno));
    return Skeleton(skel);
  }

  // Creates (or reuses the pinned) maps and loads the programs.
  Result<void> load() {
    if (int r = T::load(skel_); r != 0) return fail(std::strerror(-r));
    return {};
  }

  Skeleton(Skeleton&& o) noexcept : skel_(std::exchange(o.skel_, nullptr)) {}
  Skeleton& operator=(Skeleton&& o) noexcept {
    if (this != &o) {
      destroy();
      skel_ = std::exchange(o.skel_, nullptr);
    }
    return *this;
  }
  Skeleton(const Skeleton&) = delete;
  Skeleton& operator=(const Skeleton&) = delete;
  // Closes the object's descriptors. Pinned maps and pinned links stay in
  // the kernel: the pins hold them, and enforcement continues.
  ~Skeleton() { destroy(); }

  T* operator->() const noexcept { return skel_; }
  bpf_object* object() const noexcept { return skel_->obj; }

  // Every map and program of the object, in declaration order.
  template <typename Fn>
  void forEachMap(Fn fn) const {
    bpf_map* m;
    bpf_object__for_each_map(m, skel_->obj) fn(m);
  }
  template <typename Fn>
  void forEachProgram(Fn fn) const {
    bpf_program* p;
    bpf_object__for_each_program(p, skel_->obj) fn(p);
  }

 private:
  explicit Skeleton(T* skel) : skel_(skel) {}
  void destroy() noexcept {
    if (skel_) T::destroy(skel_);
    skel_ = nullptr;
  }
  T* skel_ = nullptr;
};

// A descriptor of the loaded map that stays valid after the skeleton is
// gone (a second reference to the same kernel map).
inline UniqueFd mapFd(const bpf_map* m) { return UniqueFd::duplicate(bpf_map__fd(m)); }

}  // namespace smik::datapath
