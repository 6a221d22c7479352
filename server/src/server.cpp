#include "lariv/server/server.hpp"

#include <sys/resource.h>

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "lariv/server/listener.hpp"
#include "lariv/server/monitor.hpp"

namespace lariv::server {

std::size_t clamp_to_fd_limit(std::size_t max_sessions) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return max_sessions;
    }
    // Raise the soft limit toward the hard one first, as daemons do.
    if (rl.rlim_cur < rl.rlim_max) {
        rlimit want = rl;
        want.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
            rl = want;
        }
    }
    const auto limit = static_cast<std::size_t>(rl.rlim_cur);
    const std::size_t usable = limit > reserved_fds ? limit - reserved_fds : 1;
    return std::min(max_sessions, usable);
}

server::server(const config& cfg, hooks h)
    : cfg_(cfg)
    , work_(asio::make_work_guard(io_)) {
    cfg_.validate();
    max_sessions_ = clamp_to_fd_limit(cfg_.max_sessions);
    if (max_sessions_ < cfg_.max_sessions) {
        spdlog::warn("max_sessions lowered from {} to {} to fit the open-file limit ({} reserved)",
                     cfg_.max_sessions, max_sessions_, reserved_fds);
    }
    config effective = cfg_;
    effective.max_sessions = max_sessions_;
    registry_ = std::make_unique<registry>(io_.get_executor(), effective, std::move(h));
    cfg_.boot_epoch = registry_->boot_epoch();

    const asio::ip::tcp::endpoint ep(asio::ip::make_address(cfg_.listen_address), cfg_.port);
    listener_ = std::make_shared<listener>(
        io_.get_executor(), ep, [this](asio::ip::tcp::socket s) { registry_->adopt(std::move(s)); },
        listener::options{std::chrono::milliseconds(cfg_.accept_backoff_min_ms),
                          std::chrono::milliseconds(cfg_.accept_backoff_max_ms)},
        [this] { registry_->stats().accept_errors.fetch_add(1, std::memory_order_relaxed); });
    port_ = listener_->port();
    if (cfg_.monitor_port != 0) {
        const asio::ip::tcp::endpoint mep(asio::ip::make_address(cfg_.monitor_address),
                                          cfg_.monitor_port);
        monitor_ = std::make_unique<monitor>(io_.get_executor(), mep, *registry_);
        monitor_port_ = monitor_->port();
    }
}

server::~server() {
    stop();
    wait();
    // Shutdown order (RELIABILITY.md 7.8): sessions go before the io_context. Closing them posts
    // handlers; run them out, then drop the registry while the io_context still exists.
    registry_->close_all(close_reason::draining);
    io_.restart();
    io_.poll();
    registry_.reset();
    io_.restart();
    io_.poll();
}

void server::start() {
    listener_->start();
    if (monitor_) {
        monitor_->start();
    }
    const unsigned n = cfg_.effective_threads();
    for (unsigned i = 0; i < n; ++i) {
        threads_.emplace_back([this] {
            for (;;) {
                try {
                    io_.run();
                    return;
                } catch (const std::exception& e) {
                    spdlog::error("I/O thread: unhandled exception: {}", e.what());
                }
            }
        });
    }
    spdlog::info("larivd listening on {}:{} (node {}, epoch {}, {} threads, max {} sessions){}",
                 cfg_.listen_address, port_, cfg_.node_id, cfg_.boot_epoch, n, max_sessions_,
                 monitor_ ? fmt::format(", monitor on {}:{}", cfg_.monitor_address, monitor_port_)
                          : std::string());
}

void server::drain() {
    if (draining_.exchange(true) || stopped_.load()) {
        return;
    }
    spdlog::info("draining: {} sessions, up to {} ms", registry_->size(), cfg_.drain_timeout_ms);
    listener_->stop();
    registry_->drain();
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg_.drain_timeout_ms);
    asio::post(io_, [this, deadline] { drain_poll(deadline); });
}

void server::drain_poll(std::chrono::steady_clock::time_point deadline) {
    // Done when every connection has flushed and closed, not merely left the registry.
    const std::size_t open = registry_->open_connections();
    if (open == 0 || std::chrono::steady_clock::now() >= deadline) {
        if (open != 0) {
            spdlog::warn("drain timeout: closing {} connections", open);
        }
        stop();
        return;
    }
    auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(20));
    t->async_wait([this, t, deadline](std::error_code) { drain_poll(deadline); });
}

void server::stop() {
    if (stopped_.exchange(true)) {
        return;
    }
    listener_->stop();
    if (monitor_) {
        monitor_->stop();
    }
    registry_->close_all(close_reason::draining);
    work_.reset();
    // Give close handlers a moment to flush final frames, then stop the loop.
    auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
    t->async_wait([this, t](std::error_code) { io_.stop(); });
}

void server::wait() {
    for (auto& t : threads_) {
        if (t.joinable() && t.get_id() != std::this_thread::get_id()) {
            t.join();
        }
    }
    threads_.clear();
}

}  // namespace lariv::server
