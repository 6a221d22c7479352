#include "lariv/protocol/session_id.hpp"

#include <array>

namespace lariv::protocol {

namespace {

/// Hex digit values by byte; 0xff for a byte that is not a hex digit. parse() ORs every value
/// into one check instead of branching per character (the 32-digit target id of every SEND
/// goes through it: a branch per character was 15% of larivd's routing CPU).
constexpr std::array<std::uint8_t, 256> hex_table = [] {
    std::array<std::uint8_t, 256> t{};
    t.fill(0xff);
    for (int c = 0; c < 10; ++c) {
        t['0' + c] = static_cast<std::uint8_t>(c);
    }
    for (int c = 0; c < 6; ++c) {
        t['a' + c] = static_cast<std::uint8_t>(10 + c);
        t['A' + c] = static_cast<std::uint8_t>(10 + c);
    }
    return t;
}();

}  // namespace

std::optional<session_id> session_id::parse(std::string_view text) noexcept {
    if (text.size() != text_size) {
        return std::nullopt;
    }
    std::uint64_t half[2] = {0, 0};
    unsigned bad = 0;
    for (std::size_t h = 0; h < 2; ++h) {
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < 16; ++i) {
            const std::uint8_t d = hex_table[static_cast<unsigned char>(text[h * 16 + i])];
            bad |= d;
            v = (v << 4) | (d & 0xfU);
        }
        half[h] = v;
    }
    if ((bad & 0xf0U) != 0) {
        return std::nullopt;
    }
    return session_id{half[0], half[1]};
}

void session_id::format_to(char* out) const noexcept {
    static constexpr char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; ++i) {
        out[i] = digits[(hi >> (60 - 4 * i)) & 0xf];
        out[16 + i] = digits[(lo >> (60 - 4 * i)) & 0xf];
    }
}

std::string session_id::to_string() const {
    std::string s(text_size, '0');
    format_to(s.data());
    return s;
}

std::array<std::byte, session_id::byte_size> session_id::to_bytes() const noexcept {
    std::array<std::byte, byte_size> b{};
    for (std::size_t i = 0; i < 8; ++i) {
        b[i] = static_cast<std::byte>(hi >> (56 - 8 * i));
        b[8 + i] = static_cast<std::byte>(lo >> (56 - 8 * i));
    }
    return b;
}

session_id session_id::from_bytes(const std::array<std::byte, byte_size>& b) noexcept {
    session_id id;
    for (std::size_t i = 0; i < 8; ++i) {
        id.hi = (id.hi << 8) | std::to_integer<std::uint64_t>(b[i]);
        id.lo = (id.lo << 8) | std::to_integer<std::uint64_t>(b[8 + i]);
    }
    return id;
}

}  // namespace lariv::protocol
