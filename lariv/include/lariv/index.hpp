// lariv/index.hpp — the 128-bit index that Lariv::push returns.
//
// Layout (most significant bit first), also the canonical 16-byte big-endian form and the
// 32-hex-digit text form:
//
//   bits 127..96  node        caller-defined (Options::node_id); the registry puts its node id here
//   bits  95..64  tag         caller-defined (Options::tag); the registry puts its boot epoch here
//   bits  63..32  generation  of the slot when the element was pushed; never 0 for an issued index
//   bits  31..0   slot        global slot number = buffer number * buffer capacity + offset
//
// A container stamps its own node and tag on every index it issues and answers lookups only for
// indexes that carry them, so an index from another node or from before a restart (another tag)
// is simply "not found". Clients of a protocol built on it must treat the value as opaque.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace lariv {

/// A 128-bit handle to an element of a Lariv. Trivially copyable value type.
/// Thread-safe as any value type (no shared state).
struct Index {
    std::uint64_t hi = 0;  ///< node (high 32 bits) and tag (low 32 bits)
    std::uint64_t lo = 0;  ///< generation (high 32 bits) and slot (low 32 bits)

    /// Builds an index from its four fields.
    static constexpr Index make(std::uint32_t node,
                                std::uint32_t tag,
                                std::uint32_t generation,
                                std::uint32_t slot) noexcept {
        return Index{(std::uint64_t{node} << 32) | tag, (std::uint64_t{generation} << 32) | slot};
    }

    constexpr std::uint32_t node() const noexcept { return static_cast<std::uint32_t>(hi >> 32); }
    constexpr std::uint32_t tag() const noexcept { return static_cast<std::uint32_t>(hi); }
    constexpr std::uint32_t generation() const noexcept {
        return static_cast<std::uint32_t>(lo >> 32);
    }
    constexpr std::uint32_t slot() const noexcept { return static_cast<std::uint32_t>(lo); }

    /// True for the all-zero index, which no container ever issues (generations start at 1).
    constexpr bool is_null() const noexcept { return hi == 0 && lo == 0; }

    friend constexpr bool operator==(const Index&, const Index&) noexcept = default;
    friend constexpr auto operator<=>(const Index&, const Index&) noexcept = default;

    /// Canonical 16-byte big-endian form.
    constexpr std::array<std::byte, 16> to_bytes() const noexcept {
        std::array<std::byte, 16> out{};
        for (int i = 0; i < 8; ++i) {
            out[static_cast<std::size_t>(i)] = static_cast<std::byte>(hi >> (56 - 8 * i));
            out[static_cast<std::size_t>(8 + i)] = static_cast<std::byte>(lo >> (56 - 8 * i));
        }
        return out;
    }

    /// Inverse of to_bytes().
    static constexpr Index from_bytes(const std::array<std::byte, 16>& in) noexcept {
        Index r;
        for (int i = 0; i < 8; ++i) {
            r.hi = (r.hi << 8) | std::to_integer<std::uint64_t>(in[static_cast<std::size_t>(i)]);
            r.lo = (r.lo << 8) | std::to_integer<std::uint64_t>(in[static_cast<std::size_t>(8 + i)]);
        }
        return r;
    }

    /// 32 lowercase hex digits, the big-endian bytes in order.
    std::string to_string() const {
        static constexpr char digits[] = "0123456789abcdef";
        std::string s(32, '0');
        const auto bytes = to_bytes();
        for (std::size_t i = 0; i < 16; ++i) {
            const auto b = std::to_integer<unsigned>(bytes[i]);
            s[2 * i] = digits[b >> 4];
            s[2 * i + 1] = digits[b & 0xFU];
        }
        return s;
    }

    /// Strict parser for the text form: exactly 32 hex digits (either case), nothing else — no
    /// prefix, sign, separator or whitespace. Returns std::nullopt on anything else.
    static constexpr std::optional<Index> parse(std::string_view text) noexcept {
        if (text.size() != 32) {
            return std::nullopt;
        }
        Index r;
        for (std::size_t i = 0; i < 32; ++i) {
            const char c = text[i];
            std::uint64_t v = 0;
            if (c >= '0' && c <= '9') {
                v = static_cast<std::uint64_t>(c - '0');
            } else if (c >= 'a' && c <= 'f') {
                v = static_cast<std::uint64_t>(c - 'a' + 10);
            } else if (c >= 'A' && c <= 'F') {
                v = static_cast<std::uint64_t>(c - 'A' + 10);
            } else {
                return std::nullopt;
            }
            std::uint64_t& word = i < 16 ? r.hi : r.lo;
            word = (word << 4) | v;
        }
        return r;
    }
};

static_assert(sizeof(Index) == 16);
static_assert(std::is_trivially_copyable_v<Index>);

}  // namespace lariv

template <>
struct std::hash<lariv::Index> {
    std::size_t operator()(const lariv::Index& i) const noexcept {
        // splitmix64 finaliser over both words: slots are dense small numbers, so mix them well.
        std::uint64_t x = i.lo ^ (i.hi * 0x9E3779B97F4A7C15ULL);
        x ^= x >> 30;
        x *= 0xBF58476D1CE4E5B9ULL;
        x ^= x >> 27;
        x *= 0x94D049BB133111EBULL;
        x ^= x >> 31;
        return static_cast<std::size_t>(x);
    }
};
