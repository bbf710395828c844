// HTTPRouteGroup regexes (pathRegex and header values come from any user
// who can write an HTTPRouteGroup) through the DFA compiler: whatever the
// bytes, a refusal or a well-formed DFA within its budgets, never a crash, a
// hang or unbounded memory. Input: lines, each a pattern; a line starting
// with '=' is matched whole (a header value), otherwise as a path prefix.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "agent/compile/http_regex.h"

using smik::compile::http::Anchor;
using smik::compile::http::Dfa;
using smik::compile::http::Pattern;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<Pattern> patterns;
  while (!in.empty() && patterns.size() < 8) {
    size_t nl = in.find('\n');
    std::string_view line = in.substr(0, nl);
    in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
    Pattern p;
    if (!line.empty() && line[0] == '=') {
      p.anchor = Anchor::kFull;
      line.remove_prefix(1);
    }
    p.regex = std::string(line);
    patterns.push_back(std::move(p));
  }
  if (patterns.empty()) return 0;
  auto r = smik::compile::http::compileDfa(patterns);
  const Dfa* dfa = std::get_if<Dfa>(&r);
  if (!dfa) return 0;
  // What the kernel will rely on: every transition stays in the table, the
  // dead state is dead, and only the compiled patterns can be reported.
  if (dfa->states() == 0 || smik::abi::any(dfa->accepts[Dfa::kDead])) std::abort();
  if (dfa->next.size() != dfa->states() * dfa->classes) std::abort();
  for (uint16_t n : dfa->next)
    if (n >= dfa->states()) std::abort();
  for (uint16_t c = 0; c < dfa->classes; c++)
    if (dfa->next[c] != Dfa::kDead) std::abort();
  smik_http_mask allowed{};
  for (unsigned i = 0; i < patterns.size(); i++) allowed |= smik::abi::httpBit(i);
  for (const char* path : {"", "/", "/books/1", "/api/v1/x?y=1", "Mozilla Android"}) {
    const smik_http_mask m = smik::compile::http::matchAll(*dfa, path);
    if (!((m & allowed) == m)) std::abort();
  }
  return 0;
}
