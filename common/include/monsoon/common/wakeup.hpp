// A cross-thread wake-up for a thread that blocks in zmq::poll: any thread
// calls notify(); the polling thread includes fd() in its poll items
// (ZMQ_POLLIN) and calls drain() when it becomes readable. Backed by a
// non-blocking eventfd, so many notify() calls coalesce into one wake-up.
#pragma once

namespace monsoon {

class Wakeup {
 public:
  Wakeup();  // throws std::system_error if no eventfd can be created
  ~Wakeup();
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;

  void notify() noexcept;  // any thread
  void drain() noexcept;   // the polling thread
  int fd() const noexcept { return fd_; }

 private:
  int fd_;
};

}  // namespace monsoon
