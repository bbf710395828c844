// The tests' host:port reader (tests/support/host_port.h): a wrong port
// here would make a listener check pass against the wrong port.
#include "tests/support/host_port.h"

#include <gtest/gtest.h>

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
