// lariv/server/host_session.hpp — what the registry holds: any connection object that satisfies
// the `host_session` concept. larivd's Lariv-protocol session is one implementation; a host server
// with its own protocol registers its own connections the same way (registry::attach) and gets
// ids, lookup, routing, eviction, iteration, paging, stats and drain for them.
//
// The concept (a host's type T, held by std::shared_ptr<T>):
//
//   ex = t.get_executor()          the executor T's handlers run on (a strand, typically);
//                                  convertible to asio::any_io_executor.
//   r  = t.deliver(from, payload)  queue a routed message; called from ANY thread, concurrently,
//                                  so it must be thread-safe and must not block on I/O. Return
//                                  deliver_result::ok (queued), queue_full (the bounded queue
//                                  has no room: the sender is told queue_full) or closed.
//   t.close(reason)                the registry asks T to end (kick, drain, shutdown); any thread,
//                                  possibly more than once. T closes its transport in its own time
//                                  and then calls registry::detach(id) (exactly once, any thread).
//   i  = t.info()                  a snapshot (name, queued bytes, message counts) for INFO, LIST,
//                                  /connz; any thread. The registry fills in id and age itself.
//
// The registry never calls T while holding a Lariv guard, never calls T after detach(id) returned
// for it, and never calls deliver() before attach() returned. It holds a shared_ptr<T> from
// attach() to detach() (or to the registry's destruction), so T lives at least that long.
#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <asio/any_io_executor.hpp>

#include "lariv/protocol/error.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/session_id.hpp"
#include "lariv/server/session_state.hpp"

namespace lariv::server {

/// Outcome of handing a routed message to a session's bounded queue.
enum class deliver_result { ok, queue_full, closed };

/// What a host session tells about itself (the registry adds the id and the age).
struct host_session_info {
    std::string name;
    std::string remote;               ///< peer address, for /connz
    std::uint64_t queued_bytes = 0;
    std::uint64_t msgs_in = 0;        ///< messages it sent through the registry
    std::uint64_t msgs_out = 0;       ///< messages delivered to it
};

template <class T>
concept host_session = requires(T& t, const T& ct, protocol::session_id from,
                                std::string_view payload, close_reason why) {
    { t.get_executor() } -> std::convertible_to<asio::any_io_executor>;
    { t.deliver(from, payload) } -> std::same_as<deliver_result>;
    { t.close(why) };
    { ct.info() } -> std::convertible_to<host_session_info>;
};

namespace detail {
class registry_core;
}

/// A member of the registry, as the registry sees it: type-erased over the session kind. One
/// virtual call per routed message (deliver), none on the stream path.
class session_base {
public:
    using clock = std::chrono::steady_clock;

    virtual ~session_base() = default;
    session_base(const session_base&) = delete;
    session_base& operator=(const session_base&) = delete;

    /// The session's id (written before it becomes visible; immutable after). Thread-safe.
    [[nodiscard]] protocol::session_id id() const noexcept { return id_; }
    [[nodiscard]] session_state state() const noexcept { return state_.load(); }
    [[nodiscard]] bool routable() const noexcept { return is_routable(state_.load()); }
    [[nodiscard]] bool visible() const noexcept { return is_visible(state_.load()); }
    /// True for a host's own session (attach), false for a Lariv-protocol one (adopt).
    [[nodiscard]] virtual bool is_host() const noexcept { return false; }

    /// Queue a routed message. Any thread.
    virtual deliver_result deliver(protocol::session_id from, std::string_view payload) = 0;
    /// The verdict of a tokened SEND this session sent to another node (`ACK <token> ...`). Any
    /// thread. A host session does not send tokened SENDs: the default does nothing.
    virtual void deliver_ack(std::string_view token, std::optional<protocol::error_code> err) {
        (void)token;
        (void)err;
    }
    /// End the session (kick, shutdown). Any thread, idempotent.
    virtual void close(close_reason why) = 0;
    /// Graceful drain: flush what was accepted, then close. Any thread, idempotent.
    virtual void drain() = 0;
    /// A snapshot for INFO / LIST / connz. Any thread.
    [[nodiscard]] virtual protocol::session_info info() const = 0;
    /// Peer address, for /connz. Any thread.
    [[nodiscard]] virtual std::string remote() const = 0;
    /// Bytes waiting in its outbound queue. Any thread.
    [[nodiscard]] virtual std::size_t queued_bytes() const noexcept = 0;
    /// The executor the session's handlers (and hooks) run on.
    [[nodiscard]] virtual asio::any_io_executor get_executor() const = 0;

    /// Transport figures for /connz (a Lariv-protocol session fills them; a host session, whose
    /// transport the registry does not see, reports the defaults). Any thread.
    struct connection_stats {
        std::uint64_t bytes_in = 0;   ///< bytes read from the peer
        std::uint64_t bytes_out = 0;  ///< bytes written to the peer
        std::int64_t idle_ms = -1;    ///< since the last input; -1 = not known
        std::int64_t rtt_us = -1;     ///< the last heartbeat PING's round trip; -1 = none yet
    };
    [[nodiscard]] virtual connection_stats connection() const { return {}; }
    /// When the registry took the connection (adopt or attach).
    [[nodiscard]] clock::time_point created() const noexcept { return created_; }

protected:
    session_base() : created_(clock::now()) {}

    friend class detail::registry_core;
    protocol::session_id id_{};
    state_word state_;
    clock::time_point created_;
};

namespace detail {

/// The registry's entry for a host session: forwards to the host's object.
template <host_session T>
class host_entry final : public session_base {
public:
    explicit host_entry(std::shared_ptr<T> t) : t_(std::move(t)) {}
    bool is_host() const noexcept override { return true; }
    deliver_result deliver(protocol::session_id from, std::string_view payload) override {
        return state_.load() == session_state::live ? t_->deliver(from, payload) : deliver_result::closed;
    }
    void close(close_reason why) override { t_->close(why); }
    void drain() override {
        if (state_.move(session_state::draining)) {
            t_->close(close_reason::draining);
        }
    }
    protocol::session_info info() const override {
        const host_session_info h = std::as_const(*t_).info();
        protocol::session_info i;
        i.id = id_;
        i.name = h.name;
        i.age_ms = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - created_).count());
        i.queued_bytes = h.queued_bytes;
        i.msgs_in = h.msgs_in;
        i.msgs_out = h.msgs_out;
        return i;
    }
    std::string remote() const override { return std::as_const(*t_).info().remote; }
    std::size_t queued_bytes() const noexcept override {
        try {
            return std::as_const(*t_).info().queued_bytes;
        } catch (...) {
            return 0;
        }
    }
    asio::any_io_executor get_executor() const override { return t_->get_executor(); }

private:
    std::shared_ptr<T> t_;
};

}  // namespace detail
}  // namespace lariv::server
