// Ring buffer records as the agent decodes them: every kind, and records
// too short for their kind (never read past their size).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "agent/telemetry/events.h"
#include "agent/telemetry/kernel_event.h"

namespace smik::telemetry {
namespace {

smik_event baseEvent(uint8_t kind, uint8_t reason) {
  smik_event ev{};
  ev.kind = kind;
  ev.reason = reason;
  ev.suppressed = 7;
  ev.edge.family = SMIK_AF_INET;
  ev.edge.proto = SMIK_PROTO_TCP;
  ev.edge.port = 8080;
  return ev;
}

smik_http_event httpDeny(uint8_t reason, const std::string& path, uint8_t flags) {
  smik_http_event h{};
  h.ev = baseEvent(SMIK_EV_HTTP_DENY, reason);
  h.method = SMIK_HTTP_M_POST;
  h.flags = flags;
  h.path_len = static_cast<uint16_t>(path.size());
  std::memcpy(h.path, path.data(), std::min(path.size(), sizeof h.path));
  return h;
}

TEST(KernelEventTest, ConnectionEventsNameTheirFailReason) {
  const smik_event ev = baseEvent(SMIK_EV_CONN_FAILED, SMIK_FAIL_TIMEOUT);
  auto e = decodeKernelEvent(&ev, sizeof ev);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, "connect-failed");
  EXPECT_EQ(e->reason, "timeout");
  EXPECT_EQ(e->edge.port, 8080);
  EXPECT_EQ(e->suppressed, 7u);
  EXPECT_EQ(e->method, "");
  EXPECT_EQ(e->path, "");
}

TEST(KernelEventTest, HttpDenyCarriesMethodPathAndTheJudgesReason) {
  const smik_http_event h =
      httpDeny(SMIK_HTTP_C_DENIED_POLICY, "/admin/x", SMIK_EV_HTTP_METHOD | SMIK_EV_HTTP_PATH);
  auto e = decodeKernelEvent(&h, sizeof h);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, "http-deny");
  EXPECT_EQ(e->reason, "denied_policy");
  EXPECT_EQ(e->method, "POST");
  EXPECT_EQ(e->path, "/admin/x");
  EXPECT_FALSE(e->path_truncated);
  EXPECT_EQ(e->edge.port, 8080);
  EXPECT_EQ(e->suppressed, 7u);
}

TEST(KernelEventTest, HttpDenyWithoutMethodOrPathLeavesThemEmpty) {
  smik_http_event h = httpDeny(SMIK_HTTP_C_NOT_HTTP1, "/stale", 0);
  auto e = decodeKernelEvent(&h, sizeof h);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->reason, "not_http1");
  EXPECT_EQ(e->method, "");  // bytes in the record, but not flagged: not the request's
  EXPECT_EQ(e->path, "");
  h = httpDeny(SMIK_HTTP_C_URI_TOO_LONG, "", SMIK_EV_HTTP_METHOD);
  h.method = 200;  // a newer kernel's method: not indexed past the table
  e = decodeKernelEvent(&h, sizeof h);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->method, "");
  EXPECT_EQ(e->reason, "uri_too_long");
}

TEST(KernelEventTest, HttpDenyPathIsBoundedAndPrintable) {
  const std::string full(SMIK_EV_PATH_MAX, 'a');
  smik_http_event h = httpDeny(SMIK_HTTP_C_URI_TOO_LONG, full,
                               SMIK_EV_HTTP_METHOD | SMIK_EV_HTTP_PATH | SMIK_EV_HTTP_TRUNCATED);
  h.path_len = 1000;  // more than the record holds: never read past it
  auto e = decodeKernelEvent(&h, sizeof h);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path, full);
  EXPECT_TRUE(e->path_truncated);
  h = httpDeny(SMIK_HTTP_C_MALFORMED, std::string("/a\x01\xff%2e", 7),
               SMIK_EV_HTTP_METHOD | SMIK_EV_HTTP_PATH);
  e = decodeKernelEvent(&h, sizeof h);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path, "/a%01%FF%2e");
}

TEST(KernelEventTest, ShortRecordsDecodeToNothing) {
  const smik_http_event h =
      httpDeny(SMIK_HTTP_C_DENIED_POLICY, "/admin", SMIK_EV_HTTP_METHOD | SMIK_EV_HTTP_PATH);
  // an http-deny as long as a plain event, or one byte short of its own size
  for (size_t size : {sizeof(smik_event), sizeof(smik_http_event) - 1}) {
    std::vector<uint8_t> bytes(size);
    std::memcpy(bytes.data(), &h, size);
    EXPECT_FALSE(decodeKernelEvent(bytes.data(), bytes.size())) << size;
  }
  const smik_event ev = baseEvent(SMIK_EV_NEW_EDGE, 0);
  EXPECT_FALSE(decodeKernelEvent(&ev, sizeof ev - 1));
  EXPECT_FALSE(decodeKernelEvent(nullptr, 0));
  EXPECT_TRUE(decodeKernelEvent(&ev, sizeof ev));
}

TEST(KernelEventTest, EventHubCountsUnreadableRecords) {
  EventHub hub;
  EXPECT_EQ(hub.unreadable(), 0u);
  hub.countUnreadable();
  EXPECT_EQ(hub.unreadable(), 1u);
}

}  // namespace
}  // namespace smik::telemetry
