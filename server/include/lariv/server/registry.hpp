// lariv/server/registry.hpp — the session registry: Asio connections held in a Lariv, keyed by a
// 128-bit id (node id | boot epoch | generation | slot). Embeddable: it runs on the host's
// executor, owns no threads, and can adopt sockets the host accepted.
//
// Thread-safety: every public member may be called from any thread at once. Lookups, routing,
// kicks and iteration take no lock of the registry's own (that is what Lariv is for); a session's
// outbound queue has its own small mutex, contended only by senders to that one session. No I/O is
// ever done while a Lariv guard is held: lookups copy the session's shared_ptr and let go.
#pragma once

#include <any>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <asio/any_io_executor.hpp>
#include <asio/ip/tcp.hpp>

#include "lariv/lariv.hpp"
#include "lariv/protocol/error.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/session_id.hpp"
#include "lariv/server/config.hpp"

namespace lariv::server {

class session;

/// Why a session ended. One enum feeds the error reply, the log line, the metric label and the
/// close hook.
enum class close_reason : std::uint8_t {
    client_quit,       ///< QUIT
    client_closed,     ///< EOF or reset from the client
    io_error,          ///< another socket error
    protocol_error,    ///< a fatal decode error (line too long, frame too large, desync)
    handshake_timeout, ///< no HELLO in time
    heartbeat_timeout, ///< pings left unanswered
    idle_timeout,      ///< no input for idle_timeout_ms
    frame_timeout,     ///< a started frame did not complete in time (slowloris)
    slow_consumer,     ///< outbound queue over its cap, or a write stuck past its deadline
    kicked,            ///< KICK by an admin or the host
    server_full,       ///< max_sessions reached at accept
    draining,          ///< the server shut down gracefully
    count_             ///< number of reasons (not a reason)
};
inline constexpr std::size_t close_reason_count = static_cast<std::size_t>(close_reason::count_);

/// The stable label, e.g. "slow_consumer".
std::string_view to_string(close_reason r) noexcept;
/// The error a client is told before the close, if any.
std::optional<protocol::error_code> error_for(close_reason r) noexcept;

/// Counters read by /metrics, STATS and tests. Monotonic unless noted.
struct registry_stats {
    std::atomic<std::uint64_t> accepted{0};        ///< connections adopted
    std::atomic<std::uint64_t> refused_full{0};    ///< refused at max_sessions
    std::atomic<std::uint64_t> handshakes{0};      ///< successful HELLOs
    std::atomic<std::uint64_t> msgs_in{0};         ///< SENDs accepted for routing
    std::atomic<std::uint64_t> msgs_out{0};        ///< MSGs queued to targets
    std::atomic<std::uint64_t> bytes_routed{0};    ///< payload bytes of msgs_out
    std::atomic<std::uint64_t> send_errors{0};     ///< SENDs answered with an error
    std::atomic<std::uint64_t> queue_drops{0};     ///< messages dropped at a full queue
    std::atomic<std::uint64_t> protocol_errors{0}; ///< -ERR replies for bad input
    std::atomic<std::uint64_t> rate_limited{0};
    std::atomic<std::uint64_t> accept_errors{0};
    std::array<std::atomic<std::uint64_t>, close_reason_count> closed{};
};

/// Embedder hooks, called on the session's strand (never with a Lariv guard held).
struct hooks {
    std::function<void(session&)> on_open;  ///< after a successful HELLO
    /// A SEND arrived (before routing); return false to drop it (the sender gets unknown_session).
    std::function<bool(session&, protocol::session_id to, std::string_view payload)> on_message;
    std::function<void(session&, close_reason)> on_close;
};

/// Conversions between the container's index and the protocol's id (same 128-bit layout).
inline protocol::session_id to_session_id(lariv::Index i) noexcept { return {i.hi, i.lo}; }
inline lariv::Index to_index(protocol::session_id s) noexcept { return {s.hi, s.lo}; }

class registry {
public:
    /// Sessions run on strands of `ex`. `cfg` is copied; cfg.boot_epoch 0 is replaced by one
    /// derived from the clock.
    registry(asio::any_io_executor ex, const config& cfg, hooks h = {});
    /// Closes every session (reason draining) and drops them. Call with the executor still alive.
    ~registry();
    registry(const registry&) = delete;
    registry& operator=(const registry&) = delete;

    /// Takes an accepted socket: registers a session for it (or refuses it with server_full).
    void adopt(asio::ip::tcp::socket socket);

    /// The live session with this id, or nullptr.
    [[nodiscard]] std::shared_ptr<session> find(protocol::session_id id) const;
    /// Why `id` names no live session: stale_session (this node and boot issued the slot, now
    /// free or reused) or unknown_session (another node or boot, or never issued).
    [[nodiscard]] protocol::error_code missing_reason(protocol::session_id id) const;
    /// Routes `payload` to session `to` as a MSG from `from`. nullopt = queued for delivery.
    std::optional<protocol::error_code> send(protocol::session_id to,
                                             protocol::session_id from,
                                             std::string_view payload);
    /// Closes session `id` with `why`. False if there is no such session.
    bool kick(protocol::session_id id, close_reason why = close_reason::kicked);
    /// Calls f(session&) for live sessions in slot order, from `first_slot`; f may return false
    /// to stop. Weakly consistent (Lariv's iteration). f runs without a guard held.
    void for_each(const std::function<bool(session&)>& f, std::uint32_t first_slot = 0) const;
    /// One page of session infos after `after`, in slot order (a session shows at most once
    /// across pages while others come and go).
    /// `keep`, if given, filters the sessions (e.g. /connz?name=).
    [[nodiscard]] protocol::list_page list(
        std::optional<protocol::session_id> after,
        std::uint32_t limit,
        const std::function<bool(const session&)>& keep = {}) const;

    /// Connections whose socket is still open (registered or not, closing included): a drain is
    /// over when this reaches 0, not when size() does, since closing sessions still flush.
    [[nodiscard]] std::size_t open_connections() const noexcept {
        return open_.load(std::memory_order_acquire);
    }
    /// Live sessions (approximate under concurrency).
    [[nodiscard]] std::size_t size() const noexcept { return live_.load(std::memory_order_relaxed); }
    [[nodiscard]] registry_stats& stats() noexcept { return stats_; }
    [[nodiscard]] const registry_stats& stats() const noexcept { return stats_; }
    [[nodiscard]] nlohmann::json stats_json() const;
    [[nodiscard]] const config& cfg() const noexcept { return cfg_; }
    [[nodiscard]] std::uint32_t node_id() const noexcept { return cfg_.node_id; }
    [[nodiscard]] std::uint32_t boot_epoch() const noexcept { return cfg_.boot_epoch; }
    [[nodiscard]] std::size_t lariv_buffers() const noexcept { return sessions_.node_count(); }
    [[nodiscard]] std::size_t lariv_capacity() const noexcept { return sessions_.capacity(); }
    [[nodiscard]] std::uint64_t queued_bytes_total() const;
    [[nodiscard]] asio::any_io_executor executor() const { return ex_; }

    /// Graceful shutdown, step 1: refuse new sessions and new SENDs (draining), tell every
    /// session, and close each one once its queue is flushed. Idempotent.
    void drain();
    [[nodiscard]] bool draining() const noexcept { return draining_.load(std::memory_order_acquire); }
    /// Closes every session now.
    void close_all(close_reason why);
    /// Applies the hot-reloadable settings (SIGHUP): max_sessions, max_queue_bytes, rate_limit,
    /// rate_burst, idle_timeout_ms. Others need a restart.
    void reload(const config& cfg);

    /// Current values of the hot-reloadable settings. Thread-safe.
    struct hot_settings {
        std::atomic<std::size_t> max_sessions{0};
        std::atomic<std::size_t> max_queue_bytes{0};
        std::atomic<std::uint32_t> rate_limit{0};
        std::atomic<std::uint32_t> rate_burst{0};
        std::atomic<std::uint32_t> idle_timeout_ms{0};
    };
    [[nodiscard]] const hot_settings& hot() const noexcept { return hot_; }

private:
    friend class session;
    /// Registers a session; nullopt when full (max_sessions) or draining.
    std::optional<lariv::Index> add(const std::shared_ptr<session>& s);
    /// Removes a session's entry; exactly once per session.
    void remove(lariv::Index i);

    asio::any_io_executor ex_;
    config cfg_;
    hooks hooks_;
    lariv::Lariv<std::shared_ptr<session>> sessions_;
    registry_stats stats_;
    hot_settings hot_;
    std::atomic<std::size_t> live_{0};
    std::atomic<std::size_t> open_{0};
    std::atomic<bool> draining_{false};
};

}  // namespace lariv::server
