// The HTTPRouteGroup regex DFAs against RE2 (the reference: what Envoy, and
// so OSM, matches with): generated patterns and inputs must get the same
// answer, one pattern at a time and many patterns in one DFA.
#include "agent/compile/http_regex.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <re2/re2.h>

#include <cstdlib>
#include <random>

namespace smik::compile::http {
namespace {

using ::testing::HasSubstr;

RE2::Options latin1() {
  RE2::Options o;
  o.set_encoding(RE2::Options::EncodingLatin1);  // byte semantics, as the kernel reads bytes
  o.set_log_errors(false);
  return o;
}

bool re2Matches(const Pattern& p, const std::string& input) {
  if (p.anchor == Anchor::kFull) {
    RE2 re(p.regex, latin1());
    EXPECT_TRUE(re.ok()) << p.regex << ": " << re.error();
    return RE2::FullMatch(input, re);
  }
  RE2 re("^(?:" + p.regex + ")", latin1());
  EXPECT_TRUE(re.ok()) << p.regex << ": " << re.error();
  return RE2::PartialMatch(input, re);
}

Dfa compiled(const std::vector<Pattern>& patterns) {
  DfaResult r = compileDfa(patterns);
  if (auto* e = std::get_if<RegexError>(&r)) {
    ADD_FAILURE() << e->describe(patterns);
    return {};
  }
  return std::get<Dfa>(r);
}

bool matches(const std::string& regex, Anchor anchor, const std::string& input) {
  Dfa d = compiled({{regex, anchor}});
  return d.states() > 0 && matchAll(d, input) == smik::abi::httpMask(1);
}

TEST(HttpRegex, PathsAreAnchoredAtTheStartOnly) {
  EXPECT_TRUE(matches("/books", Anchor::kPrefix, "/books"));
  EXPECT_TRUE(matches("/books", Anchor::kPrefix, "/books/1"));
  EXPECT_FALSE(matches("/books", Anchor::kPrefix, "/x/books"));
  EXPECT_FALSE(matches("/books$", Anchor::kPrefix, "/books/1"));
  EXPECT_TRUE(matches("^/books$", Anchor::kPrefix, "/books"));
  EXPECT_TRUE(matches(".*", Anchor::kPrefix, ""));
  EXPECT_TRUE(matches("/api/v[0-9]+/.*", Anchor::kPrefix, "/api/v12/users"));
  EXPECT_FALSE(matches("/api/v[0-9]+/.*", Anchor::kPrefix, "/api/vx/users"));
}

TEST(HttpRegex, HeaderValuesMatchWhole) {
  EXPECT_TRUE(matches(".*Android.*", Anchor::kFull, "Mozilla/5.0 (Linux; Android 10)"));
  EXPECT_FALSE(matches("Android", Anchor::kFull, "Android 10"));
  EXPECT_TRUE(matches("Android", Anchor::kFull, "Android"));
}

TEST(HttpRegex, ManyPatternsShareOneDfaAndStayApart) {
  std::vector<Pattern> p = {{"/books", Anchor::kPrefix},
                            {"/books/[0-9]+$", Anchor::kPrefix},
                            {"/authors", Anchor::kPrefix},
                            {".*", Anchor::kPrefix}};
  Dfa d = compiled(p);
  EXPECT_EQ(matchAll(d, "/books/12"), smik::abi::httpMask(0b1011u));
  EXPECT_EQ(matchAll(d, "/books/12x"), smik::abi::httpMask(0b1001u));
  EXPECT_EQ(matchAll(d, "/authors/a"), smik::abi::httpMask(0b1100u));
  EXPECT_EQ(matchAll(d, "/"), smik::abi::httpMask(0b1000u));
}

TEST(HttpRegex, DfaIsMinimalAndDeadIsZero) {
  // dead, then one state per byte of "/books" and the accepting one that
  // absorbs the rest of a path.
  Dfa d = compiled({{"/books", Anchor::kPrefix}});
  EXPECT_EQ(d.states(), 8u);
  EXPECT_EQ(d.step(d.start, 'x'), Dfa::kDead);
  EXPECT_FALSE(smik::abi::any(d.accepts[Dfa::kDead]));
  // Equivalent spellings give the same automaton size.
  EXPECT_EQ(compiled({{"(a|b)*c", Anchor::kFull}}).states(),
            compiled({{"[ab]*c", Anchor::kFull}}).states());
}

TEST(HttpRegex, RefusesWhatItCannotMatchExactly) {
  struct Case {
    const char* regex;
    const char* why;
  };
  for (const Case& c : {Case{"(?i)/books", "flags or lookaround"}, Case{"(a)\\1", "\\1"},
                        Case{"/a(?=b)", "lookaround"}, Case{"\\bword", "\\b"},
                        Case{"[[:alpha:]]", "POSIX"}, Case{"/caf\xc3\xa9", "non-ASCII"},
                        Case{"a**", "repetition of a repetition"}, Case{"*a", "nothing to repeat"},
                        Case{"a{1000}", "over 100"}, Case{"(/a", "without its ')'"},
                        Case{"/a)", "unexpected ')'"}, Case{"[a-", "without its ']'"},
                        Case{"[z-a]", "before its start"}, Case{"a^b", "'^' after the start"},
                        Case{"\\", "trailing backslash"}, Case{"a{2,1}", "m < n"},
                        Case{"\\pL", "\\p"}, Case{"a{x}", "write \\{"}}) {
    auto r = checkRegex(c.regex);
    ASSERT_TRUE(std::holds_alternative<RegexError>(r)) << c.regex;
    EXPECT_THAT(std::get<RegexError>(r).why, HasSubstr(c.why)) << c.regex;
  }
}

TEST(HttpRegex, BudgetsBoundHostilePatterns) {
  std::string deep;
  for (int i = 0; i < 40; i++) deep += "(";
  deep += "a";
  for (int i = 0; i < 40; i++) deep += ")";
  auto nested = checkRegex(deep);
  ASSERT_TRUE(std::holds_alternative<RegexError>(nested));
  EXPECT_THAT(std::get<RegexError>(nested).why, HasSubstr("nested deeper"));

  // The classic exponential DFA: the 13th byte from the end is an 'a'.
  std::vector<Pattern> blowup = {{"(a|b)*a(a|b){12}$", Anchor::kPrefix}};
  DfaResult r = compileDfa(blowup);
  ASSERT_TRUE(std::holds_alternative<RegexError>(r));
  EXPECT_THAT(std::get<RegexError>(r).describe(blowup), HasSubstr("states"));

  // Nested counted repetition: bounded by the NFA budget, not by memory.
  std::vector<Pattern> counted = {{"((a{100}){100}){100}", Anchor::kPrefix}};
  DfaResult c = compileDfa(counted);
  ASSERT_TRUE(std::holds_alternative<RegexError>(c));
  EXPECT_THAT(std::get<RegexError>(c).why, HasSubstr("NFA states"));

  std::vector<Pattern> too_many(kMaxPatterns + 1, Pattern{"/a", Anchor::kPrefix});
  EXPECT_TRUE(std::holds_alternative<RegexError>(compileDfa(too_many)));
}

// ---- generated patterns against RE2 -------------------------------------------

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  std::string regex(int depth = 0) {
    std::string out;
    int parts = pick(1, 3);
    for (int i = 0; i < parts; i++) out += repeated(depth);
    if (depth < 2 && pick(0, 5) == 0) out += "|" + regex(depth + 1);
    if (pick(0, 12) == 0) out += "$";
    return out;
  }

  std::string input() {
    static const char alphabet[] = "ab/.-0912A_ \n";
    std::string s;
    int n = pick(0, 9);
    for (int i = 0; i < n; i++) s += alphabet[pick(0, sizeof alphabet - 2)];
    return s;
  }

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

 private:
  std::string repeated(int depth) {
    std::string a = atom(depth);
    switch (pick(0, 9)) {
      case 0: return a + "*";
      case 1: return a + "+";
      case 2: return a + "?";
      case 3: return a + "{" + std::to_string(pick(0, 2)) + "," + std::to_string(pick(2, 3)) + "}";
      case 4: return a + "{" + std::to_string(pick(0, 2)) + "}";
      case 5: return a + "*?";
      default: return a;
    }
  }

  std::string atom(int depth) {
    static const char* atoms[] = {"a", "b", "/", "\\.", ".", "-", "0", "[ab]", "[^/]", "[a-c0-9]",
                                  "\\d", "\\w", "\\s", "\\S", "[\\d_]", "[]a]", "[-a]", "\\x41",
                                  "\\/", "[^\\n]"};
    if (depth < 3 && pick(0, 6) == 0) {
      static const char* open[] = {"(", "(?:", "(?P<g>"};
      return open[pick(0, 2)] + regex(depth + 1) + ")";
    }
    return atoms[pick(0, sizeof atoms / sizeof *atoms - 1)];
  }

  std::mt19937_64 rng_;
};

uint64_t seed() {
  if (const char* s = std::getenv("SMIK_REGEX_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

TEST(HttpRegex, GeneratedPatternsMatchLikeRe2) {
  uint64_t s = seed();
  SCOPED_TRACE("SMIK_REGEX_SEED=" + std::to_string(s));
  Generator g(s);
  int compared = 0, matched = 0, over_budget = 0;
  for (int i = 0; i < 1500; i++) {
    Pattern p{g.regex(), g.pick(0, 1) ? Anchor::kPrefix : Anchor::kFull};
    DfaResult r = compileDfa({p});
    if (auto* e = std::get_if<RegexError>(&r)) {
      // The subset itself is never refused, only a budget.
      ASSERT_THAT(e->why, ::testing::AnyOf(HasSubstr("states"), HasSubstr("steps"))) << p.regex;
      over_budget++;
      continue;
    }
    const Dfa& d = std::get<Dfa>(r);
    for (int j = 0; j < 40; j++) {
      std::string in = g.input();
      bool want = re2Matches(p, in);
      ASSERT_EQ(matchAll(d, in) == smik::abi::httpMask(1), want)
          << "regex " << p.regex << (p.anchor == Anchor::kFull ? " (full)" : " (prefix)")
          << " input \"" << in << "\"";
      compared++;
      matched += want;
    }
  }
  // Generated inputs that never match would prove nothing.
  EXPECT_GT(matched, compared / 20);
  EXPECT_LT(over_budget, 30);
}

TEST(HttpRegex, GeneratedPatternSetsMatchLikeRe2) {
  uint64_t s = seed();
  SCOPED_TRACE("SMIK_REGEX_SEED=" + std::to_string(s));
  Generator g(s);
  for (int i = 0; i < 200; i++) {
    std::vector<Pattern> set;
    int n = g.pick(2, 8);
    for (int k = 0; k < n; k++) set.push_back({g.regex(1), g.pick(0, 1) ? Anchor::kPrefix : Anchor::kFull});
    DfaResult r = compileDfa(set);
    if (std::holds_alternative<RegexError>(r)) continue;  // a set over the state budget
    const Dfa& d = std::get<Dfa>(r);
    for (int j = 0; j < 40; j++) {
      std::string in = g.input();
      PatternSet want{};
      for (int k = 0; k < n; k++)
        if (re2Matches(set[k], in)) want |= smik::abi::httpBit(unsigned(k));
      ASSERT_EQ(matchAll(d, in), want) << "input \"" << in << "\" pattern 0: " << set[0].regex;
    }
  }
}

// A port holds up to kMaxPatterns patterns, past the first 64-bit word of
// the kernel's masks: every bit keeps its pattern, the last one included.
TEST(HttpRegex, PatternsPastTheFirstWordMatchLikeRe2) {
  std::vector<Pattern> set;
  for (unsigned k = 0; k < kMaxPatterns; k++)
    set.push_back({"/api/v" + std::to_string(k) + "/[a-z]+$", Anchor::kPrefix});
  set.back() = {"/api/.*/last", Anchor::kFull};
  const Dfa d = compiled(set);
  ASSERT_GT(d.states(), 0u);
  for (unsigned k = 0; k < kMaxPatterns; k++) {
    const std::string in = "/api/v" + std::to_string(k) + "/books";
    PatternSet want{};
    for (unsigned j = 0; j < kMaxPatterns; j++)
      if (re2Matches(set[j], in)) want |= smik::abi::httpBit(j);
    ASSERT_EQ(matchAll(d, in), want) << in;
    EXPECT_TRUE(smik::abi::test(want, k) || k == kMaxPatterns - 1) << in;
  }
  EXPECT_EQ(matchAll(d, "/api/v7/x/last"), smik::abi::httpBit(unsigned(kMaxPatterns - 1)));
  set.push_back({"/one-too-many", Anchor::kPrefix});
  EXPECT_TRUE(std::holds_alternative<RegexError>(compileDfa(set)));
}

// ---- header conditions ---------------------------------------------------------

Dfa headerDfa(const std::vector<HeaderCondition>& conditions) {
  DfaResult r = compileHeaderDfa(conditions);
  if (auto* e = std::get_if<RegexError>(&r)) {
    ADD_FAILURE() << e->why;
    return {};
  }
  return std::get<Dfa>(r);
}

using Lines = std::vector<std::pair<std::string, std::string>>;

TEST(HttpRegex, HeaderConditionsReadNamesInAnyCaseAndValuesWhole) {
  const Dfa d = headerDfa({{"user-agent", ".*Android.*"}, {"x-role", "admin|ops"}});
  EXPECT_EQ(headerConditionsHeld(d, {{"User-Agent", "Mozilla (Android 14)"}}), 1u);
  EXPECT_EQ(headerConditionsHeld(d, {{"USER-AGENT", "android"}}), 0u);  // values keep their case
  EXPECT_EQ(headerConditionsHeld(d, {{"x-role", "admin"}}), 2u);
  EXPECT_EQ(headerConditionsHeld(d, {{"x-role", "administrator"}}), 0u);  // the whole value
  EXPECT_EQ(headerConditionsHeld(d, {{"x-role", " \tops \t"}}), 2u);    // without its whitespace
  EXPECT_EQ(headerConditionsHeld(d, {{"x-roles", "ops"}, {"x-rol", "ops"}}), 0u);
  EXPECT_EQ(headerConditionsHeld(d, {}), 0u);  // absent: the condition does not hold
  EXPECT_EQ(headerConditionsHeld(d, {{"x-role", "ops"}, {"user-agent", "Android"}}), 3u);
}

TEST(HttpRegex, EveryLineOfARepeatedHeaderMustMatch) {
  const Dfa d = headerDfa({{"x-role", "admin|ops"}, {"x-any", ".*"}, {"x-empty", ""}});
  EXPECT_EQ(headerConditionsHeld(d, {{"x-role", "ops"}, {"X-Role", "admin"}}), 1u);
  EXPECT_EQ(headerConditionsHeld(d, {{"x-role", "ops"}, {"x-role", "guest"}}), 0u);
  EXPECT_EQ(headerConditionsHeld(d, {{"x-role", "guest"}, {"x-role", "ops"}}), 0u);
  EXPECT_EQ(headerConditionsHeld(d, {{"x-any", ""}}), 2u);  // present, any value
  EXPECT_EQ(headerConditionsHeld(d, {{"x-empty", "  "}}), 4u);
  EXPECT_EQ(headerConditionsHeld(d, {{"x-empty", "x"}}), 0u);
}

TEST(HttpRegex, HeaderConditionsRefuseWhatTheKernelCannotRead) {
  EXPECT_TRUE(std::holds_alternative<RegexError>(compileHeaderDfa({{"bad name", "x"}})));
  EXPECT_TRUE(std::holds_alternative<RegexError>(compileHeaderDfa({})));
  std::vector<HeaderCondition> many;
  for (size_t i = 0; i <= kMaxHeaderConditions; ++i) many.push_back({"x-" + std::to_string(i), "a"});
  auto r = compileHeaderDfa(many);
  ASSERT_TRUE(std::holds_alternative<RegexError>(r));
  EXPECT_THAT(std::get<RegexError>(r).why, HasSubstr("1 to 32 header conditions"));
  auto bad = compileHeaderDfa({{"x-a", "(a)\\1"}});
  ASSERT_TRUE(std::holds_alternative<RegexError>(bad));
  EXPECT_THAT(std::get<RegexError>(bad).why, HasSubstr("header x-a regex"));
  // A regex's '^' is still at its start after the name the DFA puts before it.
  EXPECT_EQ(headerConditionsHeld(headerDfa({{"x-a", "^a+$"}}), {{"x-a", "aa"}}), 1u);
}

// Generated conditions and header lines: a condition holds when RE2 fully
// matches the trimmed value of every line whose name equals its own (case
// folded), and there is one.
TEST(HttpRegex, GeneratedHeaderConditionsHoldLikeRe2) {
  uint64_t s = seed();
  SCOPED_TRACE("SMIK_REGEX_SEED=" + std::to_string(s));
  Generator g(s);
  static const char* kNames[] = {"x-a", "x-b", "user-agent"};
  static const char* kSent[] = {"x-a", "X-A", "x-B", "User-Agent", "x-c", "x-ab"};
  int compared = 0, held = 0;
  for (int i = 0; i < 300; i++) {
    std::vector<HeaderCondition> conditions;
    for (int n = g.pick(1, 4); n > 0; --n)
      conditions.push_back({kNames[g.pick(0, 2)], g.regex(1)});
    DfaResult r = compileHeaderDfa(conditions);
    if (std::holds_alternative<RegexError>(r)) continue;  // over the state budget
    const Dfa& d = std::get<Dfa>(r);
    for (int j = 0; j < 30; j++) {
      Lines lines;
      for (int n = g.pick(0, 4); n > 0; --n) {
        std::string v = g.input();
        std::erase(v, '\n');  // a header value holds no line break
        if (g.pick(0, 3) == 0) v = " " + v;
        if (g.pick(0, 3) == 0) v += "\t ";
        lines.emplace_back(kSent[g.pick(0, 5)], v);
      }
      uint32_t want = 0;
      for (size_t c = 0; c < conditions.size(); ++c) {
        bool present = false, all = true;
        for (const auto& [name, value] : lines) {
          std::string lower = name;
          for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          if (lower != conditions[c].name) continue;
          present = true;
          const size_t a = value.find_first_not_of(" \t");
          const std::string trimmed =
              a == std::string::npos ? "" : value.substr(a, value.find_last_not_of(" \t") - a + 1);
          all &= re2Matches({conditions[c].regex, Anchor::kFull}, trimmed);
        }
        want |= uint32_t{present && all} << c;
      }
      ASSERT_EQ(headerConditionsHeld(d, lines), want) << "condition 0: " << conditions[0].name << " ~ "
                                                      << conditions[0].regex;
      compared++;
      held += want != 0;
    }
  }
  EXPECT_GT(held, compared / 20);
}

}  // namespace
}  // namespace smik::compile::http
