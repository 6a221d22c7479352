#include "lariv/protocol/session_id.hpp"

namespace lariv::protocol {

namespace {

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

}  // namespace

std::optional<session_id> session_id::parse(std::string_view text) noexcept {
    if (text.size() != text_size) {
        return std::nullopt;
    }
    std::uint64_t half[2] = {0, 0};
    for (std::size_t i = 0; i < text_size; ++i) {
        const int v = hex_value(text[i]);
        if (v < 0) {
            return std::nullopt;
        }
        half[i / 16] = (half[i / 16] << 4) | static_cast<std::uint64_t>(v);
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
