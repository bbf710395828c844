// The facts of smik_abi.h's tables reach every API under their one name:
// the proto messages have a field per table entry, /status is the
// StatusReply's JSON with the keys and number types it has always had, and
// /metrics labels its samples with the same names.
#include <gtest/gtest.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/message_differencer.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "api/http/http_server.h"
#include "api/proto/json.h"
#include "api/proto/status.h"

namespace smik::api {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

// The uint64 fields of d, but `except`.
std::set<std::string> counterFields(const Descriptor* d, const std::string& except = "") {
  std::set<std::string> out;
  for (int i = 0; i < d->field_count(); i++) {
    const FieldDescriptor* f = d->field(i);
    if (f->name() == except) continue;
    EXPECT_EQ(f->cpp_type(), FieldDescriptor::CPPTYPE_UINT64) << f->full_name();
    out.insert(f->name());
  }
  return out;
}

template <size_t N>
std::set<std::string> names(const abi::Fact (&table)[N]) {
  std::set<std::string> out;
  for (const abi::Fact& f : table) out.insert(f.name);
  return out;
}

// Values and names unique, values within the map's size.
template <size_t N>
void expectWellFormed(const abi::Fact (&table)[N], unsigned limit) {
  std::set<unsigned> ids;
  for (const abi::Fact& f : table) {
    EXPECT_TRUE(ids.insert(f.id).second) << f.name;
    EXPECT_LT(f.id, limit) << f.name;
    EXPECT_NE(std::string(f.help), "") << f.name;
  }
  EXPECT_EQ(names(table).size(), N);
}

TEST(Facts, TablesAreWellFormed) {
  expectWellFormed(abi::kReasons, SMIK_REASON_MAX);
  expectWellFormed(abi::kCtCounters, SMIK_CT_COUNTER_MAX);
  expectWellFormed(abi::kSockCounters, SMIK_SOCK_MAX);
  expectWellFormed(abi::kAnswerCounters, SMIK_ANSWER_COUNTER_MAX);
  expectWellFormed(abi::kEventKinds, 256);  // smik_event.kind is a __u8
  expectWellFormed(abi::kFailReasons, 256);
  EXPECT_STREQ(abi::nameOf(abi::kReasons, SMIK_REASON_SPOOFED), "spoofed");
  EXPECT_STREQ(abi::nameOf(abi::kEventKinds, SMIK_EV_NEW_EDGE), "new-edge");
  EXPECT_STREQ(abi::nameOf(abi::kFailReasons, 99, "?"), "?");
}

// A counter added to a table without its proto field (or the reverse) fails here.
TEST(Facts, ProtoMessagesHaveAFieldPerCounter) {
  EXPECT_EQ(counterFields(v1::ConnectCounters::descriptor()), names(abi::kSockCounters));
  EXPECT_EQ(counterFields(v1::ConntrackCounters::descriptor(), "swept"), names(abi::kCtCounters));
  EXPECT_EQ(counterFields(v1::DenyAnswerCounters::descriptor()), names(abi::kAnswerCounters));
}

AgentStatus sample() {
  AgentStatus s;
  s.ready = true;
  s.node = "node-a";
  s.host_traffic = "allow";
  s.policy_entries = 12;
  s.endpoints = {"app/web veth1(7)"};
  s.reasons.assign(SMIK_REASON_MAX, smik_counter{});
  s.reasons[SMIK_REASON_SPOOFED] = {3, 180};
  s.sock_stats.assign(SMIK_SOCK_MAX, 0);
  s.sock_stats[SMIK_SOCK_NO_BACKEND] = 4;
  s.ct_stats.assign(SMIK_CT_COUNTER_MAX, 0);
  s.ct_stats[SMIK_CT_INSERT_FAILED] = 5;
  s.ct_stats[SMIK_CT_FRAGMENTS_TRACKED] = 6;
  s.ct_swept_total = 7;
  s.answer_stats.assign(SMIK_ANSWER_COUNTER_MAX, 0);
  s.answer_stats[SMIK_ANSWER_SENT] = 8;
  s.answer_stats[SMIK_ANSWER_RATE_LIMITED] = 9;
  s.edges_total = uint64_t(1) << 40;
  s.edges.push_back({"app/client", "app/web", "TCP", 8080, 9, 1});
  return s;
}

// The keys consumers read (tests/e2e, the README, scripts), with numbers as
// numbers: protobuf's JSON would quote the uint64s.
TEST(Status, JsonKeepsItsKeysAndNumbers) {
  auto j = nlohmann::json::parse(statusJson(sample()));
  EXPECT_EQ(j["ready"], true);
  EXPECT_EQ(j["node"], "node-a");
  EXPECT_EQ(j["hostTraffic"], "allow");
  EXPECT_EQ(j["policyEntries"], 12);
  EXPECT_EQ(j["verdicts"]["spoofed"]["packets"], 3);
  EXPECT_EQ(j["verdicts"]["spoofed"]["bytes"], 180);
  EXPECT_EQ(j["verdicts"]["forwarded"]["packets"], 0);
  EXPECT_EQ(j["connect"]["noBackend"], 4);
  EXPECT_EQ(j["conntrack"]["insertFailed"], 5);
  EXPECT_EQ(j["conntrack"]["fragmentsTracked"], 6);
  EXPECT_EQ(j["conntrack"]["swept"], 7);
  EXPECT_EQ(j["denyAnswers"]["sent"], 8);
  EXPECT_EQ(j["denyAnswers"]["rateLimited"], 9);
  EXPECT_TRUE(j["edgesTotal"].is_number_unsigned()) << j["edgesTotal"];
  EXPECT_EQ(j["edgesTotal"].get<uint64_t>(), uint64_t(1) << 40);
  EXPECT_EQ(j["edges"][0]["flowsAllowed"], 9);
  EXPECT_EQ(j["edges"][0]["port"], 8080);
  EXPECT_TRUE(j.contains("notEnforced") && j["notEnforced"].empty()) << j.dump(1);
  EXPECT_TRUE(j["errors"].empty());
  EXPECT_FALSE(j.contains("notReady")) << "absent when ready";
  EXPECT_FALSE(j.contains("degraded"));
  EXPECT_FALSE(j.contains("verdictList")) << "the deprecated list is for gRPC clients only";

  AgentStatus down = sample();
  down.ready = false;
  down.not_ready = "no policy applied yet";
  EXPECT_EQ(nlohmann::json::parse(statusJson(down))["notReady"], "no policy applied yet");
}

// The gRPC reply carries the deprecated list for older clients; its JSON
// (`smik status -o json`) is /status all the same.
TEST(Status, GrpcReplysJsonIsTheStatusJson) {
  v1::StatusReply r = statusReply(sample());
  addVerdictList(&r);
  const auto* list = v1::StatusReply::descriptor()->FindFieldByName("verdict_list");
  ASSERT_NE(list, nullptr);
  EXPECT_EQ(r.GetReflection()->FieldSize(r, list), int(std::size(abi::kReasons)));
  EXPECT_EQ(nlohmann::json::parse(toJson(r)), nlohmann::json::parse(statusJson(sample())));
}

// What the CLI reads back from /status (`smik status --http`) is the reply.
TEST(Status, JsonReadsBackAsTheReply) {
  v1::StatusReply r = statusReply(sample());
  v1::StatusReply back;
  std::string err;
  ASSERT_TRUE(fromJson(toJson(r), &back, &err)) << err;
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(r, back))
      << r.DebugString() << "\n" << back.DebugString();
  EXPECT_FALSE(fromJson("{\"ready\": ", &back, &err));
}

TEST(Status, MetricsLabelSamplesWithTheTablesNames) {
  const std::string text = prometheusText(sample());
  for (const char* line : {"smik_packets_total{verdict=\"spoofed\"} 3\n",
                           "smik_bytes_total{verdict=\"spoofed\"} 180\n",
                           "smik_conntrack_events_total{event=\"insert_failed\"} 5\n",
                           "smik_conntrack_events_total{event=\"fragments_tracked\"} 6\n",
                           "smik_conntrack_events_total{event=\"swept\"} 7\n",
                           "smik_socket_events_total{event=\"no_backend\"} 4\n",
                           "smik_deny_answers_total{event=\"sent\"} 8\n",
                           "smik_deny_answers_total{event=\"rate_limited\"} 9\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
  // Every entry of a table, zero or not.
  for (const abi::Fact& f : abi::kReasons)
    EXPECT_NE(text.find(std::string("smik_packets_total{verdict=\"") + f.name + "\"}"),
              std::string::npos)
        << f.name;
}

}  // namespace
}  // namespace smik::api
