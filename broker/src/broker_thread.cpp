#include "monsoon/broker/broker_thread.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>

namespace monsoon::broker {
namespace {

[[noreturn]] void die(const char* reason) noexcept {
  try {
    spdlog::critical("broker thread failed: {}; aborting", reason);
    spdlog::default_logger()->flush();
  } catch (...) {  // aborting anyway
  }
  std::abort();
}

}  // namespace

BrokerThread::BrokerThread(BrokerConfig config)
    : broker_(std::move(config)), thread_([this]() noexcept {
        try {
          broker_.run();
        } catch (const std::exception& e) {
          die(e.what());
        } catch (...) {
          die("unknown exception");
        }
      }) {}

BrokerThread::~BrokerThread() { stop(); }

void BrokerThread::stop() {
  if (!thread_.joinable()) return;
  broker_.stop();
  thread_.join();
}

const std::string& BrokerThread::client_endpoint() const noexcept {
  return broker_.client_endpoint();
}

const std::string& BrokerThread::worker_endpoint() const noexcept {
  return broker_.worker_endpoint();
}

DispatcherStats BrokerThread::stats() const { return broker_.stats(); }

std::string unique_inproc_endpoint() {
  static std::atomic<std::uint64_t> count{0};
  return "inproc://monsoon-broker-" + std::to_string(++count);
}

}  // namespace monsoon::broker
