#include "agent/compile/http_request.h"

#include <algorithm>

#include "bpf/include/smik_abi.h"

namespace smik::compile::http {
namespace {

// A Content-Length or chunk size beyond this is refused, not framed.
constexpr uint64_t kMaxBody = uint64_t{1} << 48;

bool isTchar(uint8_t b) {
  if ((b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(b)) != std::string_view::npos;
}
bool isCtl(uint8_t b) { return (b < 0x20 && b != '\t') || b == 0x7f; }
bool isWs(uint8_t b) { return b == ' ' || b == '\t'; }
uint8_t lower(uint8_t b) { return (b >= 'A' && b <= 'Z') ? b + 32 : b; }
int hexValue(uint8_t b) {
  if (b >= '0' && b <= '9') return b - '0';
  b = lower(b);
  if (b >= 'a' && b <= 'f') return b - 'a' + 10;
  return -1;
}
std::string lowered(std::string s) {
  for (char& c : s) c = static_cast<char>(lower(static_cast<uint8_t>(c)));
  return s;
}

uint8_t methodOf(const std::string& m) {
  static const std::pair<const char*, uint8_t> kMethods[] = {
      {"GET", SMIK_HTTP_M_GET},         {"HEAD", SMIK_HTTP_M_HEAD},
      {"POST", SMIK_HTTP_M_POST},       {"PUT", SMIK_HTTP_M_PUT},
      {"DELETE", SMIK_HTTP_M_DELETE},   {"CONNECT", SMIK_HTTP_M_CONNECT},
      {"OPTIONS", SMIK_HTTP_M_OPTIONS}, {"TRACE", SMIK_HTTP_M_TRACE},
      {"PATCH", SMIK_HTTP_M_PATCH},
  };
  for (const auto& [text, id] : kMethods)
    if (m == text) return id;
  return SMIK_HTTP_M_OTHER;
}

}  // namespace

int status(Refusal r) {
  switch (r) {
    case Refusal::kNone: return 0;
    case Refusal::kDenied: return 403;
    case Refusal::kUriTooLong: return 414;
    case Refusal::kHeadTooLarge: return 431;
    default: return 400;
  }
}

const char* name(Refusal r) {
  switch (r) {
    case Refusal::kNone: return "none";
    case Refusal::kDenied: return "denied";
    case Refusal::kMalformed: return "malformed";
    case Refusal::kNotHttp1: return "not-http1";
    case Refusal::kUnframeable: return "unframeable";
    case Refusal::kUriTooLong: return "uri-too-long";
    case Refusal::kHeadTooLarge: return "head-too-large";
    case Refusal::kPathNotNormal: return "path-not-normal";
  }
  return "?";
}

PortJudge::PortJudge(const Dfa* paths, const smik_http_grant& grant, std::vector<uint32_t> needs,
                     const Dfa* headers)
    : paths_(paths), grant_(grant), needs_(std::move(needs)), headers_(headers) {}

PatternSet PortJudge::candidates(uint8_t method, std::string_view path) const {
  if (method >= SMIK_HTTP_METHODS || !paths_ || paths_->states() == 0) return {};
  return grant_.patterns[method] & matchAll(*paths_, path);
}

LineVerdict PortJudge::atLine(uint8_t method, std::string_view path) const {
  const PatternSet c = candidates(method, path);
  if (!abi::any(c)) return LineVerdict::kDeny;
  return someCandidateHolds(c, needs_, 0) ? LineVerdict::kAllow : LineVerdict::kNeedHeaders;
}

bool PortJudge::atHead(uint8_t method, std::string_view path, const Headers& headers) const {
  const PatternSet c = candidates(method, path);
  const uint32_t held = headers_ ? headerConditionsHeld(*headers_, headers) : 0;
  return someCandidateHolds(c, needs_, held);
}

RequestFramer::RequestFramer(RequestLimits limits, Granted granted)
    : limits_(limits),
      at_line_([granted = std::move(granted)](uint8_t m, std::string_view p) {
        return granted(m, p) ? LineVerdict::kAllow : LineVerdict::kDeny;
      }),
      at_head_([](uint8_t, std::string_view, const Headers&) { return false; }) {}

RequestFramer::RequestFramer(RequestLimits limits, AtLine at_line, AtHead at_head)
    : limits_(limits), at_line_(std::move(at_line)), at_head_(std::move(at_head)) {}

RequestFramer::RequestFramer(RequestLimits limits, const PortJudge& judge)
    : RequestFramer(
          limits, [judge](uint8_t m, std::string_view p) { return judge.atLine(m, p); },
          [judge](uint8_t m, std::string_view p, const Headers& h) { return judge.atHead(m, p, h); }) {}

void RequestFramer::feed(std::string_view bytes) {
  for (size_t i = 0; i < bytes.size() && phase_ != Phase::kClosed; ++i) {
    // Body bytes are not framed, whatever they look like.
    if (phase_ == Phase::kBody || phase_ == Phase::kChunkData) {
      const uint64_t n = std::min<uint64_t>(count_, bytes.size() - i);
      count_ -= n;
      i += n - 1;
      if (count_ == 0) {
        if (phase_ == Phase::kBody) {
          startRequest();
        } else {
          phase_ = Phase::kChunkEnd;
          line_nonempty_ = false;
        }
      }
      continue;
    }
    if (Refusal r = byte(static_cast<uint8_t>(bytes[i])); r != Refusal::kNone) {
      refusal_ = r;
      phase_ = Phase::kClosed;
    }
  }
}

void RequestFramer::startRequest() {
  phase_ = Phase::kStart;
  line_bytes_ = head_bytes_ = headers_ = 0;
  method_.clear();
  path_.clear();
  path_started_ = false;
  version_.clear();
  http10_ = has_cl_ = has_te_ = chunked_ = digit_ = false;
  count_ = 0;
  head_decides_ = false;
  headers_seen_.clear();
}

void RequestFramer::startHeaderLine() {
  phase_ = Phase::kName;
  header_name_.clear();
  header_value_.clear();
  value_ = Value::kOther;
}

// Limits are counted per byte of the line or block the byte belongs to,
// before the byte means anything.
Refusal RequestFramer::overLimit() {
  switch (phase_) {
    case Phase::kStart: case Phase::kMethod: case Phase::kPath: case Phase::kQuery:
    case Phase::kVersion:
      return ++line_bytes_ > limits_.max_line ? Refusal::kUriTooLong : Refusal::kNone;
    case Phase::kChunkSize: case Phase::kChunkExt:
      return ++line_bytes_ > limits_.max_head ? Refusal::kHeadTooLarge : Refusal::kNone;
    case Phase::kName: case Phase::kValue: case Phase::kTrailer:
      return ++head_bytes_ > limits_.max_head ? Refusal::kHeadTooLarge : Refusal::kNone;
    default:
      return Refusal::kNone;
  }
}

Refusal RequestFramer::byte(uint8_t b) {
  if (Refusal r = overLimit(); r != Refusal::kNone) return r;
  // Lines end in CRLF only: servers disagree on a bare CR or LF.
  if (cr_) {
    cr_ = false;
    return b == '\n' ? lineEnd() : Refusal::kMalformed;
  }
  if (b == '\r') {
    if (phase_ == Phase::kMethod || phase_ == Phase::kPath || phase_ == Phase::kQuery)
      return Refusal::kMalformed;
    cr_ = true;
    return Refusal::kNone;
  }
  if (b == '\n') return Refusal::kMalformed;
  switch (phase_) {
    case Phase::kStart:
      phase_ = Phase::kMethod;
      return method(b);
    case Phase::kMethod: return method(b);
    case Phase::kPath: return path(b);
    case Phase::kQuery:
      if (b == ' ') {
        phase_ = Phase::kVersion;
        return Refusal::kNone;
      }
      if (b <= 0x20 || b >= 0x7f) return Refusal::kMalformed;
      return b == '#' ? Refusal::kPathNotNormal : Refusal::kNone;
    case Phase::kVersion: return version(b);
    case Phase::kName:
      if (header_name_.empty() && ++headers_ > limits_.max_headers) return Refusal::kHeadTooLarge;
      return name(b);
    case Phase::kValue: return value(b);
    case Phase::kChunkSize: case Phase::kChunkExt: return chunkSize(b);
    case Phase::kChunkEnd: return Refusal::kUnframeable;  // chunk data longer than its size
    case Phase::kTrailer:
      line_nonempty_ = true;
      return isCtl(b) ? Refusal::kMalformed : Refusal::kNone;
    default: return Refusal::kMalformed;
  }
}

Refusal RequestFramer::method(uint8_t b) {
  if (b == ' ') {
    if (method_.empty()) return Refusal::kMalformed;
    phase_ = Phase::kPath;
    return Refusal::kNone;
  }
  if (!isTchar(b)) return method_.empty() ? Refusal::kNotHttp1 : Refusal::kMalformed;
  method_ += static_cast<char>(b);
  return Refusal::kNone;
}

Refusal RequestFramer::path(uint8_t b) {
  if (b == ' ' || b == '?') {
    if (!path_started_) return Refusal::kMalformed;
    if (escape_ != 0 || seg_ == Seg::kDot1 || seg_ == Seg::kDots) return Refusal::kPathNotNormal;
    phase_ = b == ' ' ? Phase::kVersion : Phase::kQuery;
    return Refusal::kNone;
  }
  if (b < 0x20 || b >= 0x7f) return Refusal::kMalformed;
  if (b == '#' || b == '\\') return Refusal::kPathNotNormal;
  if (!path_started_) {
    // origin-form; "*" and CONNECT's host:port have no path to resolve
    path_started_ = true;
    escape_ = 0;
    if (b == '*') seg_ = Seg::kAsterisk;
    else if (b != '/' && methodOf(method_) == SMIK_HTTP_M_CONNECT) seg_ = Seg::kAuthority;
    else if (b != '/') return Refusal::kPathNotNormal;
    else seg_ = Seg::kStart;
    path_ += static_cast<char>(b);
    return Refusal::kNone;
  }
  if (escape_ == 0) {
    if (b != '%') return pathChar(b, true);
    if (seg_ == Seg::kAuthority) return Refusal::kPathNotNormal;
    escape_ = 1;
    return Refusal::kNone;
  }
  const int h = hexValue(b);
  if (h < 0) return Refusal::kPathNotNormal;
  if (escape_ == 1) {
    escape_hi_ = static_cast<uint8_t>(h);
    escape_ = 2;
    return Refusal::kNone;
  }
  escape_ = 0;
  const uint8_t d = static_cast<uint8_t>(escape_hi_ << 4 | h);
  if (d < 0x20 || d == 0x7f || d == '/' || d == '\\' || d == '%') return Refusal::kPathNotNormal;
  return pathChar(d, false);
}

Refusal RequestFramer::pathChar(uint8_t p, bool raw) {
  switch (seg_) {
    case Seg::kAsterisk:
      return Refusal::kPathNotNormal;
    case Seg::kAuthority:
      if (p == '/' || p == '\\' || !raw) return Refusal::kPathNotNormal;
      break;
    default:
      if (p == '/' && raw) {
        if (seg_ != Seg::kName) return Refusal::kPathNotNormal;  // "//", "/./", "/../"
        seg_ = Seg::kStart;
      } else if (p == '.') {
        if (seg_ == Seg::kStart) seg_ = Seg::kDot1;
        else if (seg_ == Seg::kDot1) seg_ = Seg::kDots;
      } else if (p == ';') {
        if (seg_ != Seg::kName) return Refusal::kPathNotNormal;  // "/..;/", "/;/"
      } else {
        seg_ = Seg::kName;
      }
  }
  path_ += static_cast<char>(p);
  return Refusal::kNone;
}

Refusal RequestFramer::version(uint8_t b) {
  static constexpr std::string_view kPrefix = "HTTP/1.";
  const size_t pos = version_.size();
  if (pos < kPrefix.size()) {
    if (b != kPrefix[pos]) return Refusal::kNotHttp1;
  } else if (pos == kPrefix.size()) {
    if (b == '0') http10_ = true;
    else if (b != '1') return Refusal::kNotHttp1;
  } else {
    return Refusal::kNotHttp1;
  }
  version_ += static_cast<char>(b);
  return Refusal::kNone;
}

Refusal RequestFramer::name(uint8_t b) {
  if (b != ':') {
    // no whitespace before ':' and no obs-fold (RFC 9112 5.1, 5.2)
    if (!isTchar(b)) return Refusal::kMalformed;
    header_name_ += static_cast<char>(b);
    return Refusal::kNone;
  }
  if (header_name_.empty()) return Refusal::kMalformed;
  const std::string n = lowered(header_name_);
  if (n == "content-length") {
    if (has_cl_) return Refusal::kUnframeable;  // a second one may be read otherwise downstream
    has_cl_ = true;
    digit_ = false;
    count_ = 0;
    cl_shape_ = 0;
    value_ = Value::kContentLength;
  } else if (n == "transfer-encoding") {
    has_te_ = true;
    coding_.clear();
    coding_ws_ = coding_bad_ = false;
    value_ = Value::kTransferEncoding;
  } else {
    value_ = Value::kOther;
  }
  phase_ = Phase::kValue;
  return Refusal::kNone;
}

Refusal RequestFramer::value(uint8_t b) {
  if (isCtl(b)) return Refusal::kMalformed;
  if (head_decides_) header_value_ += static_cast<char>(b);
  if (value_ == Value::kContentLength) {
    if (isWs(b)) {
      if (cl_shape_ == 1) cl_shape_ = 2;
      return Refusal::kNone;
    }
    if (b < '0' || b > '9' || cl_shape_ == 2) return Refusal::kUnframeable;
    cl_shape_ = 1;
    digit_ = true;
    count_ = count_ * 10 + (b - '0');
    return count_ > kMaxBody ? Refusal::kUnframeable : Refusal::kNone;
  }
  if (value_ == Value::kTransferEncoding) {
    if (b == ',') {
      coding_.clear();
      coding_ws_ = coding_bad_ = false;
    } else if (isWs(b)) {
      if (!coding_.empty()) coding_ws_ = true;
    } else if (coding_ws_) {
      coding_bad_ = true;  // whitespace inside a coding
      coding_ += static_cast<char>(b);
    } else {
      coding_ += static_cast<char>(lower(b));
    }
  }
  return Refusal::kNone;
}

Refusal RequestFramer::chunkSize(uint8_t b) {
  if (phase_ == Phase::kChunkExt) return isCtl(b) ? Refusal::kMalformed : Refusal::kNone;
  const int h = hexValue(b);
  if (h >= 0 && !chunk_ws_) {
    digit_ = true;
    count_ = count_ * 16 + static_cast<uint64_t>(h);
    return count_ > kMaxBody ? Refusal::kUnframeable : Refusal::kNone;
  }
  if (!digit_) return Refusal::kUnframeable;
  if (isWs(b)) {  // BWS before a chunk extension
    chunk_ws_ = true;
    return Refusal::kNone;
  }
  if (b == ';') {
    phase_ = Phase::kChunkExt;
    return Refusal::kNone;
  }
  return Refusal::kUnframeable;
}

Refusal RequestFramer::lineEnd() {
  switch (phase_) {
    case Phase::kStart:
      return Refusal::kNone;  // empty lines before a request line (RFC 9112 2.2)
    case Phase::kVersion:
      return endRequestLine();
    case Phase::kName:
      if (!header_name_.empty()) return Refusal::kMalformed;  // a name without ':'
      return endHead();
    case Phase::kValue:
      return endHeaderLine();
    case Phase::kChunkSize: case Phase::kChunkExt:
      if (!digit_) return Refusal::kUnframeable;
      phase_ = count_ == 0 ? Phase::kTrailer : Phase::kChunkData;
      if (phase_ == Phase::kTrailer) {
        line_nonempty_ = false;
        head_bytes_ = 0;
      }
      return Refusal::kNone;
    case Phase::kChunkEnd:
      phase_ = Phase::kChunkSize;
      count_ = 0;
      line_bytes_ = 0;
      digit_ = chunk_ws_ = false;
      return Refusal::kNone;
    case Phase::kTrailer:
      if (!line_nonempty_) {
        startRequest();  // the empty line: the request is complete
        return Refusal::kNone;
      }
      line_nonempty_ = false;
      return Refusal::kNone;
    default:
      return Refusal::kMalformed;
  }
}

Refusal RequestFramer::endRequestLine() {
  if (version_.size() != 8) return Refusal::kNotHttp1;
  const uint8_t m = methodOf(method_);
  switch (at_line_(m, path_)) {
    case LineVerdict::kDeny: return Refusal::kDenied;
    case LineVerdict::kAllow: allowed_.push_back({m, path_}); break;
    case LineVerdict::kNeedHeaders: head_decides_ = true; break;
  }
  startHeaderLine();
  return Refusal::kNone;
}

Refusal RequestFramer::endHead() {
  if (head_decides_) {
    // Before the framing: the verdict is the policy's, as at a request line.
    const uint8_t m = methodOf(method_);
    if (!at_head_(m, path_, headers_seen_)) return Refusal::kDenied;
    allowed_.push_back({m, path_});
    head_decides_ = false;
    headers_seen_.clear();
  }
  if (has_te_) {
    // RFC 9112 6.1: both framings, or a last coding other than chunked, are
    // what request smuggling is made of; HTTP/1.0 has no chunked.
    if (has_cl_ || !chunked_ || http10_) return Refusal::kUnframeable;
    phase_ = Phase::kChunkSize;
    count_ = 0;
    line_bytes_ = 0;
    digit_ = chunk_ws_ = false;
    return Refusal::kNone;
  }
  if (has_cl_ && count_ > 0) {
    phase_ = Phase::kBody;
    return Refusal::kNone;
  }
  startRequest();
  return Refusal::kNone;
}

Refusal RequestFramer::endHeaderLine() {
  if (value_ == Value::kContentLength && !digit_) return Refusal::kUnframeable;
  if (value_ == Value::kTransferEncoding) {
    // the last coding of the last Transfer-Encoding line decides
    if (coding_.empty()) return Refusal::kUnframeable;
    chunked_ = !coding_bad_ && coding_ == "chunked";
  }
  if (head_decides_) headers_seen_.emplace_back(header_name_, header_value_);
  startHeaderLine();
  return Refusal::kNone;
}

}  // namespace smik::compile::http
