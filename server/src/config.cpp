#include "lariv/server/config.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "lariv/protocol/json.hpp"

namespace lariv::server {

namespace {

std::string to_string(slow_consumer_policy p) {
    return p == slow_consumer_policy::drop ? "drop" : "disconnect";
}

// The single list of keys: drives JSON in and out and the environment variables.
#define LARIV_CONFIG_FIELDS(X)   \
    X(listen_address)            \
    X(port)                      \
    X(monitor_address)           \
    X(monitor_port)              \
    X(max_monitor_connections)   \
    X(threads)                   \
    X(node_id)                   \
    X(boot_epoch)                \
    X(max_sessions)              \
    X(registry_buffer)           \
    X(handshake_timeout_ms)      \
    X(frame_timeout_ms)          \
    X(heartbeat_ms)              \
    X(max_outstanding_pings)     \
    X(idle_timeout_ms)           \
    X(write_deadline_ms)         \
    X(max_queue_bytes)           \
    X(rate_limit)                \
    X(rate_burst)                \
    X(auth_token)                \
    X(admin_token)               \
    X(drain_timeout_ms)          \
    X(accept_backoff_min_ms)     \
    X(accept_backoff_max_ms)     \
    X(log_level)                 \
    X(log_format)

template <class T>
void read_value(const nlohmann::json& j, const char* key, T& out) {
    try {
        if constexpr (std::is_same_v<T, std::string>) {
            out = j.get<std::string>();
        } else {
            // Reject negative numbers and floats for unsigned fields explicitly. A JSON built in
            // C++ stores an int as a signed integer: accept it when it is not negative.
            const bool non_negative =
                j.is_number_unsigned() || (j.is_number_integer() && j.get<std::int64_t>() >= 0);
            if (!non_negative) {
                throw config_error(std::string("config: ") + key + " must be a non-negative integer");
            }
            const auto v = j.get<std::uint64_t>();
            if (v > std::numeric_limits<T>::max()) {
                throw config_error(std::string("config: ") + key + " is too large");
            }
            out = static_cast<T>(v);
        }
    } catch (const nlohmann::json::exception&) {
        throw config_error(std::string("config: ") + key + " has the wrong type");
    }
}

}  // namespace

void registry_options::validate() const {
    if (max_sessions == 0) {
        throw config_error("config: max_sessions must be at least 1");
    }
    if (registry_buffer == 0 || registry_buffer > (1U << 24)) {
        throw config_error("config: registry_buffer must be 1..16777216");
    }
    if (max_queue_bytes < limits.max_payload) {
        throw config_error("config: max_queue_bytes must hold at least one max_payload message");
    }
    if (limits.max_line < 128 || limits.max_payload == 0 || limits.max_json < 256) {
        throw config_error("config: limits too small (max_line >= 128, max_json >= 256)");
    }
}

void config::validate() const {
    registry_options::validate();
    if (max_monitor_connections == 0) {
        throw config_error("config: max_monitor_connections must be at least 1");
    }
    if (accept_backoff_min_ms == 0 || accept_backoff_max_ms < accept_backoff_min_ms) {
        throw config_error("config: need 0 < accept_backoff_min_ms <= accept_backoff_max_ms");
    }
    if (log_format != "text" && log_format != "json") {
        throw config_error("config: log_format must be text or json");
    }
    static const char* levels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
    bool ok = false;
    for (const char* l : levels) {
        ok = ok || log_level == l;
    }
    if (!ok) {
        throw config_error("config: log_level must be trace, debug, info, warn, error, critical or off");
    }
}

unsigned config::effective_threads() const {
    if (threads != 0) {
        return threads;
    }
    const unsigned hc = std::thread::hardware_concurrency();
    return hc == 0 ? 2 : hc;
}

void to_json(nlohmann::json& j, const config& c) {
    j = nlohmann::json::object();
#define LARIV_OUT(name) j[#name] = c.name;
    LARIV_CONFIG_FIELDS(LARIV_OUT)
#undef LARIV_OUT
    j["slow_consumer"] = to_string(c.slow_consumer);
    j["limits"] = c.limits;
}

void merge(config& c, const nlohmann::json& j) {
    if (!j.is_object()) {
        throw config_error("config: the top level must be a JSON object");
    }
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& key = it.key();
        bool known = false;
#define LARIV_IN(name)                            \
    if (key == #name) {                           \
        read_value(it.value(), #name, c.name);    \
        known = true;                             \
    }
        LARIV_CONFIG_FIELDS(LARIV_IN)
#undef LARIV_IN
        if (key == "slow_consumer") {
            const std::string v = it.value().is_string() ? it.value().get<std::string>() : "";
            if (v == "disconnect") {
                c.slow_consumer = slow_consumer_policy::disconnect;
            } else if (v == "drop") {
                c.slow_consumer = slow_consumer_policy::drop;
            } else {
                throw config_error("config: slow_consumer must be disconnect or drop");
            }
            known = true;
        } else if (key == "limits") {
            if (!it.value().is_object()) {
                throw config_error("config: limits must be an object");
            }
            try {
                protocol::from_json(it.value(), c.limits);
            } catch (const nlohmann::json::exception& e) {
                throw config_error(std::string("config: limits: ") + e.what());
            }
            known = true;
        }
        if (!known) {
            throw config_error("config: unknown key '" + key + "'");
        }
    }
}

void from_json(const nlohmann::json& j, config& c) { merge(c, j); }

std::map<std::string, std::string> config_env_names() {
    std::map<std::string, std::string> m;
    auto add = [&](const std::string& key) {
        std::string env = "LARIV_";
        for (char ch : key) {
            env += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        }
        m[key] = env;
    };
#define LARIV_ENV(name) add(#name);
    LARIV_CONFIG_FIELDS(LARIV_ENV)
#undef LARIV_ENV
    add("slow_consumer");
    add("max_payload");
    add("max_line");
    return m;
}

void apply_environment(config& c) {
    nlohmann::json j = nlohmann::json::object();
    nlohmann::json lim = nlohmann::json::object();
    for (const auto& [key, env] : config_env_names()) {
        const char* v = std::getenv(env.c_str());
        if (v == nullptr) {
            continue;
        }
        const std::string s(v);
        nlohmann::json parsed;
        const bool is_text = key == "listen_address" || key == "monitor_address" ||
                             key == "auth_token" || key == "admin_token" || key == "log_level" ||
                             key == "log_format" || key == "slow_consumer";
        if (is_text) {
            parsed = s;
        } else {
            std::uint64_t n = 0;
            std::size_t used = 0;
            try {
                n = std::stoull(s, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (used != s.size() || s.empty() || s[0] == '-') {
                throw config_error("config: " + env + " must be a non-negative integer");
            }
            parsed = n;
        }
        if (key == "max_payload" || key == "max_line") {
            lim[key] = parsed;
        } else {
            j[key] = parsed;
        }
    }
    if (!lim.empty()) {
        j["limits"] = lim;
    }
    merge(c, j);
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
    merge(c, j);
}

}  // namespace lariv::server
