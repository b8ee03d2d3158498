// For Catch2 test cases that hold in both topologies (stack.hpp): runs the
// rest of the test case once with a broker process and once brokerless,
// naming the topology in every failure. Declares `const Topology name`.
#pragma once

#include <catch2/catch.hpp>

#include "stack.hpp"

#define MONSOON_EACH_TOPOLOGY(name)                    \
  const ::monsoon::test::Topology name =               \
      GENERATE(::monsoon::test::Topology::broker,      \
               ::monsoon::test::Topology::brokerless); \
  INFO("topology: " << name)
