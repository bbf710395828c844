// The reference of the kernel's HTTP/1.x request judge (bpf/http_verdict.bpf.c):
// the same framing, path rules and limits, written for reading rather than
// for the verifier. Tests run generated request streams through both and
// require the same verdicts; `smik explain` can answer from it what the
// kernel would do with a request.
//
// What it decides, per connection (bpf/README.md, "The HTTP judge fails
// closed"): each request is judged at the end of its request line by method
// and path (the path decoded, the query left out), or, when only grants that
// name headers could allow it, at the end of its head by its header lines
// too; the first request that is denied or cannot be judged ends the
// connection, nothing after it counts.
// It does not see the server's answers, so it models a CONNECT or WebSocket
// upgrade the server declined (the kernel then judges what follows as
// requests, as here); an accepted one ends what the kernel judges.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

#include "agent/compile/http_regex.h"
#include "bpf/include/smik_abi.h"

namespace smik::compile::http {

// A request's header lines as sent: (name, value).
using Headers = std::vector<std::pair<std::string, std::string>>;

// What the request line alone decides.
enum class LineVerdict : uint8_t {
  kAllow,        // a grant that names no header covers method and path
  kDeny,         // no grant covers them, whatever the headers
  kNeedHeaders,  // only grants that name headers could: the head decides
};

// One source's grant on one port, judged as the kernel judges it: the bits
// `grant.patterns[method]` whose path regex matched the path are the
// candidates; one whose header conditions (`needs`, bits of the header DFA's
// conditions) all hold allows the request.
class PortJudge {
 public:
  PortJudge(const Dfa* paths, const smik_http_grant& grant, std::vector<uint32_t> needs = {},
            const Dfa* headers = nullptr);
  LineVerdict atLine(uint8_t method, std::string_view path) const;
  bool atHead(uint8_t method, std::string_view path, const Headers& headers) const;

 private:
  PatternSet candidates(uint8_t method, std::string_view path) const;
  const Dfa* paths_;
  smik_http_grant grant_;
  std::vector<uint32_t> needs_;
  const Dfa* headers_;
};

// Why a connection was refused; the kernel's SMIK_HTTP_C_* counter of the
// same name moves, and the client gets status(refusal).
enum class Refusal : uint8_t {
  kNone,
  kDenied,         // 403: no grant for the method and path
  kMalformed,      // 400
  kNotHttp1,       // 400: TLS, HTTP/2, another version
  kUnframeable,    // 400: framing servers disagree on
  kUriTooLong,     // 414
  kHeadTooLarge,   // 431
  kPathNotNormal,  // 400: a path a server may resolve otherwise
};
int status(Refusal r);
const char* name(Refusal r);

struct RequestLimits {
  uint32_t max_line = 8192;  // request line bytes (empty lines before it too), CRLF included
  uint32_t max_head = 16384;  // header block bytes; also trailers, and a chunk-size line
  uint32_t max_headers = 100;
};

struct JudgedRequest {
  uint8_t method;    // SMIK_HTTP_M_*
  std::string path;  // as the DFA reads it: escapes decoded, no query
};

class RequestFramer {
 public:
  // Whether a grant covers `method` (SMIK_HTTP_M_*) on `path`.
  using Granted = std::function<bool(uint8_t method, std::string_view path)>;
  RequestFramer(RequestLimits limits, Granted granted);
  // Grants that may name headers: `at_head` decides at the end of the head
  // when `at_line` could not.
  using AtLine = std::function<LineVerdict(uint8_t method, std::string_view path)>;
  using AtHead = std::function<bool(uint8_t method, std::string_view path, const Headers& headers)>;
  RequestFramer(RequestLimits limits, AtLine at_line, AtHead at_head);
  explicit RequestFramer(RequestLimits limits, const PortJudge& judge);

  // The next bytes of the connection, in any split. After a refusal every
  // later byte is ignored.
  void feed(std::string_view bytes);

  const std::vector<JudgedRequest>& allowed() const { return allowed_; }
  Refusal refusal() const { return refusal_; }

 private:
  enum class Phase : uint8_t {
    kStart, kMethod, kPath, kQuery, kVersion, kName, kValue, kBody,
    kChunkSize, kChunkExt, kChunkData, kChunkEnd, kTrailer, kClosed,
  };
  enum class Seg : uint8_t { kStart, kDot1, kDots, kName, kAsterisk, kAuthority };
  enum class Value : uint8_t { kOther, kContentLength, kTransferEncoding };

  Refusal byte(uint8_t b);
  Refusal overLimit();
  Refusal lineEnd();
  Refusal method(uint8_t b);
  Refusal path(uint8_t b);
  Refusal pathChar(uint8_t p, bool raw);
  Refusal version(uint8_t b);
  Refusal name(uint8_t b);
  Refusal value(uint8_t b);
  Refusal chunkSize(uint8_t b);
  Refusal endRequestLine();
  Refusal endHead();
  Refusal endHeaderLine();
  void startRequest();
  void startHeaderLine();

  RequestLimits limits_;
  AtLine at_line_;
  AtHead at_head_;
  bool head_decides_ = false;  // the request line left the verdict to the head
  Headers headers_seen_;       // its header lines so far
  std::string header_value_;
  std::vector<JudgedRequest> allowed_;
  Refusal refusal_ = Refusal::kNone;

  Phase phase_ = Phase::kStart;
  bool cr_ = false;
  uint32_t line_bytes_ = 0, head_bytes_ = 0, headers_ = 0;
  std::string method_;
  std::string path_;
  bool path_started_ = false;
  Seg seg_ = Seg::kStart;
  int escape_ = 0;  // hex digits of a %XX read so far
  uint8_t escape_hi_ = 0;
  std::string version_;
  bool http10_ = false;
  std::string header_name_;
  Value value_ = Value::kOther;
  bool has_cl_ = false, has_te_ = false, chunked_ = false;
  int cl_shape_ = 0;  // 0 leading whitespace, 1 digits, 2 trailing whitespace
  bool digit_ = false;
  uint64_t count_ = 0;
  std::string coding_;  // the current transfer-coding, lowercased
  bool coding_ws_ = false;  // whitespace after it
  bool coding_bad_ = false;
  bool chunk_ws_ = false;
  bool line_nonempty_ = false;
};

}  // namespace smik::compile::http
