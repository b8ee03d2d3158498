#include "monsoon/common/protocol.hpp"

#include <algorithm>
#include <msgpack.hpp>

#include "monsoon/common/value.hpp"

namespace monsoon::protocol {
namespace {

// Frames after signature and command, per command (docs/protocol.md section 2).
std::size_t body_frames(Command command) {
  switch (command) {
    case Command::Ready:
    case Command::Welcome:
    case Command::Hello:
    case Command::Credit:
      return 1;
    case Command::Submit:
    case Command::Job:
    case Command::Done:
    case Command::Result:
      return 3;
    case Command::Heartbeat:
    case Command::Disconnect:
      return 0;
  }
  return 0;
}

bool is_known(std::uint8_t byte) {
  return byte >= static_cast<std::uint8_t>(Command::Ready) &&
         byte <= static_cast<std::uint8_t>(Command::Credit);
}

void expect_command(Command expected, std::span<const zmq::message_t> frames) {
  Command actual = decode_command(frames);
  if (actual != expected) {
    throw ProtocolError("expected " + std::string(command_name(expected)) +
                        ", got " + std::string(command_name(actual)));
  }
}

// Keys are strings, each at most once: with a duplicate, which value counts
// would depend on the decoder (docs/protocol.md section 2). `what` names
// the map in the error.
void check_keys(const msgpack::object& map, std::string_view what) {
  std::vector<std::string_view> keys;
  keys.reserve(map.via.map.size);
  for (const auto& kv : std::span(map.via.map.ptr, map.via.map.size)) {
    if (kv.key.type != msgpack::type::STR) {
      throw ProtocolError(std::string(what) +
                          " has a key that is not a string");
    }
    keys.emplace_back(kv.key.via.str.ptr, kv.key.via.str.size);
  }
  std::sort(keys.begin(), keys.end());
  if (std::adjacent_find(keys.begin(), keys.end()) != keys.end()) {
    throw ProtocolError(std::string(what) + " has a duplicate key");
  }
}

// Decodes a meta/info frame into a map whose keys are strings, each at most
// once; the handle owns the memory.
msgpack::object_handle unpack_map(const zmq::message_t& frame) {
  if (frame.size() > kMaxMetaBytes) throw ProtocolError("meta frame too large");
  std::string_view bytes = frame_view(frame);
  // msgpack::unpack allocates every array and map for the length its header
  // claims before reading the elements, so nested headers each claiming
  // thousands of entries made a 96-byte frame cost 8 MB before it was
  // rejected as truncated. Validating first, which allocates nothing, proves
  // every element present: unpacking then costs a small multiple of the
  // frame.
  try {
    validate_msgpack(bytes, kMaxMetaDepth);
  } catch (const ValueError& e) {
    throw ProtocolError(std::string("undecodable meta: ") + e.what());
  }
  msgpack::object_handle handle;
  try {
    handle = msgpack::unpack(bytes.data(), bytes.size());
  } catch (const std::exception& e) {
    throw ProtocolError(std::string("undecodable meta: ") + e.what());
  }
  const msgpack::object& map = handle.get();
  if (map.type != msgpack::type::MAP) throw ProtocolError("meta is not a map");
  check_keys(map, "meta");
  return handle;
}

const msgpack::object* find_key(const msgpack::object& map,
                                std::string_view key) {
  for (const auto& kv : std::span(map.via.map.ptr, map.via.map.size)) {
    // unpack_map checked that every key is a string.
    if (std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key) {
      return &kv.val;
    }
  }
  return nullptr;
}

std::uint64_t get_uint(const msgpack::object& map, std::string_view key,
                       std::uint64_t min, std::uint64_t max,
                       std::optional<std::uint64_t> fallback = std::nullopt) {
  const msgpack::object* value = find_key(map, key);
  if (value == nullptr) {
    if (fallback) return *fallback;
    throw ProtocolError("missing key '" + std::string(key) + "'");
  }
  if (value->type != msgpack::type::POSITIVE_INTEGER || value->via.u64 < min ||
      value->via.u64 > max) {
    throw ProtocolError("key '" + std::string(key) +
                        "' is not an integer in range");
  }
  return value->via.u64;
}

std::string get_string(const msgpack::object& map, std::string_view key,
                       bool required) {
  const msgpack::object* value = find_key(map, key);
  if (value == nullptr) {
    if (required) throw ProtocolError("missing key '" + std::string(key) + "'");
    return {};
  }
  if (value->type != msgpack::type::STR) {
    throw ProtocolError("key '" + std::string(key) + "' is not a string");
  }
  return {value->via.str.ptr, value->via.str.size};
}

std::string decode_task(const zmq::message_t& frame) {
  std::string_view task = frame_view(frame);
  if (!is_valid_task_name(task)) throw ProtocolError("invalid task name");
  return std::string(task);
}

zmq::message_t to_message(const msgpack::sbuffer& buffer) {
  return zmq::message_t(buffer.data(), buffer.size());
}

Frames header(Command command, std::size_t body) {
  Frames frames;
  frames.reserve(2 + body);
  frames.emplace_back(kSignature.data(), kSignature.size());
  auto byte = static_cast<std::uint8_t>(command);
  frames.emplace_back(&byte, 1);
  return frames;
}

// READY, WELCOME, HELLO and CREDIT: the header and one info map.
Frames info_message(Command command, const msgpack::sbuffer& info) {
  Frames frames = header(command, 1);
  frames.push_back(to_message(info));
  return frames;
}

using Packer = msgpack::packer<msgpack::sbuffer>;

// Optional integer keys are written only when set (non-zero).
void pack_if_set(Packer& packer, std::string_view key, std::uint64_t value) {
  if (value == 0) return;
  packer.pack(key);
  packer.pack(value);
}

// "slots" and, when set, "free": READY's and each of its pools'.
void pack_slots(Packer& packer, std::uint32_t slots,
                std::optional<std::uint32_t> free) {
  packer.pack("slots");
  packer.pack(slots);
  if (free) {
    packer.pack("free");
    packer.pack(*free);
  }
}

// The status keys shared by DONE, RESULT and WELCOME (OutcomeMeta and
// Welcome): "status", and with "error" also "code", "message" and, when
// set, "retry_after_ms".
template <typename Status>
std::uint32_t status_keys(const Status& status) {
  return status.ok ? 1 : 3 + (status.retry_after_ms > 0 ? 1 : 0);
}

template <typename Status>
void pack_status(Packer& packer, const Status& status) {
  packer.pack("status");
  packer.pack(status.ok ? "ok" : "error");
  if (status.ok) return;
  packer.pack("code");
  packer.pack(status.code);
  packer.pack("message");
  packer.pack(status.message);
  pack_if_set(packer, "retry_after_ms", status.retry_after_ms);
}

template <typename Status>
void read_status(const msgpack::object& map, Status& status) {
  const std::string word = get_string(map, "status", true);
  if (word == "ok") {
    status.ok = true;
  } else if (word == "error") {
    status.ok = false;
    status.code = get_string(map, "code", true);
    status.message = get_string(map, "message", true);
    status.retry_after_ms = static_cast<std::uint32_t>(
        get_uint(map, "retry_after_ms", 0, UINT32_MAX, 0));
  } else {
    throw ProtocolError("status is neither 'ok' nor 'error'");
  }
}

}  // namespace

std::string_view command_name(Command command) noexcept {
  switch (command) {
    case Command::Ready:
      return "READY";
    case Command::Submit:
      return "SUBMIT";
    case Command::Job:
      return "JOB";
    case Command::Done:
      return "DONE";
    case Command::Result:
      return "RESULT";
    case Command::Heartbeat:
      return "HEARTBEAT";
    case Command::Disconnect:
      return "DISCONNECT";
    case Command::Welcome:
      return "WELCOME";
    case Command::Hello:
      return "HELLO";
    case Command::Credit:
      return "CREDIT";
  }
  return "UNKNOWN";
}

bool is_valid_task_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxTaskNameBytes) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
              c == '-';
    if (!ok) return false;
  }
  return true;
}

Command decode_command(std::span<const zmq::message_t> frames) {
  if (frames.size() < 2) throw ProtocolError("fewer than 2 frames");
  if (frame_view(frames[0]) != kSignature) {
    throw ProtocolError("bad signature or protocol version");
  }
  if (frames[1].size() != 1) throw ProtocolError("command frame is not 1 byte");
  auto byte = *static_cast<const std::uint8_t*>(frames[1].data());
  if (!is_known(byte)) throw ProtocolError("unknown command");
  auto command = static_cast<Command>(byte);
  if (frames.size() != 2 + body_frames(command)) {
    throw ProtocolError("wrong frame count for " +
                        std::string(command_name(command)));
  }
  return command;
}

JobMessage decode_job(Command expected, std::span<zmq::message_t> frames) {
  if (expected != Command::Submit && expected != Command::Job) {
    throw std::invalid_argument("decode_job: expected SUBMIT or JOB");
  }
  expect_command(expected, frames);
  JobMessage job;
  job.task = decode_task(frames[2]);
  auto handle = unpack_map(frames[3]);
  const msgpack::object& meta = handle.get();
  job.meta.id = get_uint(meta, "id", 0, UINT64_MAX);
  job.meta.timeout_ms = static_cast<std::uint32_t>(
      get_uint(meta, "timeout_ms", 1, kMaxTimeoutMs));
  job.meta.attempt = static_cast<std::uint32_t>(
      get_uint(meta, "attempt", 1, UINT32_MAX,
               expected == Command::Submit ? std::optional<std::uint64_t>(1)
                                           : std::nullopt));
  job.meta.max_result_bytes =
      get_uint(meta, "max_result_bytes", 1, UINT64_MAX, 0);
  if (expected == Command::Job) {
    job.meta.queue = get_string(meta, "queue", false);
    if (find_key(meta, "queue") != nullptr &&
        !is_valid_task_name(job.meta.queue)) {
      throw ProtocolError("invalid queue name");
    }
  }
  job.args = std::move(frames[4]);
  return job;
}

OutcomeMessage decode_outcome(Command expected,
                              std::span<zmq::message_t> frames) {
  if (expected != Command::Done && expected != Command::Result) {
    throw std::invalid_argument("decode_outcome: expected DONE or RESULT");
  }
  expect_command(expected, frames);
  OutcomeMessage outcome;
  outcome.task = decode_task(frames[2]);
  auto handle = unpack_map(frames[3]);
  const msgpack::object& meta = handle.get();
  outcome.meta.id = get_uint(meta, "id", 0, UINT64_MAX);
  read_status(meta, outcome.meta);
  outcome.meta.worker = get_string(meta, "worker", false);
  if (expected == Command::Done && find_key(meta, "pool") != nullptr) {
    outcome.meta.pool =
        static_cast<std::uint32_t>(get_uint(meta, "pool", 0, kMaxPools - 1));
  }
  outcome.result = std::move(frames[4]);
  return outcome;
}

namespace {

// An array of `min_count` to kMaxAnnouncedTasks valid task names.
std::vector<std::string> task_names(const msgpack::object& array,
                                    const char* key, std::size_t min_count) {
  if (array.type != msgpack::type::ARRAY || array.via.array.size < min_count ||
      array.via.array.size > kMaxAnnouncedTasks) {
    throw ProtocolError(std::string("'") + key + "' is not an array of " +
                        std::to_string(min_count) + " to " +
                        std::to_string(kMaxAnnouncedTasks) + " names");
  }
  std::vector<std::string> names;
  names.reserve(array.via.array.size);
  for (const auto& task :
       std::span(array.via.array.ptr, array.via.array.size)) {
    if (task.type != msgpack::type::STR) {
      throw ProtocolError(std::string("'") + key + "' holds a non-string");
    }
    std::string_view name(task.via.str.ptr, task.via.str.size);
    if (!is_valid_task_name(name)) throw ProtocolError("invalid task name");
    names.emplace_back(name);
  }
  return names;
}

// READY's `pools` (since 1.3): 1 to kMaxPools maps, each queue in one pool.
std::vector<Pool> decode_pools(const msgpack::object& array) {
  if (array.type != msgpack::type::ARRAY || array.via.array.size < 1 ||
      array.via.array.size > kMaxPools) {
    throw ProtocolError("'pools' is not an array of 1 to " +
                        std::to_string(kMaxPools) + " maps");
  }
  std::vector<Pool> pools;
  std::vector<std::string_view> queues;
  for (const auto& entry :
       std::span(array.via.array.ptr, array.via.array.size)) {
    if (entry.type != msgpack::type::MAP) {
      throw ProtocolError("'pools' holds a value that is not a map");
    }
    check_keys(entry, "a pool");
    Pool pool;
    const msgpack::object* names = find_key(entry, "queues");
    if (names == nullptr) throw ProtocolError("a pool has no 'queues'");
    pool.queues = task_names(*names, "queues", 1);
    pool.slots =
        static_cast<std::uint32_t>(get_uint(entry, "slots", 1, kMaxSlots));
    if (find_key(entry, "free") != nullptr) {
      pool.free =
          static_cast<std::uint32_t>(get_uint(entry, "free", 0, pool.slots));
    }
    queues.insert(queues.end(), pool.queues.begin(), pool.queues.end());
    pools.push_back(std::move(pool));
  }
  std::sort(queues.begin(), queues.end());
  if (std::adjacent_find(queues.begin(), queues.end()) != queues.end()) {
    throw ProtocolError("a queue is named twice in 'pools'");
  }
  return pools;
}

}  // namespace

std::vector<Pool> effective_pools(const WorkerInfo& info) {
  if (!info.pools.empty()) return info.pools;
  return {Pool{info.tasks, info.slots, info.free}};
}

WorkerInfo decode_ready(std::span<const zmq::message_t> frames) {
  expect_command(Command::Ready, frames);
  auto handle = unpack_map(frames[2]);
  const msgpack::object& info = handle.get();
  WorkerInfo worker;
  const msgpack::object* tasks = find_key(info, "tasks");
  if (tasks == nullptr) {
    throw ProtocolError("'tasks' is not an array of 1 to " +
                        std::to_string(kMaxAnnouncedTasks) + " names");
  }
  worker.tasks = task_names(*tasks, "tasks", 1);
  if (const msgpack::object* no_retry = find_key(info, "no_retry")) {
    worker.no_retry = task_names(*no_retry, "no_retry", 0);
    for (const auto& task : worker.no_retry) {
      if (std::find(worker.tasks.begin(), worker.tasks.end(), task) ==
          worker.tasks.end()) {
        throw ProtocolError("'no_retry' names a task not in 'tasks'");
      }
    }
  }
  worker.slots =
      static_cast<std::uint32_t>(get_uint(info, "slots", 1, kMaxSlots));
  if (find_key(info, "free") != nullptr) {
    worker.free =
        static_cast<std::uint32_t>(get_uint(info, "free", 0, worker.slots));
  }
  worker.name = get_string(info, "name", false);
  worker.pid =
      static_cast<std::uint32_t>(get_uint(info, "pid", 0, UINT32_MAX, 0));
  worker.heartbeat_ms = static_cast<std::uint32_t>(
      get_uint(info, "heartbeat_ms", 0, UINT32_MAX, 0));
  worker.max_message_bytes =
      get_uint(info, "max_message_bytes", 1, UINT64_MAX, 0);
  if (const msgpack::object* pools = find_key(info, "pools")) {
    worker.pools = decode_pools(*pools);
    std::uint64_t slots = 0;
    std::uint64_t free = 0;
    for (const auto& pool : worker.pools) {
      slots += pool.slots;
      free += pool.free.value_or(pool.slots);
    }
    if (slots != worker.slots) {
      throw ProtocolError("'slots' is not the sum of the pools' slots");
    }
    if (worker.free && *worker.free != free) {
      throw ProtocolError("'free' is not the sum of the pools' free slots");
    }
  }
  return worker;
}

Welcome decode_welcome(std::span<const zmq::message_t> frames) {
  expect_command(Command::Welcome, frames);
  auto handle = unpack_map(frames[2]);
  const msgpack::object& info = handle.get();
  Welcome welcome;
  read_status(info, welcome);
  welcome.max_message_bytes =
      get_uint(info, "max_message_bytes", 1, UINT64_MAX, 0);
  welcome.heartbeat_ms = static_cast<std::uint32_t>(
      get_uint(info, "heartbeat_ms", 0, UINT32_MAX, 0));
  welcome.minor =
      static_cast<std::uint32_t>(get_uint(info, "minor", 0, UINT32_MAX, 0));
  return welcome;
}

Hello decode_hello(std::span<const zmq::message_t> frames) {
  expect_command(Command::Hello, frames);
  auto handle = unpack_map(frames[2]);
  Hello hello;
  hello.max_message_bytes =
      get_uint(handle.get(), "max_message_bytes", 1, UINT64_MAX, 0);
  return hello;
}

Credit decode_credit(std::span<const zmq::message_t> frames) {
  expect_command(Command::Credit, frames);
  auto handle = unpack_map(frames[2]);
  Credit credit;
  credit.free =
      static_cast<std::uint32_t>(get_uint(handle.get(), "free", 0, kMaxSlots));
  credit.pool = static_cast<std::uint32_t>(
      get_uint(handle.get(), "pool", 0, kMaxPools - 1, 0));
  return credit;
}

Frames encode_job(Command command, std::string_view task, const JobMeta& meta,
                  zmq::message_t args) {
  if (command != Command::Submit && command != Command::Job) {
    throw std::invalid_argument("encode_job: SUBMIT or JOB only");
  }
  msgpack::sbuffer buffer;
  msgpack::packer packer(buffer);
  const bool with_queue = command == Command::Job && !meta.queue.empty();
  packer.pack_map(3 + (meta.max_result_bytes > 0 ? 1 : 0) +
                  (with_queue ? 1 : 0));
  packer.pack("id");
  packer.pack(meta.id);
  packer.pack("timeout_ms");
  packer.pack(meta.timeout_ms);
  packer.pack("attempt");
  packer.pack(meta.attempt);
  pack_if_set(packer, "max_result_bytes", meta.max_result_bytes);
  if (with_queue) {
    packer.pack("queue");
    packer.pack(meta.queue);
  }
  Frames frames = header(command, 3);
  frames.emplace_back(task.data(), task.size());
  frames.push_back(to_message(buffer));
  frames.push_back(std::move(args));
  return frames;
}

Frames encode_outcome(Command command, std::string_view task,
                      const OutcomeMeta& meta, zmq::message_t result) {
  if (command != Command::Done && command != Command::Result) {
    throw std::invalid_argument("encode_outcome: DONE or RESULT only");
  }
  msgpack::sbuffer buffer;
  msgpack::packer packer(buffer);
  const bool with_worker = !meta.worker.empty();
  const bool with_pool = command == Command::Done && meta.pool.has_value();
  packer.pack_map(1 + status_keys(meta) + (with_worker ? 1 : 0) +
                  (with_pool ? 1 : 0));
  packer.pack("id");
  packer.pack(meta.id);
  pack_status(packer, meta);
  if (with_worker) {
    packer.pack("worker");
    packer.pack(meta.worker);
  }
  if (with_pool) {
    packer.pack("pool");
    packer.pack(*meta.pool);
  }
  Frames frames = header(command, 3);
  frames.emplace_back(task.data(), task.size());
  frames.push_back(to_message(buffer));
  frames.push_back(std::move(result));
  return frames;
}

Frames encode_ready(const WorkerInfo& info) {
  msgpack::sbuffer buffer;
  msgpack::packer packer(buffer);
  packer.pack_map(5 + (info.free ? 1 : 0) + (info.no_retry.empty() ? 0 : 1) +
                  (info.max_message_bytes > 0 ? 1 : 0) +
                  (info.pools.empty() ? 0 : 1));
  packer.pack("tasks");
  packer.pack(info.tasks);
  pack_slots(packer, info.slots, info.free);
  packer.pack("name");
  packer.pack(info.name);
  packer.pack("pid");
  packer.pack(info.pid);
  packer.pack("heartbeat_ms");
  packer.pack(info.heartbeat_ms);
  if (!info.no_retry.empty()) {
    packer.pack("no_retry");
    packer.pack(info.no_retry);
  }
  pack_if_set(packer, "max_message_bytes", info.max_message_bytes);
  if (!info.pools.empty()) {
    packer.pack("pools");
    packer.pack_array(static_cast<std::uint32_t>(info.pools.size()));
    for (const auto& pool : info.pools) {
      packer.pack_map(2 + (pool.free ? 1 : 0));
      packer.pack("queues");
      packer.pack(pool.queues);
      pack_slots(packer, pool.slots, pool.free);
    }
  }
  return info_message(Command::Ready, buffer);
}

Frames encode_welcome(const Welcome& welcome) {
  msgpack::sbuffer buffer;
  msgpack::packer packer(buffer);
  packer.pack_map(
      status_keys(welcome) + (welcome.max_message_bytes > 0 ? 1 : 0) +
      (welcome.heartbeat_ms > 0 ? 1 : 0) + (welcome.minor > 0 ? 1 : 0));
  pack_status(packer, welcome);
  pack_if_set(packer, "max_message_bytes", welcome.max_message_bytes);
  pack_if_set(packer, "heartbeat_ms", welcome.heartbeat_ms);
  pack_if_set(packer, "minor", welcome.minor);
  return info_message(Command::Welcome, buffer);
}

Frames encode_hello(const Hello& hello) {
  msgpack::sbuffer buffer;
  msgpack::packer packer(buffer);
  packer.pack_map(hello.max_message_bytes > 0 ? 1 : 0);
  pack_if_set(packer, "max_message_bytes", hello.max_message_bytes);
  return info_message(Command::Hello, buffer);
}

Frames encode_credit(const Credit& credit) {
  msgpack::sbuffer buffer;
  msgpack::packer packer(buffer);
  packer.pack_map(1 + (credit.pool > 0 ? 1 : 0));
  packer.pack("free");
  packer.pack(credit.free);
  pack_if_set(packer, "pool", credit.pool);
  return info_message(Command::Credit, buffer);
}

Frames encode_control(Command command) {
  if (command != Command::Heartbeat && command != Command::Disconnect) {
    throw std::invalid_argument("encode_control: HEARTBEAT or DISCONNECT only");
  }
  return header(command, 0);
}

zmq::message_t nil_payload() {
  return zmq::message_t(kMsgpackNil.data(), kMsgpackNil.size());
}

}  // namespace monsoon::protocol
