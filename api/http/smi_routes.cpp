#include "api/http/smi_routes.h"

#include <httplib.h>

#include "api/http/router.h"

namespace smik::api {

void writeSmiResponse(const SmiResponse& r, httplib::Response& res) {
  res.status = r.status;
  if (const std::string warning = partialWarning(r); !warning.empty())
    res.set_header("Warning", warning);
  res.set_content(r.body, "application/json");
}

void mountSmiMetrics(Router& router, const telemetry::MetricsView& local,
                     ViewForRequest per_request, bool local_only) {
  router.add({kSmiMetricsBase,
              [&local, per_request = std::move(per_request)](const RoutedRequest& req,
                                                             httplib::Response& res) {
                writeSmiResponse(answerSmiRequest(local, per_request, req.path,
                                                  req.http.get_param_value("t"),
                                                  req.http.get_param_value("local") == "true"),
                                 res);
              },
              /*prefix=*/true, local_only});
}

}  // namespace smik::api
