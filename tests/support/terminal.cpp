#include "terminal.hpp"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <system_error>

namespace monsoon::test {
namespace {

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

Terminal::Terminal(std::string log_path) : log_path_(std::move(log_path)) {
  log_fd_ = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                   0644);
  if (log_fd_ < 0) throw_errno(log_path_.c_str());
  master_ = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master_ < 0 || ::grantpt(master_) != 0 || ::unlockpt(master_) != 0) {
    int error = errno;
    if (master_ >= 0) ::close(master_);
    ::close(log_fd_);
    throw std::system_error(error, std::generic_category(), "posix_openpt");
  }
  char name[128];
  if (::ptsname_r(master_, name, sizeof name) != 0) {
    int error = errno;
    ::close(master_);
    ::close(log_fd_);
    throw std::system_error(error, std::generic_category(), "ptsname_r");
  }
  device_ = name;
  // Held open (never our controlling terminal) so that the master does not
  // report a hang-up before the child opened the terminal, or after it
  // exited: the reader then waits instead of spinning.
  slave_ = ::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave_ < 0) {
    int error = errno;
    ::close(master_);
    ::close(log_fd_);
    throw std::system_error(error, std::generic_category(), name);
  }
  reader_ = std::thread([this] { copy_output(); });
}

Terminal::~Terminal() {
  hang_up();
  ::close(log_fd_);
}

void Terminal::type(std::string_view keys) {
  while (!keys.empty()) {
    ssize_t written = ::write(master_, keys.data(), keys.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_errno("write to terminal");
    }
    keys.remove_prefix(static_cast<std::size_t>(written));
  }
}

void Terminal::hang_up() {
  if (closing_.exchange(true)) return;
  reader_.join();
  ::close(master_);
  ::close(slave_);
}

void Terminal::copy_output() {
  char buffer[4096];
  while (!closing_.load()) {
    pollfd ready{.fd = master_, .events = POLLIN, .revents = 0};
    if (::poll(&ready, 1, 20) <= 0) continue;
    ssize_t got = ::read(master_, buffer, sizeof buffer);
    if (got <= 0) {  // not expected while slave_ is open; do not spin
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    for (ssize_t done = 0; done < got;) {
      ssize_t written = ::write(log_fd_, buffer + done, got - done);
      if (written <= 0) break;
      done += written;
    }
  }
}

}  // namespace monsoon::test
