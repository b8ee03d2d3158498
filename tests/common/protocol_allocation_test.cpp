// How much the MNS/1 decoders allocate for hostile input. The executable is
// linked with -Wl,--wrap=malloc (tests/common/CMakeLists.txt), so every
// malloc made by code linked into it, msgpack-c's zones in protocol.cpp
// included, is counted here; allocations inside shared libraries (libstdc++'s
// operator new, libzmq) are not, and need not be.
#include <atomic>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdlib>
#include <string>

#include "monsoon/common/protocol.hpp"

namespace {

std::atomic<std::size_t> allocated{0};

}  // namespace

extern "C" void* __real_malloc(std::size_t size);

extern "C" void* __wrap_malloc(std::size_t size) {
  allocated.fetch_add(size, std::memory_order_relaxed);
  return __real_malloc(size);
}

using namespace monsoon::protocol;

TEST_CASE("a truncated meta frame is rejected without allocating its claims") {
  // 32 nested map16 headers, each claiming 4096 entries, and nothing else.
  std::string meta;
  for (int i = 0; i < 32; ++i) meta += std::string("\xde\x10\x00", 3);
  Frames frames;
  frames.emplace_back(kSignature.data(), kSignature.size());
  frames.emplace_back("\x02", 1);
  frames.emplace_back("echo", 4);
  frames.emplace_back(meta.data(), meta.size());
  frames.push_back(nil_payload());

  allocated = 0;
  CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
  // It was 8 MB; a few kilobytes is noise (messages, buffers).
  CHECK(allocated.load() < 64 * 1024);

  // The counter sees msgpack-c's allocations: unpacking a valid meta map
  // allocates its zone.
  Frames valid =
      encode_job(Command::Submit, "echo", JobMeta{7, 1000, 1}, nil_payload());
  allocated = 0;
  decode_job(Command::Submit, valid);
  CHECK(allocated.load() > 0);
}
