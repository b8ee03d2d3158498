// Separate network hosts for integration tests: the cluster of network
// namespaces that scripts/netns-cluster.sh makes (hosts broker1, broker2,
// front, work1 and work2, each with its own network stack and an address on
// a private /24, joined by a bridge), under a name prefix of the test's own so
// that it never meets a cluster a user left running. Needs root. The
// cluster's lifetime is the object's: the constructor runs the script's `up`,
// the destructor its `down`. Used from one thread.
#pragma once

#include <sys/types.h>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "child_process.hpp"

namespace monsoon::test {

// This machine cannot make the cluster (not root, or the kernel refuses
// namespaces, veth pairs or bridges): the script exited 77. what() says why,
// in the script's words.
class NetnsUnsupported : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class NetnsCluster {
 public:
  // Brings the cluster up with MNS_PREFIX=`prefix` and MNS_SUBNET=`subnet`
  // (a.b.c.0/24), its logs in a new temporary directory. Throws
  // NetnsUnsupported on the script's exit 77 and std::runtime_error (with
  // the script's output) on any other failure; either way nothing is left.
  NetnsCluster(std::string prefix, std::string subnet);
  // Brings it down: whatever still runs on its hosts is stopped, the
  // namespaces are removed, then the directory. Stop the processes you
  // started first (ChildProcess, by PID). Reports a failure on stderr.
  ~NetnsCluster();
  NetnsCluster(const NetnsCluster&) = delete;
  NetnsCluster& operator=(const NetnsCluster&) = delete;

  // A private temporary directory, for logs and files of the test.
  const std::string& directory() const { return directory_; }
  // `host`'s IPv4 address ("10.77.0.11"), as the script's `addr` gives it.
  // Throws std::out_of_range for a host the cluster does not have.
  const std::string& address(const std::string& host) const;
  // Starts `executable args` on `host` through the script's `exec`, its
  // output in `log_path`. The executable keeps the child's PID (the script
  // and `ip netns exec` exec it), so ChildProcess's signals reach it.
  ChildProcess start(const std::string& host, const std::string& executable,
                     const std::vector<std::string>& args,
                     std::string log_path) const;
  // Every process in `host`'s network namespace, whoever started it.
  std::vector<pid_t> processes(const std::string& host) const;

  // Calls `open` with the calling thread in `host`'s network namespace and
  // returns what it returns; the thread is back in its own namespace after,
  // also when `open` throws. Sockets belong to the namespace they were
  // created in for life: open a client's connections (HttpBatch) here and
  // use them anywhere.
  template <typename Open>
  auto on_host(const std::string& host, Open&& open) const {
    const EnteredNamespace entered(namespace_path(host));
    return open();
  }

 private:
  // The calling thread in the network namespace at `path` for the object's
  // lifetime. Throws std::system_error when it cannot enter; aborts when it
  // cannot go back (the thread would be stranded on a host being removed).
  class EnteredNamespace {
   public:
    explicit EnteredNamespace(const std::string& path);
    ~EnteredNamespace();
    EnteredNamespace(const EnteredNamespace&) = delete;
    EnteredNamespace& operator=(const EnteredNamespace&) = delete;

   private:
    int original_ = -1;
  };

  // Runs the script with `args`; returns its exit status and output.
  std::pair<int, std::string> run_script(
      const std::vector<std::string>& args) const;
  std::string namespace_path(const std::string& host) const;

  std::string prefix_;
  std::string subnet_;
  std::string directory_;
  std::map<std::string, std::string> addresses_;
};

}  // namespace monsoon::test
