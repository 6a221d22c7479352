// lariv/server/detail/secret.hpp — the one constant-time comparison of secrets (client auth and
// admin tokens, the cluster token of peer links).
#pragma once

#include <cstddef>
#include <string_view>

#include "lariv/protocol/limits.hpp"

namespace lariv::server::detail {

/// The longest secret a configuration may hold (config.cpp bounds auth_token, admin_token and
/// cluster_token to it).
inline constexpr std::size_t max_secret_size = protocol::max_token_size * 4;

/// Compares in constant time: the loop runs over max_secret_size bytes whatever the inputs, and
/// the bytes and lengths are folded into one difference without an early exit, so the time says
/// nothing about how much of the secret a guess got right.
[[nodiscard]] inline bool same_secret(std::string_view given, std::string_view secret) noexcept {
    std::size_t diff = given.size() ^ secret.size();
    diff |= static_cast<std::size_t>(given.size() > max_secret_size);
    for (std::size_t i = 0; i < max_secret_size; ++i) {
        const auto a = static_cast<unsigned char>(i < given.size() ? given[i] : 0);
        const auto b = static_cast<unsigned char>(i < secret.size() ? secret[i] : 0);
        diff |= static_cast<std::size_t>(a ^ b);
    }
    return diff == 0;
}

}  // namespace lariv::server::detail
