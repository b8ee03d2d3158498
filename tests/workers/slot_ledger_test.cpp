#include "monsoon/workers/slot_ledger.hpp"

#include <catch2/catch.hpp>

using monsoon::workers::SlotLedger;
using Grants = std::vector<std::pair<std::size_t, std::uint32_t>>;

TEST_CASE("a ledger needs a slot and a broker") {
  CHECK_THROWS_AS(SlotLedger(0, 1), std::invalid_argument);
  CHECK_THROWS_AS(SlotLedger(1, 0), std::invalid_argument);
  SlotLedger ledger(3, 2);
  CHECK(ledger.slots() == 3);
  CHECK(ledger.held() == 0);
  CHECK(ledger.free() == 3);
  CHECK_THROWS_AS((void)ledger.try_take(2), std::out_of_range);
  CHECK_THROWS_AS(ledger.release(0), std::logic_error);
  REQUIRE(ledger.try_take(0));
  CHECK_THROWS_AS(ledger.release(2), std::out_of_range);
  CHECK(ledger.held() == 1);
}

TEST_CASE("jobs from any broker take slots until none is free") {
  SlotLedger ledger(2, 2);
  CHECK(ledger.try_take(0));
  CHECK(ledger.try_take(1));
  CHECK(ledger.held() == 2);
  CHECK(ledger.free() == 0);
  CHECK_FALSE(ledger.try_take(1));
  CHECK_FALSE(ledger.try_take(0));
  CHECK(ledger.held() == 2);  // a refused job holds nothing
  CHECK(ledger.starved(0));
  CHECK(ledger.starved(1));
}

TEST_CASE("a broker never refused is granted nothing") {
  SlotLedger ledger(2, 2);
  CHECK(ledger.try_take(0));
  CHECK(ledger.try_take(0));
  ledger.release(0);
  CHECK(ledger.take_credit_grants().empty());
  CHECK_FALSE(ledger.starved(0));
  CHECK_FALSE(ledger.starved(1));
}

TEST_CASE("a refused broker is granted the free slots after each release") {
  SlotLedger ledger(3, 3);
  for (int i = 0; i < 3; ++i) REQUIRE(ledger.try_take(0));
  CHECK_FALSE(ledger.try_take(1));
  CHECK(ledger.take_credit_grants().empty());  // no release yet

  ledger.release(0);
  CHECK(ledger.take_credit_grants() == Grants{{1, 1}});
  CHECK(ledger.take_credit_grants().empty());  // one grant per release
  CHECK(ledger.starved(1));

  // Its grant capped that broker's credit at 1: more freed slots are
  // granted again, or they would stay idle for it.
  ledger.release(0);
  CHECK(ledger.take_credit_grants() == Grants{{1, 2}});
  CHECK(ledger.starved(1));

  // Idle: the grant is every slot, and the mark goes.
  ledger.release(0);
  CHECK(ledger.take_credit_grants() == Grants{{1, 3}});
  CHECK_FALSE(ledger.starved(1));
  CHECK_FALSE(ledger.starved(0));
  CHECK_FALSE(ledger.starved(2));
  CHECK(ledger.free() == 3);
}

TEST_CASE("every starved broker is granted, in broker order") {
  SlotLedger ledger(1, 3);
  REQUIRE(ledger.try_take(1));
  CHECK_FALSE(ledger.try_take(2));
  CHECK_FALSE(ledger.try_take(0));
  CHECK_FALSE(ledger.try_take(2));  // marked once
  ledger.release(1);
  CHECK(ledger.take_credit_grants() == Grants{{0, 1}, {2, 1}});
}

TEST_CASE(
    "a DONE stands for a CREDIT to its own broker until the worker idles") {
  SlotLedger ledger(3, 2);
  REQUIRE(ledger.try_take(0));
  REQUIRE(ledger.try_take(1));
  REQUIRE(ledger.try_take(1));
  CHECK_FALSE(ledger.try_take(0));
  CHECK_FALSE(ledger.try_take(1));

  // Broker 1's DONE returns its credit: only broker 0 needs a CREDIT.
  ledger.release(1);
  CHECK(ledger.take_credit_grants() == Grants{{0, 1}});
  ledger.release(0);
  CHECK(ledger.take_credit_grants() == Grants{{1, 2}});
  CHECK(ledger.starved(0));
  CHECK(ledger.starved(1));

  // Idle: both are granted every slot, their own DONE or not.
  ledger.release(1);
  CHECK(ledger.take_credit_grants() == Grants{{0, 3}, {1, 3}});
  CHECK_FALSE(ledger.starved(0));
  CHECK_FALSE(ledger.starved(1));
}

TEST_CASE("several releases before the grants leave out every DONE's broker") {
  SlotLedger ledger(4, 3);
  for (std::size_t broker = 0; broker < 3; ++broker) {
    REQUIRE(ledger.try_take(broker));
  }
  REQUIRE(ledger.try_take(0));
  for (std::size_t broker = 0; broker < 3; ++broker) {
    CHECK_FALSE(ledger.try_take(broker));
  }
  ledger.release(0);
  ledger.release(1);
  CHECK(ledger.take_credit_grants() == Grants{{2, 2}});
  ledger.release(2);
  CHECK(ledger.take_credit_grants() == Grants{{0, 3}, {1, 3}});
}

TEST_CASE("a slot taken again before the grants leaves nothing to grant") {
  SlotLedger ledger(1, 2);
  REQUIRE(ledger.try_take(0));
  CHECK_FALSE(ledger.try_take(1));
  ledger.release(0);
  REQUIRE(ledger.try_take(0));  // before the worker looked for grants
  CHECK(ledger.take_credit_grants().empty());
  CHECK(ledger.starved(1));  // still owed a grant: the next release
  ledger.release(0);
  CHECK(ledger.take_credit_grants() == Grants{{1, 1}});
}

TEST_CASE("held never exceeds slots, whatever the order of events") {
  SlotLedger ledger(4, 3);
  std::vector<std::size_t> running;  // the broker of each held job
  std::uint64_t state = 12345;
  auto next = [&state] {  // a small LCG: deterministic, no dependency
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  for (int step = 0; step < 10'000; ++step) {
    if (next() % 3 != 0) {
      const std::size_t broker = next() % 3;
      if (ledger.try_take(broker)) running.push_back(broker);
    } else if (!running.empty()) {
      const std::size_t job = next() % running.size();
      ledger.release(running[job]);
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(job));
      for (const auto& [broker, free] : ledger.take_credit_grants()) {
        REQUIRE(broker < 3);
        REQUIRE(free >= 1);
        REQUIRE(free == ledger.free());
      }
    }
    REQUIRE(ledger.held() == running.size());
    REQUIRE(ledger.held() <= ledger.slots());
  }
}
