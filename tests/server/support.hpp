// tests/server/support.hpp — an in-process server for the integration tests, time scaling for
// sanitizer builds, polling and /proc helpers.
#pragma once

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "client.hpp"
#include "lariv/server/config.hpp"
#include "lariv/server/registry.hpp"
#include "lariv/server/server.hpp"
#include "lariv/server/session.hpp"

#ifndef LARIV_TIME_SCALE
#define LARIV_TIME_SCALE 1
#endif

namespace lariv::test {

namespace srv = lariv::server;

/// Slack multiplier: 5 under TSan, 2 under ASan, 1 otherwise (RELIABILITY.md 5).
inline constexpr int time_scale = LARIV_TIME_SCALE;
/// `base` scaled for sanitizer builds.
inline ms scaled(ms base) { return base * time_scale; }

/// A configuration for tests: ephemeral port, no monitor, 2 I/O threads, node 7, fast clocks.
inline srv::config test_config() {
    srv::config c;
    c.port = 0;
    c.monitor_port = 0;
    c.threads = 2;
    c.node_id = 7;
    c.log_level = "warn";
    return c;
}

/// A server running in this process on loopback; stopped and joined by the destructor.
class test_server {
public:
    explicit test_server(const srv::config& c, srv::hooks h = {})
        : s_(std::make_unique<srv::server>(c, std::move(h))) {
        s_->start();
    }
    ~test_server() { shutdown(); }
    test_server(const test_server&) = delete;
    test_server& operator=(const test_server&) = delete;

    void shutdown() {
        if (s_) {
            s_->stop();
            s_->wait();
            s_.reset();
        }
    }
    [[nodiscard]] std::uint16_t port() const { return s_->port(); }
    [[nodiscard]] srv::server& get() { return *s_; }
    [[nodiscard]] srv::registry& reg() { return s_->reg(); }
    [[nodiscard]] srv::registry_stats& stats() { return s_->reg().stats(); }
    [[nodiscard]] std::uint64_t closed(srv::close_reason r) {
        return stats().closed[static_cast<std::size_t>(r)].load();
    }
    /// A connected client that completed HELLO (empty optional-like: check c.is_open()).
    client connect_hello(const std::string& json = {}) {
        client c(port());
        if (!c.hello(json)) {
            throw std::runtime_error("HELLO failed: " + c.last_failure());
        }
        return c;
    }

private:
    std::unique_ptr<srv::server> s_;
};

/// Sends `rounds` batches of 16 tokened 32 KiB SENDs from `tx` to `to`, reading each batch's
/// ACKs; returns how many were acked ok. With a receiver that does not read, megabytes stay
/// queued in its session (the drain tests).
inline int queue_for(client& tx, proto::session_id to, int rounds) {
    const std::string payload(32 * 1024, 'q');
    int acked = 0;
    for (int round = 0; round < rounds; ++round) {
        std::string out;
        for (int k = 0; k < 16; ++k) {
            client::append_send(out, to, payload, "q" + std::to_string(round * 16 + k));
        }
        REQUIRE(tx.send_raw(out));
        for (int k = 0; k < 16; ++k) {
            auto f = tx.next_skip_ping(scaled(2000ms));
            REQUIRE_MESSAGE(f.what == frame::kind::ack, f.describe());
            acked += f.ack_error ? 0 : 1;
        }
    }
    return acked;
}

/// Polls `pred` every 5 ms until it holds or `timeout` passes; returns its last value.
inline bool eventually(const std::function<bool()>& pred, ms timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (pred()) {
            return true;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return pred();
        }
        std::this_thread::sleep_for(5ms);
    }
}

/// VmRSS of this process in KiB (from /proc/self/status).
inline long rss_kib() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::stol(line.substr(6));
        }
    }
    return -1;
}

/// Open file descriptors of this process.
inline int fd_count() {
    int n = 0;
    if (auto* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d) != nullptr) {
            ++n;
        }
        ::closedir(d);
    }
    return n - 2;
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for the monitor endpoint, whose port 0
/// means "off").
inline std::uint16_t free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    ::close(fd);
    return ntohs(sa.sin_port);
}

/// One HTTP/1.0 request (`method` `target`) against 127.0.0.1:port; returns the whole response
/// read until the server closes it or `timeout` passes ("" on failure). `*closed`, if given, tells
/// which: the monitor closes after each answer, so a HEAD answer (no body) ends there too.
inline std::string http_request(std::uint16_t port,
                                const std::string& method,
                                const std::string& target,
                                ms timeout = 2000ms,
                                bool* closed = nullptr) {
    if (closed != nullptr) {
        *closed = false;
    }
    client c;
    if (!c.try_connect(port)) {
        return {};
    }
    c.send_raw(method + " " + target + " HTTP/1.0\r\nHost: localhost\r\n\r\n");
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[8192];
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd p{c.fd(), POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) {
            continue;
        }
        const ssize_t n = ::recv(c.fd(), buf, sizeof buf, 0);
        if (n <= 0) {
            if (closed != nullptr) {
                *closed = true;
            }
            break;
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

/// One HTTP/1.0 GET against 127.0.0.1:port; returns the whole response ("" on failure).
inline std::string http_get(std::uint16_t port, const std::string& target, ms timeout = 2000ms) {
    return http_request(port, "GET", target, timeout);
}

/// A payload whose content names its sender and sequence number: "<tag>:<seq>:" + padding.
inline std::string numbered(const std::string& tag, std::uint64_t seq, std::size_t size = 0) {
    std::string p = tag + ":" + std::to_string(seq) + ":";
    if (p.size() < size) {
        p.append(size - p.size(), 'x');
    }
    return p;
}

}  // namespace lariv::test
