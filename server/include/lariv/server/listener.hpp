// lariv/server/listener.hpp — an accept loop that survives EMFILE/ENFILE: it backs off (10 ms
// doubling to 1 s), logs at most once a second, recovers, and never stops re-arming until stop().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

namespace lariv::server {

class listener : public std::enable_shared_from_this<listener> {
public:
    using on_accept_fn = std::function<void(asio::ip::tcp::socket)>;
    struct options {
        std::chrono::milliseconds backoff_min{10};
        std::chrono::milliseconds backoff_max{1000};
    };

    /// Binds and listens on `ep` (throws std::system_error when it cannot).
    listener(asio::any_io_executor ex, const asio::ip::tcp::endpoint& ep, on_accept_fn f,
             options o, std::function<void()> on_error = {});
    void start();
    /// Closes the acceptor; pending accepts end. Thread-safe. `then`, if given, runs on the
    /// listener's strand once the acceptor is closed (the listener's strand is FIFO, so it also
    /// runs after any stop() posted earlier).
    void stop(std::function<void()> then = {});
    [[nodiscard]] std::uint16_t port() const noexcept { return port_; }

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
    std::uint16_t port_ = 0;
    bool stopped_ = false;
};

}  // namespace lariv::server
