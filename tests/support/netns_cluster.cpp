#include "netns_cluster.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <system_error>

namespace monsoon::test {

namespace {

constexpr auto kScriptTimeout = std::chrono::seconds(60);

std::string make_temporary_directory() {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "monsoon-netns-XXXXXX")
          .string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "mkdtemp");
  }
  return pattern;
}

}  // namespace

NetnsCluster::NetnsCluster(std::string prefix, std::string subnet)
    : prefix_(std::move(prefix)),
      subnet_(std::move(subnet)),
      directory_(make_temporary_directory()) {
  auto [status, output] = run_script({"up"});
  if (status == 0) {
    std::tie(status, output) = run_script({"addr"});
    std::istringstream lines(output);
    std::string host;
    std::string address;
    while (lines >> host >> address) addresses_[host] = address;
    if (status != 0) run_script({"down"});
  }
  if (status != 0) {
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
    if (status == 77) throw NetnsUnsupported(output);
    throw std::runtime_error("netns-cluster.sh failed (status " +
                             std::to_string(status) + "):\n" + output);
  }
}

NetnsCluster::~NetnsCluster() {
  const auto [status, output] = run_script({"down"});
  if (status != 0) {
    std::fprintf(stderr, "netns-cluster.sh down failed (status %d):\n%s\n",
                 status, output.c_str());
  }
  std::error_code ignored;
  std::filesystem::remove_all(directory_, ignored);
}

const std::string& NetnsCluster::address(const std::string& host) const {
  return addresses_.at(host);
}

ChildProcess NetnsCluster::start(const std::string& host,
                                 const std::string& executable,
                                 const std::vector<std::string>& args,
                                 std::string log_path) const {
  std::vector<std::string> command = {"MNS_PREFIX=" + prefix_,
                                      "MNS_SUBNET=" + subnet_,
                                      "bash",
                                      MONSOON_NETNS_CLUSTER_SCRIPT,
                                      "exec",
                                      host,
                                      executable};
  command.insert(command.end(), args.begin(), args.end());
  return ChildProcess("/usr/bin/env", std::move(command), std::move(log_path));
}

std::vector<pid_t> NetnsCluster::processes(const std::string& host) const {
  struct stat target {};
  if (::stat(namespace_path(host).c_str(), &target) != 0) return {};
  std::vector<pid_t> pids;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    struct stat network {};
    // Fails for a process that is gone, or a zombie (it has no namespaces).
    if (::stat((entry.path() / "ns/net").c_str(), &network) == 0 &&
        network.st_dev == target.st_dev && network.st_ino == target.st_ino) {
      pids.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return pids;
}

std::pair<int, std::string> NetnsCluster::run_script(
    const std::vector<std::string>& args) const {
  std::vector<std::string> command = {"MNS_PREFIX=" + prefix_,
                                      "MNS_SUBNET=" + subnet_, "bash",
                                      MONSOON_NETNS_CLUSTER_SCRIPT};
  command.insert(command.end(), args.begin(), args.end());
  const std::string log_path =
      directory_ + "/netns-cluster-" + args.at(0) + ".log";
  std::filesystem::remove(log_path);
  ChildProcess script("/usr/bin/env", std::move(command), log_path);
  const auto status = script.wait_exit(kScriptTimeout);
  const int code = status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  return {code, script.log()};
}

std::string NetnsCluster::namespace_path(const std::string& host) const {
  return "/run/netns/" + prefix_ + host;
}

NetnsCluster::EnteredNamespace::EnteredNamespace(const std::string& path) {
  original_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original_ < 0) {
    throw std::system_error(errno, std::generic_category(),
                            "open /proc/thread-self/ns/net");
  }
  const int target = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0 || ::setns(target, CLONE_NEWNET) != 0) {
    const int error = errno;
    if (target >= 0) ::close(target);
    ::close(original_);
    throw std::system_error(error, std::generic_category(), "enter " + path);
  }
  ::close(target);
}

NetnsCluster::EnteredNamespace::~EnteredNamespace() {
  if (::setns(original_, CLONE_NEWNET) != 0) {
    std::perror("setns back to the test's own network namespace");
    std::abort();
  }
  ::close(original_);
}

}  // namespace monsoon::test
