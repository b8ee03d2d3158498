// Non-blocking multipart sends that report, rather than hide, why a message
// could not be sent. Used on the single thread that owns the socket.
#pragma once

#include <span>
#include <string_view>
#include <zmq.hpp>

namespace monsoon {

enum class SendResult {
  sent,
  would_block,  // peer at its high-water mark, or (DEALER) no peer connected
  unroutable,   // ROUTER_MANDATORY: no peer with that identity
};

// Sends all frames as one message with ZMQ_DONTWAIT. Frames are consumed
// only when the result is `sent`. ZeroMQ delivers multipart messages
// atomically, so only the first frame can fail.
SendResult send_frames(zmq::socket_t& socket, std::span<zmq::message_t> frames);

// Same, through a ROUTER socket to the peer with `identity`.
SendResult send_frames_to(zmq::socket_t& router, std::string_view identity,
                          std::span<zmq::message_t> frames);

}  // namespace monsoon
