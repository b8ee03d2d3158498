// The process's ZeroMQ context, shared by the components that live in one
// process so that an inproc:// endpoint bound by one (the front end's
// embedded broker) is reachable from another (its broker link). Include it
// in .cpp files only: it brings zmq.hpp.
#pragma once

#include <memory>
#include <zmq.hpp>

namespace monsoon {

// Any thread. The context lives while someone holds it: the first call after
// the last holder released it creates a new one. Terminating it (when the
// last holder lets go) waits for every socket of it to be closed, and for
// their lingering messages, as zmq_ctx_term does.
std::shared_ptr<zmq::context_t> shared_zmq_context();

}  // namespace monsoon
