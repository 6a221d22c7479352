// lariv/server/server.hpp — the daemon's engine: one io_context run by N threads, sessions on
// per-session strands, the accept loop, the registry and the monitoring endpoint. larivd and the
// integration tests use it; embedders who bring their own io_context use registry directly.
//
// Threading choice: one io_context shared by all threads, one strand per session. Any thread can
// run any session's next handler, so a busy session does not starve the others on "its" thread,
// and cross-session delivery needs no hop between contexts (the target's queue has a mutex).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include "lariv/server/config.hpp"
#include "lariv/server/cluster.hpp"
#include "lariv/server/registry.hpp"

namespace asio::ssl {
class context;
}

namespace lariv::server {

class listener;
class monitor;

class server {
public:
    /// Validates `cfg` (throws config_error), clamps max_sessions to the fd limit, loads the TLS
    /// files (throws config_error naming the key), resolves the addresses (an IP address, or a
    /// name: its first address; config_error when it does not resolve) and binds the listening
    /// sockets (throws listen_error naming the listener and the address). Nothing runs until
    /// start().
    explicit server(const config& cfg, hooks h = {});
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Starts the I/O threads and the accept loops, and logs the startup line ("larivd started":
    /// `extra`, e.g. larivd's config file, then describe()).
    void start(const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());
    /// What the startup line shows: version, the bound listeners (or "off"), node, epoch,
    /// threads, whether client auth, admin auth and client certificates are on (never a token),
    /// and the effective limits (max_sessions after the fd clamp).
    [[nodiscard]] nlohmann::ordered_json describe() const;
    /// Graceful: stop accepting, /healthz 503, then registry::async_shutdown(drain_timeout_ms):
    /// sessions are told, flushed and closed; the threads stop when it completes.
    /// Thread-safe, idempotent.
    void drain();
    /// Immediate: stop accepting, close everything (a 50 ms grace to flush final frames) and stop
    /// the threads. Thread-safe.
    void stop();
    /// SIGHUP: applies the hot-reloadable settings of `next` (validated, max_sessions clamped to
    /// the fd limit exactly as at start) and, with TLS on, re-reads tls_cert, tls_key and tls_ca
    /// into a new context for new connections (existing ones keep theirs). Throws config_error
    /// (nothing changes then: an unreadable certificate keeps the old context).
    void reload(const config& next);
    /// Blocks until the I/O threads have exited.
    void wait();

    /// The plaintext listener's port (0 when listen_address is "": TLS only).
    [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
    /// The TLS listener's port (0 when TLS is off).
    [[nodiscard]] std::uint16_t tls_port() const noexcept { return tls_port_; }
    /// The TLS context new connections get now (nullptr when TLS is off). Thread-safe.
    [[nodiscard]] std::shared_ptr<asio::ssl::context> tls_context() const;
    [[nodiscard]] std::uint16_t monitor_port() const noexcept { return monitor_port_; }
    [[nodiscard]] registry& reg() noexcept { return *registry_; }
    /// The cluster this node is a member of (cluster_etcd set), or nullptr.
    [[nodiscard]] cluster* cluster_member() noexcept { return cluster_.get(); }
    [[nodiscard]] asio::io_context& context() noexcept { return io_; }
    [[nodiscard]] const config& cfg() const noexcept { return cfg_; }
    /// max_sessions after the fd-limit clamp (cfg().max_sessions is the requested value).
    [[nodiscard]] std::size_t max_sessions() const noexcept {
        return max_sessions_.load(std::memory_order_relaxed);
    }

private:
    void shutdown_then_stop(std::chrono::milliseconds grace);
    void run_out();
    void on_tls_accept(asio::ip::tcp::socket s);

    config cfg_;
    std::atomic<std::size_t> max_sessions_{0};
    // io_model = per_thread: the io_contexts of I/O threads 1..n-1 (thread 0 runs io_, which also
    // holds the registry's core, the listeners, the monitor and the cluster). Declared before
    // io_ so that they are destroyed last: every socket on them belongs to a session, and
    // ~server has run out every handler and dropped the registry before members go.
    std::vector<std::unique_ptr<asio::io_context>> pool_;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> pool_work_;
    std::atomic<std::size_t> next_context_{0};
    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    // Declared before the registry: destroyed after it (the registry's core keeps the cluster's
    // router alive anyway; the monitor reads the cluster until it is gone).
    std::unique_ptr<cluster> cluster_;
    std::unique_ptr<registry> registry_;
    std::shared_ptr<listener> listener_;  // null when listen_address is ""
    // TLS (server/DESIGN.md, "TLS"): the listener, the context for new connections (replaced on
    // reload under tls_mu_; every stream holds a share of the one it was made with) and the
    // handshakes in progress, which count against max_sessions.
    std::shared_ptr<listener> tls_listener_;
    mutable std::mutex tls_mu_;
    std::shared_ptr<asio::ssl::context> tls_ctx_;
    std::atomic<std::size_t> tls_pending_{0};
    std::uint16_t tls_port_ = 0;
    std::unique_ptr<monitor> monitor_;
    std::vector<std::thread> threads_;
    std::uint16_t port_ = 0;
    std::uint16_t monitor_port_ = 0;
    std::string monitor_endpoint_;
    std::atomic<bool> draining_{false};
    std::atomic<bool> stopped_{false};
};

/// Descriptors kept free for the listeners, logs and config reloads (plus, in server, one per
/// allowed monitor connection).
inline constexpr std::size_t reserved_fds = 32;

/// max_sessions lowered, if needed, to fit RLIMIT_NOFILE minus `reserve` (raising the soft
/// limit toward the hard one first).
std::size_t clamp_to_fd_limit(std::size_t max_sessions, std::size_t reserve = reserved_fds);

}  // namespace lariv::server
