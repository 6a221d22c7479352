// larivd — the Lariv Registry daemon.
//
// Configuration precedence: flags > environment (LARIV_*) > --config file > defaults.
// Exit codes: 0 ok, 64 usage error, 70 internal error, 78 configuration error (sysexits.h).
// Signals: SIGINT/SIGTERM drain (a second one exits at once), SIGHUP reloads log level and the
// hot-reloadable limits from the same sources.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>
#include <asio/signal_set.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "lariv/server/config.hpp"
#include "lariv/server/monitor.hpp"
#include "lariv/server/server.hpp"

namespace {

constexpr int exit_usage = 64;
constexpr int exit_internal = 70;
constexpr int exit_config = 78;

using lariv::server::config;

/// Flags, each optional so that only the ones given override the other sources.
struct flags {
    std::optional<std::string> listen_address, monitor_address, auth_token, admin_token, log_level,
        log_format, slow_consumer;
    std::optional<unsigned> threads;
    std::optional<std::uint16_t> port, monitor_port;
    std::optional<std::uint32_t> node_id, boot_epoch, handshake_timeout_ms, frame_timeout_ms,
        heartbeat_ms, idle_timeout_ms, write_deadline_ms, rate_limit, rate_burst, drain_timeout_ms;
    std::optional<std::size_t> max_sessions, max_queue_bytes, max_payload, max_line,
        max_monitor_connections;
};

void add_flags(CLI::App& app, flags& f) {
    app.add_option("--listen-address", f.listen_address, "Client address (default 127.0.0.1)");
    app.add_option("-p,--port", f.port, "Client port (default 7411)");
    app.add_option("--monitor-address", f.monitor_address, "Monitoring address (default 127.0.0.1)");
    app.add_option("--monitor-port", f.monitor_port, "Monitoring port, 0 = off (default 7412)");
    app.add_option("--max-monitor-connections", f.max_monitor_connections,
                   "Concurrent monitoring connections; more get 503 (default 16)");
    app.add_option("-t,--threads", f.threads, "I/O threads (default: hardware concurrency)");
    app.add_option("--node-id", f.node_id, "Node id, bits 127..96 of session ids (default 1)");
    app.add_option("--boot-epoch", f.boot_epoch, "Boot epoch, bits 95..64 (default: start time)");
    app.add_option("--max-sessions", f.max_sessions, "Session cap, clamped to the fd limit");
    app.add_option("--max-payload", f.max_payload, "Largest SEND payload in bytes");
    app.add_option("--max-line", f.max_line, "Longest control line in bytes");
    app.add_option("--max-queue-bytes", f.max_queue_bytes, "Outbound queue cap per session");
    app.add_option("--slow-consumer", f.slow_consumer, "disconnect or drop")
        ->check(CLI::IsMember({"disconnect", "drop"}));
    app.add_option("--handshake-timeout-ms", f.handshake_timeout_ms, "HELLO deadline");
    app.add_option("--frame-timeout-ms", f.frame_timeout_ms, "Deadline to finish a started frame");
    app.add_option("--heartbeat-ms", f.heartbeat_ms, "PING idle clients this often, 0 = never");
    app.add_option("--idle-timeout-ms", f.idle_timeout_ms, "Close after this long idle, 0 = never");
    app.add_option("--write-deadline-ms", f.write_deadline_ms, "Stuck write = slow consumer");
    app.add_option("--rate-limit", f.rate_limit, "SENDs per second per session, 0 = unlimited");
    app.add_option("--rate-burst", f.rate_burst, "Rate limit bucket size");
    app.add_option("--auth-token", f.auth_token, "Token clients must HELLO with");
    app.add_option("--admin-token", f.admin_token, "Token for KICK and LIST");
    app.add_option("--drain-timeout-ms", f.drain_timeout_ms, "Graceful shutdown bound");
    app.add_option("--log-level", f.log_level, "trace|debug|info|warn|error|critical|off");
    app.add_option("--log-format", f.log_format, "text or json")
        ->check(CLI::IsMember({"text", "json"}));
}

void apply_flags(config& c, const flags& f) {
    nlohmann::json j = nlohmann::json::object();
#define LARIV_FLAG(name) \
    if (f.name) {        \
        j[#name] = *f.name; \
    }
    LARIV_FLAG(listen_address)
    LARIV_FLAG(monitor_address)
    LARIV_FLAG(auth_token)
    LARIV_FLAG(admin_token)
    LARIV_FLAG(log_level)
    LARIV_FLAG(log_format)
    LARIV_FLAG(slow_consumer)
    LARIV_FLAG(threads)
    LARIV_FLAG(port)
    LARIV_FLAG(monitor_port)
    LARIV_FLAG(node_id)
    LARIV_FLAG(boot_epoch)
    LARIV_FLAG(handshake_timeout_ms)
    LARIV_FLAG(frame_timeout_ms)
    LARIV_FLAG(heartbeat_ms)
    LARIV_FLAG(idle_timeout_ms)
    LARIV_FLAG(write_deadline_ms)
    LARIV_FLAG(rate_limit)
    LARIV_FLAG(rate_burst)
    LARIV_FLAG(drain_timeout_ms)
    LARIV_FLAG(max_sessions)
    LARIV_FLAG(max_queue_bytes)
    LARIV_FLAG(max_monitor_connections)
#undef LARIV_FLAG
    if (f.max_payload || f.max_line) {
        nlohmann::json lim = nlohmann::json::object();
        if (f.max_payload) {
            lim["max_payload"] = *f.max_payload;
        }
        if (f.max_line) {
            lim["max_line"] = *f.max_line;
        }
        j["limits"] = lim;
    }
    lariv::server::merge(c, j);
}

/// Builds the effective configuration from all sources. Throws config_error.
config resolve(const std::string& file, const flags& f) {
    config c;
    if (!file.empty()) {
        lariv::server::load_file(c, file);
    }
    lariv::server::apply_environment(c);
    apply_flags(c, f);
    c.validate();
    return c;
}

void setup_logging(const config& c) {
    auto logger = spdlog::stderr_color_mt("larivd");
    spdlog::set_default_logger(logger);
    if (c.log_format == "json") {
        spdlog::set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","msg":"%v"})");
    } else {
        spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
    }
    spdlog::set_level(spdlog::level::from_str(c.log_level));
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"larivd: the Lariv Registry daemon (connection registry for TPR-style servers)",
                 "larivd"};
    app.set_version_flag("-V,--version", std::string("larivd ") + LARIV_VERSION);
    std::string config_file;
    bool print_config = false;
    bool check_config = false;
    bool health_check = false;
    flags f;
    // Not CLI::ExistingFile: a missing config file is a configuration error (78), not usage (64).
    app.add_option("-c,--config", config_file, "JSON configuration file");
    app.add_flag("--print-config", print_config, "Print the effective configuration as JSON and exit");
    app.add_flag("--check-config", check_config, "Validate the configuration and exit");
    app.add_flag("--health-check", health_check,
                 "GET /healthz from the configured monitor and exit 0 if it answers 200 "
                 "(for container HEALTHCHECKs: no curl needed)");
    add_flags(app, f);
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return exit_usage;  // an unknown flag is an error, never usage with exit 0
    }

    if (config_file.empty()) {
        if (const char* env = std::getenv("LARIV_CONFIG"); env != nullptr && *env != '\0') {
            config_file = env;  // a mounted config file in a container
        }
    }
    config cfg;
    try {
        cfg = resolve(config_file, f);
    } catch (const lariv::server::config_error& e) {
        std::cerr << "larivd: " << e.what() << '\n';
        return exit_config;
    }
    if (print_config) {
        std::cout << nlohmann::json(cfg).dump(2) << '\n';
        return 0;
    }
    if (check_config) {
        std::cout << "larivd: configuration ok\n";
        return 0;
    }
    if (health_check) {
        return lariv::server::probe_health(cfg) ? 0 : 1;
    }
    setup_logging(cfg);

    try {
        lariv::server::server srv(cfg);
        asio::signal_set signals(srv.context(), SIGINT, SIGTERM, SIGHUP);
        int stop_signals = 0;
        std::function<void(std::error_code, int)> on_signal = [&](std::error_code ec, int sig) {
            if (ec) {
                return;
            }
            if (sig == SIGHUP) {
                try {
                    const config next = resolve(config_file, f);
                    spdlog::set_level(spdlog::level::from_str(next.log_level));
                    srv.reload(next);  // the same validation and fd clamp as at start
                    spdlog::info("SIGHUP: reloaded log level and limits");
                } catch (const std::exception& e) {
                    spdlog::error("SIGHUP: configuration rejected, keeping the old one: {}", e.what());
                }
            } else if (++stop_signals == 1) {
                spdlog::info("signal {}: draining (send it again to exit at once)", sig);
                srv.drain();
            } else {
                spdlog::warn("signal {} again: exiting now", sig);
                std::_Exit(0);
            }
            signals.async_wait(on_signal);
        };
        signals.async_wait(on_signal);
        srv.start();
        srv.wait();
        spdlog::info("larivd stopped");
    } catch (const lariv::server::config_error& e) {
        spdlog::critical("{}", e.what());
        return exit_config;
    } catch (const std::system_error& e) {
        spdlog::critical("cannot start: {}", e.what());
        return exit_internal;
    } catch (const std::exception& e) {
        spdlog::critical("internal error: {}", e.what());
        return exit_internal;
    }
    return 0;
}
