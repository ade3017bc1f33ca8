// The RESP request parser of resp_server.cpp, on its own so that tools/fuzz/resp_fuzz.cpp drives
// the very same code. A request is an array of bulk strings ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", what
// redis-cli and redis-benchmark send) or an inline command ("GET k\r\n", what a person types into
// nc or telnet); arguments of an inline command are split on blanks, without Redis's quoting.
//
// The parser is incremental: it is handed the unconsumed input, which always starts at the frame
// being parsed, and remembers how far it got, so a frame that arrives in many pieces is scanned
// once. Every size a client claims is checked against a limit below before anything is done with
// it: a claim over a limit is a protocol error, never a reservation of the claimed size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace resp {

// Redis's own limits where it has one (its multibulk count and its inline line), smaller ones for
// a bulk string and a whole request, which the server buffers whole before it runs them.
constexpr std::size_t kMaxArgs = 1024 * 1024;
constexpr std::size_t kMaxInlineLength = 64 * 1024;
constexpr std::size_t kMaxBulkLength = 16 * 1024 * 1024;
constexpr std::size_t kMaxFrameLength = 64 * 1024 * 1024;

// Redis's string2ll: an optional '-', then decimal digits without a leading zero or a '+', and no
// overflow; false for anything else. EX, PX, INCR and the lengths in a frame all read numbers so.
inline bool parseInteger(std::string_view text, std::int64_t& value) {
  if (text.empty() || text.size() > 20) return false;
  const bool negative = text[0] == '-';
  if (negative) text.remove_prefix(1);
  // "0" alone is the one number that starts with a zero ("-0" is refused too).
  if (text.empty() || (text[0] == '0' && (text.size() > 1 || negative))) return false;
  std::uint64_t magnitude = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    // Only a 19th or 20th digit can take 64 bits over.
    if (text.size() > 18 && magnitude > (UINT64_MAX - digit) / 10) return false;
    magnitude = magnitude * 10 + digit;
  }
  // INT64_MIN's magnitude is one more than INT64_MAX's.
  const std::uint64_t limit = negative ? std::uint64_t(INT64_MAX) + 1 : std::uint64_t(INT64_MAX);
  if (magnitude > limit) return false;
  value =
      negative ? static_cast<std::int64_t>(0 - magnitude) : static_cast<std::int64_t>(magnitude);
  return true;
}

class Parser {
public:
  enum class Status { Frame, NeedMore, Error };

  // Parses data[0, size), the unconsumed input starting at the current frame; a later call for
  // the same frame passes the same bytes again (perhaps moved) with more after them. Frame: args()
  // holds the frame's arguments (empty for "*0\r\n" or a blank line, which run nothing) as views
  // into data, and the caller drops frameLength() bytes before the next call. Error: error() is
  // the reply, and the parser stays failed; the connection is to be closed.
  Status parse(const char* data, std::size_t size) {
    for (;;) {
      switch (state_) {
      case State::Start:
        if (size == 0) return Status::NeedMore;
        spans_.clear();
        pos_ = scan_ = 0;
        state_ = data[0] == '*' ? State::Count : State::Inline;
        break;
      case State::Inline:
        return parseInline(data, size);
      case State::Count: {
        std::int64_t count = 0;
        const Header got =
            header(data, size, "ERR Protocol error: too big mbulk count string", count);
        if (got == Header::Partial) return Status::NeedMore;
        if (got == Header::Failed) return Status::Error;
        if (got == Header::NotANumber || count > std::int64_t(kMaxArgs))
          return fail("ERR Protocol error: invalid multibulk length");
        if (count <= 0) return frame(data); // Redis runs nothing for *0 or *-1
        remaining_ = static_cast<std::size_t>(count);
        spans_.reserve(remaining_ < 1024 ? remaining_ : 1024);
        state_ = State::BulkHeader;
        break;
      }
      case State::BulkHeader: {
        if (pos_ >= size) return Status::NeedMore;
        if (data[pos_] != '$') {
          error_ = "ERR Protocol error: expected '$', got ' '";
          error_[error_.size() - 2] = printable(data[pos_]);
          state_ = State::Failed;
          return Status::Error;
        }
        std::int64_t length = 0;
        const Header got =
            header(data, size, "ERR Protocol error: too big bulk count string", length);
        if (got == Header::Partial) return Status::NeedMore;
        if (got == Header::Failed) return Status::Error;
        if (got == Header::NotANumber || length < 0 || length > std::int64_t(kMaxBulkLength))
          return fail("ERR Protocol error: invalid bulk length");
        bulk_ = static_cast<std::size_t>(length);
        if (pos_ + bulk_ + 2 > kMaxFrameLength)
          return fail("ERR Protocol error: request longer than 64 MiB");
        state_ = State::BulkBody;
        break;
      }
      case State::BulkBody: {
        if (size - pos_ < bulk_ + 2) return Status::NeedMore;
        if (data[pos_ + bulk_] != '\r' || data[pos_ + bulk_ + 1] != '\n')
          return fail("ERR Protocol error: bulk string not followed by CRLF");
        spans_.push_back({pos_, bulk_});
        pos_ += bulk_ + 2;
        scan_ = pos_;
        if (--remaining_ == 0) return frame(data);
        state_ = State::BulkHeader;
        break;
      }
      case State::Failed:
        return Status::Error;
      }
    }
  }

  const std::vector<std::string_view>& args() const { return args_; }
  std::size_t frameLength() const { return frameLength_; }
  const std::string& error() const { return error_; }

private:
  enum class State { Start, Inline, Count, BulkHeader, BulkBody, Failed };
  struct Span {
    std::size_t offset, length;
  };

  enum class Header { Number, Partial, NotANumber, Failed };

  // The header line at pos_ ("*N" or "$N"): its number, with pos_ moved past the line; Partial
  // when the line has not all arrived; Failed when it is longer than any header may be.
  Header header(const char* data, std::size_t size, const char* tooBig, std::int64_t& value) {
    // The common case first, in one pass without memchr: a line not seen before, all here, with
    // a number of at most 18 digits (no overflow) in the canonical form parseInteger accepts.
    if (scan_ <= pos_) {
      std::size_t i = pos_ + 1;
      std::uint64_t n = 0;
      while (i < size && i - pos_ <= 18 && data[i] >= '0' && data[i] <= '9')
        n = n * 10 + static_cast<std::uint64_t>(data[i++] - '0');
      const std::size_t digits = i - pos_ - 1;
      if (digits > 0 && (digits == 1 || data[pos_ + 1] != '0') && i + 1 < size && data[i] == '\r' &&
          data[i + 1] == '\n') {
        value = static_cast<std::int64_t>(n);
        pos_ = i + 2;
        return Header::Number;
      }
    }
    const char* nl = findLine(data, size, tooBig);
    if (nl == nullptr) return state_ == State::Failed ? Header::Failed : Header::Partial;
    if (!lineNumber(data + pos_ + 1, nl, value)) return Header::NotANumber;
    pos_ = static_cast<std::size_t>(nl - data) + 1;
    return Header::Number;
  }

  // A header line starting at pos_ ("*N" or "$N"): its '\n', or null when it has not all arrived
  // (or, with the parser failed, when it is longer than any header may be).
  const char* findLine(const char* data, std::size_t size, const char* tooBig) {
    if (scan_ < pos_) scan_ = pos_;
    const auto* nl = static_cast<const char*>(std::memchr(data + scan_, '\n', size - scan_));
    const std::size_t end = nl != nullptr ? static_cast<std::size_t>(nl - data) : size;
    if (end - pos_ > kMaxInlineLength) {
      fail(tooBig);
      return nullptr;
    }
    scan_ = end;
    return nl;
  }

  // The number of a header line between its type byte and nl, which must end with "\r\n".
  static bool lineNumber(const char* begin, const char* nl, std::int64_t& value) {
    if (nl == begin || nl[-1] != '\r') return false;
    return parseInteger(std::string_view(begin, static_cast<std::size_t>(nl - 1 - begin)), value);
  }

  Status parseInline(const char* data, std::size_t size) {
    const auto* nl = static_cast<const char*>(std::memchr(data + scan_, '\n', size - scan_));
    const std::size_t end = nl != nullptr ? static_cast<std::size_t>(nl - data) : size;
    if (end > kMaxInlineLength) return fail("ERR Protocol error: too big inline request");
    if (nl == nullptr) {
      scan_ = size;
      return Status::NeedMore;
    }
    // Redis splits on isspace(), which takes the '\r' of the line's end with it.
    auto blank = [](char c) {
      return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
    };
    for (std::size_t i = 0; i < end;) {
      if (blank(data[i])) {
        ++i;
        continue;
      }
      const std::size_t start = i;
      while (i < end && !blank(data[i]))
        ++i;
      spans_.push_back({start, i - start});
    }
    pos_ = end + 1;
    return frame(data);
  }

  Status frame(const char* data) {
    args_.clear();
    for (const Span& s : spans_)
      args_.emplace_back(data + s.offset, s.length);
    frameLength_ = pos_;
    state_ = State::Start;
    return Status::Frame;
  }

  Status fail(const char* message) {
    error_ = message;
    state_ = State::Failed;
    return Status::Error;
  }

  // The byte Redis would echo in "expected '$', got 'X'"; a control byte would break the reply.
  static char printable(char c) { return c >= ' ' && c <= '~' ? c : ' '; }

  State state_ = State::Start;
  std::size_t pos_ = 0;       // the next byte to parse, from the frame's start
  std::size_t scan_ = 0;      // how far the current line was searched for its '\n'
  std::size_t remaining_ = 0; // bulk strings still to come in the current array
  std::size_t bulk_ = 0;      // the length of the bulk string being read
  std::vector<Span> spans_; // the arguments parsed so far, as offsets: data may move between calls
  std::vector<std::string_view> args_;
  std::size_t frameLength_ = 0;
  std::string error_;
};

} // namespace resp
