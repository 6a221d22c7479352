// Index: layout, byte and text forms, strict parsing, hashing.
#include "lariv/index.hpp"

#include <doctest/doctest.h>

#include <unordered_set>

using lariv::Index;

TEST_SUITE("unit") {
TEST_CASE("index fields land where the layout says") {
    const Index i = Index::make(0x01020304, 0x05060708, 0x090A0B0C, 0x0D0E0F10);
    CHECK(i.node() == 0x01020304);
    CHECK(i.tag() == 0x05060708);
    CHECK(i.generation() == 0x090A0B0C);
    CHECK(i.slot() == 0x0D0E0F10);
    CHECK(i.hi == 0x0102030405060708ULL);
    CHECK(i.lo == 0x090A0B0C0D0E0F10ULL);
    CHECK(i.to_string() == "0102030405060708090a0b0c0d0e0f10");
    CHECK_FALSE(i.is_null());
    CHECK(Index{}.is_null());
}

TEST_CASE("canonical bytes are big-endian and round-trip") {
    const Index i = Index::make(0xDEADBEEF, 1, 2, 0xFFFFFFFF);
    const auto b = i.to_bytes();
    CHECK(b[0] == std::byte{0xDE});
    CHECK(b[3] == std::byte{0xEF});
    CHECK(b[7] == std::byte{0x01});
    CHECK(b[11] == std::byte{0x02});
    CHECK(b[15] == std::byte{0xFF});
    CHECK(Index::from_bytes(b) == i);
}

TEST_CASE("text form round-trips and the parser is strict") {
    const Index i = Index::make(7, 42, 3, 99);
    const std::string s = i.to_string();
    CHECK(s.size() == 32);
    REQUIRE(Index::parse(s).has_value());
    CHECK(*Index::parse(s) == i);
    CHECK(Index::parse("0000000700000029000000030000006A") == Index::make(7, 41, 3, 106));
    CHECK_FALSE(Index::parse("").has_value());
    CHECK_FALSE(Index::parse(s.substr(1)).has_value());           // 31 digits
    CHECK_FALSE(Index::parse(s + "0").has_value());               // 33 digits
    CHECK_FALSE(Index::parse("0x" + s.substr(2)).has_value());    // prefix
    CHECK_FALSE(Index::parse(" " + s.substr(1)).has_value());     // whitespace
    CHECK_FALSE(Index::parse(s.substr(0, 31) + "g").has_value()); // not hex
    CHECK_FALSE(Index::parse(s.substr(0, 31) + "-").has_value());
    CHECK_FALSE(Index::parse(std::string_view("0000000000000000\0" "000000000000000", 32)).has_value());
}

TEST_CASE("indexes compare, order and hash by value") {
    const Index a = Index::make(1, 0, 1, 5);
    const Index b = Index::make(1, 0, 2, 5);  // same slot, later generation
    CHECK(a != b);
    CHECK(a < b);
    std::unordered_set<Index> set{a, b, a};
    CHECK(set.size() == 2);
    // Dense slots and generations must not collide in the hash's low bits.
    std::unordered_set<std::size_t> hashes;
    for (std::uint32_t s = 0; s < 4096; ++s) {
        hashes.insert(std::hash<Index>{}(Index::make(0, 0, 1, s)) & 0xFFFFF);
    }
    CHECK(hashes.size() > 4000);
}
}
