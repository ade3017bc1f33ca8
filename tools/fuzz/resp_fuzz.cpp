// Seeds: tools/fuzz/corpus_resp/ holds one request stream per case, written by hand with printf:
// arrays, inline commands, a pipeline of both, numbers at their limits, and malformed frames.
//
// The libFuzzer harness of the RESP request parser (tools/examples/resp_frame.hpp), run by `make
// fuzz` as fuzz-resp. The input's first byte seeds the sizes of the pieces the rest arrives in;
// the rest is a request stream. The harness aborts, naming the broken rule, unless:
//  - the stream parsed in pieces, each time from a fresh copy of the unconsumed bytes (as the
//    server moves them to its buffer's front), gives the same frames and the same end (an error
//    with the same message, or a wait for more) as the stream parsed whole;
//  - every frame is within the bytes given, its arguments within the frame and within the limits;
//  - the frames written back as arrays of bulk strings parse to the same arguments;
//  - an error is a "ERR Protocol error: ..." on one line;
//  - parseInteger accepts exactly the canonical decimal form of an int64 (what std::to_chars
//    writes), for every argument and every header number in the stream.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "resp_frame.hpp"

namespace {

void check(bool ok, const char* rule) {
  if (ok) return;
  std::fprintf(stderr, "resp_fuzz: broken: %s\n", rule);
  std::abort();
}

struct Outcome {
  std::vector<std::vector<std::string>> frames;
  bool failed = false;
  std::string error;
  std::size_t left = 0; // bytes not consumed at the end
};

// Every argument and the frame must lie within what the parser was given.
void checkFrame(const resp::Parser& p, const char* data, std::size_t size) {
  check(p.frameLength() > 0 && p.frameLength() <= size, "a frame is within the bytes given");
  check(p.args().size() <= resp::kMaxArgs, "a frame has at most kMaxArgs arguments");
  for (std::string_view a : p.args()) {
    check(a.data() >= data && a.data() + a.size() <= data + p.frameLength(),
          "an argument is within its frame");
    check(a.size() <= resp::kMaxBulkLength, "an argument is at most kMaxBulkLength long");
  }
}

void checkInteger(std::string_view text) {
  std::int64_t got = 0;
  const bool ok = resp::parseInteger(text, got);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  char canonical[24];
  const auto cend = std::to_chars(canonical, canonical + sizeof canonical, value).ptr;
  const bool isCanonical = ec == std::errc() && end == text.data() + text.size() &&
                           std::string_view(canonical, std::size_t(cend - canonical)) == text;
  check(ok == isCanonical, "parseInteger accepts exactly the canonical int64 form");
  if (ok) check(got == value, "parseInteger reads the value std::from_chars reads");
}

Outcome parseWhole(const char* data, std::size_t size) {
  Outcome o;
  resp::Parser p;
  std::size_t at = 0;
  for (;;) {
    const auto status = p.parse(data + at, size - at);
    if (status == resp::Parser::Status::NeedMore) break;
    if (status == resp::Parser::Status::Error) {
      o.failed = true;
      o.error = p.error();
      check(p.parse(data + at, size - at) == resp::Parser::Status::Error,
            "a failed parser stays failed");
      break;
    }
    checkFrame(p, data + at, size - at);
    o.frames.emplace_back(p.args().begin(), p.args().end());
    at += p.frameLength();
  }
  o.left = size - at;
  return o;
}

// The server's way: pieces appended to a buffer, whole frames dropped from its front.
Outcome parsePieces(const char* data, std::size_t size, std::uint32_t seed) {
  Outcome o;
  resp::Parser p;
  std::string buffer;
  std::size_t given = 0;
  while (given < size && !o.failed) {
    seed = seed * 1103515245u + 12345u;
    std::size_t piece = 1 + (seed >> 16) % 64;
    if (piece > size - given) piece = size - given;
    buffer.append(data + given, piece);
    given += piece;
    for (;;) {
      // A fresh copy each time, so a view kept into an old buffer is a use after free for ASan.
      std::vector<char> copy(buffer.begin(), buffer.end());
      const auto status = p.parse(copy.data(), copy.size());
      if (status == resp::Parser::Status::NeedMore) break;
      if (status == resp::Parser::Status::Error) {
        o.failed = true;
        o.error = p.error();
        break;
      }
      checkFrame(p, copy.data(), copy.size());
      o.frames.emplace_back(p.args().begin(), p.args().end());
      buffer.erase(0, p.frameLength());
    }
  }
  o.left = buffer.size();
  return o;
}

std::string encode(const std::vector<std::string>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (const std::string& a : args)
    out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size == 0) return 0;
  const std::uint32_t seed = bytes[0];
  const char* data = reinterpret_cast<const char*>(bytes) + 1;
  --size;

  const Outcome whole = parseWhole(data, size);
  const Outcome pieces = parsePieces(data, size, seed);
  check(whole.frames == pieces.frames, "pieces give the frames the whole stream gives");
  check(whole.failed == pieces.failed && whole.error == pieces.error,
        "pieces end as the whole stream ends");
  // A failed stream stops where it failed: pieces may have read less of what follows.
  if (!whole.failed) check(whole.left == pieces.left, "pieces leave the bytes the whole leaves");
  if (whole.failed) {
    check(whole.error.rfind("ERR Protocol error: ", 0) == 0, "an error is a protocol error");
    check(whole.error.find_first_of("\r\n") == std::string::npos, "an error is one line");
  }

  for (const auto& frame : whole.frames) {
    for (const std::string& a : frame)
      checkInteger(a);
    if (frame.empty()) continue;
    const std::string wire = encode(frame);
    resp::Parser p;
    check(p.parse(wire.data(), wire.size()) == resp::Parser::Status::Frame,
          "a frame written back parses");
    check(p.frameLength() == wire.size(), "a frame written back is one frame");
    check(std::vector<std::string>(p.args().begin(), p.args().end()) == frame,
          "a frame written back has the same arguments");
  }
  // The header numbers too: every line's text after '*' or '$'.
  std::string_view rest(data, size);
  while (!rest.empty()) {
    const std::size_t nl = rest.find("\r\n");
    const std::string_view line = rest.substr(0, nl);
    if (!line.empty() && (line[0] == '*' || line[0] == '$')) checkInteger(line.substr(1));
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 2);
  }
  return 0;
}
