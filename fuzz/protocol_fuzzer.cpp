// libFuzzer target: the MNS/1 decoders of common/protocol.hpp, run the way
// the broker, workers and front end run them on a multipart message.
//
// Input: the message's frames, each a 2-byte big-endian length followed by
// that many bytes; a length running past the end of the input takes what is
// left (a lone last byte makes an empty frame). An empty input is a message
// of no frames.
//
// Beyond "no crash": decoders throw nothing but ProtocolError (their callers
// catch only that), and a message that decodes re-encodes to frames that
// decode to the same fields: the encoders emit only what peers accept.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>

#include "monsoon/common/protocol.hpp"

namespace {

using namespace monsoon::protocol;

Frames split_frames(const std::uint8_t* data, std::size_t size) {
  Frames frames;
  std::size_t offset = 0;
  while (offset < size) {
    std::size_t length = data[offset] << 8;
    if (offset + 1 < size) length |= data[offset + 1];
    offset = std::min(offset + 2, size);
    length = std::min(length, size - offset);
    frames.emplace_back(data + offset, length);
    offset += length;
  }
  return frames;
}

// Runs a decoder on a message off the wire: nullopt when it rejects it.
// Decoding re-encoded frames happens outside of this, so that a rejection
// there escapes as a crash.
template <typename Decode>
auto decoded(Decode decode) -> std::optional<decltype(decode())> {
  try {
    return decode();
  } catch (const ProtocolError&) {
    return std::nullopt;
  }
}

void check(bool condition) {
  if (!condition) std::abort();
}

zmq::message_t copy(const zmq::message_t& frame) {
  return zmq::message_t(frame.data(), frame.size());
}

void round_trip_job(Command command, Frames& frames) {
  auto job = decoded([&] { return decode_job(command, frames); });
  if (!job) return;
  Frames again = encode_job(command, job->task, job->meta, copy(job->args));
  JobMessage decoded = decode_job(command, again);
  check(decoded.task == job->task);
  check(decoded.meta.id == job->meta.id);
  check(decoded.meta.timeout_ms == job->meta.timeout_ms);
  check(decoded.meta.attempt == job->meta.attempt);
  check(decoded.meta.max_result_bytes == job->meta.max_result_bytes);
  check(decoded.meta.queue == job->meta.queue);
  check(decoded.args == job->args);
}

void round_trip_outcome(Command command, Frames& frames) {
  auto outcome = decoded([&] { return decode_outcome(command, frames); });
  if (!outcome) return;
  Frames again = encode_outcome(command, outcome->task, outcome->meta,
                                copy(outcome->result));
  OutcomeMessage decoded = decode_outcome(command, again);
  check(decoded.task == outcome->task);
  check(decoded.meta.id == outcome->meta.id);
  check(decoded.meta.ok == outcome->meta.ok);
  check(decoded.meta.code == outcome->meta.code);
  check(decoded.meta.message == outcome->meta.message);
  check(decoded.meta.retry_after_ms == outcome->meta.retry_after_ms);
  check(decoded.meta.worker == outcome->meta.worker);
  check(decoded.meta.pool == outcome->meta.pool);
  check(decoded.result == outcome->result);
}

void round_trip_ready(const Frames& frames) {
  auto info = decoded([&] { return decode_ready(frames); });
  if (!info) return;
  Frames again = encode_ready(*info);
  // The encoder writes every key, so an info that omitted the optional ones
  // and was close to the size limit may not fit once re-encoded.
  if (again[2].size() > kMaxMetaBytes) return;
  WorkerInfo decoded = decode_ready(again);
  check(decoded.tasks == info->tasks);
  check(decoded.slots == info->slots);
  check(decoded.free == info->free);
  check(decoded.name == info->name);
  check(decoded.pid == info->pid);
  check(decoded.heartbeat_ms == info->heartbeat_ms);
  check(decoded.no_retry == info->no_retry);
  check(decoded.max_message_bytes == info->max_message_bytes);
  check(decoded.pools == info->pools);
}

void round_trip_welcome(const Frames& frames) {
  auto welcome = decoded([&] { return decode_welcome(frames); });
  if (!welcome) return;
  Welcome decoded = decode_welcome(encode_welcome(*welcome));
  check(decoded.ok == welcome->ok);
  check(decoded.code == welcome->code);
  check(decoded.message == welcome->message);
  check(decoded.retry_after_ms == welcome->retry_after_ms);
  check(decoded.max_message_bytes == welcome->max_message_bytes);
  check(decoded.heartbeat_ms == welcome->heartbeat_ms);
  check(decoded.minor == welcome->minor);
}

void round_trip_hello(const Frames& frames) {
  auto hello = decoded([&] { return decode_hello(frames); });
  if (!hello) return;
  check(decode_hello(encode_hello(*hello)).max_message_bytes ==
        hello->max_message_bytes);
}

void round_trip_credit(const Frames& frames) {
  auto credit = decoded([&] { return decode_credit(frames); });
  if (!credit) return;
  const Credit decoded = decode_credit(encode_credit(*credit));
  check(decoded.free == credit->free);
  check(decoded.pool == credit->pool);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  Frames frames = split_frames(data, size);
  auto command = decoded([&] { return decode_command(frames); });
  if (!command) return 0;
  switch (*command) {
    case Command::Submit:
    case Command::Job:
      round_trip_job(*command, frames);
      break;
    case Command::Done:
    case Command::Result:
      round_trip_outcome(*command, frames);
      break;
    case Command::Ready:
      round_trip_ready(frames);
      break;
    case Command::Welcome:
      round_trip_welcome(frames);
      break;
    case Command::Hello:
      round_trip_hello(frames);
      break;
    case Command::Credit:
      round_trip_credit(frames);
      break;
    case Command::Heartbeat:
    case Command::Disconnect:
      check(decode_command(encode_control(*command)) == *command);
      break;
  }
  return 0;
}
