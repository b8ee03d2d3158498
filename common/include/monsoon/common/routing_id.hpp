// Routing identities for the DEALER sockets of workers and clients.
//
// A DEALER that lets ZeroMQ pick its identity gets a new one whenever its
// TCP connection is re-established, so a broker would see a stranger and
// lose track of the jobs in flight. Setting an explicit random identity per
// socket keeps it across ZeroMQ's automatic reconnects; the broker's ROUTERs
// use ZMQ_ROUTER_HANDOVER so the reconnected pipe takes the identity over.
#pragma once

#include <string>

namespace monsoon {

// 16 random bytes, the first never zero (ZeroMQ reserves those). Thread-safe.
std::string make_routing_id();

}  // namespace monsoon
