// The owner types everything else is built on: a descriptor closed exactly
// once, by its last owner; a result that holds a value or why not; space in
// a kernel table, given back and taken again.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "agent/base/abi.h"
#include "agent/base/addr.h"
#include "agent/base/buffered_flat_map.h"
#include "agent/base/flat_map.h"
#include "agent/base/result.h"
#include "agent/base/shared_flat_map.h"
#include "agent/base/table_space.h"
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

TEST(TableSpace, TakesFirstFitAndMergesWhatIsGivenBack) {
  TableSpace t(100);
  EXPECT_EQ(t.take(30), 0u);
  EXPECT_EQ(t.take(30), 30u);
  EXPECT_EQ(t.take(30), 60u);
  EXPECT_EQ(t.take(11), std::nullopt) << "10 left";
  EXPECT_EQ(t.take(0), std::nullopt);
  t.give(30, 30);
  EXPECT_EQ(t.take(40), std::nullopt) << "30 + 10 free, not adjacent";
  t.give(0, 30);
  EXPECT_EQ(t.freeRuns(), 2u);
  EXPECT_EQ(t.take(50), 0u) << "the two runs given back are one";
  t.give(0, 50);
  t.give(60, 30);
  EXPECT_EQ(t.freeRuns(), 1u);
  EXPECT_EQ(t.freeUnits(), 100u);
}

// Replacing what was placed, forever, as an agent whose policy keeps
// changing does: a bump pointer runs out after a few rounds; this never
// does, and no unit is ever handed out twice (checked against a map of
// which unit belongs to whom).
TEST(TableSpace, EndlessReplacementNeverRunsOutNorOverlaps) {
  constexpr uint32_t kCapacity = 4096;
  TableSpace t(kCapacity);
  std::vector<int> owner(kCapacity, -1);
  std::map<int, std::pair<uint32_t, uint32_t>> held;  // id -> (base, units)
  std::mt19937 rng(7);
  for (int round = 0; round < 20000; ++round) {
    const int id = static_cast<int>(rng() % 16);
    if (auto it = held.find(id); it != held.end()) {
      for (uint32_t u = 0; u < it->second.second; ++u) owner[it->second.first + u] = -1;
      t.give(it->second.first, it->second.second);
      held.erase(it);
    }
    const uint32_t units = 1 + rng() % 200;  // 16 x 200 < capacity, but holes may be smaller
    const std::optional<uint32_t> base = t.take(units);
    uint32_t largest_hole = 0, run = 0;
    for (uint32_t u = 0; u < kCapacity; ++u) {
      run = owner[u] == -1 ? run + 1 : 0;
      largest_hole = std::max(largest_hole, run);
    }
    if (!base) {
      ASSERT_LT(largest_hole, units) << "refused with room at round " << round;
      continue;
    }
    ASSERT_LE(*base + units, kCapacity);
    for (uint32_t u = 0; u < units; ++u) {
      ASSERT_EQ(owner[*base + u], -1) << "unit " << *base + u << " handed out twice";
      owner[*base + u] = id;
    }
    held[id] = {*base, units};
  }
  for (const auto& [id, r] : held) t.give(r.first, r.second);
  EXPECT_EQ(t.freeUnits(), kCapacity);
  EXPECT_EQ(t.freeRuns(), 1u);
}

// ---- FlatMap: a sorted vector behind std::map's interface ---------------------

using Flat = FlatMap<std::string, int>;

std::vector<std::pair<std::string, int>> entriesOf(const Flat& m) { return {m.begin(), m.end()}; }

TEST(FlatMap, InsertsInAnyOrderAndIteratesSorted) {
  Flat m;
  EXPECT_TRUE(m.emplace("b", 2).second);
  EXPECT_TRUE(m.emplace("d", 4).second);  // at the end: appended
  EXPECT_TRUE(m.emplace("a", 1).second);  // before the first
  EXPECT_TRUE(m.emplace("c", 3).second);  // in between
  auto [it, fresh] = m.emplace("c", 30);  // held: std::map keeps the first
  EXPECT_FALSE(fresh);
  EXPECT_EQ(it->second, 3);
  m["e"] = 5;
  m["a"] = 10;  // assigns
  m.insert_or_assign("b", 20);
  EXPECT_EQ(entriesOf(m), (std::vector<std::pair<std::string, int>>{
                              {"a", 10}, {"b", 20}, {"c", 3}, {"d", 4}, {"e", 5}}));
  EXPECT_EQ(m.size(), 5u);
  EXPECT_EQ(m.at("d"), 4);
  EXPECT_THROW(m.at("z"), std::out_of_range);
  EXPECT_EQ(m.count("c"), 1u);
  EXPECT_EQ(m.count("cc"), 0u);
  EXPECT_EQ(m.find(""), m.end());
  EXPECT_EQ(m.find("zz"), m.end());
}

TEST(FlatMap, ErasesByKeyIteratorAndPredicate) {
  Flat m = {{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}, {"e", 5}};
  EXPECT_EQ(m.erase("a"), 1u);   // first
  EXPECT_EQ(m.erase("e"), 1u);   // last
  EXPECT_EQ(m.erase("e"), 0u);   // gone already
  EXPECT_EQ(m.erase("bb"), 0u);  // never there
  auto next = m.erase(m.find("c"));
  ASSERT_NE(next, m.end());
  EXPECT_EQ(next->first, "d");
  EXPECT_EQ(entriesOf(m), (std::vector<std::pair<std::string, int>>{{"b", 2}, {"d", 4}}));
  EXPECT_EQ(erase_if(m, [](const auto& e) { return e.second > 3; }), 1u);
  EXPECT_EQ(entriesOf(m), (std::vector<std::pair<std::string, int>>{{"b", 2}}));
  m.erase("b");
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.find("b"), m.end());
  m["b"] = 7;  // usable again once empty
  EXPECT_EQ(m.at("b"), 7);
}

TEST(FlatMap, FromUnsortedKeepsTheFirstOrTheLastOfARepeatedKey) {
  const Flat::container_type in = {{"c", 1}, {"a", 1}, {"c", 2}, {"b", 1}, {"a", 2}, {"c", 3}};
  EXPECT_EQ(entriesOf(Flat::fromUnsorted(in, Flat::Keep::kFirst)),
            (std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 1}, {"c", 1}}));
  EXPECT_EQ(entriesOf(Flat::fromUnsorted(in, Flat::Keep::kLast)),
            (std::vector<std::pair<std::string, int>>{{"a", 2}, {"b", 1}, {"c", 3}}));
  // Sorted but repeated: still one per key.
  EXPECT_EQ(entriesOf(Flat::fromUnsorted({{"a", 1}, {"a", 2}, {"b", 1}}, Flat::Keep::kLast)),
            (std::vector<std::pair<std::string, int>>{{"a", 2}, {"b", 1}}));
  EXPECT_TRUE(Flat::fromUnsorted({}, Flat::Keep::kFirst).empty());
  // An initializer list is std::map's: the first of a repeated key.
  EXPECT_EQ(entriesOf(Flat{{"b", 1}, {"a", 1}, {"b", 2}}),
            (std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 1}}));
  // No spare room once built.
  Flat::container_type big;
  big.reserve(1000);
  for (int i = 0; i < 10; i++) big.emplace_back(std::to_string(9 - i), i);
  EXPECT_EQ(Flat::fromUnsorted(std::move(big), Flat::Keep::kFirst).capacity(), 10u);
}

// ---- BufferedFlatMap: a sorted vector and a buffer of changes ----------------

using Buffered = BufferedFlatMap<std::string, int>;

std::vector<std::pair<std::string, int>> entriesOf(const Buffered& m) {
  std::vector<std::pair<std::string, int>> out;
  m.forEach([&](const std::string& k, int v) { out.emplace_back(k, v); });
  return out;
}

TEST(BufferedFlatMap, PutsErasesAndFindsBeforeAndAfterAMerge) {
  Buffered m(Flat{{"b", 2}, {"d", 4}});  // the vector
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m.buffered(), 0u);
  m.put("c", 3);   // new: buffered
  m.put("d", 40);  // in the vector: replaced there
  EXPECT_EQ(m.buffered(), 1u);
  EXPECT_TRUE(m.erase("b"));   // in the vector: marked
  EXPECT_FALSE(m.erase("b"));  // already
  EXPECT_FALSE(m.erase("x"));  // never there
  EXPECT_EQ(m.find("b"), nullptr);
  ASSERT_NE(m.find("c"), nullptr);
  EXPECT_EQ(*m.find("c"), 3);
  EXPECT_EQ(entriesOf(m), (std::vector<std::pair<std::string, int>>{{"c", 3}, {"d", 40}}));
  m.put("b", 20);  // back in its place in the vector
  m.put("a", 1);
  EXPECT_TRUE(m.erase("c"));  // buffered: gone from the buffer
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(entriesOf(m),
            (std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 20}, {"d", 40}}));
  m.erase("d");
  m.compact();
  EXPECT_EQ(m.buffered(), 0u);
  EXPECT_EQ(entriesOf(m), (std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 20}}));
  EXPECT_EQ(m.size(), 2u);
  EXPECT_FALSE(m.contains("d"));
  EXPECT_TRUE(m.contains("a"));
  m.erase("a");
  m.erase("b");
  EXPECT_TRUE(m.empty());
  EXPECT_TRUE(entriesOf(m).empty());
  m.compact();
  EXPECT_TRUE(m.empty());
  m.put("z", 26);  // usable again once empty
  EXPECT_EQ(entriesOf(m), (std::vector<std::pair<std::string, int>>{{"z", 26}}));
}

// A value erased from the vector goes at once, not at the next merge: the
// cache's pods are shared with snapshots and must not be held by a dead entry.
TEST(BufferedFlatMap, AnErasedValueIsReleasedAtOnce) {
  BufferedFlatMap<std::string, std::shared_ptr<int>> m;
  auto v = std::make_shared<int>(1);
  m.put("a", v);
  m.compact();  // now in the vector
  m.put("b", std::make_shared<int>(2));
  EXPECT_EQ(v.use_count(), 2);
  m.erase("a");
  EXPECT_EQ(v.use_count(), 1);
  m.put("a", v);  // replaced in place: the old value goes too
  auto w = std::make_shared<int>(3);
  m.put("a", w);
  EXPECT_EQ(v.use_count(), 1);
  EXPECT_EQ(w.use_count(), 2);
}

// The same as std::map, operation by operation, through many merges: keys
// in no order, repeats, erasures of buffered and merged keys, a key erased
// and put again before and after a merge.
TEST(BufferedFlatMap, AgreesWithStdMapThroughMerges) {
  std::mt19937 rng(7);
  Buffered m;
  std::map<std::string, int> ref;
  size_t merges = 0;
  for (int step = 0; step < 40000; step++) {
    // Few keys early (repeats), more later (growth past the buffer's share).
    const std::string k = "k" + std::to_string(rng() % (step < 20000 ? 300 : 5000));
    const int v = int(rng() % 1000);
    const size_t before = m.buffered();
    switch (rng() % 5) {
      case 0:
      case 1:
        m.put(k, v);
        ref[k] = v;
        break;
      case 2:
        EXPECT_EQ(m.erase(k), ref.erase(k) == 1);
        break;
      case 3: {
        const int* got = m.find(k);
        auto it = ref.find(k);
        ASSERT_EQ(got != nullptr, it != ref.end()) << k;
        if (got) {
          EXPECT_EQ(*got, it->second);
        }
        break;
      }
      default:
        if (rng() % 50 == 0) m.compact();
    }
    if (before > 1 && m.buffered() == 0) ++merges;  // one change moves the buffer by one
    ASSERT_EQ(m.size(), ref.size());
    // Never more than the buffer's bound.
    ASSERT_LE(m.buffered(),
              Buffered::kMinBuffer + 1 + (ref.size() + m.buffered()) / Buffered::kBufferShare);
  }
  EXPECT_GT(merges, 10u);
  std::vector<std::pair<std::string, int>> want(ref.begin(), ref.end());
  EXPECT_EQ(entriesOf(m), want);
  Buffered copy = m;  // the reflector's relist diffs against a copy
  m.compact();
  EXPECT_EQ(entriesOf(m), want);
  EXPECT_EQ(entriesOf(copy), want);
}

// ---- SharedFlatMap: copies share one vector until written -------------------

using Shared = SharedFlatMap<std::string, int>;

std::vector<std::pair<std::string, int>> entriesOf(const Shared& m) { return {m.begin(), m.end()}; }

TEST(SharedFlatMap, CopiesShareUntilOneIsWrittenAndTheOtherNeverSeesIt) {
  Shared a = Flat{{"a", 1}, {"b", 2}, {"c", 3}};
  Shared b = a;
  EXPECT_TRUE(a.sharesWith(b));
  EXPECT_EQ(a, b);
  const Shared& cb = b;
  EXPECT_EQ(cb.at("b"), 2);  // a read does not copy
  EXPECT_TRUE(a.sharesWith(b));
  b["b"] = 20;  // a write copies first
  EXPECT_FALSE(a.sharesWith(b));
  EXPECT_EQ(entriesOf(a), (std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}, {"c", 3}}));
  EXPECT_EQ(entriesOf(b), (std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 20}, {"c", 3}}));
  EXPECT_FALSE(a == b);
  // Every mutating call detaches: erase, emplace, erase_if, the non-const
  // iterators, at, clear.
  for (int op = 0; op < 7; op++) {
    Shared c = a;
    ASSERT_TRUE(c.sharesWith(a));
    switch (op) {
      case 0: c.erase("a"); break;
      case 1: c.emplace("d", 4); break;
      case 2: erase_if(c, [](const auto& e) { return e.second == 3; }); break;
      case 3: c.begin()->second = 100; break;
      case 4: c.at("c") = 300; break;
      case 5: c.find("a")->second = 10; break;
      case 6: c.clear(); break;
    }
    EXPECT_FALSE(c.sharesWith(a)) << op;
    EXPECT_EQ(entriesOf(a), (std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}, {"c", 3}}))
        << "op " << op << " wrote through to the copy it shared with";
  }
  // Erasing by an iterator taken before the copy: the same entry goes.
  Shared d = a;
  const Shared& cd = d;
  auto it = cd.find("b");
  auto next = d.erase(it);
  EXPECT_EQ(next->first, "c");
  EXPECT_EQ(entriesOf(d), (std::vector<std::pair<std::string, int>>{{"a", 1}, {"c", 3}}));
  EXPECT_EQ(a.size(), 3u);
  // Nothing to erase: nothing copied.
  Shared e = a;
  EXPECT_EQ(e.erase("zz"), 0u);
  EXPECT_EQ(erase_if(e, [](const auto&) { return false; }), 0u);
  EXPECT_TRUE(e.sharesWith(a));
}

TEST(SharedFlatMap, EmptyAndBuiltLikeAFlatMap) {
  Shared m;
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.begin(), m.end());
  EXPECT_EQ(m.count("a"), 0u);
  EXPECT_THROW(static_cast<const Shared&>(m).at("a"), std::out_of_range);
  Shared n;
  EXPECT_EQ(m, n);
  EXPECT_FALSE(m.sharesWith(n));  // nothing to share
  m["b"] = 1;
  m["a"] = 2;
  EXPECT_EQ(entriesOf(m), (std::vector<std::pair<std::string, int>>{{"a", 2}, {"b", 1}}));
  EXPECT_EQ(entriesOf(Shared::fromUnsorted({{"b", 1}, {"a", 1}, {"b", 2}}, Shared::Keep::kLast)),
            (std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}}));
  EXPECT_EQ(Shared(Flat{{"a", 1}}), (Shared{{"a", 1}}));
}

// The same as std::map, operation by operation, over random keys of both
// address families: the map the compiler and the maps layer key by address.
TEST(FlatMap, AgreesWithStdMapOnAddresses) {
  std::mt19937 rng(13);
  auto randomAddr = [&] {
    Addr a;
    a.family = rng() % 2 ? SMIK_AF_INET : SMIK_AF_INET6;
    const size_t n = a.family == SMIK_AF_INET ? 4 : 16;
    for (size_t i = 0; i < n; i++) a.bytes[i] = uint8_t(rng() % 3);  // few values: repeats
    return a;
  };
  FlatMap<Addr, int> flat;
  std::map<Addr, int> ref;
  std::vector<std::pair<Addr, int>> log;
  for (int step = 0; step < 5000; step++) {
    const Addr a = randomAddr();
    const int v = int(rng() % 100);
    switch (rng() % 4) {
      case 0:
        EXPECT_EQ(flat.emplace(a, v).second, ref.emplace(a, v).second);
        break;
      case 1:
        flat[a] = v;
        ref[a] = v;
        break;
      case 2:
        EXPECT_EQ(flat.erase(a), ref.erase(a));
        break;
      default:
        EXPECT_EQ(flat.count(a), ref.count(a));
    }
    log.emplace_back(a, v);
  }
  auto same = [](const auto& x, const auto& y) { return x.first == y.first && x.second == y.second; };
  ASSERT_EQ(flat.size(), ref.size());
  EXPECT_TRUE(std::equal(flat.begin(), flat.end(), ref.begin(), ref.end(), same));
  // Built in one go, the last of each address kept, as operator[] in turn.
  std::map<Addr, int> last;
  for (const auto& [a, v] : log) last[a] = v;
  const auto built = FlatMap<Addr, int>::fromUnsorted(log, FlatMap<Addr, int>::Keep::kLast);
  ASSERT_EQ(built.size(), last.size());
  EXPECT_TRUE(std::equal(built.begin(), built.end(), last.begin(), last.end(), same));
}

}  // namespace
}  // namespace smik
