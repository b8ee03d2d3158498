#include "monsoon/common/zmq_context.hpp"

#include <mutex>

namespace monsoon {

std::shared_ptr<zmq::context_t> shared_zmq_context() {
  static std::mutex mutex;
  static std::weak_ptr<zmq::context_t> current;
  std::lock_guard lock(mutex);
  if (auto context = current.lock()) return context;
  auto context = std::make_shared<zmq::context_t>(1);
  current = context;
  return context;
}

}  // namespace monsoon
