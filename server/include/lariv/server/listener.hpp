// lariv/server/listener.hpp — an accept loop that survives EMFILE/ENFILE: it backs off (10 ms
// doubling to 1 s), logs at most once a second, recovers, and never stops re-arming until stop().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

namespace lariv::server {

/// A listener that cannot open, bind or listen: what() names it and its address, e.g.
/// "client listener 127.0.0.1:7411: bind: Address already in use". larivd exits 69 on it.
class listen_error : public std::runtime_error {
public:
    listen_error(std::string name, std::string address, const std::system_error& e)
        : std::runtime_error(name + " listener " + address + ": " + e.what())
        , code_(e.code())
        , name_(std::move(name))
        , address_(std::move(address)) {}
    [[nodiscard]] std::error_code code() const noexcept { return code_; }
    [[nodiscard]] const std::string& name() const noexcept { return name_; }  ///< "client", "TLS", "monitor"
    [[nodiscard]] const std::string& address() const noexcept { return address_; }

private:
    std::error_code code_;
    std::string name_;
    std::string address_;
};

/// "127.0.0.1:7411", "[::1]:7411".
std::string endpoint_text(const asio::ip::tcp::endpoint& ep);

/// The endpoint for `host` (an IP address, or a name: resolved with getaddrinfo, and the first
/// address it returns is used) and `port`. Throws config_error naming `key` and the host when the
/// name does not resolve.
asio::ip::tcp::endpoint resolve_endpoint(std::string_view key, const std::string& host, std::uint16_t port);

class listener : public std::enable_shared_from_this<listener> {
public:
    using on_accept_fn = std::function<void(asio::ip::tcp::socket)>;
    struct options {
        std::chrono::milliseconds backoff_min{10};
        std::chrono::milliseconds backoff_max{1000};
        std::string name = "client";  ///< in log lines and listen_error: "client", "TLS", "monitor"
        /// Where each accepted socket lives: called on the listener's strand before each accept;
        /// empty = the listener's own executor. (larivd's io_model = per_thread: round robin over
        /// the I/O threads' io_contexts.)
        std::function<asio::any_io_executor()> socket_executor;
    };

    /// Binds and listens on `ep` (throws listen_error, naming the listener and `ep`, when it
    /// cannot).
    listener(asio::any_io_executor ex, const asio::ip::tcp::endpoint& ep, on_accept_fn f,
             options o, std::function<void()> on_error = {});
    void start();
    /// Closes the acceptor; pending accepts end. Thread-safe. `then`, if given, runs on the
    /// listener's strand once the acceptor is closed (the listener's strand is FIFO, so it also
    /// runs after any stop() posted earlier).
    void stop(std::function<void()> then = {});
    [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
    /// The bound address and port (the real port when 0 was asked for).
    [[nodiscard]] const asio::ip::tcp::endpoint& endpoint() const noexcept { return endpoint_; }

private:
    void do_accept();
    void on_accept(std::error_code ec, asio::ip::tcp::socket s);

    asio::any_io_executor ex_;  // accepted sockets get this executor, never the listener's strand
    asio::strand<asio::any_io_executor> strand_;
    asio::ip::tcp::acceptor acceptor_;
    asio::steady_timer backoff_timer_;
    on_accept_fn on_accept_;
    std::function<void()> on_error_;
    options opt_;
    std::chrono::milliseconds backoff_{0};
    std::chrono::steady_clock::time_point last_log_{};
    asio::ip::tcp::endpoint endpoint_;
    std::uint16_t port_ = 0;
    bool stopped_ = false;
};

}  // namespace lariv::server
