#include "child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>

#include "terminal.hpp"

namespace monsoon::test {

namespace {

// fork + exec with stdout and stderr on `output_fd`; with `terminal` (its
// device), the child leads a new session and takes the terminal as its
// controlling terminal and stdin too. Returns the pid.
pid_t spawn(std::string& executable, std::vector<std::string>& args,
            int output_fd, const char* terminal) {
  std::vector<char*> argv;
  argv.push_back(executable.data());
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    for (int signal_number = 1; signal_number < NSIG; ++signal_number) {
      ::sigaction(signal_number, &default_action, nullptr);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (terminal != nullptr) {
      if (::setsid() < 0) ::_exit(127);
      int tty = ::open(terminal, O_RDWR);
      if (tty < 0 || ::ioctl(tty, TIOCSCTTY, 0) != 0) ::_exit(127);
      ::dup2(tty, STDIN_FILENO);
      output_fd = tty;
    }
    ::dup2(output_fd, STDOUT_FILENO);
    ::dup2(output_fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace

ChildProcess::ChildProcess(std::string executable,
                           std::vector<std::string> args, std::string log_path)
    : log_path_(std::move(log_path)) {
  int log_fd = ::open(log_path_.c_str(),
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    throw std::system_error(errno, std::generic_category(), log_path_);
  try {
    pid_ = spawn(executable, args, log_fd, nullptr);
  } catch (...) {
    ::close(log_fd);
    throw;
  }
  ::close(log_fd);
}

ChildProcess::ChildProcess(std::string executable,
                           std::vector<std::string> args,
                           const Terminal& terminal)
    : log_path_(terminal.log_path()) {
  pid_ = spawn(executable, args, -1, terminal.device().c_str());
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      status_(other.status_),
      log_path_(std::move(other.log_path_)) {}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0 || status_) return;
  signal(SIGTERM);
  if (!wait_exit(std::chrono::seconds(10))) {
    signal(SIGKILL);
    wait_exit(std::chrono::seconds(10));
  }
}

void ChildProcess::signal(int signal_number) const {
  if (pid_ > 0 && !status_) ::kill(pid_, signal_number);
}

std::optional<int> ChildProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      status_ = status;
      return status_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool ChildProcess::running() {
  return !wait_exit(std::chrono::milliseconds(0));
}

std::optional<std::size_t> ChildProcess::resident_kib() const {
  if (pid_ <= 0) return std::nullopt;
  std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return static_cast<std::size_t>(std::stoull(line.substr(6)));
    }
  }
  return std::nullopt;  // gone, or a zombie (which has no VmRSS line)
}

std::string ChildProcess::log() const {
  std::ifstream in(log_path_);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace monsoon::test
