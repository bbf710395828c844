// End to end: `smik ui` in a real browser. Real traffic between test-bed pods
// (allowed, and denied by policy), the agent's TrafficMetrics, `smik ui
// --agent` on 127.0.0.1, and the page as headless Chromium renders it: the
// DOM it leaves must draw those pods and edges with the API's numbers, mark
// the denied edge, and explain an edge with the TrafficTarget that decides it.
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>

#include <cstring>
#include <map>
#include <set>

#include "tests/e2e/fixture.h"

namespace smik::e2e {
namespace {

constexpr const char* kChromium = "/usr/bin/chromium";

struct Browser {
  int status = -1;  // exit code; -1 when it had to be killed
  std::string out;  // stdout: the DOM with --dump-dom
  std::string err;  // its log, for a failure message
};

// Headless Chromium on `url`, in a process group of its own (so that every
// process it forks is ended by our one kill) with a fresh profile directory
// removed afterwards. extra: --dump-dom, or --screenshot=FILE.
Browser chromium(const std::string& url, const std::vector<std::string>& extra,
                 const std::string& tmp_prefix, int timeout_ms = 60000) {
  Browser b;
  char profile[256];
  std::snprintf(profile, sizeof profile, "/tmp/%s-chromium-XXXXXX", tmp_prefix.c_str());
  if (!mkdtemp(profile)) return b;
  const std::string err_file = std::string(profile) + ".log";
  std::vector<std::string> args = {kChromium,
                                   "--headless",
                                   "--no-sandbox",  // root, and no user namespaces needed
                                   "--disable-gpu",
                                   "--disable-quic",
                                   "--no-first-run",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   std::string("--user-data-dir=") + profile,
                                   // fetch()es and the first refresh, in virtual time
                                   "--virtual-time-budget=5000"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(url);
  int ends[2];
  if (pipe2(ends, O_CLOEXEC) != 0) return b;
  UniqueFd out_read(ends[0]), out_write(ends[1]);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    // What it would keep in the home directory (dconf, caches) goes with the profile.
    setenv("HOME", profile, 1);
    setenv("XDG_CONFIG_HOME", profile, 1);
    setenv("XDG_CACHE_HOME", profile, 1);
    dup2(out_write.get(), 1);
    int err = open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (err >= 0) dup2(err, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(kChromium, argv.data());
    _exit(127);
  }
  out_write.reset();  // EOF once the browser's group is done
  setpgid(pid, pid);  // also here: no race with the child's own call
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[8192];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) break;
    pollfd p{out_read.get(), POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    ssize_t n = read(out_read.get(), buf, sizeof buf);
    if (n <= 0) break;
    b.out.append(buf, static_cast<size_t>(n));
  }
  out_read.reset();
  int st = 0;
  bool done = false;
  for (int i = 0; i < 100 && !done; ++i) {
    done = waitpid(pid, &st, WNOHANG) == pid;
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Whatever is left of the group (renderers, a hung browser) goes now.
  kill(-pid, SIGKILL);
  if (!done) waitpid(pid, &st, 0);
  b.status = done && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream e(err_file);
  std::stringstream ss;
  ss << e.rdbuf();
  b.err = ss.str();
  std::error_code ec;
  fs::remove_all(profile, ec);
  fs::remove(err_file, ec);
  return b;
}

std::string unescape(std::string s) {
  for (auto [from, to] : {std::pair{"&gt;", ">"}, {"&lt;", "<"}, {"&quot;", "\""}, {"&amp;", "&"}})
    for (size_t at; (at = s.find(from)) != std::string::npos;) s.replace(at, strlen(from), to);
  return s;
}

// The elements `<tag ...>` of the serialized DOM whose class list holds
// `cls`, as attribute maps (values unescaped; "A>B" may be serialized raw).
std::vector<std::map<std::string, std::string>> elements(const std::string& dom,
                                                         const std::string& tag,
                                                         const std::string& cls) {
  std::vector<std::map<std::string, std::string>> out;
  static const std::regex kAttr(R"re(^\s+([a-z-]+)="([^"]*)")re");
  for (size_t at = 0; (at = dom.find("<" + tag + " ", at)) != std::string::npos;) {
    at += tag.size() + 1;  // at the space before the first attribute
    std::map<std::string, std::string> attrs;
    std::smatch m;
    std::string rest = dom.substr(at, 2000);
    while (std::regex_search(rest, m, kAttr)) {
      attrs[m[1]] = unescape(m[2]);
      rest = m.suffix();
    }
    std::istringstream classes(attrs["class"]);
    for (std::string c; classes >> c;)
      if (c == cls) out.push_back(attrs);
  }
  return out;
}

// The text of the element that starts at the first `<tag ... marker ...>`,
// tags stripped, up to its closing tag (no nesting of the same tag inside).
std::string textOf(const std::string& dom, const std::string& tag, const std::string& marker) {
  size_t at = dom.find(marker);
  if (at == std::string::npos) return "";
  size_t start = dom.rfind("<" + tag, at);
  size_t end = dom.find("</" + tag + ">", at);
  if (start == std::string::npos || end == std::string::npos) return "";
  std::string s = dom.substr(start, end - start);
  std::string text;
  bool in_tag = false;
  for (char c : s) {
    if (c == '<') in_tag = true;
    else if (c == '>') in_tag = false;
    else if (!in_tag) text += c;
  }
  return unescape(text);
}

class Ui : public E2E {
 protected:
  void SetUp() override {
    E2E::SetUp();
    if (IsSkipped()) return;
    if (access(kChromium, X_OK) != 0)
      GTEST_SKIP() << "UI TEST SKIPPED: no " << kChromium
                   << " (Debian package chromium; .ci/deps --test installs it)";
  }

  // `smik ui` on a free port of 127.0.0.1; returns the URL it printed.
  std::string startUi(const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {SMIK_CLI, "ui", "--port", std::to_string(freePort())};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ui_ = std::make_unique<Proc>(bed_->spawn(argv));
    EXPECT_TRUE(ui_->waitFor("/\n", 5000)) << "smik ui printed no URL: " << ui_->output();
    std::string out = ui_->output();
    return out.substr(0, out.find('\n'));
  }

  void TearDown() override {
    if (ui_) {
      kill(ui_->pid(), SIGTERM);
      ui_->wait(3000);
      ui_.reset();
    }
    E2E::TearDown();
  }

  std::unique_ptr<Proc> ui_;
};

// The issue's check: the nodes and edges of real traffic, drawn with the
// numbers the TrafficMetrics API holds, the denied edge marked, and a
// clicked edge (the link's edge=) explained with its TrafficTarget.
TEST_F(Ui, DrawsRealTrafficWithItsNumbersAndMarksTheDeniedEdge) {
  Pod& client = bed_->addPod("client", bed_->nextIp());
  Pod& server = bed_->addPod("server", bed_->nextIp());
  Pod& intruder = bed_->addPod("intruder", bed_->nextIp());
  write("pods.yaml", ns("app", true) + ns("outside", true) +
                         pod("app", "client", "client", client.ip()) +
                         pod("app", "server", "server", server.ip()) +
                         pod("outside", "intruder", "intruder", intruder.ip()));
  write("policy.yaml", tcpRoute("app", "web", "[8080]") +
                           trafficTarget("app", "web-clients", "app", "server",
                                         rule("TCPRoute", "web"), "app", "client"));
  const std::string sock = "/tmp/" + bed_->prefix() + "-ui-agent.sock";
  // reject: what a user gets by default, and fast (a denied SYN gets a RST).
  startAgent({"--metrics-interval-ms", "200", "--grpc", sock, "--deny-response", "reject"});
  waitAttached(3);
  Proc srv = serve(server, "8080");

  auto attempts = [&](Pod& from, int n) {
    return bed_->run(from, {SMIK_TESTPEER, "tcp", server.ip(), "8080", "--count",
                            std::to_string(n), "--timeout-ms", "300"},
                     30000)
        .output;
  };
  std::string ok = attempts(client, 5), denied = attempts(intruder, 3);
  ASSERT_EQ(std::count(ok.begin(), ok.end(), 'k'), 5) << ok;  // "ok server" x5
  ASSERT_NE(denied.find("refused"), std::string::npos) << denied;
  // The API has them all before the page is asked (telemetry every 200 ms).
  ASSERT_TRUE(eventually(
      [&] {
        auto [c1, to] = httpGet(http_port_, "/apis/metrics.smi-spec.io/v1alpha1/namespaces/"
                                            "outside/pods/intruder/edges?t=5m");
        auto [c2, ok_to] = httpGet(http_port_, "/apis/metrics.smi-spec.io/v1alpha1/namespaces/"
                                               "app/pods/client/edges?t=5m");
        auto j = nlohmann::json::parse(to, nullptr, false);
        auto k = nlohmann::json::parse(ok_to, nullptr, false);
        return c1 == 200 && c2 == 200 && j["items"].size() == 1 && k["items"].size() == 1 &&
               metric(j["items"][0], "policy_denied_count") == "3" &&
               metric(k["items"][0], "success_count") == "5";
      },
      5000));

  const std::string url = startUi({"--agent", "http://127.0.0.1:" + std::to_string(http_port_),
                                   "--grpc", sock, "--kind", "pod"});
  ASSERT_EQ(url.rfind("http://127.0.0.1:", 0), 0u) << url;

  const std::string denied_edge = "Pod/outside/intruder>Pod/app/server";
  const std::string allowed_edge = "Pod/app/client>Pod/app/server";
  Browser b = chromium(url + "?window=5m&edge=" + denied_edge + "&port=8080", {"--dump-dom"},
                       bed_->prefix());
  ASSERT_EQ(b.status, 0) << b.err;
  const std::string& dom = b.out;
  ASSERT_NE(dom.find("data-loaded=\"true\""), std::string::npos) << "the graph never loaded:\n"
                                                                 << dom;

  // Nodes: the three pods, in their namespaces' boxes.
  std::set<std::string> nodes;
  for (auto& n : elements(dom, "g", "node")) nodes.insert(n["data-id"]);
  EXPECT_EQ(nodes, (std::set<std::string>{"Pod/app/client", "Pod/app/server",
                                          "Pod/outside/intruder"}))
      << dom;
  std::set<std::string> boxes;
  for (auto& g : elements(dom, "g", "namespace")) boxes.insert(g["data-namespace"]);
  EXPECT_EQ(boxes, (std::set<std::string>{"app", "outside"}));

  // Edges: the API's numbers, the allowed one healthy, the denied one marked.
  std::map<std::string, std::map<std::string, std::string>> edges;
  for (auto& e : elements(dom, "g", "edge")) edges[e["data-id"]] = e;
  ASSERT_EQ(edges.size(), 2u) << dom;
  ASSERT_TRUE(edges.count(allowed_edge)) << dom;
  ASSERT_TRUE(edges.count(denied_edge)) << dom;
  auto& a = edges[allowed_edge];
  EXPECT_EQ(a["data-success"], "5");
  EXPECT_EQ(a["data-failure"], "0");
  EXPECT_EQ(a["data-denied"], "0");
  EXPECT_EQ(a["class"], "edge ok");
  EXPECT_EQ(a["data-side"], "client");
  auto& d = edges[denied_edge];
  EXPECT_EQ(d["data-success"], "0");
  EXPECT_EQ(d["data-failure"], "3");
  EXPECT_EQ(d["data-denied"], "3");
  EXPECT_EQ(d["class"], "edge bad denied selected") << "denied, and the link's edge";
  // The labels as a reader sees them: rate over the 5 min window, counts.
  EXPECT_EQ(textOf(dom, "text", "edge-label\" x"), "1.0/min · 5 ok");
  size_t denied_at = dom.find("data-id=\"" + denied_edge + "\"");
  if (denied_at == std::string::npos) denied_at = dom.find("data-id=\"Pod/outside/intruder&gt;");
  ASSERT_NE(denied_at, std::string::npos);
  EXPECT_EQ(textOf(dom.substr(denied_at), "text", "edge-label"), "0.6/min · 0 ok · 3 denied");

  // The panel: the edge's counts, and explain's verdict from the agent.
  EXPECT_NE(textOf(dom, "table", "id=\"counts\"").find("of which denied by policy3"),
            std::string::npos)
      << textOf(dom, "table", "id=\"counts\"");
  std::string verdict = textOf(dom, "div", "data-verdict=");
  EXPECT_NE(dom.find("data-verdict=\"denied\""), std::string::npos) << verdict << "\n" << dom;
  EXPECT_NE(verdict.find("denied"), std::string::npos) << verdict;

  // The allowed edge: its verdict names the TrafficTarget that grants it.
  Browser b2 = chromium(url + "?window=5m&edge=" + allowed_edge + "&port=8080", {"--dump-dom"},
                        bed_->prefix());
  ASSERT_EQ(b2.status, 0) << b2.err;
  EXPECT_NE(b2.out.find("data-verdict=\"allowed\""), std::string::npos) << b2.out;
  EXPECT_NE(b2.out.find("data-traffic-target=\"app/web-clients\""), std::string::npos) << b2.out;
  EXPECT_NE(textOf(b2.out, "p", "data-traffic-target").find("TrafficTarget app/web-clients"),
            std::string::npos);

  // The README's screenshot, when asked for (SMIK_UI_SCREENSHOT=FILE.png).
  if (const char* shot = std::getenv("SMIK_UI_SCREENSHOT")) {
    Browser s = chromium(url + "?window=5m&edge=" + denied_edge + "&port=8080",
                         {"--screenshot=" + std::string(shot), "--window-size=1200,800",
                          "--hide-scrollbars"},
                         bed_->prefix());
    EXPECT_EQ(s.status, 0) << s.err;
    EXPECT_TRUE(fs::exists(shot));
  }
}

// Without an agent socket or manifests, the page says it cannot explain,
// instead of inventing a verdict.
TEST_F(Ui, SaysWhenNoExplanationIsAvailable) {
  auto [client, server] = clientAndServer();
  startAgent({"--metrics-interval-ms", "200"});
  waitAttached(2);
  Proc srv = serve(*server, "8080");
  ASSERT_EQ(tcp(*client, *server, 8080), "timeout");  // nothing granted: denied (drop)
  ASSERT_TRUE(eventually(
      [&] {
        auto [c, body] = httpGet(http_port_, "/apis/metrics.smi-spec.io/v1alpha1/namespaces/"
                                             "app/pods/client/edges?t=1m");
        auto j = nlohmann::json::parse(body, nullptr, false);
        return c == 200 && j["items"].size() == 1;
      },
      5000));
  const std::string url = startUi({"--agent", "http://127.0.0.1:" + std::to_string(http_port_),
                                   "--grpc", "/tmp/" + bed_->prefix() + "-no-such.sock"});
  Browser b = chromium(url + "?kind=pod&window=1m&edge=Pod/app/client>Pod/app/server&port=8080",
                       {"--dump-dom"}, bed_->prefix());
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_NE(b.out.find("data-verdict=\"unavailable\""), std::string::npos) << b.out;
  EXPECT_NE(textOf(b.out, "div", "data-verdict=").find("no agent socket at"), std::string::npos)
      << b.out;
  auto edges = elements(b.out, "g", "edge");
  ASSERT_EQ(edges.size(), 1u) << b.out;
  EXPECT_EQ(edges[0]["data-denied"], "1");
}

}  // namespace
}  // namespace smik::e2e
