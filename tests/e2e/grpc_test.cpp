// End to end: the agent's gRPC API (api/proto/smik/v1/smik.proto) and the
// `smik` CLI over it, against real pods and the real agent (see fixture.h).
// The numbers must be the SMI HTTP API's, to the connection.
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "smik/v1/smik.grpc.pb.h"
#include "tests/e2e/fixture.h"

namespace smik::e2e {
namespace {

using nlohmann::json;
namespace pb = smik::v1;

class Grpc : public E2E {
 protected:
  void SetUp() override {
    E2E::SetUp();
    if (IsSkipped()) return;
    sock_ = "/tmp/" + bed_->prefix() + "-agent.sock";
  }

  void TearDown() override {
    E2E::TearDown();  // stops the agent, which removes its socket
    if (!sock_.empty()) {
      EXPECT_FALSE(fs::exists(fs::symlink_status(sock_))) << "the agent left " << sock_;
      std::error_code ec;
      fs::remove(sock_, ec);
    }
  }

  // The usual pair in meshed namespace "app"; the TrafficTarget "tt" lets
  // client reach server on TCP 8080 only.
  std::pair<Pod*, Pod*> setUpPair() {
    auto pair = clientAndServer();
    write("policy.yaml", tcpRoute("app", "web", "[8080]") +
                             trafficTarget("app", "tt", "app", "server", rule("TCPRoute", "web"),
                                           "app", "client"));
    startAgent({"--metrics-interval-ms", "200", "--grpc", sock_});
    waitAttached(2);
    return pair;
  }

  testbed::RunResult cli(std::vector<std::string> args, int timeout_ms = 10000) {
    args.insert(args.begin(), SMIK_CLI);
    args.insert(args.end(), {"--grpc", sock_});
    return bed_->run(args, timeout_ms);
  }

  json cliJson(const std::vector<std::string>& args) {
    auto r = cli(args);
    std::string cmd = "smik";
    for (const auto& a : args) cmd += " " + a;
    EXPECT_TRUE(r.ok()) << cmd << ": " << r.output;
    try {
      return json::parse(r.output);
    } catch (const std::exception& e) {
      ADD_FAILURE() << cmd << ": not JSON (" << e.what() << "): " << r.output;
      return json();
    }
  }

  json httpJson(const std::string& path) {
    auto [code, body] = httpGet(http_port_, path);
    EXPECT_EQ(code, 200) << path << ": " << body;
    return code == 200 ? json::parse(body) : json();
  }

  std::unique_ptr<pb::Agent::Stub> stub() {
    return pb::Agent::NewStub(
        grpc::CreateChannel("unix:" + sock_, grpc::InsecureChannelCredentials()));
  }

  // n attempts from client to server:port, each given up after 300 ms.
  std::string attempts(Pod& client, Pod& server, int port, int n) {
    return bed_
        ->run(client,
              {SMIK_TESTPEER, "tcp", server.ip(), std::to_string(port), "--count",
               std::to_string(n), "--timeout-ms", "300"},
              30000)
        .output;
  }

  std::string sock_;
};

// A known number of established and policy-denied connections: ListEdges and
// `smik metrics -o json` give the HTTP API's counts and latencies.
TEST_F(Grpc, MetricsEqualTheSmiHttpApi) {
  auto [client, server] = setUpPair();
  Proc srv = serve(*server, "8080");
  std::string ok = attempts(*client, *server, 8080, 4),
              denied = attempts(*client, *server, 7070, 3);
  ASSERT_EQ(std::count(ok.begin(), ok.end(), 'k'), 4) << ok;
  ASSERT_NE(denied.find("timeout"), std::string::npos) << denied;

  // The longest window: nothing ages out between the HTTP and gRPC reads.
  const std::string base = "/apis/metrics.smi-spec.io/v1alpha1/namespaces/app/pods/";
  json to, from;
  ASSERT_TRUE(eventually(
      [&] {
        to = httpJson(base + "client/edges?t=10m");
        from = httpJson(base + "server/edges?t=10m");
        return to["items"].size() == 1 && from["items"].size() == 1 &&
               metric(to["items"][0], "failure_count") == "3" &&
               metric(from["items"][0], "failure_count") == "3" &&
               metric(to["items"][0], "success_count") == "4";
      },
      3000))
      << to.dump(1) << "\n"
      << from.dump(1);
  json server_total = httpJson(base + "server?t=10m");

  auto expectSame = [](const json& item, uint64_t success, uint64_t failure, double p50, double p90,
                       double p99, const std::string& what) {
    EXPECT_EQ(std::to_string(success), metric(item, "success_count")) << what;
    EXPECT_EQ(std::to_string(failure), metric(item, "failure_count")) << what;
    EXPECT_DOUBLE_EQ(p50, quantity(metric(item, "p50_response_latency"))) << what;
    EXPECT_DOUBLE_EQ(p90, quantity(metric(item, "p90_response_latency"))) << what;
    EXPECT_DOUBLE_EQ(p99, quantity(metric(item, "p99_response_latency"))) << what;
  };

  // The gRPC API itself.
  pb::ListEdgesRequest req;
  req.set_kind("pod");
  req.set_namespace_("app");
  req.set_window_seconds(600);
  pb::ListEdgesReply reply;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Status st = stub()->ListEdges(&ctx, req, &reply);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(reply.window_seconds(), 600u);
  ASSERT_EQ(reply.resources_size(), 2) << reply.DebugString();
  for (const auto& rm : reply.resources()) {
    ASSERT_EQ(rm.edges_size(), 1) << rm.DebugString();
    const auto& e = rm.edges(0);
    const auto& c = e.counts();
    if (rm.resource().name() == "client") {
      EXPECT_EQ(e.direction(), "to");
      EXPECT_EQ(e.peer().name(), "server");
      EXPECT_EQ(c.policy() + c.timeout(), 3u) << "denied attempts are failures, by whatever reason";
      expectSame(to["items"][0], c.success(), c.failure(), c.p50_ms(), c.p90_ms(), c.p99_ms(),
                 "grpc client->server");
    } else {
      EXPECT_EQ(rm.resource().name(), "server");
      EXPECT_EQ(e.direction(), "from");
      EXPECT_EQ(e.peer().name(), "client");
      expectSame(from["items"][0], c.success(), c.failure(), c.p50_ms(), c.p90_ms(), c.p99_ms(),
                 "grpc server<-client");
      const auto& in = rm.inbound();
      expectSame(server_total, in.success(), in.failure(), in.p50_ms(), in.p90_ms(), in.p99_ms(),
                 "grpc server inbound");
    }
  }

  // The CLI over it.
  json m = cliJson({"metrics", "-n", "app", "--window", "10m", "-o", "json"});
  ASSERT_EQ(m["resources"].size(), 2u) << m.dump(1);
  for (const auto& rm : m["resources"]) {
    ASSERT_EQ(rm["edges"].size(), 1u) << rm.dump(1);
    const json& c = rm["edges"][0]["counts"];
    bool is_client = rm["resource"]["name"] == "client";
    expectSame(is_client ? to["items"][0] : from["items"][0], c["success"], c["failure"],
               c["p50Ms"], c["p90Ms"], c["p99Ms"], "cli " + rm["resource"].dump());
    if (!is_client) {
      const json& in = rm["inbound"];
      expectSame(server_total, in["success"], in["failure"], in["p50Ms"], in["p90Ms"], in["p99Ms"],
                 "cli server inbound");
    }
  }

  // The table: a row per resource total and per edge.
  auto table = cli({"metrics", "-n", "app", "--window", "10m"});
  ASSERT_TRUE(table.ok()) << table.output;
  EXPECT_NE(table.output.find("SUCCESS%"), std::string::npos) << table.output;
  EXPECT_TRUE(
      std::regex_search(table.output, std::regex(R"(app/client +app/server +to +4 +3 +57\.1%)")))
      << table.output;

  // A namespace asked with -n, as the HTTP API's /namespaces/app.
  json nsm =
      cliJson({"metrics", "--kind", "namespace", "-n", "app", "--window", "10m", "-o", "json"});
  json ns_http = httpJson("/apis/metrics.smi-spec.io/v1alpha1/namespaces/app?t=10m");
  ASSERT_EQ(nsm["resources"].size(), 1u) << nsm.dump(1);
  EXPECT_EQ(std::to_string(nsm["resources"][0]["inbound"]["success"].get<uint64_t>()),
            metric(ns_http, "success_count"));
  EXPECT_EQ(std::to_string(nsm["resources"][0]["inbound"]["failure"].get<uint64_t>()),
            metric(ns_http, "failure_count"));
}

// `smik events`, started before the denied connection, shows it: a
// policy-deny or connect-failed event naming both pods.
TEST_F(Grpc, EventsShowADeniedConnection) {
  auto [client, server] = setUpPair();
  Proc events = bed_->spawn({SMIK_CLI, "events", "--count", "1", "--grpc", sock_});
  // The stream may not be subscribed yet when the first attempt is denied, and
  // the kernel sends at most one event per edge and kind a second: retry
  // slower than that until an event arrives.
  int status = -1;
  for (int i = 0; i < 6 && status < 0; i++) {
    attempts(*client, *server, 7070, 1);
    status = events.wait(1500);
  }
  std::string out = events.output();
  ASSERT_EQ(status, 0) << "no event within 9 s: " << out;
  EXPECT_TRUE(out.find("policy-deny") != std::string::npos ||
              out.find("connect-failed") != std::string::npos)
      << out;
  EXPECT_NE(out.find("app/client -> app/server 7070/TCP"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "--count 1: " << out;

  // JSON, one object per line, filtered by kind.
  Proc json_events = bed_->spawn(
      {SMIK_CLI, "events", "--count", "1", "--kind", "policy-deny", "-o", "json", "--grpc", sock_});
  status = -1;
  for (int i = 0; i < 6 && status < 0; i++) {
    attempts(*client, *server, 7070, 1);
    status = json_events.wait(1500);
  }
  ASSERT_EQ(status, 0) << json_events.output();
  json e = json::parse(json_events.output());
  EXPECT_EQ(e["kind"], "policy-deny");
  EXPECT_EQ(e["client"], "app/client");
  EXPECT_EQ(e["server"], "app/server");
  EXPECT_EQ(e["port"], 7070);
  EXPECT_EQ(e["proto"], "TCP");

  // An open stream does not hold the agent up: it stops, and the stream ends
  // with an error the CLI reports.
  Proc follow = bed_->spawn({SMIK_CLI, "events", "--grpc", sock_});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto t0 = std::chrono::steady_clock::now();
  stopAgent();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_EQ(follow.wait(3000), 1) << follow.output();
}

// status, explain, policy and map dump answer from the running agent.
TEST_F(Grpc, StatusExplainPolicyAndMapsFromTheAgent) {
  setUpPair();
  struct stat st {};
  ASSERT_EQ(stat(sock_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  json http = json::parse(status());
  json s = cliJson({"status", "-o", "json"});
  EXPECT_EQ(s["policyEntries"], http["policyEntries"]) << s.dump(1);
  EXPECT_GT(s["policyEntries"].get<int>(), 0);
  EXPECT_EQ(s["ready"], true);
  EXPECT_EQ(s["node"], kNode);
  EXPECT_EQ(s["endpoints"], http["endpoints"]);
  EXPECT_EQ(s["identities"], http["identities"]);
  EXPECT_EQ(s["notEnforced"], http["notEnforced"]);
  EXPECT_EQ(s["possibleCpus"], http["possibleCpus"]);
  // Every map, with its capacity and kernel memory (entries move: not compared).
  ASSERT_EQ(s["maps"].size(), http["maps"].size()) << s["maps"].dump(1);
  for (size_t i = 0; i < s["maps"].size(); i++) {
    EXPECT_EQ(s["maps"][i]["name"], http["maps"][i]["name"]);
    EXPECT_EQ(s["maps"][i]["maxEntries"], http["maps"][i]["maxEntries"]);
    EXPECT_EQ(s["maps"][i]["bytes"], http["maps"][i]["bytes"]);
    EXPECT_GT(s["maps"][i]["bytes"].get<uint64_t>(), 0u);
  }
  EXPECT_EQ(cli({"status", "--check"}).status, 0);
  auto text = cli({"status"});
  EXPECT_NE(text.output.find("ready: yes"), std::string::npos) << text.output;
  EXPECT_TRUE(std::regex_search(text.output, std::regex(R"(\n  smik_conn +lru_hash +\d+ / 16384 +[0-9.]+ MiB\n)")))
      << text.output;

  // explain without --manifests: the agent's state decides.
  json allow = cliJson(
      {"explain", "--from", "app/client", "--to", "app/server", "--port", "8080", "-o", "json"});
  EXPECT_EQ(allow["allowed"], true) << allow.dump(1);
  EXPECT_EQ(allow["trafficTarget"], "app/tt");
  json deny = cliJson(
      {"explain", "--from", "app/client", "--to", "app/server", "--port", "7070", "-o", "json"});
  EXPECT_EQ(deny["allowed"], false) << deny.dump(1);
  auto unknown = cli({"explain", "--from", "app/nobody", "--to", "app/server", "--port", "8080"});
  EXPECT_EQ(unknown.status, 2) << unknown.output;

  // The agent's view follows the manifests it watches.
  write("policy2.yaml", tcpRoute("app", "other", "[7070]") +
                            trafficTarget("app", "tt2", "app", "server", rule("TCPRoute", "other"),
                                          "app", "client"));
  ASSERT_TRUE(eventually(
      [&] {
        auto r = cli({"explain", "--from", "app/client", "--to", "app/server", "--port", "7070",
                      "-o", "json"});
        return r.ok() && json::parse(r.output)["allowed"] == true;
      },
      3000));

  // policy without --manifests: the plan the agent compiled, as many entries
  // as the kernel holds.
  json pol;
  ASSERT_TRUE(eventually(
      [&] {
        pol = cliJson({"policy", "-o", "json"});
        return pol["policy"].size() == json::parse(status())["policyEntries"].get<size_t>();
      },
      3000))
      << pol.dump(1) << "\n"
      << status();
  bool grant = false;
  for (const auto& e : pol["policy"])
    grant |= e.value("source", "") == "app/client" && e["destination"] == "app/server" &&
             e["port"] == 8080 && e["trafficTarget"] == "app/tt";
  EXPECT_TRUE(grant) << pol.dump(1);

  // map dump policy: the kernel's entries, identities named.
  json dump = cliJson({"map", "dump", "policy", "-o", "json"});
  EXPECT_EQ(dump["map"], "smik_policy");
  EXPECT_EQ(dump["entries"].size(), json::parse(status())["policyEntries"].get<size_t>())
      << dump.dump(1);
  auto dump_text = cli({"map", "dump", "policy"});
  ASSERT_TRUE(dump_text.ok()) << dump_text.output;
  EXPECT_TRUE(std::regex_search(
      dump_text.output, std::regex(R"(app/client \(\d+\) -> app/server \(\d+\) TCP/8080 +allow)")))
      << dump_text.output;
  for (const char* m : {"ipcache", "endpoints", "services", "edges", "conn"})
    EXPECT_TRUE(cli({"map", "dump", m}).ok()) << m;
  EXPECT_EQ(cli({"map", "dump", "nosuchmap"}).status, 2);

  // The agent removes its socket when it stops.
  stopAgent();
  EXPECT_FALSE(fs::exists(fs::symlink_status(sock_)));
  EXPECT_EQ(cli({"status", "--check"}).status, 1);
}

}  // namespace
}  // namespace smik::e2e
