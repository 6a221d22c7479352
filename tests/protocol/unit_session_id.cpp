#include "lariv/protocol/session_id.hpp"

#include <unordered_set>

#include <doctest/doctest.h>

#include "helpers.hpp"

using namespace lariv::protocol;
using lariv::protocol::test::id_a;

TEST_CASE("session id fields sit where PROTOCOL.md says") {
    const auto id = session_id::make(0x01020304, 0x05060708, 0x090a0b0c, 0x0d0e0f10);
    CHECK(id.hi == 0x0102030405060708ULL);
    CHECK(id.lo == 0x090a0b0c0d0e0f10ULL);
    CHECK(id.node() == 0x01020304);
    CHECK(id.epoch() == 0x05060708);
    CHECK(id.generation() == 0x090a0b0c);
    CHECK(id.slot() == 0x0d0e0f10);
    CHECK(id.to_string() == "0102030405060708090a0b0c0d0e0f10");
}

TEST_CASE("session id text round-trips and accepts either case") {
    CHECK(session_id::parse(id_a.to_string()) == id_a);
    CHECK(session_id::parse("0102030405060708090A0B0C0D0E0F10") ==
          session_id::make(0x01020304, 0x05060708, 0x090a0b0c, 0x0d0e0f10));
    CHECK(session_id::parse("ffffffffffffffffffffffffffffffff") == session_id{~0ULL, ~0ULL});
    CHECK(session_id::parse("00000000000000000000000000000000") == session_id{});
}

TEST_CASE("session id parse refuses anything but exactly 32 hex digits") {
    CHECK_FALSE(session_id::parse(""));
    CHECK_FALSE(session_id::parse("0102030405060708090a0b0c0d0e0f1"));    // 31
    CHECK_FALSE(session_id::parse("0102030405060708090a0b0c0d0e0f100"));  // 33
    CHECK_FALSE(session_id::parse("0102030405060708090a0b0c0d0e0f1g"));
    CHECK_FALSE(session_id::parse(" 102030405060708090a0b0c0d0e0f10"));
    CHECK_FALSE(session_id::parse("+102030405060708090a0b0c0d0e0f10"));
    CHECK_FALSE(session_id::parse("0x02030405060708090a0b0c0d0e0f10"));
    CHECK_FALSE(
        session_id::parse(std::string_view("0102030405060708\0"
                                           "90a0b0c0d0e0f1",
                                           31)));
}

TEST_CASE("session id canonical bytes are big-endian") {
    const auto id = session_id::make(0x01020304, 0x05060708, 0x090a0b0c, 0x0d0e0f10);
    const auto b = id.to_bytes();
    for (std::size_t i = 0; i < b.size(); ++i) {
        CHECK(std::to_integer<int>(b[i]) == static_cast<int>(i + 1));
    }
    CHECK(session_id::from_bytes(b) == id);
    CHECK(session_id::from_bytes(id_a.to_bytes()) == id_a);
}

TEST_CASE("session ids order by hi then lo and hash apart") {
    CHECK(session_id{1, 0} > session_id{0, ~0ULL});
    CHECK(session_id{0, 1} < session_id{0, 2});
    std::unordered_set<session_id> set;
    for (std::uint32_t slot = 0; slot < 1000; ++slot) {
        set.insert(session_id::make(1, 2, 3, slot));
    }
    CHECK(set.size() == 1000);
}
