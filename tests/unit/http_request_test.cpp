// The reference HTTP request judge: framing, path rules, limits, and that a
// stream's verdicts do not depend on how it is split.
#include "agent/compile/http_request.h"

#include <gtest/gtest.h>

#include <random>
#include <variant>

#include "agent/compile/http_regex.h"
#include "bpf/include/smik_abi.h"

namespace smik::compile::http {
namespace {

// GET on "/ok" and "/public" (prefixes), POST on "/upload$".
const Dfa& dfa() {
  static const Dfa d = std::get<Dfa>(compileDfa({{"/ok"}, {"/public"}, {"/upload$"}}));
  return d;
}
bool granted(uint8_t method, std::string_view path) {
  const uint64_t patterns = method == SMIK_HTTP_M_GET ? 1 | 2 : method == SMIK_HTTP_M_POST ? 4 : 0;
  return abi::any(abi::httpMask(patterns) & matchAll(dfa(), path));
}

struct Outcome {
  std::vector<std::string> allowed;
  Refusal refusal;
  bool operator==(const Outcome&) const = default;
};
std::ostream& operator<<(std::ostream& o, const Outcome& x) {
  o << "{";
  for (const auto& p : x.allowed) o << p << " ";
  return o << "| " << name(x.refusal) << "}";
}

Outcome judge(const std::vector<std::string>& parts, RequestLimits limits = {}) {
  RequestFramer f(limits, granted);
  for (const auto& p : parts) f.feed(p);
  Outcome o{{}, f.refusal()};
  for (const auto& r : f.allowed()) o.allowed.push_back(r.path);
  return o;
}
Outcome judge(const std::string& stream, RequestLimits limits = {}) {
  return judge(std::vector<std::string>{stream}, limits);
}

std::string get(const std::string& path, const std::string& method = "GET") {
  return method + " " + path + " HTTP/1.1\r\nHost: srv\r\n\r\n";
}

TEST(HttpRequestTest, MethodAndPathAreJudgedAtTheEndOfTheRequestLine) {
  EXPECT_EQ(judge(get("/ok/1?x=/admin")), (Outcome{{"/ok/1"}, Refusal::kNone}));
  EXPECT_EQ(judge(get("/admin")), (Outcome{{}, Refusal::kDenied}));
  EXPECT_EQ(judge(get("/ok", "POST")), (Outcome{{}, Refusal::kDenied}));
  EXPECT_EQ(judge(get("/upload", "POST")), (Outcome{{"/upload"}, Refusal::kNone}));
  EXPECT_EQ(judge(get("/upload/x", "POST")), (Outcome{{}, Refusal::kDenied}));
  // judged before its headers have arrived
  EXPECT_EQ(judge("GET /admin HTTP/1.1\r\n"), (Outcome{{}, Refusal::kDenied}));
  EXPECT_EQ(judge("GET /ok HTTP/1.1\r\nHost"), (Outcome{{"/ok"}, Refusal::kNone}));
}

TEST(HttpRequestTest, NothingAfterTheFirstRefusalCounts) {
  EXPECT_EQ(judge(get("/ok/a") + get("/admin") + get("/ok/b")),
            (Outcome{{"/ok/a"}, Refusal::kDenied}));
  EXPECT_EQ(judge(get("/ok/a") + "\x16\x03\x01" + get("/ok/b")), (Outcome{{"/ok/a"}, Refusal::kNotHttp1}));
}

TEST(HttpRequestTest, PathsAServerMayResolveOtherwiseAreRefused) {
  for (const char* path : {"/public/../admin", "/public/./x", "/public/..", "/public/%2e%2E/admin",
                           "/public/..;/admin", "/public/.;/x", "/public%2fx", "/public%5cx",
                           "/public\\x", "/public//x", "/public/;/x", "/public/%252e", "/public#x",
                           "http://h/public", "public", "/public/%2", "/public/%g0", "/public/%00",
                           "/public/...", "/public?a#b"})
    EXPECT_EQ(judge(get(path)), (Outcome{{}, Refusal::kPathNotNormal})) << path;
}

TEST(HttpRequestTest, ThePathIsReadAsTheApplicationReadsIt) {
  EXPECT_EQ(judge(get("/publi%63/x")), (Outcome{{"/public/x"}, Refusal::kNone}));
  EXPECT_EQ(judge(get("/%6fk")), (Outcome{{"/ok"}, Refusal::kNone}));
  EXPECT_EQ(judge(get("/public/a..b/.x/y.")), (Outcome{{"/public/a..b/.x/y."}, Refusal::kNone}));
  EXPECT_EQ(judge(get("/public/a;b=1/c")), (Outcome{{"/public/a;b=1/c"}, Refusal::kNone}));
  EXPECT_EQ(judge(get("/public?q=/../x")), (Outcome{{"/public"}, Refusal::kNone}));
  EXPECT_EQ(judge(get("*", "OPTIONS")), (Outcome{{}, Refusal::kDenied}));
  EXPECT_EQ(judge(get("h:443", "CONNECT")), (Outcome{{}, Refusal::kDenied}));
  EXPECT_EQ(judge(get("h%3a443", "CONNECT")), (Outcome{{}, Refusal::kPathNotNormal}));
}

TEST(HttpRequestTest, BodiesAreSkippedWhateverTheyHold) {
  const std::string inner = get("/admin");
  const std::string cl = "POST /upload HTTP/1.1\r\nContent-Length: " + std::to_string(inner.size()) +
                         "\r\n\r\n" + inner;
  EXPECT_EQ(judge(cl + get("/ok")), (Outcome{{"/upload", "/ok"}, Refusal::kNone}));
  const std::string chunked = "POST /upload HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
                              "5;ext=1\r\nGET /\r\n" + std::string("1a \r\n") + inner.substr(0, 26) +
                              "\r\n0\r\nX-Trailer: 1\r\n\r\n";
  EXPECT_EQ(judge(chunked + get("/admin")), (Outcome{{"/upload"}, Refusal::kDenied}));
}

TEST(HttpRequestTest, FramingServersDisagreeOnIsRefused) {
  const std::string post = "POST /upload HTTP/1.1\r\n";
  for (const char* head : {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                           "Content-Length: 5\r\nContent-Length: 5\r\n", "Content-Length: 5, 5\r\n",
                           "Content-Length: +5\r\n", "Content-Length: 5 5\r\n", "Content-Length:\r\n",
                           "Transfer-Encoding: chunked, gzip\r\n", "Transfer-Encoding: chunked,\r\n",
                           "Transfer-Encoding: chun ked\r\n", "Content-Length: 999999999999999999\r\n"})
    EXPECT_EQ(judge(post + head + "\r\n").refusal, Refusal::kUnframeable) << head;
  EXPECT_EQ(judge("POST /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").refusal,
            Refusal::kUnframeable);
  EXPECT_EQ(judge(post + "Transfer-Encoding: chunked\r\n\r\nz\r\n").refusal, Refusal::kUnframeable);
  EXPECT_EQ(judge(post + "Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n").refusal,
            Refusal::kUnframeable);  // chunk data longer than its size
  for (const char* head : {"Host : x\r\n", " Host: x\r\n", "Host: x\r\n folded\r\n", "Host: x\n",
                           "Host: x\rY\r\n", "Host: a\x01\r\n", ": x\r\n", "Host\r\n"})
    EXPECT_EQ(judge("GET /ok HTTP/1.1\r\n" + std::string(head) + "\r\n").refusal, Refusal::kMalformed)
        << head;
  EXPECT_EQ(judge("GET /ok HTTP/1.1\n\r\n").refusal, Refusal::kMalformed);
  EXPECT_EQ(judge("GET /ok HTTP/2.0\r\n").refusal, Refusal::kNotHttp1);
  EXPECT_EQ(judge("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").refusal, Refusal::kNotHttp1);
  EXPECT_EQ(judge("GET /ok HTTP/1.1 \r\n").refusal, Refusal::kNotHttp1);
}

TEST(HttpRequestTest, LimitsCountEveryByteOfTheirLineOrBlock) {
  const RequestLimits small{32, 64, 3};
  // "GET /ok/" + n + " HTTP/1.1\r\n": 19 + n bytes
  EXPECT_EQ(judge("GET /ok/" + std::string(13, 'a') + " HTTP/1.1\r\n", small).refusal, Refusal::kNone);
  EXPECT_EQ(judge("GET /ok/" + std::string(14, 'a') + " HTTP/1.1\r\n", small).refusal,
            Refusal::kUriTooLong);
  EXPECT_EQ(judge("\r\n\r\nGET /ok/" + std::string(10, 'a') + " HTTP/1.1\r\n", small).refusal,
            Refusal::kUriTooLong);  // empty lines before it count
  EXPECT_EQ(judge("GET /ok HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", small).refusal, Refusal::kNone);
  EXPECT_EQ(judge("GET /ok HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", small).refusal,
            Refusal::kHeadTooLarge);
  EXPECT_EQ(judge("GET /ok HTTP/1.1\r\nA: " + std::string(60, 'x') + "\r\n\r\n", small).refusal,
            Refusal::kHeadTooLarge);
  // a malformed byte before the limit is what is reported
  EXPECT_EQ(judge("GET /ok\x01" + std::string(40, 'a'), small).refusal, Refusal::kMalformed);
}

TEST(HttpRequestTest, VerdictsDoNotDependOnHowTheStreamIsSplit) {
  const std::string inner = get("/admin");
  const std::vector<std::string> streams = {
      get("/ok/a") + get("/public/x") + get("/admin"),
      "POST /upload HTTP/1.1\r\nContent-Length: " + std::to_string(inner.size()) + "\r\n\r\n" + inner +
          get("/public/../admin"),
      "POST /upload HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n" +
          get("/publi%63") + "GET /ok HTTP/1.0\r\n\r\n\x16\x03",
  };
  std::mt19937 rng(7);
  for (const auto& s : streams) {
    const Outcome whole = judge(s);
    std::vector<std::string> bytes;
    for (char c : s) bytes.emplace_back(1, c);
    EXPECT_EQ(judge(bytes), whole) << s;
    for (int round = 0; round < 50; ++round) {
      std::vector<std::string> parts;
      for (size_t at = 0; at < s.size();) {
        const size_t n = std::uniform_int_distribution<size_t>(1, 9)(rng);
        parts.push_back(s.substr(at, n));
        at += n;
      }
      EXPECT_EQ(judge(parts), whole) << s;
    }
  }
}

// GET "/ok" for anyone, "/admin" with x-role: admin, "/public" from an
// Android user agent.
const Dfa& headerDfa() {
  static const Dfa d =
      std::get<Dfa>(compileHeaderDfa({{"x-role", "admin"}, {"user-agent", ".*Android.*"}}));
  return d;
}
const Dfa& headerPaths() {
  static const Dfa d = std::get<Dfa>(compileDfa({{"/ok"}, {"/admin"}, {"/public"}}));
  return d;
}
Outcome judgeWithHeaders(const std::vector<std::string>& parts) {
  smik_http_grant g{};
  g.patterns[SMIK_HTTP_M_GET] = abi::httpMask(1 | 2 | 4);
  RequestFramer f({}, PortJudge(&headerPaths(), g, {0, 1, 2}, &headerDfa()));
  for (const auto& p : parts) f.feed(p);
  Outcome o{{}, f.refusal()};
  for (const auto& r : f.allowed()) o.allowed.push_back(r.path);
  return o;
}
Outcome judgeWithHeaders(const std::string& stream) {
  return judgeWithHeaders(std::vector<std::string>{stream});
}

TEST(HttpRequestTest, HeaderConditionsAreJudgedAtTheEndOfTheHead) {
  const auto with = [](const std::string& path, const std::string& headers) {
    return "GET " + path + " HTTP/1.1\r\nHost: srv\r\n" + headers + "\r\n";
  };
  EXPECT_EQ(judgeWithHeaders(with("/admin", "X-Role: admin\r\n")), (Outcome{{"/admin"}, Refusal::kNone}));
  EXPECT_EQ(judgeWithHeaders(with("/admin", "x-ROLE:admin \r\n")), (Outcome{{"/admin"}, Refusal::kNone}));
  EXPECT_EQ(judgeWithHeaders(with("/admin", "X-Role: guest\r\n")), (Outcome{{}, Refusal::kDenied}));
  EXPECT_EQ(judgeWithHeaders(with("/admin", "")), (Outcome{{}, Refusal::kDenied}));
  EXPECT_EQ(judgeWithHeaders(with("/admin", "X-Role: admin\r\nX-Role: guest\r\n")),
            (Outcome{{}, Refusal::kDenied}));  // every line of it must match
  EXPECT_EQ(judgeWithHeaders(with("/admin", "User-Agent: Android\r\n")), (Outcome{{}, Refusal::kDenied}));
  EXPECT_EQ(judgeWithHeaders(with("/public/x", "User-Agent: x Android y\r\n")),
            (Outcome{{"/public/x"}, Refusal::kNone}));
  // no grant could allow it: denied at the request line, whatever follows
  EXPECT_EQ(judgeWithHeaders("GET /secret HTTP/1.1\r\n"), (Outcome{{}, Refusal::kDenied}));
  EXPECT_EQ(judgeWithHeaders("POST /admin HTTP/1.1\r\n"), (Outcome{{}, Refusal::kDenied}));
  // a grant without headers allows it at the request line
  EXPECT_EQ(judgeWithHeaders("GET /ok HTTP/1.1\r\n"), (Outcome{{"/ok"}, Refusal::kNone}));
  // undecided until the empty line
  EXPECT_EQ(judgeWithHeaders("GET /admin HTTP/1.1\r\nX-Role: admin\r\n"), (Outcome{{}, Refusal::kNone}));
  // what is malformed before the head's end is malformed, not denied
  EXPECT_EQ(judgeWithHeaders(with("/admin", "Bad Name: x\r\n")), (Outcome{{}, Refusal::kMalformed}));
  std::string many;
  for (int i = 0; i <= 100; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(judgeWithHeaders(with("/admin", "X-Role: admin\r\n" + many)),
            (Outcome{{}, Refusal::kHeadTooLarge}));
  // keep-alive: allowed, denied by its headers, nothing after
  EXPECT_EQ(judgeWithHeaders(with("/admin", "X-Role: admin\r\n") + with("/admin", "X-Role: x\r\n") +
                             with("/ok", "")),
            (Outcome{{"/admin"}, Refusal::kDenied}));
}

TEST(HttpRequestTest, HeaderVerdictsDoNotDependOnHowTheStreamIsSplit) {
  const std::string s =
      "GET /admin HTTP/1.1\r\nHost: srv\r\nX-Role:  admin\t\r\n\r\n"
      "GET /public HTTP/1.1\r\nuser-agent: (Android)\r\nContent-Length: 3\r\n\r\nabc"
      "GET /admin HTTP/1.1\r\nX-ROLE: admin\r\nx-role: Admin\r\n\r\n";
  const Outcome whole = judgeWithHeaders(s);
  EXPECT_EQ(whole, (Outcome{{"/admin", "/public"}, Refusal::kDenied}));
  std::vector<std::string> bytes;
  for (char c : s) bytes.emplace_back(1, c);
  EXPECT_EQ(judgeWithHeaders(bytes), whole);
}

TEST(HttpRequestTest, StatusPerRefusal) {
  EXPECT_EQ(status(Refusal::kDenied), 403);
  EXPECT_EQ(status(Refusal::kUriTooLong), 414);
  EXPECT_EQ(status(Refusal::kHeadTooLarge), 431);
  EXPECT_EQ(status(Refusal::kPathNotNormal), 400);
  EXPECT_EQ(status(Refusal::kNone), 0);
}

}  // namespace
}  // namespace smik::compile::http
