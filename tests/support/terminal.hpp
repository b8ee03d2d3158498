// A pseudo-terminal for a test's child process, as a terminal emulator gives
// one to a shell: the test types into it (Ctrl-C) and closes it (the kernel
// then hangs it up). A thread of its own copies everything written to the
// terminal into a log file, so the processes never block on a full terminal.
// Start the child with ChildProcess's Terminal constructor.
#pragma once

#include <atomic>
#include <string>
#include <string_view>
#include <thread>

namespace monsoon::test {

class Terminal {
 public:
  // Throws std::system_error when no pseudo-terminal can be opened.
  explicit Terminal(std::string log_path);
  // Hangs up, if hang_up() was not called.
  ~Terminal();
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  // The device a child opens as its controlling terminal.
  const std::string& device() const { return device_; }
  // Everything written to the terminal (ChildProcess::log() reads it).
  const std::string& log_path() const { return log_path_; }

  // Input, as if typed: "\x03" is Ctrl-C, which makes the terminal send
  // SIGINT to its foreground process group.
  void type(std::string_view keys);
  // Closes the terminal: the kernel sends SIGHUP to the session leader (not
  // to the rest of the foreground group: an interactive shell relays it to
  // its jobs), and writes to the terminal fail with EIO from then on.
  void hang_up();

 private:
  void copy_output();

  std::string log_path_;
  std::string device_;
  int master_ = -1;
  int slave_ = -1;
  int log_fd_ = -1;
  std::atomic<bool> closing_{false};
  std::thread reader_;
};

}  // namespace monsoon::test
