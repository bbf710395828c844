// The owner types everything else is built on: a descriptor closed exactly
// once, by its last owner; a result that holds a value or why not.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "agent/base/result.h"
#include "agent/base/unique_fd.h"

namespace smik {
namespace {

bool isOpen(int fd) { return fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

int openNull() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

TEST(UniqueFd, ClosesWhatItHoldsOnceWhenItGoes) {
  int raw = openNull();
  ASSERT_GE(raw, 0);
  {
    UniqueFd fd(raw);
    EXPECT_TRUE(fd.valid());
    EXPECT_EQ(fd.get(), raw);
  }
  EXPECT_FALSE(isOpen(raw));
}

TEST(UniqueFd, AMoveHandsItOverAndTheSourceClosesNothing) {
  int raw = openNull();
  UniqueFd a(raw);
  UniqueFd b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT: moved-from is specified: empty
  EXPECT_EQ(b.get(), raw);
  std::vector<UniqueFd> held;
  held.push_back(std::move(b));
  for (int i = 0; i < 64; i++) held.emplace_back(openNull());  // reallocations move them
  EXPECT_TRUE(isOpen(raw));
  held.clear();
  EXPECT_FALSE(isOpen(raw));
}

TEST(UniqueFd, AssigningClosesTheOldDescriptor) {
  int first = openNull(), second = openNull();
  UniqueFd fd(first);
  fd = UniqueFd(second);
  EXPECT_FALSE(isOpen(first));
  EXPECT_EQ(fd.get(), second);
  fd.reset();
  EXPECT_FALSE(isOpen(second));
  EXPECT_FALSE(fd.valid());
}

TEST(UniqueFd, ReleaseGivesItUpAndDuplicateMakesASecondOwner) {
  int raw = openNull();
  UniqueFd fd(raw);
  UniqueFd dup = UniqueFd::duplicate(fd.get());
  ASSERT_TRUE(dup.valid());
  EXPECT_NE(dup.get(), raw);
  EXPECT_EQ(fd.release(), raw);
  EXPECT_FALSE(fd.valid());
  EXPECT_TRUE(isOpen(raw)) << "released: not closed";
  UniqueFd again(raw);  // its new owner
  EXPECT_FALSE(UniqueFd::duplicate(-1).valid());
}

Result<int> half(int n) {
  if (n % 2) return fail(std::to_string(n) + " is odd");
  return n / 2;
}

TEST(Result, HoldsAValueOrWhyNot) {
  Result<int> even = half(8);
  ASSERT_TRUE(even.ok());
  EXPECT_EQ(*even, 4);
  EXPECT_THROW((void)even.error(), BadResultAccess);
  Result<int> odd = half(3);
  EXPECT_FALSE(odd);
  EXPECT_EQ(odd.error(), "3 is odd");
  EXPECT_THROW((void)odd.value(), BadResultAccess) << "reading a failed value is a bug, loudly";
}

TEST(Result, VoidSucceedsByDefault) {
  Result<void> done;
  EXPECT_TRUE(done.ok());
  Result<void> failed = fail("no");
  EXPECT_FALSE(failed);
  EXPECT_EQ(failed.error(), "no");
}

TEST(Result, MovesItsValueOut) {
  Result<UniqueFd> fd = UniqueFd(openNull());
  ASSERT_TRUE(fd);
  UniqueFd owner = std::move(fd).value();
  EXPECT_TRUE(owner.valid());
}

}  // namespace
}  // namespace smik
