// lariv/server/session_state.hpp — the life of a registry session, as one explicit state machine,
// and the reasons it ends. Every session kind (the Lariv-protocol session, a host's own session)
// moves through the same states; the registry's visibility and routing rules are stated here.
//
//   accepted ──► handshaking ──► live ──► draining ──► closing ──► closed
//       │             │           │          ▲            ▲
//       │             │           └──────────┼────────────┤
//       │             └──────────────────────┴────────────┤
//       └─────────────────────────────────────────────────┘
//
//   accepted     constructed, not yet in the registry, or in it but with its id not yet written:
//                invisible (find, for_each, list, size and drain skip it).
//   handshaking  in the registry with its id written (visible: kick, drain, for_each reach it),
//                not routable: a SEND to it answers as for a missing id (Lariv protocol: no
//                HELLO yet). Host sessions skip this state (attach() makes them live).
//   live         visible and routable.
//   draining     told to finish (graceful shutdown): still visible, no longer routable; it
//                flushes what was accepted for it, then closes.
//   closing      out of the registry (removed exactly once, on entering this state); the final
//                frames are being flushed, bounded by a linger deadline.
//   closed       the transport is closed and the registry's open-connection count released.
//
// Transitions only go right (a state is never re-entered); draining may be skipped. Entering
// `closing` is the one place a session leaves the registry, so "removed exactly once" follows from
// the state machine itself. Debug builds assert every transition.
#pragma once

#include <atomic>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "lariv/protocol/error.hpp"

namespace lariv::server {

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
    host_error,        ///< a host hook threw: that session is closed, no other is affected
    shutdown,          ///< the registry was destroyed or its shutdown grace ran out
    count_             ///< number of reasons (not a reason)
};
inline constexpr std::size_t close_reason_count = static_cast<std::size_t>(close_reason::count_);

/// The stable label, e.g. "slow_consumer".
std::string_view to_string(close_reason r) noexcept;
/// The error a client is told before the close, if any.
std::optional<protocol::error_code> error_for(close_reason r) noexcept;

/// The states above, in order.
enum class session_state : std::uint8_t { accepted, handshaking, live, draining, closing, closed };

std::string_view to_string(session_state s) noexcept;

/// The only legal moves: strictly forward, and never from closed.
[[nodiscard]] constexpr bool can_move(session_state from, session_state to) noexcept {
    return static_cast<int>(to) > static_cast<int>(from);
}
/// Visible to find/for_each/list/size/drain.
[[nodiscard]] constexpr bool is_visible(session_state s) noexcept {
    return s == session_state::handshaking || s == session_state::live ||
           s == session_state::draining;
}
/// Accepts routed messages.
[[nodiscard]] constexpr bool is_routable(session_state s) noexcept { return s == session_state::live; }

/// The state word of one session. Written only on the session's own executor (its strand) —
/// except the first move accepted -> handshaking/live, made by the registry while it still owns
/// the session exclusively — and read from any thread.
///
/// Memory order: a move is a release store (everything the session wrote before, e.g. its id, is
/// published with it); readers load with acquire. The registry's admission check pairs the store
/// that makes a session visible with its own shutdown flag: both sides use seq_cst so that a
/// session published while a drain starts is seen by the drain's walk or sees the drain
/// (registry.cpp, "admission vs drain").
class state_word {
public:
    [[nodiscard]] session_state load(std::memory_order o = std::memory_order_acquire) const noexcept {
        return s_.load(o);
    }
    /// Moves to `to`; returns false (and changes nothing) if that is not forward of the current
    /// state. Debug builds assert that callers never try a move backward from a state they
    /// believe current (a logic error), via `expect_forward`.
    bool move(session_state to, std::memory_order o = std::memory_order_release) noexcept {
        session_state cur = s_.load(std::memory_order_relaxed);
        do {
            if (!can_move(cur, to)) {
                return false;
            }
        } while (!s_.compare_exchange_weak(cur, to, o, std::memory_order_relaxed));
        return true;
    }
    /// As move(), asserting in debug builds that it succeeds.
    void must_move(session_state to, std::memory_order o = std::memory_order_release) noexcept {
        [[maybe_unused]] const bool ok = move(to, o);
        assert(ok && "session_state: illegal transition");
    }

private:
    std::atomic<session_state> s_{session_state::accepted};
};

}  // namespace lariv::server
