// lariv/server/detail/registry_core.hpp — the registry's shared state: ids, admission, lookup,
// routing, drain and shutdown. Not for direct use: `registry` (registry.hpp) is the front.
//
// Lifetime (registry.hpp says the same for users): the core is held by std::shared_ptr. The front
// `registry` holds one share; every session holds one; every pending shutdown timer holds one. So
// a handler of a session that outlives the front still finds the core alive, and the core goes
// away with its last session. Destroying the front (registry::~registry) never waits for a
// session: it disables the hooks (waiting only for hooks running on *other* threads, which are
// synchronous and bounded, so a single-threaded io_context cannot deadlock), closes every
// session and takes them all out of the Lariv, which breaks the core -> session -> core cycle.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <system_error>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/steady_timer.hpp>

#include "lariv/lariv.hpp"
#include "lariv/protocol/error.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/session_id.hpp"
#include "lariv/server/detail/counters.hpp"
#include "lariv/server/host_session.hpp"
#include "lariv/server/options.hpp"
#include "lariv/server/session_state.hpp"

namespace lariv::server {

class session;

/// Counters read by /metrics, STATS and tests. Monotonic. Each is striped per thread
/// (detail/counters.hpp): no increment, per message or per connection, writes a cache line that
/// another I/O thread writes too.
struct registry_stats {
    using counter = detail::sharded_counter;
    counter accepted;         ///< connections adopted
    counter attached;         ///< host sessions attached
    counter refused_full;     ///< refused at max_sessions
    counter handshakes;       ///< successful HELLOs
    counter msgs_in;          ///< SENDs accepted for routing
    counter msgs_out;         ///< MSGs queued to targets
    counter bytes_routed;     ///< payload bytes of msgs_out
    counter send_errors;      ///< SENDs answered with an error
    counter queue_drops;      ///< messages dropped at a full queue
    counter protocol_errors;  ///< -ERR replies for bad input
    counter rate_limited;
    counter accept_errors;
    counter host_errors;      ///< hooks that threw
    counter auth_failures;    ///< HELLOs refused for their auth token
    counter refused_per_ip;   ///< refused at max_sessions_per_ip
    /// Session deadline-timer wakes (not in STATS: a test and profiling aid; one per deadline
    /// period per session, never per message).
    counter timer_wakes;
    counter tls_handshakes;          ///< TLS handshakes completed (larivd's TLS listener)
    counter tls_handshake_failures;  ///< TLS handshakes failed or timed out
    std::array<counter, close_reason_count> closed{};
    /// Accept to HELLO accepted, per handshake.
    detail::latency_histogram handshake_latency;
    /// SEND decoded to its MSG queued at the target (or refused), sampled: one SEND in
    /// `route_sample_every` per session, so the clock reads cost the routing path ~nothing.
    detail::latency_histogram route_latency;
    /// One write to the socket, from its start to its completion (per write, not per message).
    detail::latency_histogram write_latency;
    static constexpr std::uint32_t route_sample_every = 16;
};

/// Host hooks for Lariv-protocol sessions (host sessions are the host's own code already).
///
/// Contract:
/// - Each hook runs on the session's executor (session::get_executor(), a strand), never with a
///   Lariv guard held, one at a time per session. It may call any registry member and any
///   thread-safe session member, and use session::user_data().
/// - It must not block: it runs on an I/O thread. Asynchronous work goes through the session's
///   executor or the host's own.
/// - An exception escaping a hook is caught by the registry: that session is closed with
///   close_reason::host_error (counted in stats().host_errors and logged); no other session is
///   affected and the exception never reaches io_context::run(). An exception from on_close is
///   counted and logged; the close goes on.
/// - No hook starts after ~registry() began; ~registry() waits for hooks running on other threads.
struct hooks {
    std::function<void(session&)> on_open;  ///< after a successful HELLO (the session is live)
    /// A SEND arrived (before routing); return false to drop it (the sender gets unknown_session).
    std::function<bool(session&, protocol::session_id to, std::string_view payload)> on_message;
    /// The session left the registry (any reason but the registry's own destruction).
    std::function<void(session&, close_reason)> on_close;
};

/// Hot-reloadable settings (SIGHUP). Each read on its own at use time: relaxed.
struct hot_settings {
    std::atomic<std::size_t> max_sessions{0};
    std::atomic<std::size_t> max_queue_bytes{0};
    std::atomic<std::uint32_t> rate_limit{0};
    std::atomic<std::uint32_t> rate_burst{0};
    std::atomic<std::uint32_t> idle_timeout_ms{0};
};

#ifdef LARIV_TEST_SEAMS
namespace testing {
/// Test builds only: called by adopt/attach between publishing a session in the Lariv and making
/// it visible (the window the "half-built sessions" defect lived in). nullptr = none.
void set_after_publish(std::function<void()> f);
}  // namespace testing
#endif

namespace detail {

/// A pending async_shutdown completion (type-erased; see registry::async_shutdown).
struct shutdown_waiter {
    virtual ~shutdown_waiter() = default;
    /// Posts the completion to the handler's executor. Called exactly once.
    virtual void complete(std::error_code ec) = 0;
    std::uint64_t ticket = 0;  ///< names this wait for cancel_waiter()
};

/// The registry's way to sessions of other nodes: a cluster (lariv/server/cluster.hpp)
/// implements it and registry_core::set_router() installs it. Routing has one home: the core's
/// send() sends a target whose node part is not this node's here, and nothing else branches
/// on the node part.
class remote_router {
public:
    virtual ~remote_router() = default;
    /// A SEND to session `to` of another node. nullopt: queued on the link to its node (with a
    /// non-empty `token` the owner's verdict arrives later, through registry_core::deliver_ack);
    /// otherwise the verdict now: unknown_session (no such node, or an old boot epoch of it),
    /// node_unreachable (no link up), queue_full (the link's queue is full). Any thread.
    virtual std::optional<protocol::error_code> forward(protocol::session_id to, protocol::session_id from,
                                                        std::string_view payload, std::string_view token) = 0;
    /// What request() completes with: an error, or the +INFO JSON text (a kick: "").
    using request_done = std::function<void(std::optional<protocol::error_code>, std::string)>;
    /// INFO (kick = false) or KICK of session `target` of another node. `done` runs exactly
    /// once, on any thread, never inside this call.
    virtual void request(bool kick, protocol::session_id target, request_done done) = 0;
};

/// The 128-bit id <-> Lariv index mapping. The high half (node, boot epoch) is the index's own;
/// the low half (generation, slot) goes through a keyed 64-bit Feistel permutation, so ids are
/// not guessable from one another (a client cannot address the session after its own), while
/// decoding stays O(1) and exact. The key is random per registry. Not a MAC: it makes guessing
/// as hard as hitting a live session among 2^64 values, it does not authenticate.
class id_codec {
public:
    id_codec();
    [[nodiscard]] protocol::session_id encode(lariv::Index i) const noexcept {
        return {i.hi, permute(i.lo)};
    }
    [[nodiscard]] lariv::Index decode(protocol::session_id s) const noexcept {
        return {s.hi, unpermute(s.lo)};
    }

private:
    static constexpr int rounds = 4;
    // The round function: the half, spread over 64 bits by the round key, one multiply, the
    // high 32 bits of the product (they depend on every input bit). One multiply per round
    // keeps a decode at about 20 cycles on the routing path.
    [[nodiscard]] static std::uint32_t f(std::uint64_t k, std::uint32_t r) noexcept {
        const std::uint64_t x = (k ^ (std::uint64_t{r} * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;
        return static_cast<std::uint32_t>(x >> 32);
    }
    [[nodiscard]] std::uint64_t permute(std::uint64_t v) const noexcept {
        auto l = static_cast<std::uint32_t>(v >> 32);
        auto r = static_cast<std::uint32_t>(v);
        for (int i = 0; i < rounds; ++i) {
            const std::uint32_t t = l ^ f(key_[i], r);
            l = r;
            r = t;
        }
        return (std::uint64_t{l} << 32) | r;
    }
    [[nodiscard]] std::uint64_t unpermute(std::uint64_t v) const noexcept {
        auto l = static_cast<std::uint32_t>(v >> 32);
        auto r = static_cast<std::uint32_t>(v);
        for (int i = rounds - 1; i >= 0; --i) {
            const std::uint32_t t = r ^ f(key_[i], l);
            r = l;
            l = t;
        }
        return (std::uint64_t{l} << 32) | r;
    }
    std::array<std::uint64_t, rounds> key_{};
};

/// A session that left the registry, as /connz?state=closed shows it.
struct closed_session {
    protocol::session_info info;  ///< at the close (age_ms = the session's duration)
    std::string remote;
    close_reason reason = close_reason::client_closed;
    session_base::connection_stats conn;
    std::int64_t closed_at_ms = 0;  ///< Unix time, milliseconds
    bool host = false;              ///< a host session (attach) rather than a Lariv-protocol one
};

/// The last `capacity` closed sessions, oldest overwritten first. One mutex: a push happens once
/// per close (never per message) and holds it for a move; a read copies the ring.
class closed_ring {
public:
    explicit closed_ring(std::size_t capacity) : cap_(capacity) {}
    [[nodiscard]] std::size_t capacity() const noexcept { return cap_; }
    void push(closed_session c);
    /// Newest first.
    [[nodiscard]] std::vector<closed_session> snapshot() const;
    /// Sessions pushed since the registry began (those overwritten included).
    [[nodiscard]] std::uint64_t total() const;

private:
    const std::size_t cap_;
    mutable std::mutex mu_;
    std::vector<closed_session> ring_;
    std::size_t next_ = 0;  // where the next push goes once the ring is full
    std::uint64_t total_ = 0;
};

class registry_core : public std::enable_shared_from_this<registry_core> {
public:
    enum class phase : std::uint8_t { running, draining, stopped };

    registry_core(asio::any_io_executor ex, registry_options opts, hooks h);
    ~registry_core();

    // --- admission
    /// A Lariv-protocol session, constructed and not yet started: refuse it or publish + start it.
    void admit(const std::shared_ptr<session>& s);
    /// A host session: publish it live. nullopt when full or shutting down.
    std::optional<protocol::session_id> attach(std::shared_ptr<session_base> e);
    /// The host session `id` ended. False when the id names no attached host session.
    bool detach(protocol::session_id id);

    // --- lookup and routing
    [[nodiscard]] std::shared_ptr<session_base> find(protocol::session_id id) const;
    [[nodiscard]] protocol::error_code missing_reason(protocol::session_id id) const;
    /// Routes to a session of this node, or through the router to another node's (see
    /// remote_router::forward for `token`: a local target ignores it).
    std::optional<protocol::error_code> send(protocol::session_id to, protocol::session_id from,
                                             std::string_view payload, std::string_view token = {});
    /// Delivers to a session of this node only (a ROUTE from a peer node).
    std::optional<protocol::error_code> send_local(protocol::session_id to, protocol::session_id from,
                                                   std::string_view payload);
    /// The owner node's verdict for a tokened SEND that local session `from` sent to another
    /// node: `from` gets `ACK <token> ok|<code>`. Any thread.
    void deliver_ack(protocol::session_id from, std::string_view token, std::optional<protocol::error_code> err);
    /// Installs the router to other nodes (once, before sessions route; it lives as long as
    /// the core). Thread-safe.
    void set_router(std::shared_ptr<remote_router> r);
    [[nodiscard]] remote_router* router() const noexcept { return router_ptr_.load(std::memory_order_acquire); }
    /// True when `id` names a session of another node (and a router is installed).
    [[nodiscard]] bool is_remote(protocol::session_id id) const noexcept {
        return id.node() != opts_.node_id && router() != nullptr;
    }
    bool kick(protocol::session_id id, close_reason why);
    void for_each(const std::function<bool(session_base&)>& f, std::uint32_t first_slot) const;
    [[nodiscard]] protocol::list_page list(std::optional<protocol::session_id> after,
                                           std::uint32_t limit,
                                           const std::function<bool(const session_base&)>& keep,
                                           std::size_t max_body = 0) const;
    [[nodiscard]] std::optional<std::uint32_t> slot_of(protocol::session_id id) const;
    [[nodiscard]] std::optional<lariv::Index> index_of(protocol::session_id id) const;
    [[nodiscard]] std::uint32_t page_limit(std::uint32_t requested) const noexcept;

    // --- shutdown
    void drain();
    void close_all(close_reason why);
    void async_shutdown(std::chrono::milliseconds grace, std::unique_ptr<shutdown_waiter> w);
    /// A ticket for a new shutdown waiter.
    [[nodiscard]] std::uint64_t next_ticket() noexcept {
        return tickets_.fetch_add(1, std::memory_order_relaxed) + 1;
    }
    /// Per-operation cancellation: the wait `ticket` completes now with operation_aborted (if
    /// it has not completed yet). The shutdown itself goes on.
    void cancel_waiter(std::uint64_t ticket);
    /// The front is being destroyed: no more hooks, close everything, drop every entry.
    void abandon();
    void reload(const registry_options& o);

    // --- used by sessions
    /// A session entered `closing`: its entry leaves the Lariv (exactly once per session).
    void remove(const lariv::Index& i);
    /// A connection's transport closed (pairs with the increment at admission).
    void connection_closed();
    /// Keeps `s` (which is leaving the registry for `why`) in the closed-session ring.
    void record_closed(const session_base& s, close_reason why);
    [[nodiscard]] const closed_ring& recently_closed() const noexcept { return closed_; }
    /// How long a draining session may flush: the async_shutdown grace, or drain_timeout_ms.
    [[nodiscard]] std::chrono::milliseconds drain_linger() const noexcept {
        return std::chrono::milliseconds(drain_linger_ms_.load(std::memory_order_relaxed));
    }
    /// A draining session was closed before it could flush everything.
    void note_drain_cut();
    /// A HELLO with a wrong auth token: counted, and logged with the peer's address (at most a
    /// line a second; the lines in between are counted in the next one).
    void note_auth_failure(const std::string& remote);
    /// max_sessions_per_ip: takes a place for `remote`'s IP address (the text before its last
    /// ':'; a peer that is not TCP is not limited). False when that address is at the limit.
    /// `key` receives what release_ip() needs ("" = nothing taken).
    bool claim_ip(const std::string& remote, std::string& key);
    void release_ip(const std::string& key);
    /// Runs a hook for `s` with the contract of `hooks`: false if it threw (counted, logged).
    template <class F>
    bool run_hook(F&& f) noexcept;

    // --- state
    [[nodiscard]] const registry_options& options() const noexcept { return opts_; }
    [[nodiscard]] const hooks& host_hooks() const noexcept { return hooks_; }
    [[nodiscard]] const hot_settings& hot() const noexcept { return hot_; }
    [[nodiscard]] registry_stats& stats() noexcept { return stats_; }
    [[nodiscard]] const registry_stats& stats() const noexcept { return stats_; }
    [[nodiscard]] phase current_phase() const noexcept { return phase_.load(std::memory_order_acquire); }
    [[nodiscard]] std::size_t size() const noexcept { return live_.load(std::memory_order_relaxed); }
    [[nodiscard]] std::size_t open_connections() const noexcept {
        return open_.load(std::memory_order_acquire);
    }
    [[nodiscard]] std::size_t lariv_buffers() const noexcept { return sessions_.node_count(); }
    [[nodiscard]] std::size_t lariv_capacity() const noexcept { return sessions_.capacity(); }
    [[nodiscard]] const asio::any_io_executor& executor() const noexcept { return ex_; }

private:
    bool hook_enter() noexcept;
    void hook_leave() noexcept;
    void hook_failed(const char* what) noexcept;
    /// Reserve under max_sessions, push, write the id. nullopt when full.
    std::optional<lariv::Index> publish(const std::shared_ptr<session_base>& e);
    void check_done();
    void complete_waiters(std::error_code ec);
    void on_grace_expired();

    asio::any_io_executor ex_;
    registry_options opts_;
    hooks hooks_;
    id_codec ids_;
    lariv::Lariv<std::shared_ptr<session_base>> sessions_;
    registry_stats stats_;
    closed_ring closed_;
    hot_settings hot_;
    std::atomic<std::size_t> live_{0};
    std::atomic<std::size_t> open_{0};
    std::atomic<phase> phase_{phase::running};
    std::atomic<std::int64_t> drain_linger_ms_{0};
    // The router to other nodes: written once by set_router (release), read per remote send
    // (acquire); router_ keeps it alive for the core's life.
    std::shared_ptr<remote_router> router_;
    std::atomic<remote_router*> router_ptr_{nullptr};

    // Hooks: enabled until abandon(); in-flight count so abandon() can wait for other threads.
    std::atomic<bool> hooks_enabled_{true};
    std::atomic<int> hooks_in_flight_{0};

    // max_sessions_per_ip (admission and close only, never the routing path: a mutex).
    std::mutex ip_mu_;
    std::unordered_map<std::string, std::uint32_t> per_ip_;
    // note_auth_failure's log gate.
    std::atomic<std::int64_t> auth_log_at_{0};
    std::atomic<std::uint64_t> auth_log_skipped_{0};

    // Shutdown (not a hot path: a mutex).
    std::mutex shut_mu_;
    bool shutdown_started_ = false;
    bool shutdown_done_ = false;
    bool grace_expired_ = false;
    bool aborted_ = false;  // the front was destroyed while a shutdown was pending
    std::error_code done_ec_;
    std::vector<std::unique_ptr<shutdown_waiter>> waiters_;
    std::atomic<std::uint64_t> tickets_{0};
    asio::steady_timer grace_timer_;
};

/// STATS / /varz counters as JSON.
nlohmann::json stats_json(const registry_core& core);

/// The current thread's hook nesting, per core: abandon() called from inside a hook must not wait
/// for itself.
struct hook_scope {
    static thread_local const registry_core* core;
    static thread_local int depth;
};

template <class F>
bool registry_core::run_hook(F&& f) noexcept {
    if (!hook_enter()) {
        return true;  // hooks are off (the registry is being destroyed): nothing ran, nothing failed
    }
    const registry_core* outer = hook_scope::core;
    hook_scope::core = this;
    ++hook_scope::depth;
    bool ok = true;
    try {
        std::forward<F>(f)();
    } catch (const std::exception& e) {
        ok = false;
        hook_failed(e.what());
    } catch (...) {
        ok = false;
        hook_failed("non-standard exception");
    }
    --hook_scope::depth;
    hook_scope::core = outer;
    hook_leave();
    return ok;
}

}  // namespace detail
}  // namespace lariv::server
