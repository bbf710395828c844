// The Kubernetes source end to end against the fake API server (HTTPS,
// bearer token): discovery, sync gating, the same plan as the manifest
// directory, Events on rejected and partly applied SMI objects, and what
// happens while the API server is away.
#include "agent/source/kube_source.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "agent/compile/compile.h"
#include "agent/source/manifest_dir.h"
#include "tests/kube/fake_cluster.h"
#include "tests/support/eventually.h"

namespace smik::kube {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using smik::testing::FakeCluster;
using namespace std::chrono_literals;

const std::string kCluster = SMIK_FIXTURES_DIR "/cluster";

std::string readFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

using smik::testing::eventually;

FakeCluster::Options tlsOptions() {
  FakeCluster::Options o;
  o.tls = true;
  o.tls_dir = SMIK_KUBE_FIXTURES_DIR "/tls";
  o.max_page = 3;  // every collection of the fixture takes several pages
  return o;
}

KubeConfig configFor(const FakeCluster& c) {
  KubeConfig k;
  k.server = c.url();
  k.ca_file = SMIK_KUBE_FIXTURES_DIR "/tls/ca.crt";
  k.token = "smik-test-token";
  return k;
}

KubeSourceOptions fastOptions() {
  KubeSourceOptions o;
  o.reflector.backoff_initial = 20ms;
  o.reflector.backoff_max = 200ms;
  o.reflector.not_served_retry = 200ms;
  o.reflector.min_watch_duration = 50ms;
  o.discovery_retry_initial = 20ms;
  o.discovery_retry_max = 200ms;
  o.events.host = "node-1";
  return o;
}

void loadFixture(FakeCluster* c) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(kCluster)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) c->applyYaml(readFile(f));
}

compile::NodeConfig node1() {
  compile::NodeConfig n;
  n.node_name = "node-1";
  n.host_addrs = {"192.168.0.1"};
  return n;
}

std::vector<std::string> diagnostics(const compile::Plan& p) {
  std::vector<std::string> out;
  for (const auto& d : p.diagnostics) out.push_back(d.str());
  return out;
}

std::vector<std::string> rules(const compile::Plan& p) {
  std::vector<std::string> out;
  for (const auto& r : p.rules) out.push_back(r.traffic_target + " " + r.rule);
  return out;
}

std::vector<std::string> endpoints(const compile::Plan& p) {
  std::vector<std::string> out;
  for (const auto& [pod, e] : p.endpoints) {
    std::string s = pod + " id=" + std::to_string(e.identity);
    for (const auto& a : e.addrs) s += " " + a.str();
    out.push_back(s);
  }
  return out;
}

std::vector<std::string> reasons(const std::vector<model::ParseError>& errors) {
  std::vector<std::string> out;
  for (const auto& e : errors) out.push_back(e.object.str() + ": " + e.reason);
  return out;
}

TEST(KubeSource, CompilesTheSamePlanAsTheManifestDirectory) {
  FakeCluster cluster(tlsOptions());
  loadFixture(&cluster);
  KubeSource kube(configFor(cluster), fastOptions());
  kube.start();
  ASSERT_TRUE(eventually([&] { return kube.synced(); })) << kube.problem();
  EXPECT_TRUE(kube.refresh());
  EXPECT_EQ(kube.problem(), "");

  source::ManifestDir dir(kCluster);
  dir.refresh();

  const compile::Plan a = compile::compile(dir.state(), node1());
  const compile::Plan b = compile::compile(kube.state(), node1());
  ASSERT_FALSE(a.policy.empty());
  ASSERT_FALSE(a.services.empty());
  EXPECT_EQ(a.identities, b.identities);
  EXPECT_TRUE(a.ip_identity == b.ip_identity);
  EXPECT_EQ(endpoints(a), endpoints(b));
  EXPECT_TRUE(a.policy == b.policy);
  EXPECT_EQ(rules(a), rules(b));
  EXPECT_TRUE(a.services == b.services);
  EXPECT_EQ(diagnostics(a), diagnostics(b));
  // The same object is rejected by both, for the same reason.
  EXPECT_EQ(reasons(dir.errors()), reasons(kube.errors()));
  ASSERT_EQ(kube.errors().size(), 1u);
  EXPECT_EQ(kube.errors()[0].object.name, "bad-port");
  kube.stop();
}

TEST(KubeSource, DiscoveryPicksTheBestServedVersion) {
  FakeCluster::Options o = tlsOptions();
  o.smi_versions = {{"access.smi-spec.io", {"v1alpha2", "v1alpha1"}},
                    {"specs.smi-spec.io", {"v1alpha4", "v1alpha3"}}};  // no split group
  FakeCluster cluster(o);
  Cancel cancel;
  HttpClient http(configFor(cluster));
  std::string err;
  auto d = discover(http, cancel, &err);
  ASSERT_TRUE(d) << err;
  std::map<std::string, std::string> versions;
  for (const auto& r : d->resources) versions[r.kind] = r.api_version;
  EXPECT_EQ(versions["TrafficTarget"], "access.smi-spec.io/v1alpha2");
  EXPECT_EQ(versions["TCPRoute"], "specs.smi-spec.io/v1alpha4");
  EXPECT_EQ(versions["UDPRoute"], "specs.smi-spec.io/v1alpha4");
  EXPECT_EQ(versions["Pod"], "v1");
  EXPECT_EQ(versions["EndpointSlice"], "discovery.k8s.io/v1");
  // Not served: watched at the preferred version, waiting for the CRD.
  EXPECT_EQ(versions["TrafficSplit"], "split.smi-spec.io/v1alpha4");
  EXPECT_EQ(d->not_served, std::vector<std::string>{"TrafficSplit.split.smi-spec.io"});
}

TEST(KubeSource, OlderServedVersionIsReadThroughTheSameNormalisation) {
  // A cluster with only v1alpha2 TrafficTargets installed: the same policy as
  // the v1alpha3 fixture, with v1alpha2's destination port kept as a narrowing.
  FakeCluster::Options o = tlsOptions();
  o.smi_versions = {{"access.smi-spec.io", {"v1alpha2"}},
                    {"specs.smi-spec.io", {"v1alpha4"}},
                    {"split.smi-spec.io", {"v1alpha4"}}};
  FakeCluster cluster(o);
  std::string text;
  {
    // v1alpha2 TrafficTargets cannot name UDPRoutes: leave that one out.
    std::string all = readFile(kCluster + "/cluster.yaml");
    size_t start = 0;
    while (start < all.size()) {
      size_t end = all.find("\n---\n", start);
      if (end == std::string::npos) end = all.size();
      std::string doc = all.substr(start, end - start);
      if (doc.find("api-to-db") == std::string::npos) text += doc + "\n---\n";
      start = end + 5;
    }
  }
  for (size_t p; (p = text.find("access.smi-spec.io/v1alpha3")) != std::string::npos;)
    text.replace(p, 27, "access.smi-spec.io/v1alpha2");
  cluster.applyYaml(text);

  const std::string tmp = "/tmp/smik-kube-src-" + std::to_string(getpid());
  fs::create_directories(tmp);
  std::ofstream(tmp + "/cluster.yaml") << text;
  source::ManifestDir dir(tmp);
  dir.refresh();

  KubeSource kube(configFor(cluster), fastOptions());
  kube.start();
  ASSERT_TRUE(eventually([&] { return kube.synced(); })) << kube.problem();
  kube.refresh();
  const compile::Plan a = compile::compile(dir.state(), node1());
  const compile::Plan b = compile::compile(kube.state(), node1());
  EXPECT_FALSE(b.policy.empty());
  EXPECT_TRUE(a.policy == b.policy);
  EXPECT_EQ(rules(a), rules(b));
  kube.stop();
  fs::remove_all(tmp);
}

TEST(KubeSource, NotSyncedUntilTheServerAnswersThenFollowsChanges) {
  // Nothing listens yet: the source must say why it is not ready, and
  // refresh() must not offer an empty cluster to compile.
  int port;
  {
    FakeCluster probe(tlsOptions());
    port = probe.port();
  }
  KubeConfig cfg;
  cfg.server = "https://127.0.0.1:" + std::to_string(port);
  cfg.ca_file = SMIK_KUBE_FIXTURES_DIR "/tls/ca.crt";
  cfg.token = "smik-test-token";
  KubeSource kube(cfg, fastOptions());
  kube.start();
  // Sync point: discovery has tried and failed (the reason replaces
  // "discovering served versions"); only then is "not synced" a result.
  ASSERT_TRUE(eventually([&] {
    return kube.problem().find("discovering served versions") == std::string::npos;
  })) << kube.problem();
  EXPECT_FALSE(kube.synced());
  EXPECT_FALSE(kube.refresh());
  EXPECT_NE(kube.problem().find("waiting for the Kubernetes API"), std::string::npos)
      << kube.problem();

  FakeCluster::Options o = tlsOptions();
  o.port = port;
  auto cluster = std::make_unique<FakeCluster>(o);
  loadFixture(cluster.get());
  ASSERT_TRUE(eventually([&] { return kube.synced(); })) << kube.problem();
  EXPECT_TRUE(kube.refresh());
  EXPECT_FALSE(kube.refresh());  // nothing new

  // A change is seen, and wakes waitForChange.
  std::thread later([&] {
    std::this_thread::sleep_for(100ms);
    cluster->remove("TrafficTarget", "shop", "web-to-api");
  });
  const auto t0 = std::chrono::steady_clock::now();
  kube.waitForChange(5000);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
  later.join();
  ASSERT_TRUE(eventually([&] { return kube.refresh(); }));
  EXPECT_EQ(kube.state().traffic_targets.count("shop/web-to-api"), 0u);

  // The server goes away: the last view stays (and says so), then a new
  // server with a different history is relisted from scratch.
  const size_t before = compile::compile(kube.state(), node1()).policy.size();
  cluster.reset();
  ASSERT_TRUE(eventually([&] { return !kube.problem().empty(); })) << kube.problem();
  EXPECT_TRUE(kube.synced());
  EXPECT_EQ(compile::compile(kube.state(), node1()).policy.size(), before);

  // The restarted server's etcd has moved on and compacted: watches from
  // our last version get 410, and only a relist brings the view back.
  o.first_rv = 5000;
  cluster = std::make_unique<FakeCluster>(o);
  loadFixture(cluster.get());
  ASSERT_TRUE(eventually([&] { return kube.state().traffic_targets.count("shop/web-to-api") == 1; },
                         10000ms))
      << kube.problem();
  ASSERT_TRUE(eventually([&] { return kube.problem().empty(); }, 10000ms)) << kube.problem();
  kube.stop();
}

TEST(KubeSource, ReplacesAReflectorWhenTheServedVersionChanges) {
  FakeCluster::Options o = tlsOptions();
  o.smi_versions = {{"access.smi-spec.io", {"v1alpha2"}}, {"specs.smi-spec.io", {"v1alpha4"}}};
  FakeCluster cluster(o);
  const std::string target =
      "apiVersion: access.smi-spec.io/VERSION\nkind: TrafficTarget\n"
      "metadata: {name: NAME, namespace: shop}\n"
      "spec:\n  destination: {kind: ServiceAccount, name: api, namespace: shop}\n"
      "  rules: [{kind: TCPRoute, name: api-port}]\n"
      "  sources: [{kind: ServiceAccount, name: web, namespace: shop}]\n";
  auto make = [&](const std::string& version, const std::string& name) {
    std::string t = target;
    t.replace(t.find("VERSION"), 7, version);
    t.replace(t.find("NAME"), 4, name);
    return t;
  };
  cluster.applyYaml(make("v1alpha2", "old"));
  KubeSourceOptions ko = fastOptions();
  ko.rediscover = 100ms;
  KubeSource kube(configFor(cluster), ko);
  kube.start();
  ASSERT_TRUE(eventually([&] { return kube.synced(); })) << kube.problem();
  auto versionOf = [&](const std::string& kind) {
    for (const auto& [r, st] : kube.reflectors())
      if (r.kind == kind) return r.api_version;
    return std::string();
  };
  EXPECT_EQ(versionOf("TrafficTarget"), "access.smi-spec.io/v1alpha2");
  EXPECT_EQ(kube.state().traffic_targets.count("shop/old"), 1u);

  // The CRD is upgraded: v1alpha3 is served (the fake does not convert, so
  // what it serves at v1alpha3 is a different object: proof of which
  // collection the source reads).
  cluster.applyYaml(make("v1alpha3", "new"));
  cluster.serveVersions("access.smi-spec.io", {"v1alpha3", "v1alpha2"});
  ASSERT_TRUE(
      eventually([&] { return versionOf("TrafficTarget") == "access.smi-spec.io/v1alpha3"; }));
  ASSERT_TRUE(eventually([&] { return kube.state().traffic_targets.count("shop/new") == 1; }))
      << (kube.errors().empty() ? kube.problem() : kube.errors()[0].str());
  EXPECT_EQ(kube.state().traffic_targets.count("shop/old"), 0u);
  kube.stop();
}

// Where the Event tests start: the fixture's objects served, the source
// started on them, synced, and its state read.
void startSynced(FakeCluster* cluster, KubeSource* kube) {
  loadFixture(cluster);
  kube->start();
  ASSERT_TRUE(eventually([&] { return kube->synced(); })) << kube->problem();
  ASSERT_TRUE(kube->refresh());
}

TEST(KubeSource, RecordsEventsOnRejectedAndPartlyAppliedObjects) {
  FakeCluster cluster(tlsOptions());
  KubeSource kube(configFor(cluster), fastOptions());
  ASSERT_NO_FATAL_FAILURE(startSynced(&cluster, &kube));
  kube.reportPlan(compile::compile(kube.state(), node1()));

  auto find = [&](const std::string& name, const std::string& reason) -> json {
    for (const auto& e : cluster.events())
      if (e["involvedObject"]["name"] == name && e["reason"] == reason) return e;
    return nullptr;
  };
  ASSERT_TRUE(eventually([&] { return !find("bad-port", "Rejected").is_null(); }))
      << "events: " << json(cluster.events()).dump();
  json rejected = find("bad-port", "Rejected");
  EXPECT_EQ(rejected["type"], "Warning");
  EXPECT_EQ(rejected["involvedObject"]["kind"], "TCPRoute");
  EXPECT_EQ(rejected["involvedObject"]["apiVersion"], "specs.smi-spec.io/v1alpha4");
  EXPECT_EQ(rejected["involvedObject"]["namespace"], "shop");
  EXPECT_FALSE(rejected["involvedObject"]["uid"].get<std::string>().empty());
  EXPECT_NE(rejected["message"].get<std::string>().find("70000"), std::string::npos);
  EXPECT_EQ(rejected["source"]["component"], "smik-agent");
  EXPECT_EQ(rejected["metadata"]["namespace"], "shop");

  ASSERT_TRUE(eventually([&] { return !find("dangling", "NotApplied").is_null(); }));
  EXPECT_NE(find("dangling", "NotApplied")["message"].get<std::string>().find("no-such-route"),
            std::string::npos);
  // Informational diagnostics (L4 cannot see HTTP paths) are not Events.
  EXPECT_TRUE(find("web-to-api", "NotApplied").is_null());

  // The same report again within the repeat window writes nothing new:
  // record() drops the repeat on the spot, so nothing is queued to write.
  ASSERT_TRUE(eventually([&] { return kube.events()->stats().written == 2; }));
  const auto before = kube.events()->stats();
  kube.reportPlan(compile::compile(kube.state(), node1()));
  const auto after = kube.events()->stats();
  EXPECT_GT(after.repeats, before.repeats);
  EXPECT_EQ(after.queued, 0u);
  EXPECT_EQ(after.written, before.written);
  EXPECT_EQ(cluster.events().size(), 2u);
  kube.stop();
}

TEST(KubeSource, RecordsEventsOnObjectsRejectedForCapacity) {
  FakeCluster cluster(tlsOptions());
  KubeSource kube(configFor(cluster), fastOptions());
  ASSERT_NO_FATAL_FAILURE(startSynced(&cluster, &kube));
  compile::NodeConfig node = node1();
  node.capacity.policy = 1;    // room for little more than nothing
  node.capacity.services = 1;
  const compile::Plan plan = compile::compile(kube.state(), node);
  std::set<std::string> kinds;
  for (const auto& r : plan.over_capacity) kinds.insert(r.object.kind);
  ASSERT_TRUE(kinds.count("TrafficTarget") && kinds.count("Service"));
  kube.reportPlan(plan);
  // Every object the compiler rejected for capacity that can carry an
  // Event gets one, naming the map's limit.
  for (const auto& r : plan.over_capacity) {
    if (r.object.kind != "TrafficTarget" && r.object.kind != "Service") continue;
    SCOPED_TRACE(r.object.str());
    ASSERT_TRUE(eventually([&] {
      for (const auto& e : cluster.events())
        if (e["involvedObject"]["kind"] == r.object.kind &&
            e["involvedObject"]["name"] == r.object.name && e["reason"] == "NotApplied" &&
            e["message"].get<std::string>().find("holds 1 ") != std::string::npos)
          return true;
      return false;
    })) << json(cluster.events()).dump(1);
  }
  kube.stop();
}

TEST(EventRecorder, SecondAgentFindsTheEventWrittenAndForbiddenIsNotFatal) {
  FakeCluster cluster(tlsOptions());
  HttpClient http(configFor(cluster));
  InvolvedObject obj{"access.smi-spec.io/v1alpha3", "TrafficTarget", "shop", "t", "uid-1", "7"};
  EventRecorderOptions o;
  o.host = "node-1";
  EventRecorder a(http, o);
  EventRecorder b(http, o);
  a.start();
  b.start();
  a.record(obj, "Warning", "Rejected", "bad port");
  ASSERT_TRUE(eventually([&] { return a.stats().written == 1; }));
  b.record(obj, "Warning", "Rejected", "bad port");
  ASSERT_TRUE(eventually([&] { return b.stats().duplicate == 1; }));
  EXPECT_EQ(cluster.events().size(), 1u);

  cluster.forbidEvents(true);
  a.record(obj, "Warning", "Rejected", "another problem");
  ASSERT_TRUE(eventually([&] { return a.stats().forbidden == 1; }));
  a.record(obj, "Warning", "Rejected", "a third problem");
  ASSERT_TRUE(eventually([&] { return a.stats().forbidden == 2; }));
  a.stop();
  b.stop();
}

TEST(EventRecorder, RepeatsBumpTheCountAndTheBucketLimitsBursts) {
  FakeCluster cluster(tlsOptions());
  HttpClient http(configFor(cluster));
  EventRecorderOptions o;
  o.repeat_after = 50ms;
  o.burst = 3;
  o.refill = 60s;  // no refill within the test
  EventRecorder r(http, o);
  r.start();
  InvolvedObject obj{"split.smi-spec.io/v1alpha4", "TrafficSplit", "shop", "s", "uid-2", "1"};
  r.record(obj, "Warning", "NotApplied", "matches are not applied");
  ASSERT_TRUE(eventually([&] { return r.stats().written == 1; }));
  std::this_thread::sleep_for(60ms);
  r.record(obj, "Warning", "NotApplied", "matches are not applied");
  ASSERT_TRUE(eventually([&] { return r.stats().written == 2; }));
  ASSERT_EQ(cluster.events().size(), 1u);
  EXPECT_EQ(cluster.events()[0]["count"], 2);
  // Tokens: 3 in the bucket, 2 spent. Five new problems: one goes out.
  for (int i = 0; i < 5; ++i)
    r.record(obj, "Warning", "NotApplied", "problem " + std::to_string(i));
  // The writer spends the last token, then finds the bucket empty and
  // waits a refill (60 s) with the other four still queued.
  ASSERT_TRUE(eventually([&] { return r.stats().throttled >= 1; }));
  EXPECT_EQ(r.stats().written, 3u);
  EXPECT_EQ(r.stats().queued, 4u);
  EXPECT_EQ(cluster.events().size(), 2u);
  r.stop();
}

// ---- One connection per agent (issue 13) -------------------------------------

size_t watchesOpened(const FakeCluster& c) {
  size_t n = 0;
  for (const auto& r : c.requests()) n += r.find("watch=") != std::string::npos;
  return n;
}

// Every collection synced and its watch open; how many collections.
size_t syncAndWatch(KubeSource& kube, const FakeCluster& cluster) {
  kube.start();
  EXPECT_TRUE(eventually([&] { return kube.synced(); })) << kube.problem();
  const size_t n = kube.reflectors().size();
  EXPECT_TRUE(eventually([&] { return watchesOpened(cluster) >= n; }));
  return n;
}

std::string podsVersion(const KubeSource& kube) {
  for (const auto& [res, st] : kube.reflectors())
    if (res.kind == "Pod") return st.resource_version;
  return "";
}

json podNamed(const std::string& name) {
  return json{{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", {{"name", name}, {"namespace", "default"}}},
              {"spec", {{"nodeName", "node-1"}}}};
}

TEST(KubeSource, OneHttp2ConnectionCarriesEveryListAndWatch) {
  ASSERT_TRUE(curlHasHttp2());
  FakeCluster::Options o = tlsOptions();
  o.http2 = true;
  FakeCluster cluster(o);
  loadFixture(&cluster);
  KubeSource kube(configFor(cluster), fastOptions());
  const size_t n = syncAndWatch(kube, cluster);
  ASSERT_GE(n, 10u);
  EXPECT_EQ(cluster.connections(), 1u);
  EXPECT_EQ(cluster.connectionsOpen(), 1u);
  EXPECT_GE(cluster.streams(), 2 * n);  // a list (of pages) and a watch each
  // The same objects, the same rejection, as over HTTP/1.1.
  ASSERT_EQ(kube.errors().size(), 1u);
  EXPECT_EQ(kube.errors()[0].object.name, "bad-port");
  // Changes still arrive on the multiplexed watches.
  cluster.apply(podNamed("late"));
  const std::string rv = std::to_string(1000 + cluster.objectCount());
  EXPECT_TRUE(eventually([&] { return std::stoull(podsVersion(kube)) >= std::stoull(rv); }))
      << podsVersion(kube);
  EXPECT_EQ(cluster.connections(), 1u);
  kube.stop();
}

TEST(KubeSource, Http1OnlyServerGetsAConnectionPerWatch) {
  // cpp-httplib offers no ALPN: HTTP/1.1, which cannot multiplex, so each
  // concurrent request needs a connection of its own, as before issue 13.
  FakeCluster cluster(tlsOptions());
  loadFixture(&cluster);
  KubeSource kube(configFor(cluster), fastOptions());
  const size_t n = syncAndWatch(kube, cluster);
  EXPECT_GE(cluster.connections(), n);
  ASSERT_EQ(kube.errors().size(), 1u);
  EXPECT_EQ(kube.errors()[0].object.name, "bad-port");
  kube.stop();
}

TEST(KubeSource, PerRequestTransportOpensAConnectionPerRequest) {
  FakeCluster::Options o = tlsOptions();
  o.http2 = true;
  FakeCluster cluster(o);
  loadFixture(&cluster);
  KubeSourceOptions opts = fastOptions();
  opts.transport = HttpTransport::kPerRequest;
  KubeSource kube(configFor(cluster), opts);
  const size_t n = syncAndWatch(kube, cluster);
  EXPECT_GE(cluster.connections(), n);
  EXPECT_EQ(cluster.connections(), cluster.streams());
  kube.stop();
}

TEST(HttpClient, AStalledStreamDoesNotHoldUpTheOthersOnItsConnection) {
  FakeCluster::Options o = tlsOptions();
  o.http2 = true;
  FakeCluster cluster(o);
  loadFixture(&cluster);
  HttpClient http(configFor(cluster));
  ASSERT_EQ(http.transport(), HttpTransport::kMultiplexed);
  // A watch whose reader stops at its first piece, as a stuck consumer.
  std::mutex mu;
  std::condition_variable cv;
  bool got_data = false, release = false;
  Cancel watch_cancel;
  std::thread watcher([&] {
    http.get("/api/v1/pods?watch=1&resourceVersion=1000", [&](std::string_view) {
      std::unique_lock lock(mu);
      got_data = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
      return true;
    }, watch_cancel);
  });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return got_data; }));
  }
  // Meanwhile, on the same connection, more events for the stuck watch and
  // whole lists for others.
  for (int i = 0; i < 50; ++i) cluster.apply(podNamed("flood-" + std::to_string(i)));
  for (int i = 0; i < 5; ++i) {
    Cancel cancel;
    std::string body;
    const auto t0 = std::chrono::steady_clock::now();
    const HttpResponse r = http.get("/api/v1/namespaces", [&](std::string_view p) {
      body.append(p);
      return true;
    }, cancel);
    EXPECT_EQ(r.status, 200) << r.error;
    EXPECT_NE(body.find("NamespaceList"), std::string::npos);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  }
  EXPECT_EQ(cluster.connections(), 1u);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  watch_cancel.cancel();
  watcher.join();
}

TEST(HttpClient, AStalledBigBodyIsPausedAndResumedWhole) {
  // More than the multiplexer buffers for a caller (4 MiB): the stream is
  // paused, not the connection, and nothing is lost on resume.
  FakeCluster::Options o = tlsOptions();
  o.http2 = true;
  o.max_page = 0;
  FakeCluster cluster(o);
  for (int i = 0; i < 12; ++i) {
    json pod = podNamed("big-" + std::to_string(i));
    pod["metadata"]["annotations"]["filler"] = std::string(512 * 1024, 'a' + i);
    cluster.apply(pod);
  }
  HttpClient http(configFor(cluster));
  std::mutex mu;
  std::condition_variable cv;
  bool got_data = false, release = false;
  std::string body;
  Cancel list_cancel;
  HttpResponse big;
  std::thread lister([&] {
    big = http.get("/api/v1/pods", [&](std::string_view p) {
      std::unique_lock lock(mu);
      body.append(p);
      got_data = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
      return true;
    }, list_cancel);
  });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return got_data; }));
  }
  std::this_thread::sleep_for(300ms);  // the rest arrives, fills the buffer, pauses
  Cancel cancel;
  const HttpResponse small = http.get("/api/v1/namespaces", [](std::string_view) { return true; },
                                      cancel);
  EXPECT_EQ(small.status, 200) << small.error;
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  lister.join();
  EXPECT_EQ(big.status, 200) << big.error;
  const json list = json::parse(body, nullptr, false);
  ASSERT_TRUE(list.is_object());
  ASSERT_EQ(list["items"].size(), 12u);
  for (int i = 0; i < 12; ++i)
    EXPECT_EQ(list["items"][i]["metadata"]["annotations"]["filler"].get<std::string>().size(),
              512u * 1024);
  EXPECT_EQ(cluster.connections(), 1u);
}

}  // namespace
}  // namespace smik::kube

namespace smik::kube {
namespace {

// tls-server-name: the certificate is checked against that name while the
// connection goes to the configured server. The fixture's certificate names
// only 127.0.0.1, so "localhost" fails unless the server name says 127.0.0.1.
TEST(HttpClientTls, TlsServerNameIsWhatTheCertificateIsCheckedAgainst) {
  FakeCluster cluster(tlsOptions());
  KubeConfig k = configFor(cluster);
  k.server = "https://localhost:" + std::to_string(cluster.port());
  Cancel cancel;
  auto get = [&](const KubeConfig& c) {
    HttpClient http(c);
    return http.get("/api/v1/pods", [](std::string_view) { return true; }, cancel);
  };
  HttpResponse plain = get(k);
  EXPECT_NE(plain.status, 200);
  EXPECT_FALSE(plain.error.empty());
  k.tls_server_name = "127.0.0.1";
  HttpResponse named = get(k);
  EXPECT_EQ(named.status, 200) << named.error;
}

}  // namespace
}  // namespace smik::kube
