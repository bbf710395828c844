// The one host:port parser (agent/base/host_port.h) and the tests' reader
// over it (tests/support/host_port.h): a wrong port here would make a
// listener check pass against the wrong port, or a peer flag take garbage.
#include "tests/support/host_port.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/base/host_port.h"
#include "api/http/listen.h"

namespace smik {
namespace {

using ::testing::HasSubstr;

std::optional<HostPort> parsed(std::string_view text, const HostPortRules& rules = {}) {
  Result<HostPort> r = parseHostPort(text, rules);
  if (!r) return std::nullopt;
  return *r;
}

TEST(ParseHostPort, ReadsNamesV4AndBracketedV6) {
  EXPECT_EQ(parsed("node-a:9465"), (HostPort{"node-a", 9465}));
  EXPECT_EQ(parsed("10.0.0.7:1"), (HostPort{"10.0.0.7", 1}));
  EXPECT_EQ(parsed("[fd00::1]:65535"), (HostPort{"fd00::1", 65535}));
  EXPECT_EQ(parsed("ns/web:8080"), (HostPort{"ns/web", 8080}));  // explain's SERVICE:PORT
}

TEST(ParseHostPort, RefusesWhatTheDefaultRulesDoNotTake) {
  for (const char* bad :
       {"", "host", "host:", ":80", "host:0", "host:65536", "host:99999", "host:123456", "host:80x",
        "host:+80", "host: 80", "host:http", "::1:80", "a:b:80", "[::1]", "[::1]80", "[::1:80",
        "[]:80", "[::1]x:80"})
    EXPECT_EQ(parsed(bad), std::nullopt) << bad;
}

TEST(ParseHostPort, SaysWhyAndQuotesTheText) {
  Result<HostPort> r = parseHostPort("peer:70000");
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error(), HasSubstr("'peer:70000'"));
  EXPECT_THAT(r.error(), HasSubstr("1..65535"));
  EXPECT_THAT(parseHostPort("::1:80").error(), HasSubstr("brackets"));
  EXPECT_THAT(parseHostPort("web").error(), HasSubstr("no port"));
  EXPECT_THAT(parseHostPort(":80").error(), HasSubstr("no host"));
}

TEST(ParseHostPort, EachRuleWidensOnlyItsForm) {
  const HostPortRules empty_host{.empty_host = true};
  EXPECT_EQ(parsed(":9464", empty_host), (HostPort{"", 9464}));
  EXPECT_EQ(parsed("[]:9464", empty_host), std::nullopt);  // brackets around nothing
  EXPECT_EQ(parsed("host:0", empty_host), std::nullopt);

  const HostPortRules port_zero{.port_zero = true};
  EXPECT_EQ(parsed("127.0.0.1:0", port_zero), (HostPort{"127.0.0.1", 0}));
  EXPECT_EQ(parsed("[::]:0", port_zero), (HostPort{"::", 0}));
  EXPECT_EQ(parsed(":0", port_zero), std::nullopt);
  EXPECT_THAT(parseHostPort("h:65536", port_zero).error(), HasSubstr("0..65535"));

  const HostPortRules bare_v6{.unbracketed_ipv6 = true};
  EXPECT_EQ(parsed("::1:9464", bare_v6), (HostPort{"::1", 9464}));
  EXPECT_EQ(parsed("[::1]:9464", bare_v6), (HostPort{"::1", 9464}));

  const HostPortRules https{.default_port = 443};
  EXPECT_EQ(parsed("api.example", https), (HostPort{"api.example", 443}));
  EXPECT_EQ(parsed("[fd00::1]", https), (HostPort{"fd00::1", 443}));
  EXPECT_EQ(parsed("api.example:6443", https), (HostPort{"api.example", 6443}));
  EXPECT_EQ(parsed("api.example:", https), std::nullopt);  // a colon promises a port
}

// What --http and --secure-listen take: every form a listener took before
// the parser, a numeric port only.
TEST(ParseListenAddress, TakesTheListenersFormsOnly) {
  EXPECT_EQ(parsed("127.0.0.1:0"), std::nullopt);
  EXPECT_EQ(*api::parseListenAddress("127.0.0.1:0"), (HostPort{"127.0.0.1", 0}));
  EXPECT_EQ(*api::parseListenAddress(":9464"), (HostPort{"", 9464}));
  EXPECT_EQ(*api::parseListenAddress("[::]:9443"), (HostPort{"::", 9443}));
  EXPECT_EQ(*api::parseListenAddress(":::9443"), (HostPort{"::", 9443}));
  for (const char* bad : {"9464", "host:", "host:http", "host:65536", "[::1]"})
    EXPECT_FALSE(api::parseListenAddress(bad)) << bad;
}

TEST(JoinHostPort, BracketsV6OnceAndRoundTrips) {
  EXPECT_EQ(joinHostPort("10.0.0.7", 9465), "10.0.0.7:9465");
  EXPECT_EQ(joinHostPort("fd00::1", 9465), "[fd00::1]:9465");
  EXPECT_EQ(joinHostPort("[fd00::1]", 9465), "[fd00::1]:9465");
  for (const HostPort& hp : {HostPort{"node-a", 1}, HostPort{"fd00::1", 65535}})
    EXPECT_EQ(parsed(joinHostPort(hp.host, hp.port)), hp);
}

}  // namespace
}  // namespace smik

namespace smik::testing {
namespace {

TEST(HostPort, ReadsHostAndPort) {
  EXPECT_EQ(parseHostPort("0.0.0.0:9443"), (HostPort{"0.0.0.0", 9443}));
  EXPECT_EQ(parseHostPort(":9464"), (HostPort{"", 9464}));
  EXPECT_EQ(parseHostPort("[::1]:8080"), (HostPort{"::1", 8080}));
  EXPECT_EQ(parseHostPort("https://127.0.0.1:6443/api/v1"), (HostPort{"127.0.0.1", 6443}));
}

TEST(HostPort, RefusesWhatHasNoUsablePort) {
  for (const char* bad : {"localhost", "host:", "host:0", "host:65536", "host:80x", "::1:80",
                          "[::1]", "[::1]80", "http://host/path"})
    EXPECT_EQ(parseHostPort(bad), std::nullopt) << bad;
}

}  // namespace
}  // namespace smik::testing
