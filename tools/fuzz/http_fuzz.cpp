// Seeds: tools/fuzz/corpus_http/ holds one file per kind of request stream (simple and pipelined
// requests, bodies, every error status, limits just below and above), each a two-byte chunking
// seed followed by the bytes a client would send.
//
// The libFuzzer harness of the HTTP request parser of tools/examples/http_request.hpp (`make
// fuzz-http`, part of `make fuzz`). An input is a seed for the chunking and a stream of bytes
// that a client sends on one connection. The stream is framed twice, as the server frames it:
// once with all of it at hand, once arriving in chunks of pseudo-random sizes (1 to 64 bytes, so
// every line and header is cut at many places) into a buffer that is compacted after each
// request, with parse() called again after every chunk. Aborts unless:
//  - both framings find the same requests (method, target, version, keep-alive, body length,
//    header length) and end the same way (an error status, or bytes waiting for more);
//  - a whole header ends at the first empty line after its request line and within
//    kMaxHeaderBytes, its method is a token, its target visible ASCII, its body within
//    kMaxBodyBytes; parse() called again gives the same answer;
//  - a parser still waiting never holds more than kMaxHeaderBytes of header;
//  - an error is one of 400, 413, 501 and 505.
// ASan and UBSan catch any read outside the data.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "../examples/http_request.hpp"

namespace {

// One framing's account of the stream: what a server would have answered, in order.
struct Framed {
  std::vector<std::string> requests; // each request's fields, flattened for comparison
  int error = 0;                     // the error status that ended the stream, 0 if none
  std::size_t waiting = 0;           // bytes left unanswered at the end
};

[[noreturn]] void violation(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "\nhttp_fuzz: invariant broken: %s %.*s\n", what,
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

std::string describe(const http::Request& r, std::string_view data) {
  std::string out;
  out.append(r.method(data)).append(" ").append(r.target(data));
  out.append(" 1.").append(std::to_string(r.minorVersion));
  out.append(r.keepAlive ? " keep" : " close");
  out.append(" body=").append(std::to_string(r.contentLength));
  out.append(" header=").append(std::to_string(r.headerBytes));
  return out;
}

// What must hold of a whole header found at the front of data.
void checkComplete(const http::RequestParser& parser, std::string_view data) {
  const http::Request& r = parser.request();
  if (r.headerBytes > http::kMaxHeaderBytes) violation("a header over the limit was accepted");
  if (r.headerBytes > data.size()) violation("the header is longer than the data");
  std::size_t lead = 0;
  while (data.substr(lead, 2) == "\r\n")
    lead += 2;
  const std::size_t end = data.find("\r\n\r\n", lead);
  if (end == std::string_view::npos || end + 4 != r.headerBytes)
    violation("the header does not end at the first empty line", describe(r, data));
  const std::string_view method = r.method(data), target = r.target(data);
  if (r.methodOffset != lead || method.empty()) violation("the method is not at the start");
  for (char c : method)
    if (!http::isTokenChar(static_cast<unsigned char>(c))) violation("a method is not a token");
  if (target.empty() || r.targetOffset + r.targetLength > r.headerBytes)
    violation("the target is outside the request line");
  for (char c : target)
    if (c <= 0x20 || c >= 0x7f) violation("a target holds a space or a control character");
  if (r.contentLength > http::kMaxBodyBytes) violation("a body over the limit was accepted");
  if (r.minorVersion < 0 || r.minorVersion > 9) violation("a version out of range");
}

// Runs the parser over data (already holding the request at its front) and checks its answer.
http::ParseStatus parseAndCheck(http::RequestParser& parser, std::string_view data) {
  const http::ParseStatus status = parser.parse(data);
  if (status == http::ParseStatus::Complete) {
    checkComplete(parser, data);
    if (parser.parse(data) != http::ParseStatus::Complete) violation("parse() changed its mind");
  } else if (status == http::ParseStatus::Error) {
    const int e = parser.errorStatus();
    if (e != 400 && e != 413 && e != 501 && e != 505) violation("an unexpected error status");
  } else if (data.size() > http::kMaxHeaderBytes) {
    violation("still waiting with more than kMaxHeaderBytes of header");
  }
  return status;
}

Framed frameWhole(std::string_view stream) {
  Framed f;
  http::RequestParser parser;
  std::size_t begin = 0;
  while (begin < stream.size()) {
    const std::string_view data = stream.substr(begin);
    const http::ParseStatus status = parseAndCheck(parser, data);
    if (status == http::ParseStatus::Error) {
      f.error = parser.errorStatus();
      return f;
    }
    if (status == http::ParseStatus::Incomplete) break;
    const http::Request& r = parser.request();
    if (data.size() < r.headerBytes + r.contentLength) break;
    f.requests.push_back(describe(r, data));
    begin += r.headerBytes + r.contentLength;
    parser.reset();
  }
  f.waiting = stream.size() - begin;
  return f;
}

// The server's way: append a chunk, answer what is whole, move the rest to the front.
Framed frameChunked(std::string_view stream, std::uint32_t seed) {
  Framed f;
  http::RequestParser parser;
  std::string buffer;
  std::size_t offset = 0;
  while (offset < stream.size()) {
    seed = seed * 1103515245u + 12345u;
    const std::size_t chunk = 1 + (seed >> 16) % 64;
    buffer.append(stream.substr(offset, chunk));
    offset += stream.substr(offset, chunk).size();
    std::size_t begin = 0;
    while (begin < buffer.size()) {
      const std::string_view data = std::string_view(buffer).substr(begin);
      const http::ParseStatus status = parseAndCheck(parser, data);
      if (status == http::ParseStatus::Error) {
        f.error = parser.errorStatus();
        return f;
      }
      if (status == http::ParseStatus::Incomplete) break;
      const http::Request& r = parser.request();
      if (data.size() < r.headerBytes + r.contentLength) break;
      f.requests.push_back(describe(r, data));
      begin += r.headerBytes + r.contentLength;
      parser.reset();
    }
    buffer.erase(0, begin);
  }
  f.waiting = buffer.size();
  return f;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size < 2) return 0;
  const std::uint32_t seed = bytes[0] | static_cast<std::uint32_t>(bytes[1]) << 8;
  const std::string_view stream(reinterpret_cast<const char*>(bytes) + 2, size - 2);
  const Framed whole = frameWhole(stream);
  const Framed chunked = frameChunked(stream, seed);
  if (whole.requests != chunked.requests) violation("the chunked framing found other requests");
  if (whole.error != chunked.error) violation("the chunked framing ended with another error");
  if (whole.error == 0 && whole.waiting != chunked.waiting)
    violation("the chunked framing left other bytes waiting");
  return 0;
}
