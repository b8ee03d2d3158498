// A real process started by a test, with its stdout/stderr captured in a log
// file, or in a terminal of its own. It starts with every signal unblocked and
// at its default action (a test run from a background job inherits SIGINT
// ignored). The destructor stops it (SIGTERM, then SIGKILL after a deadline),
// and the child is killed by the kernel if the test process itself dies, so
// no test leaves orphans behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace monsoon::test {

class Terminal;

class ChildProcess {
 public:
  // Throws std::system_error when the process cannot be started.
  ChildProcess(std::string executable, std::vector<std::string> args,
               std::string log_path);
  // The child leads a new session whose controlling terminal is `terminal`
  // (also its stdin, stdout and stderr; log() reads the terminal's log), as
  // a command a user starts in a terminal: its process group (its pid) is
  // the terminal's foreground group. `terminal` must outlive it.
  ChildProcess(std::string executable, std::vector<std::string> args,
               const Terminal& terminal);
  ~ChildProcess();
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ChildProcess(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int signal_number) const;
  // Waits until the process exits; returns its wait status, or nullopt when
  // it is still running at the deadline.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  bool running();
  // Its resident set size (VmRSS in /proc/<pid>/status) in KiB; nullopt
  // when the file has no such line (the process exited). Reads only the pid,
  // so another thread may sample it while this one waits for the process.
  std::optional<std::size_t> resident_kib() const;
  std::string log() const;  // everything it printed so far
  const std::string& log_path() const { return log_path_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
};

}  // namespace monsoon::test
