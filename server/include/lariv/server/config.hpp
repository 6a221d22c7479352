// lariv/server/config.hpp — every setting of the registry and larivd, with defaults.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "lariv/protocol/limits.hpp"

namespace lariv::server {

/// What to do when a session's outbound queue is over its cap.
enum class slow_consumer_policy { disconnect, drop };

/// A configuration error (bad file, bad value): larivd exits 78 on it.
class config_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// All settings. JSON keys, environment variables (LARIV_ + upper-case key) and flags
/// (--key-with-dashes) use the same names; precedence is flags > environment > file > default.
struct config {
    // Network
    std::string listen_address = "127.0.0.1";  ///< loopback by default; 0.0.0.0 in containers
    std::uint16_t port = 7411;  ///< 0 = an ephemeral port (server::port() tells which)
    std::string monitor_address = "127.0.0.1";
    std::uint16_t monitor_port = 7412;  ///< 0 disables the monitoring endpoint
    unsigned threads = 0;               ///< I/O threads; 0 = hardware concurrency

    // Identity
    std::uint32_t node_id = 1;  ///< bits 127..96 of every session id
    std::uint32_t boot_epoch = 0;  ///< bits 95..64; 0 = derived from the start time

    // Registry
    std::size_t max_sessions = 10000;  ///< clamped to RLIMIT_NOFILE minus a reserve at start
    std::size_t registry_buffer = 1024;  ///< Lariv slots per buffer

    // Protocol limits
    protocol::limits limits{};

    // Session life
    std::uint32_t handshake_timeout_ms = 5000;
    std::uint32_t frame_timeout_ms = 5000;  ///< a started frame must complete within this
    std::uint32_t heartbeat_ms = 15000;  ///< PING idle clients this often (jittered); 0 = never
    std::uint32_t max_outstanding_pings = 2;
    std::uint32_t idle_timeout_ms = 0;  ///< close after this long without input; 0 = never
    std::uint32_t write_deadline_ms = 2000;  ///< a write stuck this long = slow consumer
    std::size_t max_queue_bytes = 1 << 20;  ///< outbound queue cap per session
    slow_consumer_policy slow_consumer = slow_consumer_policy::disconnect;
    std::uint32_t rate_limit = 0;  ///< SENDs per second per session; 0 = unlimited
    std::uint32_t rate_burst = 0;  ///< bucket size; 0 = rate_limit

    // Auth
    std::string auth_token;   ///< clients must HELLO with it when set
    std::string admin_token;  ///< KICK and LIST need it when set (HELLO auth)

    // Operations
    std::uint32_t drain_timeout_ms = 8000;  ///< fits Docker's 10 s stop timeout
    std::uint32_t accept_backoff_min_ms = 10;
    std::uint32_t accept_backoff_max_ms = 1000;
    std::string log_level = "info";  ///< trace, debug, info, warn, error, critical, off
    std::string log_format = "text";  ///< text or json

    friend bool operator==(const config&, const config&) = default;

    /// Throws config_error when a value is out of range.
    void validate() const;
    /// The effective I/O thread count.
    unsigned effective_threads() const;
};

/// JSON mapping: every key optional on input (missing keys keep the current value); unknown keys
/// are an error (a typo in a config file must not be silently ignored).
void to_json(nlohmann::json& j, const config& c);
void from_json(const nlohmann::json& j, config& c);

/// Applies the keys present in `j` to `c` (throws config_error with the key's name).
void merge(config& c, const nlohmann::json& j);

/// The JSON keys, in order, with their LARIV_* environment variable names.
std::map<std::string, std::string> config_env_names();

/// Applies LARIV_* variables from `environ` to `c`. Throws config_error on a bad value.
void apply_environment(config& c);

/// Reads a JSON config file into `c`. Throws config_error.
void load_file(config& c, const std::string& path);

}  // namespace lariv::server
