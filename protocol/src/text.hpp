#pragma once
// Small text helpers shared by the codec's sources (not installed).

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lariv::protocol::detail {

/// ASCII case-insensitive equality.
inline bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
        if (lower(a[i]) != lower(b[i])) {
            return false;
        }
    }
    return true;
}

/// Space or tab: the separators inside a control line.
inline bool is_blank(char c) noexcept {
    return c == ' ' || c == '\t';
}

/// Bytes that may not appear in a control line: C0 controls other than tab, and DEL.
inline bool is_control(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
}

/// Drops leading and trailing blanks.
inline std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && is_blank(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_blank(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

/// Splits off the first blank-separated word of `s` (which must be trimmed at the front).
inline std::string_view next_word(std::string_view& s) noexcept {
    std::size_t i = 0;
    while (i < s.size() && !is_blank(s[i])) {
        ++i;
    }
    const std::string_view word = s.substr(0, i);
    s.remove_prefix(i);
    s = trim(s);
    return word;
}

/// Outcome of parsing a decimal count.
enum class count_status : std::uint8_t { ok, invalid, overflow };

/// Parses 1..20 decimal digits, nothing else. The limit applies to the text, leading zeros
/// included (the grammar's 1*20DIGIT): more than 20 digits, or a value beyond 64 bits, report
/// overflow.
inline count_status parse_count(std::string_view s, std::uint64_t& value) noexcept {
    if (s.empty()) {
        return count_status::invalid;
    }
    for (char c : s) {
        if (c < '0' || c > '9') {
            return count_status::invalid;
        }
    }
    if (s.size() > 20) {
        return count_status::overflow;
    }
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec == std::errc::result_out_of_range) {
        return count_status::overflow;
    }
    return (ec == std::errc{} && ptr == s.data() + s.size()) ? count_status::ok
                                                             : count_status::invalid;
}

}  // namespace lariv::protocol::detail
