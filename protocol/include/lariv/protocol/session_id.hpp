#pragma once
/// \file
/// The 128-bit session id as it travels on the wire (32 hex digits) and its canonical 16-byte form.

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace lariv::protocol {

/// A session id: 128 bits, opaque to clients.
///
/// Layout (documented in PROTOCOL.md; only the server may rely on it):
/// `hi = [node id:32][boot epoch/tag:32]`, `lo = [generation:32][slot:32]` as a lariv::Index;
/// larivd puts the low half through a keyed permutation before giving an id out (section 5).
/// The text form is 32 hex digits, most significant first; the canonical byte form is 16 bytes
/// big-endian. It has the same layout as `lariv::Index`, which the server converts to and from.
/// A plain value: trivially copyable, thread-compatible.
struct session_id {
    std::uint64_t hi = 0;  ///< [node id:32][boot epoch/tag:32]
    std::uint64_t lo = 0;  ///< [generation:32][slot:32]

    /// Number of characters in the text form.
    static constexpr std::size_t text_size = 32;
    /// Number of bytes in the canonical byte form.
    static constexpr std::size_t byte_size = 16;

    /// Builds an id from its four fields.
    [[nodiscard]] static constexpr session_id make(std::uint32_t node,
                                                   std::uint32_t epoch,
                                                   std::uint32_t generation,
                                                   std::uint32_t slot) noexcept {
        return session_id{(std::uint64_t{node} << 32) | epoch,
                          (std::uint64_t{generation} << 32) | slot};
    }

    /// The registry node that issued the id.
    [[nodiscard]] constexpr std::uint32_t node() const noexcept {
        return static_cast<std::uint32_t>(hi >> 32);
    }
    /// The boot epoch (or tag) of the issuing node.
    [[nodiscard]] constexpr std::uint32_t epoch() const noexcept {
        return static_cast<std::uint32_t>(hi);
    }
    /// The slot's generation when the session was registered.
    [[nodiscard]] constexpr std::uint32_t generation() const noexcept {
        return static_cast<std::uint32_t>(lo >> 32);
    }
    /// The registry slot number.
    [[nodiscard]] constexpr std::uint32_t slot() const noexcept {
        return static_cast<std::uint32_t>(lo);
    }

    /// Parses exactly 32 hex digits (upper or lower case); anything else gives nullopt.
    [[nodiscard]] static std::optional<session_id> parse(std::string_view text) noexcept;

    /// Writes the 32 lowercase hex digits to `out` (no terminator).
    void format_to(char* out) const noexcept;

    /// The 32 lowercase hex digits.
    [[nodiscard]] std::string to_string() const;

    /// The canonical 16-byte big-endian form.
    [[nodiscard]] std::array<std::byte, byte_size> to_bytes() const noexcept;

    /// Reads the canonical 16-byte big-endian form.
    [[nodiscard]] static session_id from_bytes(const std::array<std::byte, byte_size>& b) noexcept;

    friend constexpr auto operator<=>(const session_id&, const session_id&) = default;
};

}  // namespace lariv::protocol

/// Hash support so session ids can key unordered containers.
template <>
struct std::hash<lariv::protocol::session_id> {
    std::size_t operator()(const lariv::protocol::session_id& id) const noexcept {
        // splitmix-style mix of both halves; ids are mostly small slot numbers.
        std::uint64_t x = id.hi * 0x9e3779b97f4a7c15ULL ^ id.lo;
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27;
        return static_cast<std::size_t>(x);
    }
};
