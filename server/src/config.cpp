// The configuration: one table of keys (name, kind, range, help) drives the JSON file, the
// LARIV_* environment, larivd's flags, --print-config and validate(). A value from any source goes
// through the same checks and a bad one is a config_error naming the key, the source, the value
// and the allowed range (larivd exits 78 on it).
#include "lariv/server/config.hpp"

#include <array>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "lariv/protocol/json.hpp"
#include "lariv/server/detail/secret.hpp"

namespace lariv::server {

namespace {

constexpr std::uint64_t u16_max = std::numeric_limits<std::uint16_t>::max();
constexpr std::uint64_t u32_max = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t hour_ms = 3'600'000;
constexpr std::uint64_t day_ms = 24 * hour_ms;
constexpr std::uint64_t mib = 1 << 20;

constexpr std::array<std::string_view, 7> log_levels{"trace", "debug", "info",    "warn",
                                                     "error", "critical", "off"};
constexpr std::array<std::string_view, 2> log_formats{"text", "json"};
constexpr std::array<std::string_view, 2> slow_consumer_words{"disconnect", "drop"};
constexpr std::array<std::string_view, 2> io_model_words{"shared", "per_thread"};

/// How a key reads and writes its field. Registry keys act on registry_options; daemon keys on
/// config (validate() of a bare registry_options never touches them).
struct access {
    std::uint64_t (*get_int)(const registry_options&) = nullptr;
    void (*set_int)(registry_options&, std::uint64_t) = nullptr;
    std::string (*get_text)(const registry_options&) = nullptr;
    void (*set_text)(registry_options&, std::string) = nullptr;
};

template <auto M>
constexpr access reg_int() {
    return {[](const registry_options& o) { return static_cast<std::uint64_t>(o.*M); },
            [](registry_options& o, std::uint64_t v) {
                o.*M = static_cast<std::remove_reference_t<decltype(o.*M)>>(v);
            },
            nullptr, nullptr};
}
template <auto M>
constexpr access lim_int() {
    return {[](const registry_options& o) { return static_cast<std::uint64_t>(o.limits.*M); },
            [](registry_options& o, std::uint64_t v) {
                o.limits.*M = static_cast<std::remove_reference_t<decltype(o.limits.*M)>>(v);
            },
            nullptr, nullptr};
}
template <auto M>
constexpr access cfg_int() {
    return {[](const registry_options& o) {
                return static_cast<std::uint64_t>(static_cast<const config&>(o).*M);
            },
            [](registry_options& o, std::uint64_t v) {
                auto& f = static_cast<config&>(o).*M;
                f = static_cast<std::remove_reference_t<decltype(f)>>(v);
            },
            nullptr, nullptr};
}
template <auto M>
constexpr access reg_text() {
    return {nullptr, nullptr, [](const registry_options& o) { return std::string(o.*M); },
            [](registry_options& o, std::string v) { o.*M = std::move(v); }};
}
template <auto M>
constexpr access cfg_text() {
    return {nullptr, nullptr,
            [](const registry_options& o) { return std::string(static_cast<const config&>(o).*M); },
            [](registry_options& o, std::string v) { static_cast<config&>(o).*M = std::move(v); }};
}
constexpr access slow_consumer_access() {
    return {nullptr, nullptr,
            [](const registry_options& o) {
                return std::string(o.slow_consumer == slow_consumer_policy::drop ? "drop" : "disconnect");
            },
            [](registry_options& o, std::string v) {
                o.slow_consumer = v == "drop" ? slow_consumer_policy::drop : slow_consumer_policy::disconnect;
            }};
}

struct entry {
    setting s;
    access a;
};

using K = setting::kind;

entry integer(std::string_view key, std::uint64_t lo, std::uint64_t hi, access a, std::string_view help,
              bool in_limits = false, bool daemon = false) {
    return {{key, K::integer, lo, hi, {}, in_limits, daemon, help}, a};
}
entry text(std::string_view key, std::uint64_t min_len, std::uint64_t max_len, access a,
           std::string_view help, bool daemon = false) {
    return {{key, K::text, min_len, max_len, {}, false, daemon, help}, a};
}
entry choice(std::string_view key, std::span<const std::string_view> words, access a,
             std::string_view help, bool daemon = false) {
    return {{key, K::choice, 0, 0, words, false, daemon, help}, a};
}

// The one list of keys. Ranges are what the code can honour: a bound written here is checked for
// every source and by validate() for an embedder's registry_options.
const std::vector<entry>& table() {
    static const std::vector<entry> t = [] {
        constexpr bool lim = true;
        constexpr bool d = true;
        using R = registry_options;
        using C = config;
        using L = protocol::limits;
        return std::vector<entry>{
            // Network (larivd)
            text("listen_address", 0, 255, cfg_text<&C::listen_address>(),
                 "Client listener address; \"\" = no plaintext listener (TLS only)", d),
            integer("port", 0, u16_max, cfg_int<&C::port>(), "Client port, 0 = ephemeral", false, d),
            text("monitor_address", 1, 255, cfg_text<&C::monitor_address>(), "Monitoring address", d),
            integer("monitor_port", 0, u16_max, cfg_int<&C::monitor_port>(),
                    "Monitoring port, 0 = off", false, d),
            integer("max_monitor_connections", 1, 4096, cfg_int<&C::max_monitor_connections>(),
                    "Concurrent monitoring connections; more get 503", false, d),
            integer("threads", 0, 1024, cfg_int<&C::threads>(), "I/O threads, 0 = hardware concurrency",
                    false, d),
            choice("io_model", io_model_words, cfg_text<&C::io_model>(),
                   "shared: one io_context run by every I/O thread; per_thread: an io_context per "
                   "I/O thread, connections dealt round robin",
                   d),
            // TLS: a second client listener, on when tls_cert and tls_key are set
            text("tls_cert", 0, 4096, cfg_text<&C::tls_cert>(),
                 "PEM certificate chain; with tls_key turns the TLS listener on", d),
            text("tls_key", 0, 4096, cfg_text<&C::tls_key>(), "PEM private key of tls_cert (unencrypted)", d),
            text("tls_ca", 0, 4096, cfg_text<&C::tls_ca>(),
                 "PEM CA bundle: client certificates required and verified (mTLS)", d),
            text("tls_listen_address", 0, 255, cfg_text<&C::tls_listen_address>(),
                 "TLS listener address (\"\" = listen_address, or 127.0.0.1)", d),
            integer("tls_port", 0, u16_max, cfg_int<&C::tls_port>(), "TLS listener port, 0 = ephemeral",
                    false, d),
            // Identity
            integer("node_id", 1, u32_max, reg_int<&R::node_id>(),
                    "Node id, bits 127..96 of session ids (0 is reserved for hosts' own notices); "
                    "\"auto\" with cluster_etcd: the lowest free id in the cluster"),
            integer("boot_epoch", 0, u32_max, reg_int<&R::boot_epoch>(),
                    "Boot epoch, bits 95..64; 0 = random from the OS at each start (a set one must "
                    "never repeat)"),
            // Admission
            integer("max_sessions", 1, u32_max, reg_int<&R::max_sessions>(),
                    "Session cap, clamped to the open-file limit"),
            integer("max_sessions_per_ip", 0, 16'777'216, reg_int<&R::max_sessions_per_ip>(),
                    "Sessions per remote IP address, 0 = no limit"),
            integer("registry_buffer", 1, 16'777'216, reg_int<&R::registry_buffer>(),
                    "Lariv slots per buffer"),
            integer("max_closed_sessions", 0, 1'000'000, reg_int<&R::max_closed_sessions>(),
                    "Recently closed sessions kept for /connz?state=closed, 0 = none"),
            // Protocol limits
            integer("max_line", 128, mib, lim_int<&L::max_line>(), "Longest control line in bytes", lim),
            integer("max_payload", 1, 256 * mib, lim_int<&L::max_payload>(),
                    "Largest SEND/MSG payload in bytes", lim),
            integer("max_json", 4096, 16 * mib, lim_int<&L::max_json>(),
                    "Largest JSON text (HELLO argument, reply bodies) in bytes", lim),
            integer("max_json_depth", 1, 64, lim_int<&L::max_json_depth>(), "Deepest JSON nesting", lim),
            integer("max_list", 1, 100'000, lim_int<&L::max_list>(), "Largest LIST limit=", lim),
            // Session life
            integer("handshake_timeout_ms", 1, hour_ms, reg_int<&R::handshake_timeout_ms>(),
                    "HELLO deadline"),
            integer("frame_timeout_ms", 1, hour_ms, reg_int<&R::frame_timeout_ms>(),
                    "Deadline to finish a started frame"),
            integer("heartbeat_ms", 0, day_ms, reg_int<&R::heartbeat_ms>(),
                    "PING idle clients this often, 0 = never"),
            integer("max_outstanding_pings", 1, 1000, reg_int<&R::max_outstanding_pings>(),
                    "Close after this many unanswered PINGs"),
            integer("idle_timeout_ms", 0, day_ms, reg_int<&R::idle_timeout_ms>(),
                    "Close after this long without input, 0 = never"),
            integer("write_deadline_ms", 1, hour_ms, reg_int<&R::write_deadline_ms>(),
                    "A write stuck this long = slow consumer"),
            integer("max_queue_bytes", 64, 16384 * mib, reg_int<&R::max_queue_bytes>(),
                    "Outbound queue cap per session in bytes (holds at least one maximal MSG)"),
            choice("slow_consumer", slow_consumer_words, slow_consumer_access(),
                   "At a full queue: disconnect the session, or drop the message"),
            integer("rate_limit", 0, 10'000'000, reg_int<&R::rate_limit>(),
                    "SENDs per second per session, 0 = unlimited"),
            integer("rate_burst", 0, 10'000'000, reg_int<&R::rate_burst>(),
                    "Rate limit bucket size, 0 = rate_limit"),
            // Auth
            text("auth_token", 0, detail::max_secret_size, reg_text<&R::auth_token>(),
                 "Token every client must HELLO with (\"\" = none)"),
            text("admin_token", 0, detail::max_secret_size, reg_text<&R::admin_token>(),
                 "Token that unlocks KICK and LIST (\"\" = admin commands disabled)"),
            // Shutdown and operations
            integer("drain_timeout_ms", 0, hour_ms, reg_int<&R::drain_timeout_ms>(),
                    "Graceful shutdown bound"),
            integer("accept_backoff_min_ms", 1, 60'000, cfg_int<&C::accept_backoff_min_ms>(),
                    "First retry delay after accept() runs out of descriptors", false, d),
            integer("accept_backoff_max_ms", 1, 600'000, cfg_int<&C::accept_backoff_max_ms>(),
                    "Longest retry delay after accept() runs out of descriptors", false, d),
            choice("log_level", log_levels, cfg_text<&C::log_level>(), "Log level", d),
            choice("log_format", log_formats, cfg_text<&C::log_format>(), "Log format", d),
            // Cluster: off while cluster_etcd is ""
            text("cluster_etcd", 0, 255, cfg_text<&C::cluster_etcd>(),
                 "etcd client URL (http://host:port); \"\" = a single node, no cluster", d),
            text("cluster_name", 1, 64, cfg_text<&C::cluster_name>(), "Cluster name (etcd keys /lariv/<name>/)", d),
            text("cluster_token", 0, detail::max_secret_size, cfg_text<&C::cluster_token>(),
                 "Secret every node-to-node link proves (set it on every node)", d),
            integer("cluster_lease_ttl_s", 1, 3600, cfg_int<&C::cluster_lease_ttl_s>(),
                    "TTL of the node's etcd lease: a node gone this long leaves the cluster", false, d),
            integer("cluster_link_queue_bytes", 65536, 16384 * mib, cfg_int<&C::cluster_link_queue_bytes>(),
                    "Outbound queue cap per peer link; a SEND over it gets queue_full", false, d),
            integer("cluster_join_timeout_ms", 100, hour_ms, cfg_int<&C::cluster_join_timeout_ms>(),
                    "At start, how long to retry an etcd that does not answer", false, d),
            text("peer_address", 1, 255, cfg_text<&C::peer_address>(), "Peer (node-to-node) listener address", d),
            integer("peer_port", 0, u16_max, cfg_int<&C::peer_port>(), "Peer listener port, 0 = ephemeral", false, d),
            text("peer_advertise", 0, 255, cfg_text<&C::peer_advertise>(),
                 "host:port peers dial (\"\" = peer_address:peer_port; the host name for 0.0.0.0)", d),
        };
    }();
    return t;
}

const entry* find_entry(std::string_view key) {
    for (const auto& e : table()) {
        if (e.s.key == key) {
            return &e;
        }
    }
    return nullptr;
}

[[noreturn]] void fail(const setting& s, std::string_view source, std::string_view value,
                       std::string_view what) {
    std::string m = "config: ";
    m.append(s.key);
    if (!source.empty()) {
        m.append(" (from ").append(source).append(")");
    }
    if (!value.empty()) {
        m.append(" = ").append(value);
    }
    m.append(": ").append(what).append(", allowed: ").append(s.range());
    throw config_error(m);
}

/// Checks a value against its key's range (throws config_error naming key, source, range).
void check_integer(const entry& e, std::uint64_t v, std::string_view source) {
    if (v < e.s.min || v > e.s.max) {
        fail(e.s, source, std::to_string(v), "out of range");
    }
}
void check_text(const entry& e, const std::string& v, std::string_view source) {
    if (e.s.type == K::choice) {
        bool ok = false;
        for (auto w : e.s.choices) {
            ok = ok || v == w;
        }
        if (!ok) {
            fail(e.s, source, "\"" + v + "\"", "not one of the words");
        }
    } else if (v.size() < e.s.min || v.size() > e.s.max) {
        fail(e.s, source, "\"" + v + "\"", "wrong length");
    }
}
void store_integer(registry_options& o, const entry& e, std::uint64_t v, std::string_view source) {
    check_integer(e, v, source);
    e.a.set_int(o, v);
}
void store_text(registry_options& o, const entry& e, std::string v, std::string_view source) {
    check_text(e, v, source);
    e.a.set_text(o, std::move(v));
}
/// validate(): every key of one side (the registry's, or larivd's own) in range. `o` must be a
/// config when `daemon` is true.
void check_keys(const registry_options& o, bool daemon) {
    for (const auto& e : table()) {
        if (e.s.daemon != daemon) {
            continue;
        }
        if (e.s.type == K::integer) {
            check_integer(e, e.a.get_int(o), "");
        } else {
            check_text(e, e.a.get_text(o), "");
        }
    }
}

void merge_value(config& c, const entry& e, const nlohmann::json& v, std::string_view source) {
    if (e.s.key == "node_id") {
        c.node_id_auto = v.is_string() && v.get_ref<const std::string&>() == "auto";
        if (c.node_id_auto) {
            return;
        }
    }
    if (e.s.type == K::integer) {
        // JSON integers only: a float, a string, a bool or a negative number is refused (a C++-built
        // json stores a non-negative int as signed: accept that).
        std::uint64_t n = 0;
        if (v.is_number_unsigned()) {
            n = v.get<std::uint64_t>();
        } else if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
            n = static_cast<std::uint64_t>(v.get<std::int64_t>());
        } else {
            fail(e.s, source, v.dump(), "not a non-negative integer");
        }
        store_integer(c, e, n, source);
    } else {
        if (!v.is_string()) {
            fail(e.s, source, v.dump(), "not a string");
        }
        store_text(c, e, v.get<std::string>(), source);
    }
}

std::string key_path(std::string_view source, std::string_view where) {
    return std::string(source) + (where.empty() ? "" : std::string(", in ") + std::string(where));
}

}  // namespace

// ------------------------------------------------------------------------------------ setting

std::string setting::env() const {
    std::string env = "LARIV_";
    for (char ch : key) {
        env += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    }
    return env;
}

std::string setting::flag() const {
    std::string f = "--";
    for (char ch : key) {
        f += ch == '_' ? '-' : ch;
    }
    return f;
}

std::string setting::json_key() const {
    return (in_limits ? std::string("limits.") : std::string()) + std::string(key);
}

std::string setting::default_text() const {
    static const config defaults;
    const entry* e = find_entry(key);
    if (e == nullptr) {
        return {};
    }
    return type == kind::integer ? std::to_string(e->a.get_int(defaults))
                                 : nlohmann::json(e->a.get_text(defaults)).dump();
}

std::string setting::range() const {
    switch (type) {
        case kind::integer:
            return std::to_string(min) + ".." + std::to_string(max);
        case kind::text:
            return std::to_string(min) + ".." + std::to_string(max) + " characters";
        case kind::choice: {
            std::string r;
            for (auto w : choices) {
                r.append(r.empty() ? "" : "|").append(w);
            }
            return r;
        }
    }
    return {};
}

std::span<const setting> settings() {
    static const std::vector<setting> s = [] {
        std::vector<setting> v;
        for (const auto& e : table()) {
            v.push_back(e.s);
        }
        return v;
    }();
    return s;
}

const setting* find_setting(std::string_view key) {
    const entry* e = find_entry(key);
    return e == nullptr ? nullptr : &e->s;
}

void set_from_text(config& c, std::string_view key, std::string_view text, std::string_view source) {
    const entry* e = find_entry(key);
    if (e == nullptr) {
        throw config_error("config: unknown key '" + std::string(key) + "'");
    }
    if (e->s.type != K::integer) {
        store_text(c, *e, std::string(text), source);
        return;
    }
    if (key == "node_id") {
        c.node_id_auto = text == "auto";
        if (c.node_id_auto) {
            return;
        }
    }
    // Decimal digits only: no sign (a "-1" must never wrap to 2^64-1), no blanks, no suffix.
    std::uint64_t v = 0;
    const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    const std::string shown = "\"" + std::string(text) + "\"";
    if (!digits) {
        fail(e->s, source, shown, "not a non-negative decimal integer");
    }
    if (ec == std::errc::result_out_of_range || ptr != text.data() + text.size()) {
        fail(e->s, source, shown, "out of range");
    }
    store_integer(c, *e, v, source);
}

// ------------------------------------------------------------------------------------ validate

void registry_options::validate() const {
    check_keys(*this, false);  // config::validate() checks larivd's own keys
    // Keys that must fit together.
    if (max_queue_bytes < limits.max_msg_frame()) {
        throw config_error("config: max_queue_bytes = " + std::to_string(max_queue_bytes) +
                           " cannot hold one maximal MSG frame (" +
                           std::to_string(limits.max_msg_frame()) +
                           " bytes for max_payload = " + std::to_string(limits.max_payload) +
                           "): raise max_queue_bytes or lower max_payload");
    }
}

void config::validate() const {
    registry_options::validate();
    check_keys(*this, true);
    if (node_id_auto && !cluster_enabled()) {
        throw config_error("config: node_id \"auto\" needs cluster_etcd (a single node has no one to "
                           "ask for a free id)");
    }
    if (cluster_enabled() && cluster_etcd.rfind("http://", 0) != 0) {
        throw config_error("config: cluster_etcd must be an http:// URL (etcd's client URL), not '" +
                           cluster_etcd + "'");
    }
    if (accept_backoff_max_ms < accept_backoff_min_ms) {
        throw config_error("config: accept_backoff_max_ms must be >= accept_backoff_min_ms");
    }
    // TLS: the fields must fit together; the files are read (and their errors, naming the key,
    // raised) where the context is built: make_server_tls_context(), at start and on reload.
    if (!tls_cert.empty() && tls_key.empty()) {
        throw config_error("config: tls_cert is set but tls_key is not");
    }
    if (tls_cert.empty() && !tls_key.empty()) {
        throw config_error("config: tls_key is set but tls_cert is not");
    }
    if (!tls_ca.empty() && tls_cert.empty()) {
        throw config_error("config: tls_ca is set but tls_cert is not (client certificates are "
                           "checked on the TLS listener only)");
    }
    if (listen_address.empty() && !tls_enabled()) {
        throw config_error("config: listen_address is empty (no plaintext listener) and TLS is off "
                           "(no tls_cert): nothing to listen on");
    }
    if (tls_enabled() && !listen_address.empty() && tls_port != 0 && tls_port == port &&
        effective_tls_address() == listen_address) {
        throw config_error("config: tls_port must differ from port on the same address");
    }
}

unsigned config::effective_threads() const {
    if (threads != 0) {
        return threads;
    }
    const unsigned hc = std::thread::hardware_concurrency();
    return hc == 0 ? 2 : hc;
}

// ---------------------------------------------------------------------------------------- JSON

/// Keys whose values are secrets: redacted_json() hides them.
constexpr std::array<std::string_view, 3> secret_keys{"auth_token", "admin_token", "cluster_token"};

nlohmann::json redacted_json(const config& c) {
    nlohmann::json j = c;
    for (const std::string_view k : secret_keys) {
        auto it = j.find(k);
        if (it != j.end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
            *it = "<redacted>";
        }
    }
    return j;
}

void to_json(nlohmann::json& j, const config& c) {
    j = nlohmann::json::object();
    nlohmann::json lim = nlohmann::json::object();
    for (const auto& e : table()) {
        auto& out = e.s.in_limits ? lim : j;
        if (e.s.type == K::integer) {
            out[std::string(e.s.key)] = e.a.get_int(c);
        } else {
            out[std::string(e.s.key)] = e.a.get_text(c);
        }
    }
    j["limits"] = lim;
    if (c.node_id_auto) {
        j["node_id"] = "auto";
    }
}

void merge(config& c, const nlohmann::json& j, std::string_view source) {
    if (!j.is_object()) {
        throw config_error("config: " + std::string(source) + ": the top level must be a JSON object");
    }
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& key = it.key();
        if (key == "limits") {
            if (!it.value().is_object()) {
                throw config_error("config: limits (from " + std::string(source) + ") must be an object");
            }
            for (auto l = it.value().begin(); l != it.value().end(); ++l) {
                const entry* e = find_entry(l.key());
                if (e == nullptr || !e->s.in_limits) {
                    throw config_error("config: unknown key 'limits." + l.key() + "' (from " +
                                       std::string(source) + ")");
                }
                merge_value(c, *e, l.value(), key_path(source, "limits"));
            }
            continue;
        }
        const entry* e = find_entry(key);
        if (e == nullptr || e->s.in_limits) {
            throw config_error("config: unknown key '" + key + "' (from " + std::string(source) +
                               (e != nullptr ? "; it belongs in \"limits\")" : ")"));
        }
        merge_value(c, *e, it.value(), source);
    }
}

void from_json(const nlohmann::json& j, config& c) { merge(c, j); }

// --------------------------------------------------------------------------- environment, file

std::map<std::string, std::string> config_env_names() {
    std::map<std::string, std::string> m;
    for (const auto& s : settings()) {
        m[std::string(s.key)] = s.env();
    }
    return m;
}

void apply_environment(config& c) {
    for (const auto& s : settings()) {
        const std::string env = s.env();
        if (const char* v = std::getenv(env.c_str()); v != nullptr) {
            set_from_text(c, s.key, v, "environment " + env);
        }
    }
}

void load_file(config& c, const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        throw config_error("config: cannot read " + path);
    }
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::exception& e) {
        throw config_error("config: " + path + ": " + e.what());
    }
    merge(c, j, "file " + path);
}

}  // namespace lariv::server
