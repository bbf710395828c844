// The list/watch reflector against a fake API server on 127.0.0.1: paged
// lists, watch streams cut at awkward byte boundaries, bookmarks, both forms
// of 410, disconnects, 429, 404 and shutdown; retry pacing on a fake clock.
#include "agent/source/kube_reflector.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/source/kube_cache.h"
#include "agent/source/kube_http.h"
#include "tests/support/eventually.h"
#include "tests/support/host_port.h"
#include "tests/unit/kube_fake_api.h"

namespace smik::kube {
namespace {

// A watch event line with its type before its object, and one with it after
// (the decoders must not depend on the order the server writes them in).
std::vector<std::string> typeFirstAndLast(const std::string& first, const std::string& last,
                                          const json& object) {
  return {R"({"type":")" + first + R"(","object":)" + object.dump() + "}",
          R"({"object":)" + object.dump() + R"(,"type":")" + last + R"("})"};
}

// ---- Reflector --------------------------------------------------------------

TEST(Reflector, PagedListThenWatchFromTheListsVersion) {
  // Items carry their own, older versions in key order: resuming from one
  // would replay history (or hit 410) instead of continuing from the list.
  const std::vector<json> items = {pod("a", "50"), pod("b", "7"), pod("c", "90"), pod("d", "3"),
                                   pod("e", "60")};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, items, "100");
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 1; }));
  const auto lists = h.server.lists();
  ASSERT_EQ(lists.size(), 3u);
  EXPECT_EQ(lists[0].path, "/api/v1/pods");
  EXPECT_EQ(lists[0].param("limit"), "2");
  EXPECT_EQ(lists[0].param("resourceVersion"), "0");  // first list: from the watch cache
  EXPECT_EQ(lists[0].param("continue"), "<unset>");
  EXPECT_EQ(lists[1].param("continue"), "t+/=2");
  EXPECT_EQ(lists[1].param("resourceVersion"), "<unset>");  // the token carries it
  EXPECT_EQ(lists[2].param("continue"), "t+/=4");
  const auto w = h.server.watches()[0];
  EXPECT_EQ(w.param("resourceVersion"), "100");
  EXPECT_EQ(w.param("allowWatchBookmarks"), "true");
  EXPECT_EQ(w.param("timeoutSeconds"), "7");
  EXPECT_EQ(h.keys(), (Strings{"prod/a", "prod/b", "prod/c", "prod/d", "prod/e"}));
  EXPECT_EQ(h.events().size(), 5u);
  // List items come without kind/apiVersion; the reflector fills them in.
  EXPECT_EQ(h.lastObject("prod/c")["kind"], "Pod");
  EXPECT_EQ(h.lastObject("prod/c")["apiVersion"], "v1");
  auto st = h.reflector->status();
  EXPECT_TRUE(st.synced);
  EXPECT_EQ(st.lists, 1u);
  EXPECT_EQ(st.resource_version, "100");
}

// A page as a real API server writes it: kind, apiVersion, then metadata
// (version and continue token) before the items, so the next page can be
// asked for before this one has arrived. Split where its items start.
struct MetaFirstPage {
  std::string head, items;
  std::string text() const { return head + items; }
};
MetaFirstPage metaFirstPage(const httplib::Request& req, const std::vector<json>& items,
                            const std::string& rv) {
  const size_t limit = req.has_param("limit") ? std::stoul(req.get_param_value("limit")) : 1000;
  size_t start = 0;
  if (req.has_param("continue")) start = std::stoul(req.get_param_value("continue").substr(4));
  const size_t end = std::min(items.size(), start + limit);
  json meta = {{"resourceVersion", rv}};
  if (end < items.size()) meta["continue"] = "t+/=" + std::to_string(end);
  MetaFirstPage page;
  page.head = R"({"kind":"PodList","apiVersion":"v1","metadata":)" + meta.dump() + R"(,"items":[)";
  for (size_t i = start; i < end; ++i) page.items += (i > start ? "," : "") + items[i].dump();
  page.items += "]}";
  return page;
}

// Every list request's resourceVersion and continue token, in order.
Strings listAsks(const FakeApiServer& server) {
  Strings asked;
  for (const auto& r : server.lists())
    asked.push_back(r.param("resourceVersion") + "|" + r.param("continue"));
  return asked;
}

TEST(Reflector, NextPageIsAskedForWhileThisOneIsStillArriving) {
  const std::vector<json> items = {pod("a", "1"), pod("b", "2"), pod("c", "3"), pod("d", "4"),
                                   pod("e", "5")};
  std::atomic<bool> overlapped{false};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (req.has_param("watch")) return stream(res, "", 1, End::kHang, h.server.stopping());
    const MetaFirstPage page = metaFirstPage(req, items, "10");
    if (req.has_param("continue")) return res.set_content(page.text(), "application/json");
    // The first page: its metadata, then its items only once the second
    // page has been asked for (or never, if it is not).
    auto sent = std::make_shared<int>(0);
    res.set_chunked_content_provider(
        "application/json", [&, page, sent](size_t, httplib::DataSink& sink) {
          if ((*sent)++ == 0) return sink.write(page.head.data(), page.head.size());
          const bool asked = eventually([&] { return h.server.lists().size() >= 2; });
          overlapped = overlapped || asked;
          sink.write(page.items.data(), page.items.size());
          sink.done();
          return true;
        });
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 1; }));
  EXPECT_TRUE(overlapped);
  EXPECT_EQ(listAsks(h.server), (Strings{"0|<unset>", "<unset>|t+/=2", "<unset>|t+/=4"}));
  EXPECT_EQ(h.keys(), (Strings{"prod/a", "prod/b", "prod/c", "prod/d", "prod/e"}));
  EXPECT_EQ(h.reflector->status().lists, 1u);
  EXPECT_EQ(h.server.watches()[0].param("resourceVersion"), "10");
}

// The second page answers 410 once: the list is abandoned and started again,
// consistently, and nothing of the broken list is applied. `meta_first`:
// pages as a real API server writes them, so page two is asked for while
// page one arrives.
void expectAnExpiredContinueTokenToRelist(bool meta_first) {
  const std::vector<json> items = {pod("a", "1"), pod("b", "2"), pod("c", "3")};
  std::atomic<bool> expired_once{false};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (req.has_param("watch")) return stream(res, "", 1, End::kHang, h.server.stopping());
    if (req.has_param("continue") && !expired_once.exchange(true))
      return replyStatus(res, 410, "Expired");
    if (!meta_first) return serveList(req, res, items, "10");
    res.set_content(metaFirstPage(req, items, "10").text(), "application/json");
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 1; }));
  EXPECT_EQ(listAsks(h.server),
            (Strings{"0|<unset>", "<unset>|t+/=2", "<unset>|<unset>", "<unset>|t+/=2"}));
  EXPECT_EQ(h.keys(), (Strings{"prod/a", "prod/b", "prod/c"}));
  EXPECT_EQ(h.reflector->status().lists, 1u);  // the broken list was never applied
  EXPECT_EQ(h.server.watches()[0].param("resourceVersion"), "10");
}

TEST(Reflector, ExpiredContinueTokenRestartsTheListConsistently) {
  expectAnExpiredContinueTokenToRelist(false);
}

TEST(Reflector, ContinueTokenExpiringWhileTheNextPageIsInFlightRelists) {
  expectAnExpiredContinueTokenToRelist(true);
}

TEST(Reflector, APageThatBreaksAfterTheNextWasAskedForFailsTheListAndDropsTheNext) {
  // Page one names its continue token, then turns out not to be JSON; the
  // page asked for ahead of it hangs. The list fails as a bad page always
  // did (the hanging page does not hold the reflector), and the next list
  // starts from the first page again.
  const std::vector<json> items = {pod("a", "1"), pod("b", "2"), pod("c", "3")};
  std::atomic<int> first_pages{0}, next_pages{0};
  ClockedConfig clocked(10ms);  // the first retry waits for finish()
  Harness h(
      [&](const httplib::Request& req, httplib::Response& res) {
        if (req.has_param("watch")) return stream(res, "", 1, End::kHang, h.server.stopping());
        const MetaFirstPage page = metaFirstPage(req, items, "10");
        if (!req.has_param("continue")) {
          if (++first_pages == 1) {
            // Its metadata; once page two has been asked for, the rest.
            auto sent = std::make_shared<int>(0);
            res.set_chunked_content_provider(
                "application/json", [&, page, sent](size_t, httplib::DataSink& sink) {
                  if ((*sent)++ == 0) return sink.write(page.head.data(), page.head.size());
                  eventually([&] { return h.server.lists().size() >= 2; });
                  const std::string rest = R"({"metadata":{"name":"a"}},{not json]})";
                  sink.write(rest.data(), rest.size());
                  sink.done();
                  return true;
                });
            return;
          }
        } else if (++next_pages == 1) {
          return stream(res, "", 1, End::kHang, h.server.stopping());
        }
        res.set_content(page.text(), "application/json");
      },
      clocked.config);
  FinishClock finish{clocked.clock};
  ASSERT_TRUE(eventually([&] { return clocked.clock->blocked(); }));
  {
    const ReflectorStatus st = h.reflector->status();
    EXPECT_FALSE(st.synced);
    EXPECT_EQ(st.failures, 1u);
    EXPECT_EQ(st.last_error, "list /api/v1/pods: response is not JSON");
  }
  EXPECT_TRUE(h.events().empty());  // nothing of the broken page was handed on
  EXPECT_EQ(listAsks(h.server), (Strings{"0|<unset>", "<unset>|t+/=2"}));
  clocked.clock->finish();
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 1; }));
  EXPECT_EQ(h.keys(), (Strings{"prod/a", "prod/b", "prod/c"}));
  // Not a 410: the list starts again from the watch cache.
  EXPECT_EQ(listAsks(h.server),
            (Strings{"0|<unset>", "<unset>|t+/=2", "0|<unset>", "<unset>|t+/=2"}));
}

TEST(Reflector, AContinueTokenTheWholePageOverrulesIsNotFollowed) {
  // The first metadata names one token, a second (a duplicated key: the
  // last wins, as the whole decode reads it) another. The page asked for
  // with the first is dropped; the list goes on from the page's own token.
  const std::vector<json> items = {pod("a", "1"), pod("b", "2"), pod("c", "3")};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (req.has_param("watch")) return stream(res, "", 1, End::kHang, h.server.stopping());
    if (req.get_param_value("continue") == "decoy")
      return res.set_content(
          R"({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"10"},)"
          R"("items":[{"metadata":{"name":"x","namespace":"prod"}}]})",
          "application/json");
    if (!req.has_param("continue"))
      return res.set_content(
          R"({"kind":"PodList","apiVersion":"v1",)"
          R"("metadata":{"resourceVersion":"10","continue":"decoy"},"items":[)" +
              items[0].dump() + "," + items[1].dump() +
              R"(],"metadata":{"resourceVersion":"10","continue":"t+/=2"}})",
          "application/json");
    res.set_content(metaFirstPage(req, items, "10").text(), "application/json");
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 1; }));
  EXPECT_EQ(h.keys(), (Strings{"prod/a", "prod/b", "prod/c"}));
  const Strings asked = listAsks(h.server);
  EXPECT_EQ(asked.back(), "<unset>|t+/=2");
  EXPECT_EQ(std::count(asked.begin(), asked.end(), "<unset>|t+/=2"), 1);
}

TEST(Reflector, StopEndsAListWhosePagesHang) {
  // Page one arrives, page two is asked for and never answers: stop()
  // abandons it (its thread and transfer) and run() returns.
  const std::vector<json> items = {pod("a", "1"), pod("b", "2"), pod("c", "3")};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (req.has_param("continue")) return stream(res, "", 1, End::kHang, h.server.stopping());
    res.set_content(metaFirstPage(req, items, "10").text(), "application/json");
  });
  ASSERT_TRUE(eventually([&] { return h.server.lists().size() == 2; }));
  h.stop();
  EXPECT_FALSE(h.reflector->status().synced);
  EXPECT_TRUE(h.server.watches().empty());
}

TEST(Reflector, WatchEventsAcrossAwkwardChunksThenRewatchFromBookmark) {
  const std::string first = event("ADDED", pod("b", "11")) +
                            event("MODIFIED", pod("a", "12", "10.0.0.9")) +
                            event("DELETED", pod("b", "13")) + bookmark("20");
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {pod("a", "5")}, "10");
    if (++watches == 1) return stream(res, first, 7, End::kClean, h.server.stopping());
    stream(res, event("ADDED", pod("c", "21")), 5, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.keys() == Strings{"prod/a", "prod/c"}; }));
  EXPECT_EQ(h.events(), (Strings{"upsert prod/a", "upsert prod/b", "upsert prod/a", "delete prod/b",
                                 "upsert prod/c"}));
  EXPECT_EQ(h.lastObject("prod/a")["status"]["podIP"], "10.0.0.9");
  const auto w = h.server.watches();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0].param("resourceVersion"), "10");
  EXPECT_EQ(w[1].param("resourceVersion"), "20");  // the bookmark's, no relist
  EXPECT_EQ(h.server.lists().size(), 1u);
  EXPECT_EQ(h.reflector->status().resource_version, "21");
}

// Both forms of "your version is gone": the HTTP status, and an ERROR event
// after a 200. Either way: relist (consistently) and delete what vanished.
void expectRelistAfterGone(bool in_stream) {
  std::atomic<bool> gone{false};  // the server has compacted past version 10
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) {
      if (!gone) return serveList(req, res, {pod("a", "1"), pod("b", "2"), pod("c", "3")}, "10");
      return serveList(req, res, {pod("a", "1"), pod("c", "30"), pod("d", "31")}, "40");
    }
    if (++watches == 1) {
      gone = true;
      if (!in_stream) return replyStatus(res, 410, "Expired");
      const std::string err =
          json{{"type", "ERROR"},
               {"object", status(410, "Expired", "too old resource version: 10 (35)")}}
              .dump() +
          "\n";
      return stream(res, event("ADDED", pod("x", "11")) + err, 9, End::kHang, h.server.stopping());
    }
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 2; }));
  Strings first_pages;  // one per list; later pages carry continue
  for (const auto& r : h.server.lists())
    if (r.param("continue") == "<unset>") first_pages.push_back(r.param("resourceVersion"));
  // The relist is consistent ("latest"), not from the possibly stale cache.
  EXPECT_EQ(first_pages, (Strings{"0", "<unset>"}));
  EXPECT_EQ(h.server.watches()[1].param("resourceVersion"), "40");
  EXPECT_EQ(h.keys(), (Strings{"prod/a", "prod/c", "prod/d"}));
  Strings expected = {"upsert prod/a", "upsert prod/b", "upsert prod/c"};
  if (in_stream) expected.push_back("upsert prod/x");
  // a is unchanged: no event. c changed, d is new; pages are handed on as
  // they arrive, the vanished are deleted once the list is whole.
  expected.insert(expected.end(), {"upsert prod/c", "upsert prod/d"});
  expected.push_back("delete prod/b");
  if (in_stream) expected.push_back("delete prod/x");
  EXPECT_EQ(h.events(), expected);
}

// More objects than the reflector's store keeps in its buffer of changes:
// a relist after many watch events (adds in no key order, updates,
// deletes) upserts exactly what changed since the watch, deletes exactly
// what vanished, and leaves the store holding the new list's versions.
TEST(Reflector, RelistAfterManyWatchEventsDiffsAgainstWhatTheWatchLeft) {
  std::mt19937 rng(11);
  const auto name = [](const char* p, int i) { return p + std::to_string(i); };
  std::vector<json> first, second;
  for (int i = 0; i < 400; i++) first.push_back(pod(name("p", i), "1"));
  // The watch: q0..q299 added, p0..p99 changed, p100..p199 deleted.
  std::vector<std::pair<std::string, json>> watched;
  for (int i = 0; i < 300; i++) watched.emplace_back("ADDED", pod(name("q", i), "3"));
  for (int i = 0; i < 100; i++) watched.emplace_back("MODIFIED", pod(name("p", i), "2"));
  for (int i = 100; i < 200; i++) watched.emplace_back("DELETED", pod(name("p", i), "2"));
  std::shuffle(watched.begin(), watched.end(), rng);
  // The relist: p0..p49 unchanged, p50..p99 changed, p100..p149 back,
  // p200..p299 unchanged, p300..p399 gone, q0..q149 unchanged, q150..q299
  // gone, r0..r99 new; in no key order.
  std::map<std::string, uint64_t> want;  // key -> version after the relist
  auto relisted = [&](const std::string& n, uint64_t rv) {
    second.push_back(pod(n, std::to_string(rv)));
    want["prod/" + n] = rv;
  };
  for (int i = 0; i < 50; i++) relisted(name("p", i), 2);
  for (int i = 50; i < 100; i++) relisted(name("p", i), 5);
  for (int i = 100; i < 150; i++) relisted(name("p", i), 7);
  for (int i = 200; i < 300; i++) relisted(name("p", i), 1);
  for (int i = 0; i < 150; i++) relisted(name("q", i), 3);
  for (int i = 0; i < 100; i++) relisted(name("r", i), 6);
  std::shuffle(second.begin(), second.end(), rng);

  std::string body;
  for (const auto& [type, object] : watched) body += event(type, object);
  body += json{{"type", "ERROR"}, {"object", status(410, "Expired", "too old resource version")}}
              .dump() +
          "\n";
  std::atomic<int> watches{0};
  ReflectorConfig config = fastConfig();
  config.page_size = 64;
  Harness h(
      [&](const httplib::Request& req, httplib::Response& res) {
        if (!req.has_param("watch"))
          return serveList(req, res, watches == 0 ? first : second, watches == 0 ? "10" : "40");
        if (++watches == 1) return stream(res, body, 8192, End::kHang, h.server.stopping());
        stream(res, "", 1, End::kHang, h.server.stopping());
      },
      config);
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 2; }));

  Strings expected;
  for (const auto& o : first)
    expected.push_back("upsert prod/" + o["metadata"]["name"].get<std::string>());
  for (const auto& [type, object] : watched)
    expected.push_back((type == "DELETED" ? "delete prod/" : "upsert prod/") +
                       object["metadata"]["name"].get<std::string>());
  // Upserts in the list's order, for what differs from the watched store;
  // then the deletes, in key order.
  for (const auto& o : second) {
    const std::string n = o["metadata"]["name"];
    const bool same =
        (n[0] == 'p' && (std::stoi(n.substr(1)) < 50 || std::stoi(n.substr(1)) >= 200)) ||
        n[0] == 'q';
    if (!same) expected.push_back("upsert prod/" + n);
  }
  std::set<std::string> gone;
  for (int i = 300; i < 400; i++) gone.insert("prod/" + name("p", i));
  for (int i = 150; i < 300; i++) gone.insert("prod/" + name("q", i));
  for (const auto& k : gone) expected.push_back("delete " + k);
  EXPECT_EQ(h.events(), expected);
  EXPECT_EQ(h.reflector->snapshot(), want);
  EXPECT_EQ(h.server.watches()[1].param("resourceVersion"), "40");
  EXPECT_EQ(h.reflector->status().lists, 2u);
}

TEST(Reflector, Http410RelistsAndDeletesVanished) { expectRelistAfterGone(false); }
TEST(Reflector, InStream410ErrorRelistsAndDeletesVanished) { expectRelistAfterGone(true); }

TEST(Reflector, DisconnectRewatchesFromLastVersionWithoutRelist) {
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {}, "10");
    if (++watches == 1)
      // A cut in the middle of the second event: the half event is dropped.
      return stream(res,
                    event("ADDED", pod("a", "11")) + event("ADDED", pod("b", "12")).substr(0, 30),
                    11, End::kDrop, h.server.stopping());
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 2; }));
  EXPECT_EQ(h.server.watches()[1].param("resourceVersion"), "11");
  EXPECT_EQ(h.server.lists().size(), 1u);
  EXPECT_EQ(h.keys(), Strings{"prod/a"});
  EXPECT_EQ(h.reflector->status().failures, 1u);
  EXPECT_FALSE(h.reflector->status().last_error.empty());
}

// The failure is reported while it lasts: once the new watch delivers
// (here a bookmark), the error is gone, although that watch is still open.
TEST(Reflector, ErrorClearsWhenTheNextWatchDeliversNotWhenItEnds) {
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {}, "10");
    if (++watches == 1) return stream(res, event("ADDED", pod("a", "11")), 11, End::kDrop,
                                      h.server.stopping());
    stream(res, bookmark("20"), 7, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.reflector->status().resource_version == "20"; }));
  EXPECT_EQ(h.reflector->status().failures, 1u);
  EXPECT_EQ(h.reflector->status().last_error, "");
  EXPECT_EQ(h.server.watches().size(), 2u);  // the second one still open
}

TEST(Reflector, HonoursRetryAfterOn429) {
  std::atomic<int> lists{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) {
      if (++lists == 1) {
        res.set_header("Retry-After", "1");
        return replyStatus(res, 429, "TooManyRequests");
      }
      return serveList(req, res, {pod("a", "1")}, "10");
    }
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.reflector->status().synced; }, 4000ms));
  const auto l = h.server.lists();
  ASSERT_EQ(l.size(), 2u);
  EXPECT_GE(l[1].at - l[0].at, 950ms);  // not the 20 ms backoff
}

// Each wait a fake clock saw, as a multiple of the one before (backoff
// doubles; jitter stretches each by at most 1 + jitter).
void expectDoublingBackoff(const std::vector<std::chrono::milliseconds>& waits,
                           const ReflectorConfig& c) {
  ASSERT_GE(waits.size(), 3u);
  std::chrono::milliseconds base = c.backoff_initial;
  for (size_t i = 0; i < waits.size(); ++i, base = std::min(base * 2, c.backoff_max)) {
    EXPECT_GE(waits[i], base) << "wait " << i;
    EXPECT_LE(waits[i], base * (1 + c.jitter)) << "wait " << i;
  }
}

TEST(Reflector, ServerErrorsBackOffExponentiallyWithCap) {
  ReflectorConfig c = fastConfig();
  c.backoff_initial = 40ms;
  c.backoff_max = 160ms;
  c.jitter = 0.25;
  // Fake time: the waits are what the reflector asked for, however loaded
  // the machine (wall-clock gaps failed under load).
  ClockedConfig clocked(600ms, c);
  Harness h([&](const httplib::Request&,
                httplib::Response& res) { replyStatus(res, 500, "InternalError"); },
            clocked.config);
  FinishClock finish{clocked.clock};
  ASSERT_TRUE(eventually([&] { return clocked.clock->blocked(); }));
  const auto waits = clocked.clock->waits();
  // 40, 80, 160, 160 ... (each stretched by at most the jitter): every
  // failed list waits once, and the cap is reached within 600 ms.
  ASSERT_GE(waits.size(), 4u);
  EXPECT_EQ(h.server.lists().size(), waits.size());
  expectDoublingBackoff(waits, clocked.config);
  EXPECT_FALSE(h.reflector->status().synced);
  EXPECT_NE(h.reflector->status().last_error.find("HTTP 500"), std::string::npos);
}

TEST(Reflector, NotServedIsRetriedSlowlyThenPickedUp) {
  std::atomic<bool> installed{false};
  ClockedConfig clocked(350ms);
  Harness h(
      [&](const httplib::Request& req, httplib::Response& res) {
        if (!installed) return replyStatus(res, 404, "NotFound");
        if (!req.has_param("watch")) return serveList(req, res, {pod("a", "1")}, "10");
        stream(res, "", 1, End::kHang, h.server.stopping());
      },
      clocked.config, Resource{"split.smi-spec.io/v1alpha4", "TrafficSplit", "trafficsplits", ""});
  FinishClock finish{clocked.clock};
  // 350 ms of (fake) time: tries at 0, 100, 200 and 300 ms, each 404 followed
  // by a wait of not_served_retry (100 ms), not the short backoff.
  ASSERT_TRUE(eventually([&] { return clocked.clock->blocked(); }));
  EXPECT_EQ(h.server.requests().size(), 4u);
  EXPECT_EQ(clocked.clock->waits(), std::vector<std::chrono::milliseconds>(4, 100ms));
  EXPECT_EQ(h.server.requests()[0].path, "/apis/split.smi-spec.io/v1alpha4/trafficsplits");
  auto st = h.reflector->status();
  EXPECT_TRUE(st.not_served);
  EXPECT_FALSE(st.synced);
  installed = true;
  clocked.clock->finish();
  ASSERT_TRUE(eventually([&] { return h.reflector->status().synced; }));
  EXPECT_FALSE(h.reflector->status().not_served);
  EXPECT_EQ(h.lastObject("prod/a")["kind"], "TrafficSplit");
}

TEST(Reflector, WatchThatEndsAtOnceIsNotAHotLoop) {
  ReflectorConfig c = fastConfig();
  c.min_watch_duration = 60s;  // every watch here is "too short", however slow the machine
  ClockedConfig clocked(400ms, c);
  Harness h(
      [&](const httplib::Request& req, httplib::Response& res) {
        if (!req.has_param("watch")) return serveList(req, res, {}, "10");
        stream(res, "", 1, End::kClean, h.server.stopping());
      },
      clocked.config);
  FinishClock finish{clocked.clock};
  // Every watch that ends at once is followed by a backoff (20, 40, 80,
  // 160 ms...): within 400 ms a handful of watches, and one list.
  ASSERT_TRUE(eventually([&] { return clocked.clock->blocked(); }));
  const auto waits = clocked.clock->waits();
  EXPECT_EQ(h.server.watches().size(), waits.size());
  EXPECT_EQ(h.server.lists().size(), 1u);
  expectDoublingBackoff(waits, clocked.config);
}

TEST(Reflector, RepeatedGoneBacksOffInsteadOfSpinning) {
  ClockedConfig clocked(400ms);
  Harness h(
      [&](const httplib::Request& req, httplib::Response& res) {
        if (!req.has_param("watch")) return serveList(req, res, {}, "10");
        replyStatus(res, 410, "Expired");
      },
      clocked.config);
  FinishClock finish{clocked.clock};
  // list, watch, 410, list at once; then each further 410 relists only
  // after a doubling backoff.
  ASSERT_TRUE(eventually([&] { return clocked.clock->blocked(); }));
  const auto waits = clocked.clock->waits();
  EXPECT_EQ(h.server.lists().size(), waits.size() + 1);
  expectDoublingBackoff(waits, clocked.config);
}

TEST(Reflector, BadEventJsonIsAFailureNotACrash) {
  std::atomic<int> watches{0};
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {}, "10");
    if (++watches == 1) return stream(res, "{not json\n", 4, End::kHang, h.server.stopping());
    stream(res, event("ADDED", pod("a", "11")), 64, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.keys() == Strings{"prod/a"}; }));
  EXPECT_EQ(h.server.watches()[1].param("resourceVersion"), "10");
}

TEST(Reflector, StopEndsAHangingWatchPromptly) {
  Harness h([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) return serveList(req, res, {}, "10");
    stream(res, "", 1, End::kHang, h.server.stopping());
  });
  ASSERT_TRUE(eventually([&] { return h.server.watches().size() == 1; }));
  const auto t0 = Clock::now();
  h.stop();
  EXPECT_LT(Clock::now() - t0, 1000ms);
}

// The whole chain: list + watch into KubeCache, rejected objects reported
// by ns/name, deletes reaching the model.
TEST(Reflector, FeedsTheClusterStateThroughKubeCache) {
  KubeCache cache;
  std::atomic<int> watches{0};
  FakeApiServer server([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch"))
      return serveList(req, res, {pod("a", "1"), pod("bad", "2", "10.0.0.256"), pod("c", "3")},
                       "10");
    if (++watches > 1) return stream(res, "", 1, End::kHang, server.stopping());
    stream(res, event("DELETED", pod("a", "11")) + event("ADDED", pod("d", "12", "10.0.0.4")), 17,
           End::kHang, server.stopping());
  });
  HttpClient http(Harness::configFor(server.url()));
  Reflector reflector(http, kPods, fastConfig(), cache.sink());
  std::thread t([&] { reflector.run(); });
  const bool ok = eventually([&] { return cache.state().pods.count("prod/d") == 1; });
  reflector.stop();
  t.join();
  ASSERT_TRUE(ok);
  const auto pods = cache.state().pods;
  EXPECT_EQ(pods.size(), 2u);
  EXPECT_EQ(pods.count("prod/c"), 1u);
  EXPECT_EQ(pods.at("prod/d")->ips, std::vector<std::string>{"10.0.0.4"});
  const auto errors = cache.errors();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].object.str(), "Pod prod/bad");
}

// JSON nested `depth` arrays deep, as text: a json value that deep would
// recurse when the fake server printed it.
std::string nestedText(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string podText(const std::string& name, const std::string& rv, const std::string& x) {
  return R"({"kind":"Pod","apiVersion":"v1","metadata":{"name":")" + name +
         R"(","namespace":"prod","resourceVersion":")" + rv +
         R"("},"status":{"podIP":"10.0.0.9"},"spec":{"x":)" + x + "}}";
}

// What an API server sends is not trusted to be sane: an object nested
// deeper than the parser takes is rejected by name, one deeper than any API
// server stores fails its watch (retried, like any bad event), fields of the
// wrong type are an error; none of it stops the rest or the agent.
TEST(Reflector, DeepAndMistypedObjectsAreRejectedNotACrash) {
  KubeCache cache;
  std::atomic<int> watches{0};
  FakeApiServer server([&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_param("watch")) {
      res.set_content(R"({"kind":"PodList","metadata":{"resourceVersion":"10"},"items":[)" +
                          podText("a", "1", "1") + "," + podText("deep", "2", nestedText(5000)) +
                          R"(,{"apiVersion":1,"kind":["Pod"],"metadata":{"name":"typed",)"
                          R"("namespace":"prod","resourceVersion":"3"}}]})",
                      "application/json");
      return;
    }
    if (++watches == 1)
      return stream(res,
                    R"({"type":"ADDED","object":)" + podText("deeper", "11", nestedText(100'000)) +
                        "}\n",
                    1 << 16, End::kHang, server.stopping());
    stream(res, R"({"type":"ADDED","object":)" + podText("b", "12", "1") + "}\n", 4096,
           End::kHang, server.stopping());
  });
  HttpClient http(Harness::configFor(server.url()));
  Reflector reflector(http, kPods, fastConfig(), cache.sink());
  std::thread t([&] { reflector.run(); });
  const bool ok = eventually([&] { return cache.state().pods.count("prod/b") == 1; });
  const ReflectorStatus st = reflector.status();
  reflector.stop();
  t.join();
  ASSERT_TRUE(ok);
  EXPECT_EQ(cache.state().pods.size(), 2u);  // a and b
  EXPECT_GE(st.failures, 1u) << "the 100000-deep event failed its watch";
  std::set<std::string> errors;
  for (const auto& e : cache.errors()) errors.insert(e.str());
  EXPECT_EQ(errors.count("kubernetes: Pod prod/deep: nested deeper than 100 levels"), 1u);
  EXPECT_EQ(errors.size(), 2u);  // and "typed": apiVersion is not a string
}

TEST(Reflector, DecodesOnlyBoundedJsonObjects) {
  std::string err;
  EXPECT_FALSE(decodeWatchEvent(R"({"type":"ADDED","object":)" + nestedText(10'001) + "}", kPods,
                                &err));
  EXPECT_EQ(err, "event nests deeper than 10000 levels");
  EXPECT_FALSE(decodeWatchEvent(R"({"type":"ADDED","object":[]})", kPods, &err));
  EXPECT_EQ(err, "event without object");
  // Brackets inside strings are text, not nesting.
  const auto ev = decodeWatchEvent(
      R"({"type":"ADDED","object":{"metadata":{"name":")" + std::string(20'000, '[') + R"("}}})",
      kPods, &err);
  ASSERT_TRUE(ev) << err;
  EXPECT_EQ(ev->object["kind"], "Pod");
  EXPECT_FALSE(decodeListPage(R"({"items":[1]})", kPods, &err));
  EXPECT_EQ(err, "a list item is not a JSON object");
  EXPECT_FALSE(decodeListPage("[" + nestedText(10'000) + "]", kPods, &err));
  EXPECT_EQ(err, "response nests deeper than 10000 levels");
  const auto page = decodeListPage(
      R"({"metadata":{"resourceVersion":"5","continue":"c"},"items":[{"metadata":{"name":"x"}}]})",
      kPods, &err);
  ASSERT_TRUE(page) << err;
  EXPECT_EQ(page->resource_version, "5");
  EXPECT_EQ(page->next, "c");
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].first, "x");
  EXPECT_EQ(page->items[0].second["apiVersion"], "v1");
}

// The decoders build only what smik reads of an object: a real pod's
// managedFields, annotations, container specs and conditions never reach
// the cache; its ports, addresses and owners do.
TEST(Reflector, DecodedPodsKeepOnlyWhatIsRead) {
  const json pod = {
      {"metadata",
       {{"name", "web-1"},
        {"namespace", "shop"},
        {"resourceVersion", "17"},
        {"uid", "u-1"},
        {"labels", {{"app", "web"}}},
        {"annotations", {{"kubectl.kubernetes.io/last-applied-configuration", "{...}"}}},
        {"ownerReferences", {{{"kind", "ReplicaSet"}, {"name", "web-7c9"}, {"controller", true}}}},
        {"managedFields", {{{"manager", "kubelet"}, {"fieldsV1", {{"f:status", json::object()}}}}}}}},
      {"spec",
       {{"serviceAccountName", "web"},
        {"nodeName", "n1"},
        {"containers",
         {{{"name", "web"}, {"image", "web:1"}, {"ports", {{{"containerPort", 8080}}}}}}}}},
      {"status",
       {{"phase", "Running"},
        {"podIP", "10.0.0.7"},
        {"conditions", {{{"type", "Ready"}, {"status", "True"}}}}}}};
  std::string err;
  const auto page = decodeListPage(
      json{{"metadata", {{"resourceVersion", "20"}}}, {"items", {pod}}}.dump(), kPods, &err);
  ASSERT_TRUE(page) << err;
  ASSERT_EQ(page->items.size(), 1u);
  const json& got = page->items[0].second;
  EXPECT_EQ(got, (json{{"apiVersion", "v1"},
                       {"kind", "Pod"},
                       {"metadata",
                        {{"name", "web-1"},
                         {"namespace", "shop"},
                         {"resourceVersion", "17"},
                         {"uid", "u-1"},
                         {"labels", {{"app", "web"}}},
                         {"ownerReferences",
                          {{{"kind", "ReplicaSet"}, {"name", "web-7c9"}, {"controller", true}}}}}},
                       {"spec",
                        {{"serviceAccountName", "web"},
                         {"nodeName", "n1"},
                         {"containers", {{{"ports", {{{"containerPort", 8080}}}}}}}}},
                       {"status", {{"phase", "Running"}, {"podIP", "10.0.0.7"}}}}));
  // A watch event's object the same way, its type before or after it.
  for (const std::string& line : typeFirstAndLast("ADDED", "MODIFIED", pod)) {
    const auto ev = decodeWatchEvent(line, kPods, &err);
    ASSERT_TRUE(ev) << err;
    EXPECT_EQ(ev->object, got) << line;
  }
}

// What the decoders cannot trim safely they decode whole: an object in the
// pods collection that says it is something else (its parser may read what
// a pod's drops), an ERROR's Status.
TEST(Reflector, UnusualObjectsAreDecodedWhole) {
  const json other = {{"apiVersion", "v1"},
                      {"kind", "Service"},
                      {"metadata", {{"name", "s"}, {"namespace", "shop"}}},
                      {"spec", {{"ports", {{{"port", 80}}}}}}};
  std::string err;
  const std::string body = json{{"items", {other}}}.dump();
  const auto page = decodeListPage(body, kPods, &err);
  const auto whole = decodeListPageWhole(body, kPods, &err);
  ASSERT_TRUE(page && whole);
  EXPECT_EQ(page->items[0].second, whole->items[0].second);
  EXPECT_EQ(page->items[0].second["spec"]["ports"][0]["port"], 80);

  // A Status, whole, whether its type comes before or after it.
  const json status = {{"kind", "Status"},
                       {"metadata", {{"selfLink", "x"}}},
                       {"code", 410},
                       {"message", "too old"}};
  for (const std::string& line : typeFirstAndLast("ERROR", "ERROR", status)) {
    const auto error = decodeWatchEvent(line, kPods, &err);
    ASSERT_TRUE(error) << err;
    EXPECT_EQ(error->object, status) << line;
  }
}

TEST(Reflector, ResourcePaths) {
  EXPECT_EQ((Resource{"v1", "Pod", "pods", ""}).path(), "/api/v1/pods");
  EXPECT_EQ((Resource{"discovery.k8s.io/v1", "EndpointSlice", "endpointslices", ""}).path(),
            "/apis/discovery.k8s.io/v1/endpointslices");
}

}  // namespace
}  // namespace smik::kube
