// The HTTP/1.1 request parser of tools/examples/http_server.cpp, in its own header so that the
// fuzz harness (tools/fuzz/http_fuzz.cpp) runs the very code the server runs.
//
// It reads the request line and the header fields of one request (RFC 9112) at the front of a
// byte buffer that grows as data arrives: each call goes on from the line where the last one
// stopped, so a header that trickles in byte by byte costs O(its length) in all, and nothing is
// allocated. Positions are kept as offsets from the start of the request, so the caller may move
// the buffer's bytes (compact, grow) between calls as long as the request stays at its front.
//
// It is strict where leniency lets two parsers disagree on where a request ends (request
// smuggling): lines end in CRLF only, no whitespace before a field's colon, no folded lines, one
// Content-Length (a repeated one must agree), no Transfer-Encoding (a body is framed by
// Content-Length alone), exactly one space between the parts of the request line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace http {

// A request's header (request line, fields, the empty line) may be this long; longer is a 400.
constexpr std::size_t kMaxHeaderBytes = 8192;
// The largest Content-Length accepted; larger is a 413. With kMaxHeaderBytes this bounds what a
// connection buffers for one request.
constexpr std::size_t kMaxBodyBytes = 64 * 1024;

// What a request's header says, once parsed. Offsets count from the request's first byte.
struct Request {
  std::uint32_t methodOffset = 0, methodLength = 0;
  std::uint32_t targetOffset = 0, targetLength = 0;
  int minorVersion = 1;  // HTTP/1.<minor>
  bool keepAlive = true; // false: close the connection after the response
  bool hasHost = false;  // HTTP/1.1 requires exactly one Host field
  std::size_t contentLength = 0;
  std::size_t headerBytes = 0; // the request line, the fields and the empty line

  std::string_view method(std::string_view request) const {
    return request.substr(methodOffset, methodLength);
  }
  std::string_view target(std::string_view request) const {
    return request.substr(targetOffset, targetLength);
  }
};

enum class ParseStatus { Incomplete, Complete, Error };

// ASCII case-insensitive equality, for field names and the tokens of Connection.
inline bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    unsigned x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if (x - 'A' < 26u) x += 32;
    if (y - 'A' < 26u) y += 32;
    if (x != y) return false;
  }
  return true;
}

// RFC 9110's tchar: the characters of a method or a field name.
inline bool isTokenChar(unsigned char c) {
  if (c - 48u < 10u || (c | 0x20u) - 97u < 26u) return true; // a digit or a letter
  return c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// A field value's characters: visible ASCII, obs-text, space and tab; no other control byte.
inline bool isFieldChar(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

class RequestParser {
public:
  // Parses the header at the front of `data` (which holds at least what the previous call saw,
  // unchanged). Complete: request() is filled and headerBytes of data are its header; the body,
  // request().contentLength bytes, follows. Error: errorStatus() says which response to send
  // before closing. After Complete or Error, further calls return the same until reset().
  ParseStatus parse(std::string_view data) {
    if (status_ != ParseStatus::Incomplete) return status_;
    while (status_ == ParseStatus::Incomplete) {
      const void* nl = next_ < data.size()
                           ? std::memchr(data.data() + next_, '\n', data.size() - next_)
                           : nullptr;
      if (nl == nullptr) {
        next_ = data.size();
        // The line in progress already runs past the limit: no need to wait for its end.
        if (data.size() > kMaxHeaderBytes) return fail(400);
        return status_;
      }
      const std::size_t end = static_cast<std::size_t>(static_cast<const char*>(nl) - data.data());
      next_ = end + 1;
      if (next_ > kMaxHeaderBytes) return fail(400);
      if (end == lineStart_ || data[end - 1] != '\r') return fail(400); // a bare LF
      parseLine(data, lineStart_, end - 1);
      lineStart_ = next_;
    }
    return status_;
  }

  const Request& request() const { return request_; }
  int errorStatus() const { return errorStatus_; }

  // Ready for the next request, which starts at the front of the data passed next.
  void reset() { *this = RequestParser(); }

private:
  ParseStatus fail(int status) {
    errorStatus_ = status;
    status_ = ParseStatus::Error;
    return status_;
  }

  // One line, [begin, end) without its CRLF.
  void parseLine(std::string_view data, std::size_t begin, std::size_t end) {
    const std::string_view line = data.substr(begin, end - begin);
    if (!sawRequestLine_) {
      // RFC 9112 §2.2: an empty line before the request line is ignored (one a client sent
      // after a previous body, say).
      if (line.empty()) return;
      sawRequestLine_ = true;
      parseRequestLine(line, begin);
    } else if (line.empty()) {
      finishHeader(end + 2);
    } else {
      parseField(line);
    }
  }

  void parseRequestLine(std::string_view line, std::size_t begin) {
    std::size_t i = 0;
    while (i < line.size() && isTokenChar(static_cast<unsigned char>(line[i])))
      ++i;
    if (i == 0 || i == line.size() || line[i] != ' ') {
      fail(400);
      return;
    }
    request_.methodOffset = static_cast<std::uint32_t>(begin);
    request_.methodLength = static_cast<std::uint32_t>(i);
    const std::size_t targetStart = ++i;
    // The target: any visible ASCII; its form (origin, absolute, authority, *) is the
    // application's business.
    while (i < line.size() && line[i] > 0x20 && line[i] < 0x7f)
      ++i;
    if (i == targetStart || i == line.size() || line[i] != ' ') {
      fail(400);
      return;
    }
    request_.targetOffset = static_cast<std::uint32_t>(begin + targetStart);
    request_.targetLength = static_cast<std::uint32_t>(i - targetStart);
    const std::string_view version = line.substr(i + 1);
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" ||
        static_cast<unsigned char>(version[5] - '0') > 9 || version[6] != '.' ||
        static_cast<unsigned char>(version[7] - '0') > 9) {
      fail(400);
      return;
    }
    if (version[5] != '1') {
      fail(505);
      return;
    }
    request_.minorVersion = version[7] - '0';
    // HTTP/1.0 closes unless asked to keep the connection; HTTP/1.1 keeps it unless asked not to.
    request_.keepAlive = request_.minorVersion >= 1;
  }

  void parseField(std::string_view line) {
    if (line[0] == ' ' || line[0] == '\t') { // obs-fold, which RFC 9112 §5.2 lets us reject
      fail(400);
      return;
    }
    std::size_t colon = 0;
    while (colon < line.size() && isTokenChar(static_cast<unsigned char>(line[colon])))
      ++colon;
    if (colon == 0 || colon == line.size() || line[colon] != ':') {
      fail(400);
      return;
    }
    const std::string_view name = line.substr(0, colon);
    std::size_t first = colon + 1, last = line.size();
    for (std::size_t k = first; k < last; ++k)
      if (!isFieldChar(static_cast<unsigned char>(line[k]))) {
        fail(400);
        return;
      }
    while (first < last && (line[first] == ' ' || line[first] == '\t'))
      ++first;
    while (last > first && (line[last - 1] == ' ' || line[last - 1] == '\t'))
      --last;
    const std::string_view value = line.substr(first, last - first);
    // The length picks the one name worth comparing: most fields are none of these.
    switch (name.size()) {
    case 4:
      if (!equalsIgnoreCase(name, "host")) break;
      if (request_.hasHost) fail(400);
      request_.hasHost = true;
      break;
    case 10:
      if (equalsIgnoreCase(name, "connection")) parseConnection(value);
      break;
    case 14:
      if (equalsIgnoreCase(name, "content-length")) parseContentLength(value);
      break;
    case 17:
      // Chunked bodies are not implemented, and without them no framing can be trusted.
      if (equalsIgnoreCase(name, "transfer-encoding")) fail(501);
      break;
    }
  }

  void parseContentLength(std::string_view value) {
    std::size_t n = 0;
    if (value.empty()) {
      fail(400);
      return;
    }
    for (char c : value) {
      if (static_cast<unsigned char>(c - '0') > 9) {
        fail(400);
        return;
      }
      n = n * 10 + static_cast<std::size_t>(c - '0');
      if (n > kMaxBodyBytes) {
        fail(413);
        return;
      }
    }
    if (sawContentLength_ && n != request_.contentLength) {
      fail(400);
      return;
    }
    sawContentLength_ = true;
    request_.contentLength = n;
  }

  // Connection is a comma-separated list of tokens; close and keep-alive are the ones that
  // matter here.
  void parseConnection(std::string_view value) {
    while (!value.empty()) {
      const std::size_t comma = value.find(',');
      std::string_view token = value.substr(0, comma);
      while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
        token.remove_prefix(1);
      while (!token.empty() && (token.back() == ' ' || token.back() == '\t'))
        token.remove_suffix(1);
      if (equalsIgnoreCase(token, "close")) {
        closeAsked_ = true;
      } else if (equalsIgnoreCase(token, "keep-alive")) {
        keepAliveAsked_ = true;
      }
      if (comma == std::string_view::npos) break;
      value.remove_prefix(comma + 1);
    }
  }

  void finishHeader(std::size_t headerBytes) {
    if (request_.minorVersion >= 1 && !request_.hasHost) { // RFC 9112 §3.2
      fail(400);
      return;
    }
    if (closeAsked_) {
      request_.keepAlive = false;
    } else if (keepAliveAsked_) {
      request_.keepAlive = true;
    }
    request_.headerBytes = headerBytes;
    status_ = ParseStatus::Complete;
  }

  Request request_;
  ParseStatus status_ = ParseStatus::Incomplete;
  int errorStatus_ = 0;
  std::size_t lineStart_ = 0; // where the line being read starts
  std::size_t next_ = 0;      // where the search for its end goes on
  bool sawRequestLine_ = false;
  bool sawContentLength_ = false;
  bool closeAsked_ = false;
  bool keepAliveAsked_ = false;
};

} // namespace http
