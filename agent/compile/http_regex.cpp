// Regex subset -> Thompson NFA -> DFA by subset construction over byte
// equivalence classes. Parsing is a bounded recursive descent; every budget
// (pattern bytes, nesting, repetition, NFA and DFA states) is checked before
// the work it bounds, so hostile policy costs the agent a refusal, not memory.
#include "agent/compile/http_regex.h"

#include <algorithm>
#include <bitset>
#include <map>
#include <memory>
#include <cctype>
#include <optional>

namespace smik::compile::http {
namespace {

using ByteSet = std::bitset<256>;

// ---- syntax tree -------------------------------------------------------------

struct Node {
  enum Kind { kEmpty, kBytes, kDollar, kConcat, kAlt, kRepeat } kind = kEmpty;
  ByteSet bytes;                                // kBytes
  std::vector<std::unique_ptr<Node>> children;  // kConcat, kAlt; kRepeat: one
  int min = 0, max = -1;                        // kRepeat; max -1 = unbounded
};
using NodePtr = std::unique_ptr<Node>;

NodePtr make(Node::Kind k) {
  auto n = std::make_unique<Node>();
  n->kind = k;
  return n;
}

ByteSet range(int lo, int hi) {
  ByteSet s;
  for (int c = lo; c <= hi; c++) s.set(c);
  return s;
}
ByteSet digits() { return range('0', '9'); }
ByteSet word() { return range('0', '9') | range('A', 'Z') | range('a', 'z') | range('_', '_'); }
ByteSet space() {  // RE2's \s: no \v
  ByteSet s;
  for (char c : {'\t', '\n', '\f', '\r', ' '}) s.set(static_cast<unsigned char>(c));
  return s;
}

struct ParseError {
  size_t offset;
  std::string why;
};

class Parser {
 public:
  Parser(std::string_view re, const RegexLimits& limits) : re_(re), limits_(limits) {}

  NodePtr parse() {
    if (re_.size() > limits_.max_pattern_bytes)
      fail(limits_.max_pattern_bytes, "longer than " + std::to_string(limits_.max_pattern_bytes) + " bytes");
    for (size_t i = 0; i < re_.size(); i++)
      if (static_cast<unsigned char>(re_[i]) >= 0x80)
        fail(i, "a non-ASCII byte (write it percent-encoded, as it travels in a path)");
    if (peek('^')) pos_++;  // every pattern is anchored at the start already
    NodePtr n = alternation();
    if (pos_ < re_.size()) fail(pos_, "unexpected ')'");
    return n;
  }

 private:
  [[noreturn]] void fail(size_t at, std::string why) { throw ParseError{at, std::move(why)}; }
  bool peek(char c) const { return pos_ < re_.size() && re_[pos_] == c; }
  bool done() const { return pos_ >= re_.size(); }

  NodePtr alternation() {
    auto alt = make(Node::kAlt);
    alt->children.push_back(concatenation());
    while (peek('|')) {
      pos_++;
      alt->children.push_back(concatenation());
    }
    if (alt->children.size() == 1) return std::move(alt->children[0]);
    return alt;
  }

  NodePtr concatenation() {
    auto cat = make(Node::kConcat);
    while (!done() && !peek('|') && !peek(')')) cat->children.push_back(repetition());
    if (cat->children.empty()) return make(Node::kEmpty);
    if (cat->children.size() == 1) return std::move(cat->children[0]);
    return cat;
  }

  NodePtr repetition() {
    NodePtr atom_node = atom();
    if (done()) return atom_node;
    int min = 0, max = -1;
    char c = re_[pos_];
    if (c == '*') {
      pos_++;
    } else if (c == '+') {
      min = 1, pos_++;
    } else if (c == '?') {
      max = 1, pos_++;
    } else if (c == '{') {
      counted(&min, &max);
    } else {
      return atom_node;
    }
    if (peek('?')) pos_++;  // lazy: the same language, which is all a DFA answers
    if (!done() && (peek('*') || peek('+') || peek('?') || peek('{')))
      fail(pos_, "a repetition of a repetition (RE2 refuses it too)");
    auto rep = make(Node::kRepeat);
    rep->min = min;
    rep->max = max;
    rep->children.push_back(std::move(atom_node));
    return rep;
  }

  int number() {
    size_t start = pos_;
    long v = 0;
    while (!done() && re_[pos_] >= '0' && re_[pos_] <= '9') {
      v = v * 10 + (re_[pos_] - '0');
      if (v > static_cast<long>(limits_.max_repeat))
        fail(start, "a repetition count over " + std::to_string(limits_.max_repeat));
      pos_++;
    }
    if (pos_ == start) fail(start, "a '{' that does not start {n}, {n,} or {n,m} (write \\{ for a brace)");
    return static_cast<int>(v);
  }

  void counted(int* min, int* max) {
    pos_++;  // '{'
    *min = number();
    if (peek('}')) {
      *max = *min;
    } else if (peek(',')) {
      pos_++;
      *max = peek('}') ? -1 : number();
    }
    if (!peek('}')) fail(pos_, "an unterminated {n,m}");
    pos_++;
    if (*max >= 0 && *max < *min) fail(pos_ - 1, "{n,m} with m < n");
  }

  NodePtr bytes(ByteSet s) {
    auto n = make(Node::kBytes);
    n->bytes = s;
    return n;
  }

  NodePtr atom() {
    size_t at = pos_;
    char c = re_[pos_++];
    switch (c) {
      case '(': return group(at);
      case ')': fail(at, "unexpected ')'");
      case '[': return bytes(charClass(at));
      case '.': {
        ByteSet s;
        s.set();
        s.reset('\n');
        return bytes(s);
      }
      case '$': return make(Node::kDollar);
      case '^': fail(at, "'^' after the start (every pattern is anchored at the start; '^' elsewhere is not supported)");
      case '*': case '+': case '?': fail(at, "a repetition with nothing to repeat");
      case '{': fail(at, "a '{' with nothing to repeat (write \\{ for a brace)");
      case '\\': return bytes(escape(at, false));
      default: return bytes(range(static_cast<unsigned char>(c), static_cast<unsigned char>(c)));
    }
  }

  NodePtr group(size_t at) {
    if (++depth_ > limits_.max_nesting)
      fail(at, "groups nested deeper than " + std::to_string(limits_.max_nesting));
    if (peek('?')) {
      if (re_.substr(pos_, 2) == "?:") {
        pos_ += 2;
      } else if (re_.substr(pos_, 3) == "?P<") {
        pos_ += 3;
        size_t name = pos_;
        while (!done() && (std::isalnum(static_cast<unsigned char>(re_[pos_])) || re_[pos_] == '_')) pos_++;
        if (pos_ == name || !peek('>')) fail(at, "a malformed (?P<name>...) group");
        pos_++;
      } else {
        fail(at, "'(?' flags or lookaround (only (?:...) and (?P<name>...) are supported)");
      }
    }
    NodePtr inner = alternation();
    if (!peek(')')) fail(at, "a '(' without its ')'");
    pos_++;
    depth_--;
    return inner;
  }

  // After the backslash; in_class: inside [...].
  ByteSet escape(size_t at, bool in_class) {
    if (done()) fail(at, "a trailing backslash");
    char c = re_[pos_++];
    switch (c) {
      case 'd': return digits();
      case 'D': return ~digits();
      case 'w': return word();
      case 'W': return ~word();
      case 's': return space();
      case 'S': return ~space();
      case 't': return range('\t', '\t');
      case 'n': return range('\n', '\n');
      case 'r': return range('\r', '\r');
      case 'f': return range('\f', '\f');
      case 'v': return range('\v', '\v');
      case 'x': {
        auto hex = [&](char h) {
          if (h >= '0' && h <= '9') return h - '0';
          if (h >= 'a' && h <= 'f') return h - 'a' + 10;
          if (h >= 'A' && h <= 'F') return h - 'A' + 10;
          fail(at, "\\x needs two hex digits");
        };
        if (pos_ + 2 > re_.size()) fail(at, "\\x needs two hex digits");
        int v = hex(re_[pos_]) * 16 + hex(re_[pos_ + 1]);
        pos_ += 2;
        if (v >= 0x80) fail(at, "\\x above 7f (patterns are ASCII)");
        return range(v, v);
      }
      default: break;
    }
    if (std::isalnum(static_cast<unsigned char>(c)))
      fail(at, std::string("the escape \\") + c + (in_class ? " in a class" : "") + " is not supported");
    return range(static_cast<unsigned char>(c), static_cast<unsigned char>(c));
  }

  // One class member: a byte, or a set from an escape (which cannot be a range end).
  bool classItem(ByteSet* set, int* single) {
    if (re_.substr(pos_, 2) == "[:") fail(pos_, "POSIX classes like [:alpha:] are not supported");
    char c = re_[pos_++];
    if (c != '\\') {
      *single = static_cast<unsigned char>(c);
      return true;
    }
    size_t esc = pos_ - 1;
    ByteSet s = escape(esc, true);
    if (s.count() == 1) {
      for (int b = 0; b < 256; b++)
        if (s.test(b)) *single = b;
      return true;
    }
    *set = s;
    return false;
  }

  ByteSet charClass(size_t at) {
    bool negated = peek('^');
    if (negated) pos_++;
    ByteSet s;
    bool first = true;
    while (true) {
      if (done()) fail(at, "a '[' without its ']'");
      if (peek(']') && !first) break;
      first = false;
      ByteSet set;
      int lo = -1;
      if (!classItem(&set, &lo)) {
        s |= set;
        continue;
      }
      if (peek('-') && pos_ + 1 < re_.size() && re_[pos_ + 1] != ']') {
        size_t dash = pos_++;
        int hi = -1;
        if (!classItem(&set, &hi)) fail(dash, "a range ending in a class escape");
        if (hi < lo) fail(dash, "a range whose end is before its start");
        s |= range(lo, hi);
      } else {
        s.set(lo);
      }
    }
    pos_++;  // ']'
    return negated ? ~s : s;  // RE2 lets negated classes match \n as well
  }

  std::string_view re_;
  const RegexLimits& limits_;
  size_t pos_ = 0;
  size_t depth_ = 0;
};

// ---- NFA ---------------------------------------------------------------------

struct NfaState {
  enum Kind { kBytes, kSplit, kEps, kDollar, kMatch } kind;
  int out = -1, out1 = -1;
  int set = -1;      // kBytes: index into Nfa::sets
  int pattern = -1;  // kMatch
};

struct Nfa {
  std::vector<NfaState> states;
  std::vector<ByteSet> sets;
  size_t limit;

  int add(NfaState s) {
    if (states.size() >= limit) throw ParseError{0, "over " + std::to_string(limit) + " NFA states"};
    states.push_back(s);
    return static_cast<int>(states.size() - 1);
  }
  int bytes(const ByteSet& b, int out) {
    sets.push_back(b);
    return add({NfaState::kBytes, out, -1, static_cast<int>(sets.size() - 1)});
  }
  int split(int a, int b) { return add({NfaState::kSplit, a, b}); }

  // Builds `n` so that it continues into `out`; returns its entry state.
  int build(const Node& n, int out) {
    switch (n.kind) {
      case Node::kEmpty: return out;
      case Node::kBytes: return bytes(n.bytes, out);
      case Node::kDollar: return add({NfaState::kDollar, out});
      case Node::kConcat:
        for (auto it = n.children.rbegin(); it != n.children.rend(); ++it) out = build(**it, out);
        return out;
      case Node::kAlt: {
        int entry = build(*n.children.back(), out);
        for (size_t i = n.children.size() - 1; i-- > 0;) entry = split(build(*n.children[i], out), entry);
        return entry;
      }
      case Node::kRepeat: return repeat(n, out);
    }
    return out;
  }

  int repeat(const Node& n, int out) {
    const Node& body = *n.children[0];
    int tail = out;
    if (n.max < 0) {
      // body* : a loop state, patched once the body exists.
      int loop = split(-1, out);
      int entry = build(body, loop);
      states[loop].out = entry;
      tail = loop;
    } else {
      // (body (body (...)?)?)? for the optional max - min copies.
      for (int i = n.min; i < n.max; i++) tail = split(build(body, tail), out);
    }
    for (int i = 0; i < n.min; i++) tail = build(body, tail);
    return tail;
  }
};

// ---- DFA by subset construction ----------------------------------------------

using StateSet = std::vector<int>;  // sorted NFA states

// Epsilon closure; `seen` is stamped per call so it is allocated once, and
// `work` counts every state visited (the construction's budget).
struct Closure {
  const Nfa& nfa;
  std::vector<uint32_t> seen;
  uint32_t stamp = 0;
  size_t work = 0;
  std::vector<int> stack;

  explicit Closure(const Nfa& n) : nfa(n), seen(n.states.size(), 0) {}

  void operator()(StateSet* set, bool at_end) {
    stamp++;
    stack.assign(set->begin(), set->end());
    set->clear();
    while (!stack.empty()) {
      int s = stack.back();
      stack.pop_back();
      work++;
      if (s < 0 || seen[s] == stamp) continue;
      seen[s] = stamp;
      const NfaState& st = nfa.states[s];
      switch (st.kind) {
        case NfaState::kSplit: stack.push_back(st.out), stack.push_back(st.out1); break;
        case NfaState::kEps: stack.push_back(st.out); break;
        case NfaState::kDollar:
          // Kept while input remains (it may be the end): crossed only at the end.
          if (at_end) stack.push_back(st.out);
          else set->push_back(s);
          break;
        default: set->push_back(s);  // bytes and match states are what a set holds
      }
    }
    std::sort(set->begin(), set->end());
  }
};

std::array<uint16_t, 256> byteClasses(const Nfa& nfa, uint16_t* count) {
  std::array<uint16_t, 256> cls{};
  uint16_t n = 1;
  for (const ByteSet& s : nfa.sets) {
    // Split every class into its bytes in `s` and its bytes outside.
    std::map<std::pair<uint16_t, bool>, uint16_t> renumber;
    for (int b = 0; b < 256; b++) {
      auto key = std::make_pair(cls[b], static_cast<bool>(s.test(b)));
      auto [it, fresh] = renumber.emplace(key, static_cast<uint16_t>(renumber.size()));
      cls[b] = it->second;
    }
    n = static_cast<uint16_t>(renumber.size());
  }
  *count = n;
  return cls;
}

// Empty, with the reason in `why`, when it needs over `budget` states or
// `max_work` closure steps.
std::optional<Dfa> subsetConstruction(const Nfa& nfa, int start, size_t budget, size_t max_work,
                                      std::string* why) {
  Dfa dfa;
  Closure closure(nfa);
  dfa.class_of = byteClasses(nfa, &dfa.classes);
  std::vector<int> representative(dfa.classes, -1);
  for (int b = 0; b < 256; b++)
    if (representative[dfa.class_of[b]] < 0) representative[dfa.class_of[b]] = b;

  std::map<StateSet, uint16_t> ids;
  std::vector<StateSet> sets;
  auto intern = [&](StateSet s) -> int {
    auto it = ids.find(s);
    if (it != ids.end()) return it->second;
    if (sets.size() >= budget) return -1;
    uint16_t id = static_cast<uint16_t>(sets.size());
    ids.emplace(s, id);
    sets.push_back(std::move(s));
    return id;
  };
  intern({});  // 0: dead
  StateSet first{start};
  closure(&first, false);
  dfa.start = static_cast<uint16_t>(intern(first));

  for (size_t i = 0; i < sets.size(); i++) {
    for (uint16_t c = 0; c < dfa.classes; c++) {
      StateSet moved;
      for (int s : sets[i]) {
        const NfaState& st = nfa.states[s];
        if (st.kind == NfaState::kBytes && nfa.sets[st.set].test(representative[c])) moved.push_back(st.out);
      }
      closure(&moved, false);
      int id = intern(std::move(moved));
      if (id < 0) {
        *why = "the DFA needs over " + std::to_string(budget) + " states before minimization";
        return std::nullopt;
      }
      if (closure.work > max_work) {
        *why = "the DFA takes over " + std::to_string(max_work) + " steps to build";
        return std::nullopt;
      }
      dfa.next.push_back(static_cast<uint16_t>(id));
    }
  }
  for (const StateSet& s : sets) {
    StateSet end = s;
    closure(&end, true);
    PatternSet bits{};
    for (int n : end)
      if (nfa.states[n].kind == NfaState::kMatch) bits |= abi::httpBit(static_cast<unsigned>(nfa.states[n].pattern));
    dfa.accepts.push_back(bits);
  }
  return dfa;
}

// d with state s renamed to to[s], `count` states: states given one name
// become one (they accept alike and step alike).
Dfa renumbered(const Dfa& d, const std::vector<uint32_t>& to, size_t count) {
  Dfa r;
  r.class_of = d.class_of;
  r.classes = d.classes;
  r.start = static_cast<uint16_t>(to[d.start]);
  r.accepts.assign(count, PatternSet{});
  r.next.assign(count * d.classes, 0);
  for (size_t s = 0; s < d.states(); s++) {
    r.accepts[to[s]] = d.accepts[s];
    for (uint16_t c = 0; c < d.classes; c++)
      r.next[to[s] * d.classes + c] = static_cast<uint16_t>(to[d.next[s * d.classes + c]]);
  }
  return r;
}

// Moore's partition refinement: states that accept the same patterns and
// step into the same blocks are one. The dead state stays 0 (the kernel stops
// there) because it is the first state of its block, and blocks are numbered
// in order of their first state. Each round costs states x classes and a
// chain of states takes as many rounds as it is long: past `max_work` the
// unminimized DFA (as correct, only larger) is kept.
Dfa minimize(const Dfa& d, size_t max_work) {
  size_t n = d.states();
  std::vector<uint32_t> block(n);
  {
    std::map<PatternSet, uint32_t> by_accepts;
    for (size_t s = 0; s < n; s++)
      block[s] = by_accepts.emplace(d.accepts[s], static_cast<uint32_t>(by_accepts.size())).first->second;
  }
  size_t blocks = 0, work = 0;
  while (true) {
    work += n * (d.classes + 1);
    if (work > max_work) return d;
    std::map<std::vector<uint32_t>, uint32_t> signature;
    std::vector<uint32_t> next_block(n);
    for (size_t s = 0; s < n; s++) {
      std::vector<uint32_t> sig{block[s]};
      for (uint16_t c = 0; c < d.classes; c++) sig.push_back(block[d.next[s * d.classes + c]]);
      next_block[s] = signature.emplace(std::move(sig), static_cast<uint32_t>(signature.size())).first->second;
    }
    block.swap(next_block);
    if (signature.size() == blocks) break;
    blocks = signature.size();
  }
  return renumbered(d, block, blocks);
}

// States renumbered in depth-first order from the start state, each state's
// successors taken in class order: the states a path walks through one after
// another sit one after another in the transition table.
Dfa depthFirst(const Dfa& d) {
  const size_t n = d.states();
  std::vector<uint32_t> id(n, UINT32_MAX);
  id[Dfa::kDead] = 0;
  uint32_t next_id = 1;
  std::vector<uint16_t> stack{d.start};
  while (!stack.empty()) {
    const uint16_t s = stack.back();
    stack.pop_back();
    if (id[s] != UINT32_MAX) continue;
    id[s] = next_id++;
    for (int c = d.classes - 1; c >= 0; c--) {
      const uint16_t t = d.next[s * d.classes + c];
      if (id[t] == UINT32_MAX) stack.push_back(t);
    }
  }
  for (size_t s = 0; s < n; s++)
    if (id[s] == UINT32_MAX) id[s] = next_id++;  // unreachable: kept, harmless
  return renumbered(d, id, n);
}

// Parses and adds one pattern to `nfa`; returns its entry state.
int addPattern(Nfa* nfa, const Pattern& p, int index, const RegexLimits& limits) {
  NodePtr tree = Parser(p.regex, limits).parse();
  if (!p.prefix.empty()) {
    auto cat = make(Node::kConcat);
    for (char c : p.prefix) {
      auto lit = make(Node::kBytes);
      lit->bytes.set(static_cast<unsigned char>(c));
      cat->children.push_back(std::move(lit));
    }
    cat->children.push_back(std::move(tree));
    tree = std::move(cat);
  }
  int match = nfa->add({NfaState::kMatch, -1, -1, -1, index});
  int tail = match;
  if (p.anchor == Anchor::kPrefix) {
    // R then anything: the pattern only has to match a prefix.
    ByteSet any;
    any.set();
    int loop = nfa->split(-1, match);
    nfa->states[loop].out = nfa->bytes(any, loop);
    tail = loop;
  }
  return nfa->build(*tree, tail);
}

}  // namespace

std::string RegexError::describe(const std::vector<Pattern>& patterns) const {
  if (pattern < 0 || static_cast<size_t>(pattern) >= patterns.size()) return why;
  return "regex \"" + patterns[pattern].regex + "\" at offset " + std::to_string(offset) + ": " + why;
}

std::variant<std::monostate, RegexError> checkRegex(std::string_view regex, const RegexLimits& limits) {
  try {
    Parser(regex, limits).parse();
  } catch (const ParseError& e) {
    return RegexError{0, e.offset, e.why};
  }
  return std::monostate{};
}

DfaResult compileDfa(const std::vector<Pattern>& patterns, const RegexLimits& limits) {
  if (patterns.empty() || patterns.size() > kMaxPatterns)
    return RegexError{-1, 0, "a DFA holds 1 to " + std::to_string(kMaxPatterns) + " patterns, not " +
                                 std::to_string(patterns.size())};
  Nfa nfa;
  nfa.limit = limits.max_nfa_states;
  int entry = -1;
  for (size_t i = 0; i < patterns.size(); i++) {
    try {
      int e = addPattern(&nfa, patterns[i], static_cast<int>(i), limits);
      entry = entry < 0 ? e : nfa.split(e, entry);
    } catch (const ParseError& e) {
      return RegexError{static_cast<int>(i), e.offset, e.why};
    }
  }
  // Construction may take more states than the minimal DFA keeps.
  std::string why;
  std::optional<Dfa> dfa = subsetConstruction(nfa, entry, std::min<size_t>(limits.max_dfa_states * 2, 65535),
                                              limits.max_construction_steps, &why);
  if (dfa) *dfa = minimize(*dfa, limits.max_minimize_cells);
  if (dfa) *dfa = depthFirst(*dfa);
  if (dfa && dfa->states() > limits.max_dfa_states)
    why = "the DFA needs over " + std::to_string(limits.max_dfa_states) + " states";
  if (!why.empty()) return RegexError{patterns.size() == 1 ? 0 : -1, 0, why};
  return std::move(*dfa);
}

PatternSet matchAll(const Dfa& dfa, std::string_view input) {
  uint16_t s = dfa.start;
  for (char c : input) {
    s = dfa.step(s, static_cast<uint8_t>(c));
    if (s == Dfa::kDead) return {};
  }
  return dfa.accepts[s];
}

bool someCandidateHolds(const PatternSet& candidates, const std::vector<uint32_t>& needs, uint32_t held) {
  for (unsigned i = 0; i < kMaxPatterns; ++i)
    if (abi::test(candidates, i) && ((i < needs.size() ? needs[i] : 0) & ~held) == 0) return true;
  return false;
}

bool isHeaderName(std::string_view name) {
  if (name.empty()) return false;
  for (char ch : name) {
    const auto b = static_cast<unsigned char>(ch);
    if (!std::isalnum(b) && std::string_view("!#$%&'*+-.^_`|~").find(ch) == std::string_view::npos)
      return false;
  }
  return true;
}

std::string headerLine(std::string_view name, std::string_view value) {
  std::string line;
  for (char c : name) line += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  line += ':';
  const size_t first = value.find_first_not_of(" \t");
  if (first != std::string_view::npos)
    line += value.substr(first, value.find_last_not_of(" \t") - first + 1);
  return line;
}

DfaResult compileHeaderDfa(const std::vector<HeaderCondition>& conditions, const RegexLimits& limits) {
  if (conditions.empty() || conditions.size() > kMaxHeaderConditions)
    return RegexError{-1, 0, "a port holds 1 to " + std::to_string(kMaxHeaderConditions) +
                                 " header conditions, not " + std::to_string(conditions.size())};
  // Bits 0..31 the values, bits 32..63 the names (holes match nothing). A
  // name pattern is a prefix: every state after "name:" keeps its bit, so a
  // value that fails still shows its header was there.
  std::vector<Pattern> patterns(kHeaderNameShift + conditions.size(), {"$never", Anchor::kFull});
  for (size_t i = 0; i < conditions.size(); ++i) {
    if (!isHeaderName(conditions[i].name))
      return RegexError{-1, 0, "header name \"" + conditions[i].name + "\" is not a token"};
    const std::string prefix = headerLine(conditions[i].name, "");
    patterns[i] = {conditions[i].regex, Anchor::kFull, prefix};
    patterns[kHeaderNameShift + i] = {"", Anchor::kPrefix, prefix};
  }
  auto dfa = compileDfa(patterns, limits);
  if (auto* e = std::get_if<RegexError>(&dfa); e && e->pattern >= 0) {
    // name the condition, not the pattern it became
    const auto& c = conditions[static_cast<size_t>(e->pattern) % kHeaderNameShift];
    return RegexError{-1, e->offset, "header " + c.name + " regex \"" + c.regex + "\" at offset " +
                                         std::to_string(e->offset) + ": " + e->why};
  }
  return dfa;
}

uint32_t headerConditionsHeld(const Dfa& dfa, const std::vector<std::pair<std::string, std::string>>& headers) {
  uint32_t present = 0, failed = 0;
  if (dfa.states() == 0) return 0;
  for (const auto& [name, value] : headers) {
    const uint64_t m = matchAll(dfa, headerLine(name, value)).w[0];
    const auto names = static_cast<uint32_t>(m >> kHeaderNameShift), values = static_cast<uint32_t>(m);
    present |= names;
    failed |= names & ~values;
  }
  return present & ~failed;
}

}  // namespace smik::compile::http
