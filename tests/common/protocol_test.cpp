#include "monsoon/common/protocol.hpp"

#include <catch2/catch.hpp>
#include <msgpack.hpp>

#include "monsoon/common/value.hpp"

using namespace monsoon::protocol;

namespace {

zmq::message_t frame(std::string_view bytes) {
  return zmq::message_t(bytes.data(), bytes.size());
}

std::string_view view(const zmq::message_t& m) {
  return {static_cast<const char*>(m.data()), m.size()};
}

zmq::message_t msgpack_frame(const msgpack::sbuffer& buffer) {
  return zmq::message_t(buffer.data(), buffer.size());
}

// A well-formed SUBMIT whose meta map is built by `write_meta`.
template <typename WriteMeta>
Frames submit_with_meta(WriteMeta write_meta) {
  msgpack::sbuffer buffer;
  msgpack::packer packer(buffer);
  write_meta(packer);
  Frames frames;
  frames.push_back(frame(kSignature));
  frames.push_back(frame("\x02"));
  frames.push_back(frame("echo"));
  frames.push_back(msgpack_frame(buffer));
  frames.push_back(nil_payload());
  return frames;
}

}  // namespace

TEST_CASE("SUBMIT and JOB round-trip with payload untouched") {
  for (Command command : {Command::Submit, Command::Job}) {
    std::string args = monsoon::json_to_msgpack(R"({"x":[1,2,{"y":"z"}]})");
    JobMeta meta{
        .id = 0xFFFF'FFFF'FFFF'FFFFull, .timeout_ms = 1234, .attempt = 3};
    Frames frames = encode_job(command, "db.query", meta, frame(args));
    REQUIRE(frames.size() == 5);
    CHECK(view(frames[0]) == kSignature);
    CHECK(decode_command(frames) == command);

    JobMessage decoded = decode_job(command, frames);
    CHECK(decoded.task == "db.query");
    CHECK(decoded.meta.id == meta.id);
    CHECK(decoded.meta.timeout_ms == 1234);
    CHECK(decoded.meta.attempt == 3);
    CHECK(view(decoded.args) == args);
  }
}

TEST_CASE("DONE and RESULT round-trip, ok and error") {
  for (Command command : {Command::Done, Command::Result}) {
    Frames ok = encode_outcome(command, "echo", OutcomeMeta::success(42),
                               frame("\x93\x01\x02\x03"));
    OutcomeMessage decoded_ok = decode_outcome(command, ok);
    CHECK(decoded_ok.meta.id == 42);
    CHECK(decoded_ok.meta.ok);
    CHECK(decoded_ok.meta.code.empty());
    CHECK(view(decoded_ok.result) == "\x93\x01\x02\x03");

    Frames error = encode_outcome(
        command, "echo",
        OutcomeMeta::failure(7, error_code::kOverloaded, "queue full", 1500),
        nil_payload());
    OutcomeMessage decoded_error = decode_outcome(command, error);
    CHECK_FALSE(decoded_error.meta.ok);
    CHECK(decoded_error.meta.code == "overloaded");
    CHECK(decoded_error.meta.message == "queue full");
    CHECK(decoded_error.meta.retry_after_ms == 1500);
    CHECK(decoded_error.meta.worker.empty());

    OutcomeMeta traced = OutcomeMeta::success(8);
    traced.worker = "w1@host";
    Frames with_worker = encode_outcome(command, "echo", traced, nil_payload());
    CHECK(decode_outcome(command, with_worker).meta.worker == "w1@host");
  }
}

TEST_CASE("READY without 'free' decodes without it") {
  msgpack::sbuffer buffer;
  msgpack::packer packer(buffer);
  packer.pack_map(2);
  packer.pack("tasks");
  packer.pack(std::vector<std::string>{"echo"});
  packer.pack("slots");
  packer.pack(4);
  Frames frames;
  frames.push_back(frame(kSignature));
  frames.push_back(frame("\x01"));
  frames.push_back(msgpack_frame(buffer));
  CHECK_FALSE(decode_ready(frames).free.has_value());
}

TEST_CASE("READY round-trip") {
  WorkerInfo info{.tasks = {"echo", "sleep", "images:resize"},
                  .slots = 8,
                  .free = 3,
                  .name = "w1@host",
                  .pid = 4242,
                  .heartbeat_ms = 1000,
                  .no_retry = {"images:resize"}};
  Frames frames = encode_ready(info);
  WorkerInfo decoded = decode_ready(frames);
  CHECK(decoded.tasks == info.tasks);
  CHECK(decoded.slots == 8);
  CHECK(decoded.free == 3);
  CHECK(decoded.name == "w1@host");
  CHECK(decoded.pid == 4242);
  CHECK(decoded.heartbeat_ms == 1000);
  CHECK(decoded.no_retry == info.no_retry);

  info.no_retry.clear();  // absent, not an empty array
  CHECK(decode_ready(encode_ready(info)).no_retry.empty());
}

TEST_CASE("READY's no_retry lists only tasks it serves") {
  WorkerInfo info{.tasks = {"echo"},
                  .slots = 1,
                  .free = std::nullopt,
                  .name = "w",
                  .pid = 1,
                  .heartbeat_ms = 1000,
                  .no_retry = {"sleep"}};
  CHECK_THROWS_AS(decode_ready(encode_ready(info)), ProtocolError);
  info.no_retry = {"bad name"};
  CHECK_THROWS_AS(decode_ready(encode_ready(info)), ProtocolError);
}

TEST_CASE("control messages have no body") {
  CHECK(decode_command(encode_control(Command::Heartbeat)) ==
        Command::Heartbeat);
  CHECK(decode_command(encode_control(Command::Disconnect)) ==
        Command::Disconnect);
  CHECK_THROWS_AS(encode_control(Command::Submit), std::invalid_argument);
}

TEST_CASE("foreign and malformed frames are rejected") {
  SECTION("empty message") {
    Frames frames;
    CHECK_THROWS_AS(decode_command(frames), ProtocolError);
  }
  SECTION("wrong signature") {
    Frames frames = encode_control(Command::Heartbeat);
    frames[0] = frame("MDPW01");
    CHECK_THROWS_AS(decode_command(frames), ProtocolError);
  }
  SECTION("another protocol version") {
    Frames frames = encode_control(Command::Heartbeat);
    frames[0] = frame(std::string_view("MNS\x02", 4));
    CHECK_THROWS_AS(decode_command(frames), ProtocolError);
  }
  SECTION("unknown command byte") {
    Frames frames = encode_control(Command::Heartbeat);
    frames[1] = frame("\x0b");
    CHECK_THROWS_AS(decode_command(frames), ProtocolError);
  }
  SECTION("command frame of two bytes") {
    Frames frames = encode_control(Command::Heartbeat);
    frames[1] = frame("\x06\x06");
    CHECK_THROWS_AS(decode_command(frames), ProtocolError);
  }
  SECTION("extra frame") {
    Frames frames = encode_control(Command::Heartbeat);
    frames.push_back(frame("x"));
    CHECK_THROWS_AS(decode_command(frames), ProtocolError);
  }
  SECTION("missing frame") {
    Frames frames =
        encode_job(Command::Submit, "echo", {1, 10, 1}, nil_payload());
    frames.pop_back();
    CHECK_THROWS_AS(decode_command(frames), ProtocolError);
  }
  SECTION("the wrong command for the decoder") {
    Frames frames = encode_job(Command::Job, "echo", {1, 10, 1}, nil_payload());
    CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
  }
  SECTION("invalid task names") {
    for (std::string_view bad :
         {std::string_view(""), std::string_view("has space"),
          std::string_view("slash/"), std::string_view("nul\0", 4)}) {
      Frames frames =
          encode_job(Command::Submit, "echo", {1, 10, 1}, nil_payload());
      frames[2] = frame(bad);
      CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
    }
    CHECK_FALSE(is_valid_task_name(std::string(129, 'a')));
    CHECK(is_valid_task_name(std::string(128, 'a')));
  }
  SECTION("meta that is not msgpack") {
    Frames frames =
        encode_job(Command::Submit, "echo", {1, 10, 1}, nil_payload());
    frames[3] = frame("\xc1garbage");
    CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
  }
  SECTION("truncated meta") {
    Frames frames =
        encode_job(Command::Submit, "echo", {1, 10, 1}, nil_payload());
    std::string meta(view(frames[3]));
    frames[3] = frame(meta.substr(0, meta.size() - 1));
    CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
  }
  SECTION("meta with a hostile array length") {
    // map{ "id": array32 of 4 billion elements } in 12 bytes.
    Frames frames =
        encode_job(Command::Submit, "echo", {1, 10, 1}, nil_payload());
    frames[3] = frame(std::string_view("\x81\xa2id\xdd\xff\xff\xff\xff", 9));
    CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
  }
  SECTION("meta that is not a map") {
    Frames frames = submit_with_meta([](auto& p) { p.pack_array(0); });
    CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
  }
  SECTION("meta missing a required key") {
    Frames frames = submit_with_meta([](auto& p) {
      p.pack_map(1);
      p.pack("id");
      p.pack(1);
    });
    CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
  }
  SECTION("meta key of the wrong type or out of range") {
    Frames wrong_type = submit_with_meta([](auto& p) {
      p.pack_map(2);
      p.pack("id");
      p.pack("seven");
      p.pack("timeout_ms");
      p.pack(100);
    });
    CHECK_THROWS_AS(decode_job(Command::Submit, wrong_type), ProtocolError);
    Frames zero_timeout = submit_with_meta([](auto& p) {
      p.pack_map(2);
      p.pack("id");
      p.pack(1);
      p.pack("timeout_ms");
      p.pack(0);
    });
    CHECK_THROWS_AS(decode_job(Command::Submit, zero_timeout), ProtocolError);
    Frames negative_id = submit_with_meta([](auto& p) {
      p.pack_map(2);
      p.pack("id");
      p.pack(-1);
      p.pack("timeout_ms");
      p.pack(100);
    });
    CHECK_THROWS_AS(decode_job(Command::Submit, negative_id), ProtocolError);
  }
  SECTION("meta with a key that is not a string") {
    // Otherwise valid: the integer key would be skipped by the key lookup.
    Frames frames = submit_with_meta([](auto& p) {
      p.pack_map(3);
      p.pack("id");
      p.pack(1);
      p.pack("timeout_ms");
      p.pack(100);
      p.pack(7);
      p.pack("seven");
    });
    CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
    Frames bin_key = submit_with_meta([](auto& p) {
      p.pack_map(3);
      p.pack("id");
      p.pack(1);
      p.pack("timeout_ms");
      p.pack(100);
      p.pack_bin(7);
      p.pack_bin_body("attempt", 7);
      p.pack(2);
    });
    CHECK_THROWS_AS(decode_job(Command::Submit, bin_key), ProtocolError);
  }
  SECTION("meta with a duplicate key") {
    // Which of the two counts would depend on the decoder.
    Frames frames = submit_with_meta([](auto& p) {
      p.pack_map(3);
      p.pack("id");
      p.pack(1);
      p.pack("timeout_ms");
      p.pack(100);
      p.pack("id");
      p.pack(2);
    });
    CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
    Frames unknown_twice = submit_with_meta([](auto& p) {
      p.pack_map(4);
      p.pack("id");
      p.pack(1);
      p.pack("timeout_ms");
      p.pack(100);
      p.pack("future_field");
      p.pack(1);
      p.pack("future_field");
      p.pack(2);
    });
    CHECK_THROWS_AS(decode_job(Command::Submit, unknown_twice), ProtocolError);
    Frames outcome = encode_outcome(Command::Done, "echo",
                                    OutcomeMeta::success(1), nil_payload());
    msgpack::sbuffer buffer;
    msgpack::packer packer(buffer);
    packer.pack_map(3);
    packer.pack("id");
    packer.pack(1);
    packer.pack("status");
    packer.pack("ok");
    packer.pack("status");
    packer.pack("error");
    outcome[3] = msgpack_frame(buffer);
    CHECK_THROWS_AS(decode_outcome(Command::Done, outcome), ProtocolError);
  }
  SECTION("READY info with a duplicate key") {
    msgpack::sbuffer buffer;
    msgpack::packer packer(buffer);
    packer.pack_map(3);
    packer.pack("tasks");
    packer.pack(std::vector<std::string>{"echo"});
    packer.pack("slots");
    packer.pack(1);
    packer.pack("slots");
    packer.pack(4);
    Frames frames = encode_control(Command::Heartbeat);
    frames[1] = frame("\x01");
    frames.push_back(msgpack_frame(buffer));
    CHECK_THROWS_AS(decode_ready(frames), ProtocolError);
  }
  SECTION("keys of maps nested in meta are not constrained") {
    Frames frames = submit_with_meta([](auto& p) {
      p.pack_map(3);
      p.pack("id");
      p.pack(1);
      p.pack("timeout_ms");
      p.pack(100);
      p.pack("future_field");
      p.pack_map(2);
      p.pack(1);
      p.pack("a");
      p.pack(1);
      p.pack("b");
    });
    CHECK(decode_job(Command::Submit, frames).meta.id == 1);
  }
  SECTION("unknown meta keys are ignored, missing attempt defaults to 1") {
    Frames frames = submit_with_meta([](auto& p) {
      p.pack_map(3);
      p.pack("id");
      p.pack(9);
      p.pack("timeout_ms");
      p.pack(100);
      p.pack("future_field");
      p.pack_array(2);
      p.pack(1);
      p.pack(2);
    });
    JobMessage job = decode_job(Command::Submit, frames);
    CHECK(job.meta.id == 9);
    CHECK(job.meta.attempt == 1);
  }
  SECTION("outcome with an unknown status") {
    Frames frames = encode_outcome(Command::Done, "echo",
                                   OutcomeMeta::success(1), nil_payload());
    msgpack::sbuffer buffer;
    msgpack::packer packer(buffer);
    packer.pack_map(2);
    packer.pack("id");
    packer.pack(1);
    packer.pack("status");
    packer.pack("maybe");
    frames[3] = msgpack_frame(buffer);
    CHECK_THROWS_AS(decode_outcome(Command::Done, frames), ProtocolError);
  }
  SECTION("READY with no tasks or zero slots") {
    WorkerInfo info;
    info.slots = 1;
    CHECK_THROWS_AS(decode_ready(encode_ready(info)), ProtocolError);
    info.tasks = {"echo"};
    info.slots = 0;
    CHECK_THROWS_AS(decode_ready(encode_ready(info)), ProtocolError);
  }
  SECTION("READY announcing more free slots than slots") {
    WorkerInfo info;
    info.tasks = {"echo"};
    info.slots = 2;
    info.free = 3;
    CHECK_THROWS_AS(decode_ready(encode_ready(info)), ProtocolError);
  }
  SECTION("READY announcing too many tasks") {
    WorkerInfo info;
    info.tasks.assign(kMaxAnnouncedTasks + 1, "echo");
    info.slots = 1;
    CHECK_THROWS_AS(decode_ready(encode_ready(info)), ProtocolError);
  }
}

TEST_CASE("every truncation of a valid message is rejected or decodes safely") {
  Frames original = encode_job(Command::Submit, "echo", {5, 100, 1},
                               frame(monsoon::json_to_msgpack("[1,2,3]")));
  std::string meta(view(original[3]));
  for (std::size_t length = 0; length < meta.size(); ++length) {
    Frames frames =
        encode_job(Command::Submit, "echo", {5, 100, 1}, nil_payload());
    frames[3] = frame(std::string_view(meta).substr(0, length));
    CHECK_THROWS_AS(decode_job(Command::Submit, frames), ProtocolError);
  }
}

TEST_CASE("1.1 additions round-trip: frame limits, WELCOME and HELLO") {
  WorkerInfo info;
  info.tasks = {"echo"};
  info.slots = 2;
  info.max_message_bytes = 65536;
  CHECK(decode_ready(encode_ready(info)).max_message_bytes == 65536);
  info.max_message_bytes = 0;  // absent, as from a 1.0 worker
  CHECK(decode_ready(encode_ready(info)).max_message_bytes == 0);

  auto job =
      encode_job(Command::Job, "echo", {1, 100, 1, 300'000}, nil_payload());
  CHECK(decode_job(Command::Job, job).meta.max_result_bytes == 300'000);

  Welcome ok;
  ok.max_message_bytes = 1 << 20;
  ok.heartbeat_ms = 250;
  auto frames = encode_welcome(ok);
  CHECK(decode_command(frames) == Command::Welcome);
  Welcome decoded = decode_welcome(frames);
  CHECK(decoded.ok);
  CHECK(decoded.max_message_bytes == 1 << 20);
  CHECK(decoded.heartbeat_ms == 250);

  decoded = decode_welcome(
      encode_welcome(Welcome::refusal("overloaded", "full", 1500)));
  CHECK_FALSE(decoded.ok);
  CHECK(decoded.code == "overloaded");
  CHECK(decoded.message == "full");
  CHECK(decoded.retry_after_ms == 1500);

  Hello hello;
  hello.max_message_bytes = 4096;
  CHECK(decode_hello(encode_hello(hello)).max_message_bytes == 4096);
  CHECK(decode_hello(encode_hello({})).max_message_bytes == 0);
}

TEST_CASE("1.2 additions round-trip: CREDIT and WELCOME's minor") {
  Frames frames = encode_credit({.free = 3});
  CHECK(decode_command(frames) == Command::Credit);
  CHECK(command_name(Command::Credit) == "CREDIT");
  CHECK(decode_credit(frames).free == 3);
  CHECK(decode_credit(encode_credit({})).free == 0);
  CHECK(decode_credit(encode_credit({kMaxSlots})).free == kMaxSlots);

  Welcome welcome;
  welcome.minor = kProtocolMinor;
  CHECK(decode_welcome(encode_welcome(welcome)).minor == kProtocolMinor);
  welcome.minor = 0;  // absent, as from a 1.1 broker
  CHECK(decode_welcome(encode_welcome(welcome)).minor == 0);
  CHECK(error_code::kRefused == "refused");
}

TEST_CASE("CREDIT without a valid 'free' is rejected") {
  auto credit_with = [](auto write_info) {
    msgpack::sbuffer buffer;
    msgpack::packer packer(buffer);
    write_info(packer);
    Frames frames;
    frames.push_back(frame(kSignature));
    frames.push_back(frame("\x0a"));
    frames.push_back(msgpack_frame(buffer));
    return frames;
  };
  auto with_free = [&](auto value) {
    return credit_with([&](auto& p) {
      p.pack_map(1);
      p.pack("free");
      p.pack(value);
    });
  };
  CHECK_THROWS_AS(decode_credit(credit_with([](auto& p) { p.pack_map(0); })),
                  ProtocolError);
  CHECK_THROWS_AS(decode_credit(with_free(-1)), ProtocolError);
  CHECK_THROWS_AS(decode_credit(with_free(kMaxSlots + 1)), ProtocolError);
  CHECK_THROWS_AS(decode_credit(with_free("3")), ProtocolError);
  CHECK(decode_credit(with_free(kMaxSlots)).free == kMaxSlots);

  // An unknown key is ignored; a missing info frame, or another command,
  // is not a CREDIT.
  Frames later = credit_with([](auto& p) {
    p.pack_map(2);
    p.pack("free");
    p.pack(5);
    p.pack("later");
    p.pack(true);
  });
  CHECK(decode_credit(later).free == 5);
  later.pop_back();
  CHECK_THROWS_AS(decode_command(later), ProtocolError);
  CHECK_THROWS_AS(decode_credit(encode_hello({})), ProtocolError);
}

// docs/protocol.md section 2: depth counts nested arrays and maps; a scalar
// is depth 0, [] and {} are 1, [[]] and {"a": [1]} are 2.
TEST_CASE("nesting depth counts containers, not scalars") {
  using monsoon::validate_msgpack;
  using monsoon::ValueError;
  CHECK_NOTHROW(validate_msgpack("\x07", 0));                // 7
  CHECK_THROWS_AS(validate_msgpack("\x90", 0), ValueError);  // []
  CHECK_NOTHROW(validate_msgpack("\x90", 1));
  CHECK_NOTHROW(validate_msgpack("\x91\x90", 2));  // [[]]
  CHECK_THROWS_AS(validate_msgpack("\x91\x90", 1), ValueError);
  const std::string_view map_of_list = "\x81\xa1\x61\x91\x01";  // {"a": [1]}
  CHECK_NOTHROW(validate_msgpack(map_of_list, 2));
  CHECK_THROWS_AS(validate_msgpack(map_of_list, 1), ValueError);

  // args and result: 128 nested arrays pass, 129 do not.
  auto nested = [](std::size_t depth) {
    return std::string(depth, '\x91') + '\xc0';
  };
  CHECK(kMaxValueDepth == 128);
  CHECK_NOTHROW(validate_msgpack(nested(128)));
  CHECK_THROWS_AS(validate_msgpack(nested(129)), ValueError);
  CHECK_NOTHROW(monsoon::json_to_msgpack(std::string(128, '[') + "null" +
                                         std::string(128, ']')));
  CHECK_THROWS_AS(monsoon::json_to_msgpack(std::string(129, '[') + "null" +
                                           std::string(129, ']')),
                  ValueError);

  // meta: the map itself is depth 1, so a value in it nests 31 more.
  auto meta_with_extra = [](std::size_t value_depth) {
    return submit_with_meta([&](auto& p) {
      p.pack_map(3);
      p.pack("id");
      p.pack(1);
      p.pack("timeout_ms");
      p.pack(100);
      p.pack("future_field");
      for (std::size_t i = 0; i < value_depth; ++i) p.pack_array(1);
      p.pack_nil();
    });
  };
  Frames at_limit = meta_with_extra(kMaxMetaDepth - 1);
  CHECK_NOTHROW(decode_job(Command::Submit, at_limit));
  Frames too_deep = meta_with_extra(kMaxMetaDepth);
  CHECK_THROWS_AS(decode_job(Command::Submit, too_deep), ProtocolError);
}

TEST_CASE(
    "1.3 additions round-trip: READY's pools, JOB's queue, CREDIT's pool") {
  WorkerInfo info;
  info.tasks = {"echo", "sleep", "cpu.fib"};
  info.pools = {Pool{{"fast"}, 16, 15}, Pool{{"slow", "cpu.fib"}, 2, {}}};
  info.slots = 18;
  info.free = 17;
  info.name = "w";
  const WorkerInfo decoded = decode_ready(encode_ready(info));
  CHECK(decoded.pools == info.pools);
  CHECK(effective_pools(decoded) == info.pools);

  // Without pools: one pool serving the queue named as each task.
  info.pools.clear();
  info.free.reset();
  CHECK(effective_pools(decode_ready(encode_ready(info))) ==
        std::vector<Pool>{Pool{info.tasks, 18, {}}});

  JobMeta meta{.id = 1, .timeout_ms = 100, .attempt = 1};
  meta.queue = "slow";
  auto job = encode_job(Command::Job, "sleep", meta, nil_payload());
  CHECK(decode_job(Command::Job, job).meta.queue == "slow");
  // A SUBMIT carries no queue: the broker's routing table chooses it.
  auto submit = encode_job(Command::Submit, "sleep", meta, nil_payload());
  CHECK(decode_job(Command::Submit, submit).meta.queue.empty());
  meta.queue.clear();
  auto plain = encode_job(Command::Job, "sleep", meta, nil_payload());
  CHECK(decode_job(Command::Job, plain).meta.queue.empty());

  const Credit credit = decode_credit(encode_credit({.free = 2, .pool = 5}));
  CHECK(credit.free == 2);
  CHECK(credit.pool == 5);
  CHECK(decode_credit(encode_credit({.free = 2})).pool == 0);
}

TEST_CASE("READY with inconsistent or invalid pools is rejected") {
  auto ready_with_pools = [](std::uint32_t slots, auto write_pools) {
    msgpack::sbuffer buffer;
    msgpack::packer packer(buffer);
    packer.pack_map(3);
    packer.pack("tasks");
    packer.pack(std::vector<std::string>{"echo"});
    packer.pack("slots");
    packer.pack(slots);
    packer.pack("pools");
    write_pools(packer);
    Frames frames;
    frames.push_back(frame(kSignature));
    frames.push_back(frame("\x01"));
    frames.push_back(msgpack_frame(buffer));
    return frames;
  };
  using Packer = msgpack::packer<msgpack::sbuffer>;
  auto one_pool = [](std::vector<std::string> queues, std::uint32_t slots) {
    return [=](Packer& p) {
      p.pack_array(1);
      p.pack_map(2);
      p.pack("queues");
      p.pack(queues);
      p.pack("slots");
      p.pack(slots);
    };
  };
  CHECK(
      decode_ready(ready_with_pools(4, one_pool({"a", "b"}, 4))).pools.size() ==
      1);
  // `slots` must be the sum of the pools' slots.
  CHECK_THROWS_AS(decode_ready(ready_with_pools(5, one_pool({"a"}, 4))),
                  ProtocolError);
  CHECK_THROWS_AS(decode_ready(ready_with_pools(4, one_pool({}, 4))),
                  ProtocolError);
  CHECK_THROWS_AS(decode_ready(ready_with_pools(4, one_pool({"a b"}, 4))),
                  ProtocolError);
  CHECK_THROWS_AS(decode_ready(ready_with_pools(0, one_pool({"a"}, 0))),
                  ProtocolError);
  // A queue in two pools.
  CHECK_THROWS_AS(
      decode_ready(ready_with_pools(2,
                                    [](Packer& p) {
                                      p.pack_array(2);
                                      for (int i = 0; i < 2; ++i) {
                                        p.pack_map(2);
                                        p.pack("queues");
                                        p.pack(std::vector<std::string>{"a"});
                                        p.pack("slots");
                                        p.pack(1);
                                      }
                                    })),
      ProtocolError);
  CHECK_THROWS_AS(
      decode_ready(ready_with_pools(1, [](Packer& p) { p.pack_array(0); })),
      ProtocolError);
  // A pool with a duplicate key.
  CHECK_THROWS_AS(
      decode_ready(ready_with_pools(1,
                                    [](Packer& p) {
                                      p.pack_array(1);
                                      p.pack_map(3);
                                      p.pack("queues");
                                      p.pack(std::vector<std::string>{"a"});
                                      p.pack("slots");
                                      p.pack(1);
                                      p.pack("slots");
                                      p.pack(1);
                                    })),
      ProtocolError);
}

TEST_CASE("1.3: DONE names its pool; RESULT never does") {
  auto meta = OutcomeMeta::success(9);
  meta.pool = 3;
  auto done = encode_outcome(Command::Done, "echo", meta, nil_payload());
  CHECK(decode_outcome(Command::Done, done).meta.pool == 3u);
  auto result = encode_outcome(Command::Result, "echo", meta, nil_payload());
  CHECK_FALSE(decode_outcome(Command::Result, result).meta.pool.has_value());
  meta.pool.reset();
  auto plain = encode_outcome(Command::Done, "echo", meta, nil_payload());
  CHECK_FALSE(decode_outcome(Command::Done, plain).meta.pool.has_value());
  meta.pool = static_cast<std::uint32_t>(kMaxPools);  // out of range
  auto bad = encode_outcome(Command::Done, "echo", meta, nil_payload());
  CHECK_THROWS_AS(decode_outcome(Command::Done, bad), ProtocolError);
}
