// HTTPRouteGroup regexes compiled to DFAs the kernel can run: no backtracking,
// one table lookup per byte, a bounded number of states.
//
// The subset (RE2 syntax, byte semantics as RE2 with Latin-1 encoding):
//   literals and escaped punctuation (\. \/ \- \\ ...), \t \n \r \f \v \xHH
//   .  (any byte but \n)   [a-z0-9_] [^/] with ranges and \d \w \s inside
//   \d \D \w \W \s \S      (RE2's ASCII classes; \s = [\t\n\f\r ])
//   groups ( ) (?: ) (?P<name> )   alternation |
//   * + ? {n} {n,} {n,m} (n, m <= 100), lazy forms (*? ...: same language)
//   ^ at the start (a no-op: every pattern is anchored at the start)
//   $ anywhere (end of input)
// Everything else (backreferences, lookaround, \b, flags like (?i), POSIX
// classes, Unicode classes) is refused with the offset and a reason, never
// approximated: a grant that matched more than its author wrote would be a
// hole, one that matched less would break the application.
//
// Anchoring, as SMI implementations match them:
//   kPrefix: the path regex is anchored at the start only (the SMI spec:
//            "anchored at the start"; what RE2 does with ^(?:R) and a partial
//            match). "/books" grants "/books/1".
//   kFull:   header value regexes match the whole value (Envoy's safe_regex,
//            what OSM generates), so ".*Android.*" means what it says.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bpf/include/smik_abi.h"

namespace smik::compile::http {

enum class Anchor : uint8_t { kPrefix, kFull };

struct Pattern {
  std::string regex;
  Anchor anchor = Anchor::kPrefix;
  // Bytes matched literally before `regex` (a header condition's "name:"):
  // written as a regex they would need escaping, and a '^' in `regex` would
  // no longer be at its start.
  std::string prefix = {};
};

struct RegexLimits {
  size_t max_pattern_bytes = 1024;
  size_t max_nesting = 32;      // groups inside groups
  size_t max_repeat = 100;      // m and n of {n,m}
  size_t max_nfa_states = 4096;
  size_t max_dfa_states = 4096;  // per DFA: the kernel table is states x classes
  // Closure steps of the subset construction (~60 ns each with the sets they
  // build, measured at -O2): what bounds the agent's time on a pattern built
  // to make it expensive (about 250 ms).
  size_t max_construction_steps = 4'000'000;
  // Minimization rounds x states x classes; past it the DFA stays as built.
  size_t max_minimize_cells = 2'000'000;
};

// Why a pattern (or a set of them) cannot be compiled. `pattern` is the index
// in the input, or -1 when the set as a whole is over a budget.
struct RegexError {
  int pattern = -1;
  size_t offset = 0;
  std::string why;
  std::string describe(const std::vector<Pattern>& patterns) const;
};

// Which patterns of a DFA (bit i: pattern i), as the kernel holds it.
using PatternSet = smik_http_mask;
inline constexpr size_t kMaxPatterns = SMIK_HTTP_MAX_PATTERNS;

// A deterministic automaton over bytes. State 0 is dead (nothing can match
// any more: the kernel stops reading there). Up to kMaxPatterns share one DFA;
// a state's `accepts` says which of them match when the input ends in it
// (`$` is an assertion checked there, not a symbol).
struct Dfa {
  static constexpr uint16_t kDead = 0;
  std::array<uint16_t, 256> class_of{};  // byte -> equivalence class
  uint16_t classes = 0;
  uint16_t start = 0;
  std::vector<uint16_t> next;     // next[state * classes + class]
  std::vector<PatternSet> accepts;  // per state
  size_t states() const { return accepts.size(); }
  uint16_t step(uint16_t state, uint8_t byte) const { return next[state * classes + class_of[byte]]; }
};

using DfaResult = std::variant<Dfa, RegexError>;

// Compiles up to kMaxPatterns patterns into one DFA whose accept sets tell them apart.
[[nodiscard]] DfaResult compileDfa(const std::vector<Pattern>& patterns, const RegexLimits& limits = {});

// Checks one pattern against the subset (parse only, no DFA).
[[nodiscard]] std::variant<std::monostate, RegexError> checkRegex(std::string_view regex,
                                                                  const RegexLimits& limits = {});

// Which patterns match `input`: the reference the kernel's walk must equal.
PatternSet matchAll(const Dfa& dfa, std::string_view input);

// ---- header matches ------------------------------------------------------------
//
// One (header name, value regex) pair of an HTTPRouteGroup match. All the
// conditions of one port share one DFA over each header line as the kernel
// reads it: the name lowercased, ':', the value without its surrounding
// whitespace. Condition i holds when its header is present and every line of
// that name has a value its regex matches as a whole (kFull).
struct HeaderCondition {
  std::string name;   // lowercase token
  std::string regex;  // the whole value
  auto operator<=>(const HeaderCondition&) const = default;
};

// Conditions per port: their value bits and their name bits share the low
// word of one accept set.
inline constexpr size_t kMaxHeaderConditions = 32;
inline constexpr unsigned kHeaderNameShift = 32;

// Bit i: condition i's name and value matched the line; bit 32 + i: the line
// is condition i's header, whatever its value.
[[nodiscard]] DfaResult compileHeaderDfa(const std::vector<HeaderCondition>& conditions,
                                         const RegexLimits& limits = {});

// The header line as the DFA reads it.
std::string headerLine(std::string_view name, std::string_view value);

// Which conditions hold over a request's header lines (name, value as sent):
// the reference of what the kernel accumulates line by line.
uint32_t headerConditionsHeld(const Dfa& dfa, const std::vector<std::pair<std::string, std::string>>& headers);

// Whether some pattern of `candidates` has every header condition it needs
// (needs[i]; a pattern past the vector needs none) among `held`: the
// kernel's judge_head, and with held = 0 its judge_line's "a grant that
// names no header allows it".
bool someCandidateHolds(const PatternSet& candidates, const std::vector<uint32_t>& needs, uint32_t held);

// Header names are tokens (RFC 9110 5.1).
bool isHeaderName(std::string_view name);

}  // namespace smik::compile::http
