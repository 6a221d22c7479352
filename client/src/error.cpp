// Error categories of lariv::client.
#include "lariv/client/error.hpp"

#include <optional>
#include <string>

namespace lariv::client {
namespace {

class protocol_category_impl final : public std::error_category {
public:
    [[nodiscard]] const char* name() const noexcept override { return "lariv"; }
    [[nodiscard]] std::string message(int value) const override {
        for (const auto c : protocol::all_error_codes()) {
            if (protocol::to_number(c) == value) {
                return std::string(protocol::to_string(c));
            }
        }
        return "lariv error " + std::to_string(value);
    }
};

class client_category_impl final : public std::error_category {
public:
    [[nodiscard]] const char* name() const noexcept override { return "lariv.client"; }
    [[nodiscard]] std::string message(int value) const override {
        switch (static_cast<errc>(value)) {
            case errc::not_connected: return "not connected";
            case errc::already_connected: return "already connected";
            case errc::bad_reply: return "the server's reply breaks the protocol";
            case errc::payload_too_large: return "payload over the server's max_payload";
            case errc::bad_address: return "bad server address (expected host:port)";
            case errc::reconnecting: return "reconnecting (the operation was not started)";
        }
        return "lariv.client error " + std::to_string(value);
    }
};

}  // namespace

const std::error_category& protocol_category() noexcept {
    static const protocol_category_impl c;
    return c;
}

const std::error_category& client_category() noexcept {
    static const client_category_impl c;
    return c;
}

std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), client_category()};
}

std::optional<protocol::error_code> protocol_code(const std::error_code& ec) noexcept {
    if (ec.category() != protocol_category()) {
        return std::nullopt;
    }
    for (const auto c : protocol::all_error_codes()) {
        if (protocol::to_number(c) == ec.value()) {
            return c;
        }
    }
    return std::nullopt;
}

}  // namespace lariv::client

namespace lariv::protocol {
std::error_code make_error_code(error_code e) noexcept {
    return {static_cast<int>(to_number(e)), client::protocol_category()};
}
}  // namespace lariv::protocol
