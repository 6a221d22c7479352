// lariv/server/options.hpp — what the registry itself needs: identity, admission, per-session
// limits, deadlines and the queue policy. larivd's `config` extends it with the daemon's own
// settings (listeners, threads, logging); an embedder fills it in directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "lariv/protocol/limits.hpp"

namespace lariv::server {

/// What to do when a session's outbound queue is over its cap.
enum class slow_consumer_policy { disconnect, drop };

/// A configuration error (bad file, bad value): larivd exits 78 on it.
class config_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// The registry's settings. Every field has a safe default; validate() checks that they fit
/// together (the registry's constructor calls it).
struct registry_options {
    // Identity
    std::uint32_t node_id = 1;     ///< bits 127..96 of every session id
    /// Bits 95..64. 0 = a random non-zero value from the OS at construction, so no two starts of
    /// one node share an epoch. A value set here is the caller's promise that it never repeats.
    std::uint32_t boot_epoch = 0;

    // Admission
    std::size_t max_sessions = 10000;    ///< larivd clamps it to RLIMIT_NOFILE minus a reserve
    /// Lariv-protocol sessions per remote IP address (TCP peers only); 0 = no limit. Over it a
    /// connection is refused like one over max_sessions (-ERR server_full).
    std::uint32_t max_sessions_per_ip = 0;
    std::size_t registry_buffer = 1024;  ///< Lariv slots per buffer
    /// Recently closed sessions kept for /connz?state=closed (a ring; the oldest goes first);
    /// 0 = none kept.
    std::uint32_t max_closed_sessions = 1000;

    // Protocol limits (Lariv-protocol sessions)
    protocol::limits limits{};

    // Session life (Lariv-protocol sessions)
    std::uint32_t handshake_timeout_ms = 5000;
    std::uint32_t frame_timeout_ms = 5000;  ///< a started frame must complete within this
    std::uint32_t heartbeat_ms = 15000;     ///< PING idle clients this often (jittered); 0 = never
    std::uint32_t max_outstanding_pings = 2;
    std::uint32_t idle_timeout_ms = 0;       ///< close after this long without input; 0 = never
    std::uint32_t write_deadline_ms = 2000;  ///< a write stuck this long = slow consumer
    /// Outbound queue cap per session, in frame bytes. It must hold one maximal MSG frame
    /// (limits.max_msg_frame(): max_payload plus its header), so validate() refuses a smaller one;
    /// the default holds eight. A sender that pipelines without acks can have its whole window
    /// queued at a reader that keeps up but was not scheduled for a moment: at 2 MiB a sender of
    /// 4 KiB messages with 2 MiB in flight (512 messages) got queue_full against a healthy
    /// reader on 2 cores; at 8 MiB, 7.5 MiB in flight passed. It is a bound, not an allocation:
    /// a queue holds what is pending (nats-server's default is 64 MiB, Redis' pub/sub hard limit
    /// 32 MiB).
    std::size_t max_queue_bytes = 8 << 20;
    slow_consumer_policy slow_consumer = slow_consumer_policy::disconnect;
    std::uint32_t rate_limit = 0;  ///< SENDs per second per session; 0 = unlimited
    std::uint32_t rate_burst = 0;  ///< bucket size; 0 = rate_limit

    // Auth (Lariv-protocol sessions)
    std::string auth_token;   ///< clients must HELLO with it when set
    /// HELLO with it (as `auth`) to use the admin commands KICK and LIST. Empty (the default):
    /// the admin commands are disabled for every client.
    std::string admin_token;

    // Shutdown
    std::uint32_t drain_timeout_ms = 8000;  ///< larivd's grace for async_shutdown on SIGTERM

    friend bool operator==(const registry_options&, const registry_options&) = default;

    /// Throws config_error when a value is out of range or values do not fit together.
    void validate() const;
};

}  // namespace lariv::server
