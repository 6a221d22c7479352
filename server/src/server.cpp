#include "lariv/server/server.hpp"

#include <sys/resource.h>

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "lariv/server/listener.hpp"
#include "lariv/server/monitor.hpp"

namespace lariv::server {

std::size_t clamp_to_fd_limit(std::size_t max_sessions, std::size_t reserve) {
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
    const std::size_t usable = limit > reserve ? limit - reserve : 1;
    return std::min(max_sessions, usable);
}

namespace {
/// The registry's options from a config: max_sessions clamped to the fd limit. The one path for
/// start-up and SIGHUP.
registry_options effective_options(const config& c, std::size_t& clamped) {
    c.validate();
    // The monitor's connections have a cap of their own and their descriptors are reserved too,
    // so monitor load never takes a descriptor a session could have had.
    const std::size_t reserve = reserved_fds + (c.monitor_port != 0 ? c.max_monitor_connections : 0);
    clamped = clamp_to_fd_limit(c.max_sessions, reserve);
    if (clamped < c.max_sessions) {
        spdlog::warn("max_sessions lowered from {} to {} to fit the open-file limit ({} reserved)",
                     c.max_sessions, clamped, reserve);
    }
    registry_options o = c;
    o.max_sessions = clamped;
    return o;
}
}  // namespace

server::server(const config& cfg, hooks h)
    : cfg_(cfg)
    , work_(asio::make_work_guard(io_)) {
    std::size_t clamped = 0;
    const registry_options opts = effective_options(cfg_, clamped);
    max_sessions_.store(clamped);
    registry_ = std::make_unique<registry>(io_.get_executor(), opts, std::move(h));
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
        monitor_ = std::make_unique<monitor>(io_.get_executor(), mep, *registry_,
                                             cfg_.max_monitor_connections);
        monitor_port_ = monitor_->port();
    }
}

server::~server() {
    stop();
    wait();
    // Shutdown order (server/DESIGN.md): the threads are gone; run out what is queued while the
    // registry and the monitor still exist, then drop them. Handlers that remain hold the
    // registry's core (shared), never the server, so the io_context may destroy them later.
    if (monitor_) {
        monitor_->stop();
    }
    io_.restart();
    io_.poll();
    monitor_.reset();
    registry_.reset();
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
    shutdown_then_stop(std::chrono::milliseconds(cfg_.drain_timeout_ms));
}

void server::stop() {
    if (stopped_.exchange(true)) {
        return;
    }
    shutdown_then_stop(std::chrono::milliseconds(50));
}

void server::shutdown_then_stop(std::chrono::milliseconds grace) {
    listener_->stop();
    registry_->async_shutdown(grace, [this, grace](std::error_code ec) {
        if (ec) {
            spdlog::warn("shutdown: grace of {} ms over, remaining connections closed", grace.count());
        }
        if (monitor_) {
            monitor_->stop();
        }
        stopped_.store(true);
        work_.reset();
        io_.stop();
    });
}

void server::reload(const config& next) {
    std::size_t clamped = 0;
    const registry_options opts = effective_options(next, clamped);
    registry_->reload(opts);
    max_sessions_.store(clamped);
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
