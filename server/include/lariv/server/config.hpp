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
#include "lariv/server/options.hpp"

namespace lariv::server {

/// All settings: the registry's (registry_options, the base) and the daemon's own. JSON keys, environment variables (LARIV_ + upper-case key) and flags
/// (--key-with-dashes) use the same names; precedence is flags > environment > file > default.
struct config : registry_options {
    // Network
    std::string listen_address = "127.0.0.1";  ///< loopback by default; 0.0.0.0 in containers
    std::uint16_t port = 7411;  ///< 0 = an ephemeral port (server::port() tells which)
    std::string monitor_address = "127.0.0.1";
    std::uint16_t monitor_port = 7412;  ///< 0 disables the monitoring endpoint
    std::size_t max_monitor_connections = 16;  ///< concurrent HTTP connections; more get 503
    unsigned threads = 0;               ///< I/O threads; 0 = hardware concurrency

    // Operations
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
