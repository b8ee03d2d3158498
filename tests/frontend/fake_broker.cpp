#include "fake_broker.hpp"

#include <zmq_addon.hpp>

#include "monsoon/common/zmq_send.hpp"

namespace monsoon::frontend::test {
namespace {

std::string to_string(const zmq::message_t& message) {
  return message.to_string();
}

// The test helper may poll: it only needs to notice the outbox and stop.
constexpr std::chrono::milliseconds kPollInterval{2};

}  // namespace

FakeBroker::FakeBroker(bool echo_jobs)
    : echo_jobs_(echo_jobs), router_(context_, zmq::socket_type::router) {
  router_.set(zmq::sockopt::linger, 0);
  router_.bind("tcp://127.0.0.1:*");
  endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  thread_ = std::thread([this] { run(); });
}

FakeBroker::~FakeBroker() {
  stop_ = true;
  thread_.join();
}

void FakeBroker::set_worker_name(std::string name) {
  std::lock_guard lock(mutex_);
  worker_name_ = std::move(name);
}

std::optional<ReceivedJob> FakeBroker::wait_for_job(
    std::size_t index, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return jobs_.size() > index; })) {
    return std::nullopt;
  }
  return jobs_[index];
}

std::optional<std::string> FakeBroker::wait_for_client(
    std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return first_client_.has_value(); });
  return first_client_;
}

void FakeBroker::reply(const ReceivedJob& job, protocol::OutcomeMeta meta,
                       std::string result) {
  auto frames =
      protocol::encode_outcome(protocol::Command::Result, job.task, meta,
                               zmq::message_t(result.data(), result.size()));
  frames.insert(frames.begin(),
                zmq::message_t(job.identity.data(), job.identity.size()));
  std::lock_guard lock(mutex_);
  outbox_.push_back(std::move(frames));
}

void FakeBroker::send_raw(const std::string& identity,
                          std::vector<std::string> frames) {
  protocol::Frames message;
  message.emplace_back(identity.data(), identity.size());
  for (const auto& frame : frames)
    message.emplace_back(frame.data(), frame.size());
  std::lock_guard lock(mutex_);
  outbox_.push_back(std::move(message));
}

void FakeBroker::run() {
  while (!stop_) {
    zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, kPollInterval);
    protocol::Frames frames;
    while (zmq::recv_multipart(router_, std::back_inserter(frames),
                               zmq::recv_flags::dontwait)) {
      handle(frames);
      frames.clear();
    }
    flush_outbox();
  }
}

void FakeBroker::handle(protocol::Frames& frames) {
  std::string identity = to_string(frames.at(0));
  std::span<zmq::message_t> body(frames.data() + 1, frames.size() - 1);
  {
    std::lock_guard lock(mutex_);
    if (!first_client_) first_client_ = identity;
  }
  changed_.notify_all();
  auto command = protocol::decode_command(body);
  if (command == protocol::Command::Heartbeat) {
    if (answer_heartbeats_) {
      auto reply = protocol::encode_control(protocol::Command::Heartbeat);
      send_frames_to(router_, identity, reply);
    }
    return;
  }
  if (command != protocol::Command::Submit) return;
  auto job = protocol::decode_job(protocol::Command::Submit, body);
  ReceivedJob received{identity, job.task, job.meta, to_string(job.args)};
  if (echo_jobs_) {
    auto meta = protocol::OutcomeMeta::success(job.meta.id);
    {
      std::lock_guard lock(mutex_);
      meta.worker = worker_name_;
    }
    auto reply = protocol::encode_outcome(protocol::Command::Result, job.task,
                                          meta, std::move(job.args));
    send_frames_to(router_, identity, reply);
  }
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(received));
  }
  changed_.notify_all();
}

void FakeBroker::flush_outbox() {
  std::vector<protocol::Frames> outbox;
  {
    std::lock_guard lock(mutex_);
    outbox.swap(outbox_);
  }
  for (auto& frames : outbox) {
    std::string identity = to_string(frames.front());
    send_frames_to(router_, identity,
                   std::span<zmq::message_t>(frames).subspan(1));
  }
}

}  // namespace monsoon::frontend::test
