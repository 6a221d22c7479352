// lariv/server/config.hpp — every setting of the registry and larivd, with defaults, and the one
// table of keys (name, range, help) that the file, the environment, the flags and validate() use.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "lariv/protocol/limits.hpp"
#include "lariv/server/options.hpp"

namespace lariv::server {

/// All settings: the registry's (registry_options, the base) and the daemon's own. JSON keys,
/// environment variables (LARIV_ + upper-case key) and flags (--key-with-dashes) use the same
/// names; precedence is flags > environment > file > default.
struct config : registry_options {
    // Network
    std::string listen_address = "127.0.0.1";  ///< loopback by default; 0.0.0.0 in containers; "" = no plaintext listener
    std::uint16_t port = 7411;  ///< 0 = an ephemeral port (server::port() tells which)
    std::string monitor_address = "127.0.0.1";
    std::uint16_t monitor_port = 7412;  ///< 0 disables the monitoring endpoint
    std::size_t max_monitor_connections = 16;  ///< concurrent HTTP connections; more get 503
    unsigned threads = 0;               ///< I/O threads; 0 = hardware concurrency
    /// "shared": one io_context that every I/O thread runs, a strand per session (the default:
    /// measured faster or level on 2 cores); "per_thread": one io_context per I/O thread, each
    /// accepted connection on the next one (round robin), so a session's handlers stay on one
    /// thread. (server/DESIGN.md, "Threading model".)
    std::string io_model = "shared";

    // TLS: a second client listener, on when tls_cert and tls_key are set (server/DESIGN.md,
    // "TLS"). TLS only: listen_address "" turns the plaintext listener off.
    std::string tls_cert;            ///< PEM certificate chain, the server's certificate first
    std::string tls_key;             ///< PEM private key of tls_cert (unencrypted)
    std::string tls_ca;              ///< PEM CA bundle; if set, client certificates are required (mTLS)
    std::string tls_listen_address;  ///< "" = listen_address (127.0.0.1 if that is "" too)
    std::uint16_t tls_port = 7413;   ///< 0 = an ephemeral port (server::tls_port() tells which)
    /// The TLS listener runs (tls_cert set; validate() checks that tls_key is too).
    [[nodiscard]] bool tls_enabled() const noexcept { return !tls_cert.empty(); }
    /// The address the TLS listener binds.
    [[nodiscard]] std::string effective_tls_address() const {
        return !tls_listen_address.empty() ? tls_listen_address
               : !listen_address.empty()   ? listen_address
                                           : std::string("127.0.0.1");
    }

    // Operations
    std::uint32_t accept_backoff_min_ms = 10;
    std::uint32_t accept_backoff_max_ms = 1000;
    std::string log_level = "info";  ///< trace, debug, info, warn, error, critical, off
    std::string log_format = "text";  ///< text or json

    // Cluster (server/DESIGN.md "Cluster"; PROTOCOL.md section 11): off while cluster_etcd is "".
    std::string cluster_etcd;            ///< etcd's client URL, e.g. http://127.0.0.1:2379
    std::string cluster_name = "lariv";  ///< keys under /lariv/<name>/ in etcd
    std::string cluster_token;           ///< the secret every peer link proves
    std::uint32_t cluster_lease_ttl_s = 10;
    std::size_t cluster_link_queue_bytes = 16U << 20;  ///< per peer link; over it: queue_full
    std::uint32_t cluster_join_timeout_ms = 30000;     ///< give up starting when etcd is down this long
    std::string peer_address = "127.0.0.1";            ///< the peer listener's bind address
    std::uint16_t peer_port = 7414;                    ///< 0 = ephemeral
    std::string peer_advertise;                        ///< how peers reach this node; "" = peer_address:port
    /// node_id "auto" (cluster only): the lowest free id, claimed in etcd at start.
    bool node_id_auto = false;
    [[nodiscard]] bool cluster_enabled() const noexcept { return !cluster_etcd.empty(); }

    friend bool operator==(const config&, const config&) = default;

    /// Every key in range (the table below) and the keys fitting together. Throws config_error.
    void validate() const;
    /// The effective I/O thread count.
    unsigned effective_threads() const;
};

/// One configuration key. The table of them (settings()) is the only place a key's name, range
/// and meaning are written: the JSON file, LARIV_* variables, larivd's flags, --help and
/// validate() all read it.
struct setting {
    enum class kind { integer, text, choice };
    std::string_view key;   ///< JSON key; a `limits` key lives in the file's "limits" object
    kind type = kind::integer;
    std::uint64_t min = 0;  ///< integer: the allowed range; text: the length range
    std::uint64_t max = 0;
    std::span<const std::string_view> choices;  ///< kind::choice: the allowed words
    bool in_limits = false;  ///< {"limits": {key: ...}} in a file; flat everywhere else
    bool daemon = false;     ///< larivd's own (config), not the registry's (registry_options)
    std::string_view help;

    /// LARIV_<KEY>.
    [[nodiscard]] std::string env() const;
    /// --key-with-dashes.
    [[nodiscard]] std::string flag() const;
    /// Where it lives in a file: "port", "limits.max_line".
    [[nodiscard]] std::string json_key() const;
    /// Its default as JSON text: 7411, "127.0.0.1", "".
    [[nodiscard]] std::string default_text() const;
    /// "0..65535", "disconnect|drop", "0..256 characters".
    [[nodiscard]] std::string range() const;
};

/// Every key, in the order --help and --print-config show them.
std::span<const setting> settings();
/// The key named `key` (flat name: "max_line", not "limits.max_line"), or nullptr.
const setting* find_setting(std::string_view key);

/// Sets `key` from text (an environment variable, a flag): integers are decimal digits only, no
/// sign, in the key's range. `source` names where the text came from ("flag --port",
/// "environment LARIV_PORT") in the config_error: key, source, value and allowed range.
void set_from_text(config& c, std::string_view key, std::string_view text, std::string_view source);

/// JSON mapping: every key optional on input (missing keys keep the current value); unknown keys,
/// at the top level and inside "limits", are an error (a typo must not be silently ignored).
void to_json(nlohmann::json& j, const config& c);
void from_json(const nlohmann::json& j, config& c);
/// to_json with the secrets (auth_token, admin_token) shown as "<redacted>" when set: what /varz
/// shows.
nlohmann::json redacted_json(const config& c);

/// Applies the keys present in `j` to `c`, each checked against its range. Throws config_error
/// naming the key, `source` and the allowed range.
void merge(config& c, const nlohmann::json& j, std::string_view source = "JSON");

/// The JSON keys, in order, with their LARIV_* environment variable names.
std::map<std::string, std::string> config_env_names();

/// Applies LARIV_* variables from `environ` to `c`. Throws config_error on a bad value.
void apply_environment(config& c);

/// Reads a JSON config file into `c`. Throws config_error.
void load_file(config& c, const std::string& path);

}  // namespace lariv::server
