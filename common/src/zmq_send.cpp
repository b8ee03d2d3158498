#include "monsoon/common/zmq_send.hpp"

namespace monsoon {
namespace {

// Sends frames[i..] after the first has been accepted; ZeroMQ guarantees the
// rest of a multipart message is accepted once its first frame is.
void send_rest(zmq::socket_t& socket, std::span<zmq::message_t> frames) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    auto flags = zmq::send_flags::dontwait;
    if (i + 1 < frames.size()) flags = flags | zmq::send_flags::sndmore;
    socket.send(frames[i], flags);
  }
}

zmq::send_flags first_flags(bool more) {
  return more ? (zmq::send_flags::dontwait | zmq::send_flags::sndmore)
              : zmq::send_flags::dontwait;
}

}  // namespace

SendResult send_frames(zmq::socket_t& socket,
                       std::span<zmq::message_t> frames) {
  if (frames.empty()) return SendResult::sent;
  if (!socket.send(frames[0], first_flags(frames.size() > 1))) {
    return SendResult::would_block;
  }
  send_rest(socket, frames.subspan(1));
  return SendResult::sent;
}

SendResult send_frames_to(zmq::socket_t& router, std::string_view identity,
                          std::span<zmq::message_t> frames) {
  try {
    if (!router.send(zmq::buffer(identity.data(), identity.size()),
                     first_flags(!frames.empty()))) {
      return SendResult::would_block;
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return SendResult::unroutable;
    throw;
  }
  send_rest(router, frames);
  return SendResult::sent;
}

}  // namespace monsoon
