// Where the agent's objects come from: a manifest directory or the
// Kubernetes API. The agent compiles whatever a source holds, but only once
// the source has a complete view: compiling half a cluster would deny (or
// admit) traffic that the whole cluster's policy decides otherwise.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/model/objects.h"
#include "agent/model/parse.h"

namespace smik::compile {
struct Plan;
}

namespace smik::source {

class Source {
 public:
  virtual ~Source() = default;

  // Takes in what changed since the last call. True if the objects in force
  // changed (or the view just became complete).
  virtual bool refresh() = 0;
  // Blocks until something may have changed or timeout_ms passes.
  virtual void waitForChange(int timeout_ms) = 0;

  virtual model::ClusterState state() const = 0;
  // Objects rejected now, each naming itself and why.
  virtual std::vector<model::ParseError> errors() const = 0;
  // Rejections since start (each rejected version counts once).
  virtual uint64_t rejectedTotal() const = 0;

  // False until every collection has been read once.
  virtual bool synced() const { return true; }
  // Why the source is not synced, or is degraded (serving its last view
  // while it cannot reach its origin). Empty when all is well.
  virtual std::string problem() const { return ""; }
  // "manifests /etc/smik", "kubernetes https://10.0.0.1:443".
  virtual std::string describe() const = 0;
  // One line per collection it mirrors, for status pages: "pods (v1):
  // synced, resourceVersion 4711, 1 list, 3 watches". Empty: nothing to say.
  virtual std::vector<std::string> collections() const { return {}; }
  // The compiler's verdict on the objects (diagnostics naming them), for
  // sources that can tell the objects' owners (Kubernetes Events).
  virtual void reportPlan(const compile::Plan&) {}
};

}  // namespace smik::source
